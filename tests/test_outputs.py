"""pcm3.outputs: the rules for the folders pcm3 writes (library level; the CLI cases are in
tests/test_bad_input.py)."""

from __future__ import annotations

import errno
import os

import pytest

from pcm3.errors import ConfigError, DataError
from pcm3.outputs import (MARKER, check_output_dir, check_writable, create_run_dir, ensure_free_space, folder_kind,
                          open_run_dir, output_dir, reserve)


def test_new_empty_and_foreign_folders(tmp_path):
    with output_dir(tmp_path / "new", "eval") as tmp:
        (tmp / "a.txt").write_text("a")
    assert folder_kind(tmp_path / "new") == "eval" and (tmp_path / "new" / "a.txt").exists()
    (tmp_path / "empty").mkdir()
    with output_dir(tmp_path / "empty", "eval") as tmp:
        (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == [MARKER, "b.txt"]
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "x").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="did not create"):
            check_output_dir(tmp_path / "theirs", "eval", overwrite=overwrite)
    with pytest.raises(DataError, match="not a report folder"):
        check_output_dir(tmp_path / "new", "report", overwrite=True)
    with pytest.raises(DataError, match="--overwrite"):
        check_output_dir(tmp_path / "new", "eval")


def test_failure_leaves_nothing_and_overwrite_waits_for_completion(tmp_path):
    dest = tmp_path / "out"
    with output_dir(dest, "eval") as tmp:
        (tmp / "v1").write_text("1")
    with pytest.raises(RuntimeError):
        with output_dir(dest, "eval", overwrite=True) as tmp:
            (tmp / "v2").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder
    assert (dest / "v1").exists() and not (dest / "v2").exists()
    with pytest.raises(DataError, match="disk full"):
        with output_dir(dest, "eval", overwrite=True) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (dest / "v1").exists()


def test_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    dest = tmp_path / "out"
    with output_dir(dest, "eval") as tmp:
        (tmp / "v1").write_text("1")
    real = os.replace
    calls = []

    def flaky(a, b):
        calls.append((a, b))
        if len(calls) == 2:  # the new folder cannot be moved into place
            raise OSError(errno.EIO, "I/O error")
        return real(a, b)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(DataError):
        with output_dir(dest, "eval", overwrite=True) as tmp:
            (tmp / "v2").write_text("2")
    monkeypatch.setattr(os, "replace", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (dest / "v1").exists()


def test_protected_inputs(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for out in (raw, raw / "inside", tmp_path):
        with pytest.raises(DataError, match="input"):
            check_output_dir(out, "prepared", protect=[raw])


def test_writable_and_free_space(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="which is a file"):
        check_writable(tmp_path / "f" / "a" / "b")
    with pytest.raises(DataError, match="which is a file"):
        check_writable(tmp_path / "f" / "x.pt", file=True)
    check_writable(tmp_path / "new" / "deeper")
    monkeypatch.setattr("pcm3.outputs.free_bytes", lambda folder: 1 << 20)
    with pytest.raises(DataError, match="not enough free disk space"):
        ensure_free_space(tmp_path, 1 << 30, "data.npy")


def test_reserve_allocates(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"")
    reserve(path, 1 << 16)
    assert path.stat().st_size == 1 << 16


def test_run_folders(tmp_path):
    run = open_run_dir(tmp_path / "run", resume=False)
    create_run_dir(run)
    assert folder_kind(run) == "run"
    open_run_dir(run, resume=False)  # a run folder in which no epoch finished may start again
    (run / "checkpoint_last.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--resume"):
        open_run_dir(run, resume=False)
    assert open_run_dir(run, resume=True) == run
    with pytest.raises(DataError, match="no such run folder"):
        open_run_dir(tmp_path / "nope", resume=True)
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="did not create"):
        open_run_dir(tmp_path / "theirs", resume=False)
    with pytest.raises(DataError, match="not a pcm3 run folder"):
        open_run_dir(tmp_path / "theirs", resume=True)
    with pytest.raises(DataError, match="input"):
        open_run_dir(tmp_path / "data" / "run", resume=False, protect=[tmp_path / "data"])


def test_pretrain_without_config_says_which_and_warns_for_cpu(tmp_path, capsys):
    from pcm3.checks import size_warning
    from pcm3.cli import main

    assert main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    out, err = capsys.readouterr()
    assert "no --config" in out and "'pcm3'" in out
    assert len(err.strip().splitlines()) == 1 and "missing" in err
    import torch

    assert size_warning(600_000, torch.device("cpu")) is None
    assert "parameters on a CPU" in size_warning(102_000_000, torch.device("cpu"))
    assert size_warning(102_000_000, torch.device("cuda")) is None
