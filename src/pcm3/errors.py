"""Errors that the command line reports as one line, with a non-zero exit.

Every user mistake (bad file, bad path, bad config key) raises a subclass of
:class:`Pcm3Error`; ``pcm3.cli`` prints ``error: <message>`` and exits with code 2.
Programming errors stay ordinary exceptions with tracebacks.

An error raised inside a DataLoader worker process comes back to the main process rebuilt
from one string holding the worker's whole traceback (``torch.utils.data`` does
``type(text)``); these classes keep only the original one-line message from such a text.
"""

from __future__ import annotations

import os

_WORKER_MARK = "\nOriginal Traceback"


def _worker_message(text):
    """The original message of an exception re-raised from a DataLoader worker, else ``text``."""
    if isinstance(text, str) and _WORKER_MARK in text:
        last = text.rstrip().splitlines()[-1]
        head, sep, rest = last.partition(": ")
        return rest if sep and "Error" in head else last
    return text


class Pcm3Error(Exception):
    """Base class of errors caused by the user's input."""

    def __init__(self, *args):
        if len(args) == 1:
            args = (_worker_message(args[0]),)
        super().__init__(*args)


class ConfigError(Pcm3Error):
    """A config file or ``--set`` override is wrong (unknown key, bad type or value)."""


class DataError(Pcm3Error):
    """A data file is missing, unreadable or malformed.

    Args:
        path: the offending file or folder.
        message: what is wrong, in a few words.
        line: 1-based line number where it applies.

    ``DataError(text)`` with one argument (how pickling and DataLoader workers rebuild it)
    keeps ``text`` as the whole message.
    """

    def __init__(self, path: str | os.PathLike, message: str | None = None, line: int | None = None):
        if message is None:
            text = _worker_message(str(path))
            self.path, self.message, self.line = "", text, None
            super().__init__(text)
            return
        self.path = str(path)
        self.message = message
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")

    def __reduce__(self):
        return (_rebuild_data_error, (self.path, self.message, self.line))


def _rebuild_data_error(path, message, line):
    if not path:
        return DataError(message)
    return DataError(path, message, line)


def raise_interrupt(signum, frame):
    """A signal handler: raise KeyboardInterrupt, so that SIGTERM / SIGHUP clean up as Ctrl-C does."""
    raise KeyboardInterrupt


#: False while a command runs checks that every process of a torchrun job runs alike on the same
#: inputs (config, data, output folder): their errors are printed by rank 0 alone. Set by
#: :func:`rank_specific_from_here` once work that differs per process begins (training steps,
#: each rank's share of the data), after which every rank prints its own error, naming its rank.
_RANK_SPECIFIC = False


def rank_specific_from_here(value: bool = True) -> None:
    """From now on an error may be one process's own (see ``_RANK_SPECIFIC``); ``False`` at the
    start of a command."""
    global _RANK_SPECIFIC
    _RANK_SPECIFIC = value


def rank_specific() -> bool:
    return _RANK_SPECIFIC
