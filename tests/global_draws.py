"""Helpers for tests of code that must leave the process's global random generators alone."""

import random

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def draws() -> tuple:
    """One draw from each global generator (what a caller would draw next)."""
    return random.random(), float(np.random.rand()), float(torch.rand(1))
