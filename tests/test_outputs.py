"""pcm3.outputs: the rules for the folders pcm3 writes (library level; the CLI cases are in
tests/test_bad_input.py)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from pcm3.errors import ConfigError, DataError
from pcm3.outputs import (MARKER, check_output_dir, check_writable, create_run_dir, ensure_free_space, folder_kind,
                          foreign_entries, open_run_dir, output_dir, reserve, write_marker)


def _tree(root: Path) -> dict:
    """Every file (-> content) and folder (-> 'dir') below ``root``, hidden ones too."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


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
    before = _tree(dest)
    real = os.replace

    def flaky(a, b):
        if Path(b) == dest and ".old-" not in Path(a).name:  # the old folder went aside; the new one fails
            raise OSError(errno.EIO, "I/O error")
        return real(a, b)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(DataError, match="I/O error"):
        with output_dir(dest, "eval", overwrite=True) as tmp:
            (tmp / "v2").write_text("2")
    monkeypatch.setattr(os, "replace", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and _tree(dest) == before


def test_failed_fill_in_place_puts_the_old_entries_back(tmp_path, monkeypatch):
    """``--out .`` with --overwrite: the folder is the shell's, so it is filled in place; a
    failure half-way puts every old entry back."""
    dest = tmp_path / "out"
    with output_dir(dest, "eval") as tmp:
        (tmp / "v1").write_text("1")
    before = _tree(dest)
    monkeypatch.chdir(dest)
    real = os.replace

    def flaky(a, b):
        if Path(b).name == "v2":  # the old entries are moved aside, the new marker in, then this fails
            raise OSError(errno.EIO, "I/O error")
        return real(a, b)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(DataError, match="I/O error"):
        with output_dir(Path("."), "eval", overwrite=True) as tmp:
            (tmp / "v2").write_text("2")
    monkeypatch.setattr(os, "replace", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and _tree(dest) == before
    assert Path.cwd() == dest.resolve() and dest.exists()


@pytest.mark.parametrize("in_place", [False, True], ids=["swap", "fill_in_place"])
def test_ctrl_c_while_moving_the_new_folder_in_puts_the_old_one_back(tmp_path, monkeypatch, in_place):
    """Ctrl-C between the renames (old aside, new in) is no OSError: the old folder must still
    come back, and the destination not vanish into a hidden ``.out.old-*`` folder."""
    dest = tmp_path / "out"
    with output_dir(dest, "eval") as tmp:
        (tmp / "v1").write_text("1")
    before = _tree(dest)
    if in_place:
        monkeypatch.chdir(dest)
    real = os.replace

    def interrupted(a, b):
        if (Path(b).name == "v2") if in_place else (Path(b) == dest and ".old-" not in Path(a).name):
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with output_dir(Path(".") if in_place else dest, "eval", overwrite=True) as tmp:
            (tmp / "v2").write_text("2")
    monkeypatch.setattr(os, "replace", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and _tree(dest) == before


def test_overwrite_through_a_symlinked_out_replaces_the_folder_it_names(tmp_path):
    """``--out link`` where ``link`` is the user's symbolic link to a pcm3 folder: the folder is
    replaced, the user's link stays as it was, and nothing is left beside it."""
    real = tmp_path / "real"
    with output_dir(real, "eval") as tmp:
        (tmp / "v1").write_text("1")
    link = tmp_path / "link"
    link.symlink_to("real")
    with output_dir(link, "eval", overwrite=True) as tmp:
        (tmp / "v2").write_text("2")
    assert link.is_symlink() and os.readlink(link) == "real"
    assert sorted(p.name for p in real.iterdir()) == [MARKER, "v2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_a_recorded_prepared_folder_is_judged_by_its_record(tmp_path):
    """The prepared format's file names count as pcm3's only in folders without a record: in a
    recorded clips folder, a user's own ``intervals.csv`` or ``skipped.csv`` is the user's."""
    dest = tmp_path / "prep"
    with output_dir(dest, "prepared") as tmp:
        (tmp / "meta.json").write_text("{}")
        (tmp / "data.npy").write_text("x")
    (dest / "intervals.csv").write_text("my annotations")
    (dest / "skipped.csv").write_text("my list")
    before = _tree(tmp_path)
    with pytest.raises(DataError, match=r"holds intervals.csv and skipped.csv, which pcm3 did not write"):
        with output_dir(dest, "prepared", overwrite=True) as tmp:
            (tmp / "meta.json").write_text("{}")
    assert _tree(tmp_path) == before


def test_overwrite_swaps_the_folder_and_out_dot_keeps_it(tmp_path, monkeypatch):
    dest = tmp_path / "out"
    with output_dir(dest, "eval") as tmp:
        (tmp / "v1").write_text("1")
    inode = dest.stat().st_ino
    with output_dir(dest, "eval", overwrite=True) as tmp:   # elsewhere: a swap (a new folder)
        (tmp / "v2").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "v2"] and dest.stat().st_ino != inode
    inode = dest.stat().st_ino
    monkeypatch.chdir(dest)
    with output_dir(Path("."), "eval", overwrite=True) as tmp:  # the current folder: kept, filled in place
        (tmp / "v3").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "v3"] and dest.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_only_what_pcm3_wrote(tmp_path):
    dest = tmp_path / "out"
    with output_dir(dest, "eval") as tmp:
        (tmp / "v1").write_text("1")
        (tmp / "plots").mkdir()
        (tmp / "plots" / "a.png").write_text("a")
    record = json.loads((dest / MARKER).read_text())
    assert record["kind"] == "eval" and record["entries"] == ["plots/", "plots/a.png", "v1"]
    (dest / "my_notes.txt").write_text("keep")
    (dest / "my_results").mkdir()
    (dest / "my_results" / "r.txt").write_text("keep")
    (dest / "plots" / "mine.png").write_text("keep")  # inside a folder pcm3 wrote
    before = _tree(tmp_path)
    with pytest.raises(DataError) as err:
        check_output_dir(dest, "eval", overwrite=True)
    msg = str(err.value)
    assert "my_notes.txt" in msg and "my_results/" in msg and "plots/mine.png" in msg
    assert "did not write" in msg and "move them out" in msg and "nothing was changed" in msg and "\n" not in msg
    with pytest.raises(DataError, match="my_notes.txt"):
        with output_dir(dest, "eval", overwrite=True) as tmp:
            (tmp / "v2").write_text("2")
    assert _tree(tmp_path) == before  # nothing written, no temporary folder left
    for p in (dest / "my_notes.txt", dest / "my_results" / "r.txt", dest / "my_results", dest / "plots" / "mine.png"):
        p.unlink() if p.is_file() else p.rmdir()
    with output_dir(dest, "eval", overwrite=True) as tmp:
        (tmp / "v2").write_text("2")
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "v2"] and os.listdir(tmp_path) == ["out"]


def test_overwrite_refuses_a_file_edited_since_pcm3_wrote_it(tmp_path):
    """`pcm3 eval ... --overwrite` replaced a results.md the user had edited (report and embed
    refused the same, by checksum): the marker records the SHA-256 of editable files."""
    dest = tmp_path / "out"
    with output_dir(dest, "eval") as tmp:
        (tmp / "results.md").write_text("# results\n")
        (tmp / "scores.npy").write_bytes(b"\x93NUMPY")
    record = json.loads((dest / MARKER).read_text())
    assert set(record["sha256"]) == {"results.md"}   # editable files only
    (dest / "scores.npy").write_bytes(b"changed")        # not an editable file: pcm3's to replace
    (dest / "results.md").write_text("# results\nmy comment on the run\n")
    before = _tree(tmp_path)
    with pytest.raises(DataError) as err:
        with output_dir(dest, "eval", overwrite=True) as tmp:
            (tmp / "results.md").write_text("new")
    msg = str(err.value)
    assert "results.md, changed since pcm3 wrote it" in msg and "\n" not in msg
    assert _tree(tmp_path) == before and (dest / "results.md").read_text().endswith("my comment on the run\n")
    (dest / "results.md").write_text("# results\n")    # as written: replaced
    with output_dir(dest, "eval", overwrite=True) as tmp:
        (tmp / "results.md").write_text("new")
    assert (dest / "results.md").read_text() == "new"


def test_files_added_while_writing_are_kept(tmp_path):
    dest = tmp_path / "out"
    with output_dir(dest, "eval") as tmp:
        (tmp / "v1").write_text("1")
    with pytest.raises(DataError, match="late.txt"):
        with output_dir(dest, "eval", overwrite=True) as tmp:
            (tmp / "v2").write_text("2")
            (dest / "late.txt").write_text("the user's")  # while the (long) block runs
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "late.txt", "v1"] and os.listdir(tmp_path) == ["out"]


