"""Errors that the command line reports as one line, with a non-zero exit.

Every user mistake (bad file, bad path, bad config key) raises a subclass of
:class:`Pcm3Error`; ``pcm3.cli`` prints ``error: <message>`` and exits with code 2.
Programming errors stay ordinary exceptions with tracebacks.
"""

from __future__ import annotations

import os


class Pcm3Error(Exception):
    """Base class of errors caused by the user's input."""


class ConfigError(Pcm3Error):
    """A config file or ``--set`` override is wrong (unknown key, bad type or value)."""


class DataError(Pcm3Error):
    """A data file is missing, unreadable or malformed.

    Args:
        path: the offending file or folder.
        message: what is wrong, in a few words.
        line: 1-based line number where it applies.
    """

    def __init__(self, path: str | os.PathLike, message: str, line: int | None = None):
        self.path = str(path)
        self.message = message
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")
