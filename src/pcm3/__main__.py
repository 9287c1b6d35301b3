"""``python -m pcm3 ...`` (what ``torchrun -m pcm3 ...`` runs): the ``pcm3`` command."""

import sys

from pcm3.cli import main

if __name__ == "__main__":
    sys.exit(main())