def test_folders_without_a_record_of_their_entries(tmp_path):
    """Written by an older pcm3: only the prepared format's own files count as pcm3's."""
    old = tmp_path / "old"
    old.mkdir()
    write_marker(old, "prepared")
    for name in ("meta.json", "data.npy", "skipped.csv"):
        (old / name).write_text("x")
    assert foreign_entries(old, "prepared") == ([], False)
    with output_dir(old, "prepared", overwrite=True) as tmp:
        (tmp / "meta.json").write_text("new")
    assert sorted(p.name for p in old.iterdir()) == [MARKER, "meta.json"] and (old / "meta.json").read_text() == "new"

    legacy = tmp_path / "legacy"  # no marker at all, recognised by meta.json
    legacy.mkdir()
    (legacy / "meta.json").write_text(json.dumps({"format": "pcm3-prepared"}))
    (legacy / "notes.txt").write_text("keep")
    (legacy / "extra").mkdir()
    with pytest.raises(DataError, match=r"older pcm3.*holds extra/ and notes.txt"):
        check_output_dir(legacy, "prepared", overwrite=True)

    ev = tmp_path / "eval"  # no fixed list of files: nothing counts as pcm3's
    ev.mkdir()
    write_marker(ev, "eval")
    (ev / "metrics.json").write_text("{}")
    with pytest.raises(DataError, match="older pcm3 that did not record its files.*metrics.json"):
        check_output_dir(ev, "eval", overwrite=True)
    assert sorted(p.name for p in ev.iterdir()) == [MARKER, "metrics.json"]


