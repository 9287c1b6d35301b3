"""Argument types shared by the commands (no heavy imports: the parser is built at start-up)."""

from __future__ import annotations

import argparse

#: the largest seed (torch's generators take a 64-bit integer)
MAX_SEED = 2**63 - 1


def seed_arg(text: str) -> int:
    """``type=`` of a command's ``--seed``: an integer from 0 to :data:`MAX_SEED`, else
    argparse's one-line error (a larger one overflows torch's generators in a traceback)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..2^63 - 1")
    return value


def set_threads(threads) -> None:
    """``--threads N`` of eval, report and benchmark: torch's CPU threads, at least 1 (None: left
    as it is); a one-line ConfigError otherwise (0 or -5 became 1 silently)."""
    if threads is None:
        return
    from pcm3.errors import ConfigError

    if threads < 1:
        raise ConfigError(f"--threads: must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
