"""Two CPU processes for the distributed tests, failing the test instead of hanging."""

import time

import pytest
import torch.multiprocessing as mp


def run_two_ranks(fn, args, seconds: float) -> None:
    """Run ``fn(rank, *args)`` in 2 spawned processes; fail if they are not done in ``seconds``."""
    ctx = mp.spawn(fn, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + seconds
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail(f"2 ranks did not finish within {seconds:g} s (a rank hangs)")
