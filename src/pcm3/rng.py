"""The process's global random states: read, set, and put back around a block.

Used by pretraining (checkpoints save and restore them; :func:`pcm3.pretrain.fit` leaves the
caller's as they were) and by the evaluations, which seed them for their own reproducible draws
and then put the caller's back (:func:`preserved_rng`).
"""

from __future__ import annotations

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def rng_state() -> dict:
    """Python's ``random``, NumPy's global generator, torch's CPU generator and, where CUDA is
    available, every CUDA device's (reading them initialises CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Set the states :func:`rng_state` read (CUDA's only where it was read and is available)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Put the global random states (:func:`rng_state`) back on exit, however the block ends: a
    library call may seed them inside for its own draws, and the caller's next draw is the one
    it would have had without the call."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
