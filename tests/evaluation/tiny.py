"""Tiny inputs shared by the evaluation tests: the built-in data at its smallest, small encoders.

Prepared once per test session (cached by the session's temporary root).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pcm3.models import EncoderConfig

_CACHE: dict = {}

CLIP = 16


def tiny_data(tmp_path_factory) -> Path:
    """Built-in data, 4 subjects x 3 cameras x 1 repetition x 16 classes = 192 clips (xsub: 96/96)."""
    key = ("data", str(tmp_path_factory.getbasetemp()))
    if key not in _CACHE:
        from pcm3.data.synthetic import prepare_synthetic

        out = tmp_path_factory.mktemp("eval_tiny") / "data"
        prepare_synthetic(out, seed=0, num_subjects=4, repetitions=1, progress=False)
        _CACHE[key] = out
    return _CACHE[key]


def encoder_file(tmp_path_factory, stream: str = "joint", seed: int = 3) -> Path:
    """A randomly initialised small encoder written in the ``pcm3 export`` format."""
    key = ("enc", stream, seed, str(tmp_path_factory.getbasetemp()))
    if key not in _CACHE:
        from pcm3.evaluation.baselines import random_init_encoder
        from pcm3.evaluation.runner import save_encoder

        enc = random_init_encoder(EncoderConfig(hidden=16, layers=1), seed, stream=stream, clip_len=CLIP)
        path = tmp_path_factory.mktemp("enc") / f"{stream}.pt"
        save_encoder(enc, path, {})
        _CACHE[key] = path
    return _CACHE[key]


def fast(*extra: str) -> list:
    """``--set`` arguments that make a linear/occlusion run take a second."""
    out = []
    for item in ("epochs=4", "milestones=[2]", "crops=2", "min_len=8", *extra):
        out += ["--set", item]
    return out


def cli(*args: str) -> int:
    from pcm3.cli import main

    torch.set_num_threads(1)
    return main([*args, "--quiet", "--device", "cpu"])


class NoFeatureDim(torch.nn.Module):
    """A custom encoder without ``feature_dim`` or ``config`` (25 joints, 2 persons): clips or
    windows ``(N, 3, T, 25, 2)`` -> ``(N, 6)``, the mean over time through a linear layer."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3 * 25 * 2, 6)

    def forward(self, x):
        return self.lin(x.mean(dim=2).flatten(1))


def assert_seeded_and_leaves_the_global_generator(make_encoder, train) -> None:
    """``train(encoder)`` (returning a module) twice, each on a fresh ``make_encoder()``: the
    caller's next global torch draw is the one it would have been without the call, and both
    calls give the same weights (the ``seed`` argument alone sets them)."""
    states = []
    for _ in range(2):
        encoder = make_encoder()  # may seed torch itself
        torch.manual_seed(77)
        expected = torch.rand(3)
        torch.manual_seed(77)
        states.append(train(encoder).state_dict())
        assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
