"""The ``pcm3`` command: subcommands that call the library's functions.

Each ``prepare`` target lives in its reader module, which adds its own parser through
``add_prepare_parsers(subparsers)`` and sets ``func(args) -> int``. User errors
(:class:`pcm3.errors.Pcm3Error`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from typing import List, Optional

from pcm3 import __version__
from pcm3.errors import ConfigError, Pcm3Error, raise_interrupt

# Modules that define ``add_prepare_parsers(subparsers)``.
PREPARE_MODULES = (
    "pcm3.data.ntu",
    "pcm3.data.pku",
    "pcm3.data.nwucla",
    "pcm3.data.msr3d",
    "pcm3.data.convert",
    "pcm3.data.synthetic",
)

# Modules that define ``add_parser(subparsers)`` for a top-level subcommand.
COMMAND_MODULES = (
    "pcm3.commands.info",
    "pcm3.commands.pretrain",
    "pcm3.commands.export",
    "pcm3.commands.demo",
    "pcm3.commands.eval",
    "pcm3.commands.benchmark",
    "pcm3.commands.report",
    "pcm3.commands.visualize",
    "pcm3.commands.import_release",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line, like every other user error:
    ``error: pcm3 <command>: <problem> (see pcm3 <command> --help)``, exit code 2 (argparse's
    default prints the whole usage block first). Subcommand parsers inherit the class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pcm3",
        description="PCM3: self-supervised 3D skeleton action representation learning "
                    "(prepare data, pretrain, export, embed, eval).")
    parser.add_argument("--version", action="version", version=f"pcm3 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    prep = sub.add_parser("prepare", help="prepare a data set into the pcm3 on-disk format",
                          description="Prepare a data set from its raw files (or convert an existing "
                                      "preprocessed copy) into the pcm3 prepared format.")
    prep_sub = prep.add_subparsers(dest="target", metavar="TARGET")
    prep_sub.required = True
    for name in PREPARE_MODULES:
        importlib.import_module(name).add_prepare_parsers(prep_sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


# OSErrors that are the user's situation, not a bug: reported in one line like Pcm3Error.
_USER_OS_ERRORS = (errno.ENOENT, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                   errno.EISDIR, errno.ENAMETOOLONG)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one ``pcm3`` command; returns the exit code (2 for a user error, 130 on Ctrl-C).

    User errors print one line, ``error: <what>: <problem>``, after closing any progress bar.
    When stdout is closed early (``pcm3 ... | head``) the command ends quietly (exit 141).
    """
    from pcm3.errors import rank_specific_from_here

    rank_specific_from_here(False)  # a command starts with the checks every rank runs alike
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help and --version exit 0 as argparse does; a mistake returns 2
            if e.code in (0, None):
                raise
            return int(e.code) if isinstance(e.code, int) else 2
        _check_shared_options(args)
        with _termination_as_interrupt():  # `kill` or a closed terminal: clean up as after Ctrl-C
            code = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return _broken_pipe()
    except Pcm3Error as e:
        return _error(str(e))
    except OSError as e:
        if e.errno not in _USER_OS_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        return _error(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        _close_bars()
        print(f"interrupted{f' (rank {_rank()})' if int(os.environ.get('WORLD_SIZE', '1') or 1) > 1 else ''}",
              file=sys.stderr)
        return 130
    except RuntimeError as e:
        from pcm3.distributed import lost_peer

        if not lost_peer(e):
            raise
        _close_bars()  # not a user mistake, but no traceback either: say what happened and what is kept
        first = " ".join(str(e).split()).split(". ")[0][:160].rstrip(".")
        print(f"error: rank {_rank()}: another process of this torchrun job stopped ({first}); a pretraining run "
              "keeps its last finished epoch in checkpoint_last.pt: rerun with --resume", file=sys.stderr, flush=True)
        return 1
    return int(code or 0)


class _termination_as_interrupt:
    """SIGTERM and SIGHUP raise KeyboardInterrupt while a command runs (where their handler is
    the default one, in the main thread), so that `kill` or a closed terminal removes the
    command's temporary files and stops its background processes as Ctrl-C does; exit 130."""

    def __enter__(self):
        import signal
        import threading

        self.saved = {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in ("SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:
                self.saved[sig] = signal.signal(sig, raise_interrupt)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def _check_shared_options(args) -> None:
    """Options that several subcommands define the same way, checked once here:
    ``--workers`` (the ``prepare`` targets' reader processes) must be at least 1; ``--threads``
    and ``--workers`` at most :data:`pcm3.config.MAX_PROCESSES` (more crash or hang)."""
    from pcm3.config import MAX_PROCESSES

    workers = getattr(args, "workers", None) if args.command == "prepare" else None
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: must be at least 1 (1: read in this process), got {workers}")
    for option in ("threads", "workers"):
        value = getattr(args, option, None)
        if isinstance(value, int) and value > MAX_PROCESSES:
            raise ConfigError(f"--{option}: must be at most {MAX_PROCESSES}, got {value}")


def _close_bars() -> None:
    from pcm3.progress import close_all

    close_all()


def _rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _error(message: str) -> int:
    """Print the one-line user error and return 2. Under torchrun an error of the checks that
    every rank runs alike is printed by rank 0 alone; once work differs per rank
    (:func:`pcm3.errors.rank_specific`), every rank prints its own, naming its rank."""
    from pcm3.errors import rank_specific

    _close_bars()
    line = " ".join(str(message).split("\n")).strip()
    rank = _rank()
    if rank == 0 and not (rank_specific() and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1):
        print(f"error: {line}", file=sys.stderr, flush=True)
    elif rank_specific():
        print(f"error: rank {rank}: {line}", file=sys.stderr, flush=True)
    return 2


def _broken_pipe() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as Unix tools do."""
    try:  # point stdout at /dev/null so that the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return 128 + 13  # as a process ended by SIGPIPE reports itself to the shell


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
