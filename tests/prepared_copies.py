"""Shared helper of the tests: a copy of a prepared folder with bad values written into it."""

import shutil
from pathlib import Path

import numpy as np


def copy_with_values(src: Path, dst: Path, *where, value: float = np.nan) -> Path:
    """Copy the prepared folder ``src`` to ``dst`` and set ``data.npy[index] = value`` for each
    numpy index in ``where`` (e.g. ``np.s_[3, 0, 5, 0, 0]``); returns ``dst``."""
    shutil.copytree(src, dst)
    arr = np.load(dst / "data.npy", mmap_mode="r+")
    for index in where:
        arr[index] = value
    arr.flush()
    del arr
    return dst