def test_out_dot_fills_the_current_folder_in_place(tmp_path, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    inode = os.stat(".").st_ino
    with output_dir(".", "eval") as tmp:
        (tmp / "metrics.json").write_text("1")
    assert os.stat(".").st_ino == inode and Path(os.getcwd()) == here  # the same folder, not a new one
    assert sorted(os.listdir(".")) == [MARKER, "metrics.json"] and os.listdir(tmp_path) == ["here"]
    with output_dir(".", "eval", overwrite=True) as tmp:
        (tmp / "metrics.json").write_text("2")
    assert os.stat(".").st_ino == inode and Path("metrics.json").read_text() == "2"
    assert os.listdir(tmp_path) == ["here"]


def test_prepare_into_the_current_empty_folder(tmp_path, monkeypatch, capsys):
    from pcm3.cli import main
    from pcm3.data.prepared import Prepared

    monkeypatch.chdir(tmp_path)
    inode = os.stat(".").st_ino
    assert main(["prepare", "synthetic", "--out", ".", "--samples-per-class", "1", "--quiet"]) == 0
    assert "error" not in capsys.readouterr().err
    assert os.stat(".").st_ino == inode and Prepared(".").validate() == [] and len(Prepared(tmp_path)) == 16


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


def test_a_virtual_file_system_is_named_not_called_full(tmp_path):
    """/proc has 0 bytes free because it holds no files at all: the refusal says so, not 'free space'."""
    from pcm3.outputs import _file_system_type, has_storage

    if _file_system_type("/proc") != "proc":
        pytest.skip("no /proc file system on this machine")
    if _file_system_type("/dev/shm") == "tmpfs":  # a RAM disk is storage, whatever its size reads
        assert has_storage("/dev/shm")
    with pytest.raises(DataError, match="holds no files") as e:
        ensure_free_space(Path("/proc"), 1 << 20, "two checkpoints of this model")
    assert "free disk space" not in str(e.value)
    ensure_free_space(tmp_path, 1 << 10, "a small file")  # a real disk passes
    with pytest.raises(DataError, match="--out: cannot write in /proc: its file system holds no files"):
        check_writable("/proc/pcm3-out")


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


# --------------------------------------------------------------------------- refusals name what they found

def test_a_refusal_counts_the_foreign_entries_it_does_not_name(tmp_path):
    """It named three of them and said nothing of the others: a user moved those three out and
    met the refusal again."""
    out = tmp_path / "out"
    with output_dir(out, "eval") as tmp:
        (tmp / "metrics.json").write_text("{}")
    for i in range(6):
        (out / f"note{i}.txt").write_text("mine")
    with pytest.raises(DataError, match=r"holds note0.txt, note1.txt, note2.txt and 3 more, which pcm3"):
        check_output_dir(out, "eval", overwrite=True)
    for i in range(3, 6):
        (out / f"note{i}.txt").unlink()
    with pytest.raises(DataError, match=r"holds note0.txt, note1.txt and note2.txt, which") as e:
        check_output_dir(out, "eval", overwrite=True)
    assert "more" not in str(e.value)
    assert foreign_entries(out, "eval") == (["note0.txt", "note1.txt", "note2.txt"], True)


# --------------------------------------------------------------------------- outputs inside pcm3 folders

def test_no_output_inside_a_pcm3_folder_written_whole(tmp_path):
    """A file or folder added to a prepared (or eval, report...) folder makes its ``--overwrite``
    refuse: no output goes there. Runs and demo folders grow and may hold outputs."""
    from pcm3.outputs import check_not_inside_pcm3_folder, check_out_file, enclosing_pcm3_folder

    with output_dir(tmp_path / "data", "prepared") as tmp:
        (tmp / "meta.json").write_text("{}")
    legacy = tmp_path / "legacy"  # a prepared folder from before the marker
    legacy.mkdir()
    (legacy / "meta.json").write_text(json.dumps({"format": "pcm3-prepared"}))
    run = create_run_dir(tmp_path / "run")
    for inside in (tmp_path / "data" / "x.gif", tmp_path / "data" / "sub" / "deeper" / "r.md", legacy / "f.npy"):
        with pytest.raises(DataError, match="pcm3 prepared folder"):
            check_not_inside_pcm3_folder(inside)
        with pytest.raises(DataError, match="lies inside"):
            check_out_file(inside, overwrite=True)
    with pytest.raises(DataError, match="pcm3 prepared folder"):
        check_output_dir(tmp_path / "data" / "ev", "eval")
    with pytest.raises(DataError, match="pcm3 prepared folder"):
        open_run_dir(tmp_path / "data" / "run", resume=False)
    link = tmp_path / "link"  # a symbolic link leading inside
    link.symlink_to(tmp_path / "data")
    with pytest.raises(DataError, match="pcm3 prepared folder"):
        check_out_file(link / "x.gif", overwrite=False)
    assert enclosing_pcm3_folder(run / "enc.pt") is None and enclosing_pcm3_folder(tmp_path / "data") is None
    check_out_file(run / "enc.pt", overwrite=False)
    check_output_dir(run / "ev", "eval")
    assert sorted(os.listdir(tmp_path / "data")) == [MARKER, "meta.json"]


# --------------------------------------------------------------------------- single files and their record

def test_recorded_output_proves_its_files(tmp_path):
    from pcm3.outputs import check_recorded_output, record_path, recorded_output, unproven_output

    files = [tmp_path / "f.npy", tmp_path / "f.labels.npy"]
    with recorded_output(files, "features") as tmps:
        assert [t.suffix for t in tmps] == [".npy", ".npy"] and all(t.parent == tmp_path for t in tmps)
        for t, text in zip(tmps, ("features", "labels")):
            t.write_text(text)
    assert sorted(os.listdir(tmp_path)) == [".f.npy.pcm3", "f.labels.npy", "f.npy"]
    assert record_path(files[0]) == tmp_path / ".f.npy.pcm3"
    assert unproven_output(files, "features") is None
    assert "records other files" in unproven_output(files, "animation")
    check_recorded_output(files, "features", overwrite=True, what="pcm3 embed")
    with pytest.raises(DataError, match="--overwrite"):
        check_recorded_output(files, "features", overwrite=False, what="pcm3 embed")
    files[1].write_text("labelz")  # same size, other bytes
    assert unproven_output(files, "features") == "f.labels.npy was changed since pcm3 wrote it"
    with pytest.raises(DataError, match="not written by pcm3 embed"):
        check_recorded_output(files, "features", overwrite=True, what="pcm3 embed")
    # a failing block changes nothing: the old files and record stay, no temporary is left
    before = _tree(tmp_path)
    with pytest.raises(OSError):
        with recorded_output(files, "features") as tmps:
            tmps[0].write_text("new")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _tree(tmp_path) == before


def test_a_file_without_a_record_is_never_replaced(tmp_path):
    from pcm3.outputs import check_recorded_output, unproven_output

    gif = tmp_path / "b.gif"
    gif.write_bytes(b"GIF89a the user's")
    assert "no record .b.gif.pcm3" in unproven_output([gif], "animation")
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"not written by pcm3 visualize \(no record .*remove it yourself"):
            check_recorded_output([gif], "animation", overwrite, what="pcm3 visualize")
    gif.unlink()
    (tmp_path / ".b.gif.pcm3").write_text('{"kind": "animation", "version": 1, "files": {}}\n')  # stale
    check_recorded_output([gif], "animation", False, what="pcm3 visualize")  # replaced when written
    (tmp_path / ".b.gif.pcm3").write_text("the user's\n")
    with pytest.raises(DataError, match="not a record pcm3 wrote"):
        check_recorded_output([gif], "animation", False, what="pcm3 visualize")


