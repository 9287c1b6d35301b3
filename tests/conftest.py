"""Shared fixtures: the real samples in ../shared/data and a small built-in data set."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$PCM3_SHARED_DATA`` or ``../shared/data`` beside the repo, if it exists."""
    env = os.environ.get("PCM3_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real samples not available: ../shared/data (or $PCM3_SHARED_DATA) does not exist")
    return path


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """A small built-in data set (a few samples per class), prepared once per test session."""
    from pcm3.data.synthetic import prepare_synthetic

    out = tmp_path_factory.mktemp("synthetic") / "data"
    prepare_synthetic(out, seed=0, samples_per_class=24, progress=False)
    return out


@pytest.fixture(scope="session")
def resplit():
    """``resplit(src, dst, edit)``: a prepared folder ``dst`` with ``src``'s files (linked) and
    ``splits.json`` as ``edit(splits)`` returns it (a hand-edited split file, without copying data)."""
    import json

    def make(src: Path, dst: Path, edit) -> Path:
        dst.mkdir()
        for f in Path(src).iterdir():
            if f.name != "splits.json":
                (dst / f.name).symlink_to(f)
        (dst / "splits.json").write_text(json.dumps(edit(json.loads((Path(src) / "splits.json").read_text()))))
        return dst

    return make


@pytest.fixture(scope="session")
def repo_script():
    """``repo_script(folder, name)``: the module ``name`` of a script folder of the repository
    (``benchmarks``, ``tools``), imported with that folder on ``sys.path`` for the session."""
    added = []

    def load(folder: str, name: str):
        path = str(REPO / folder)
        if path not in sys.path:
            sys.path.insert(0, path)
            added.append(path)
        return importlib.import_module(name)

    yield load
    for path in added:
        sys.path.remove(path)


def pytest_configure(config):
    # One intra-op thread: on a 2-core machine shared with other work, GRU kernels with two
    # OpenMP threads were 2-4x slower; results do not depend on it.
    import torch

    torch.set_num_threads(1)
