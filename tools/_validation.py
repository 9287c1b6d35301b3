"""What the study tools share: they run on validation benchmarks only (the test split is never
read), and a user mistake is one line and exit 2, as in the ``pcm3`` CLI."""

from __future__ import annotations

import sys


def run_main(main) -> int:
    """``main()``'s exit code; a :class:`~pcm3.errors.Pcm3Error` (a missing ``--data`` folder...)
    becomes ``error: ...`` on one line and exit 2, not a traceback."""
    from pcm3.errors import Pcm3Error

    try:
        return main()
    except Pcm3Error as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


def require_validation(parser, benchmark: str) -> None:
    """``parser.error`` unless ``benchmark`` is ``<benchmark>-val`` or ``<benchmark>-val<K>``."""
    from pcm3.data.prepared import parse_validation_benchmark

    if parse_validation_benchmark(benchmark) is None:
        parser.error(f"--benchmark {benchmark}: validation benchmarks only (<benchmark>-val or <benchmark>-val<K>)")


def validation_parts(data: str, benchmark: str):
    """The ``(train, test)`` :class:`~pcm3.data.dataset.SkeletonDataset` pair of a validation benchmark."""
    from pcm3.data.dataset import SkeletonDataset

    return SkeletonDataset(data, benchmark, "train"), SkeletonDataset(data, benchmark, "test")