def _recorded_pair(folder):
    from pcm3.outputs import recorded_output

    files = [folder / "a.npy", folder / "a.labels.npy"]
    with recorded_output(files, "features") as tmps:
        for t, text in zip(tmps, (b"old features", b"old labels")):
            t.write_bytes(text)
    return files


def test_a_failed_replacement_keeps_the_old_set_and_its_record(tmp_path, monkeypatch):
    """A rename that fails (a full disk, Ctrl-C) half way through left half of the old pair and a
    record that no longer matched it: every later --overwrite refused."""
    from pcm3 import outputs
    from pcm3.outputs import record_path, recorded_output, unproven_output

    files = _recorded_pair(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real, calls = os.replace, {"n": 0}

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == 5:  # after the three old entries went aside and one new file went in
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", flaky)
    with pytest.raises(OSError):
        with recorded_output(files, "features") as tmps:
            for t in tmps:
                t.write_bytes(b"new")
    monkeypatch.setattr(outputs.os, "replace", real)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert unproven_output(files, "features") is None and record_path(files[0]).exists()


def test_a_file_that_appears_while_pcm3_works_is_not_replaced(tmp_path):
    from pcm3.errors import DataError
    from pcm3.outputs import recorded_output

    files = [tmp_path / "b.npy", tmp_path / "b.labels.npy"]
    with pytest.raises(DataError, match="changed while pcm3 worked"):
        with recorded_output(files, "features") as tmps:
            for t in tmps:
                t.write_bytes(b"new")
            files[0].write_bytes(b"the user's, written meanwhile")
    assert files[0].read_bytes() == b"the user's, written meanwhile" and not files[1].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npy"]
