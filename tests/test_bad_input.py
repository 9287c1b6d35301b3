"""Wrong inputs through the command line: one line, exit 2, nothing lost, nothing left behind.

Every case asserts: exit code 2; exactly one line on stderr, ``error: ...``, naming the file,
folder or key at fault; no traceback; and that the folder the command ran in (holding its
inputs) is byte-for-byte what it was: no new, changed or removed files, no temporary folders.
Most cases call ``pcm3.cli.main`` in-process (fast); a few run the real ``python -m pcm3.cli``
in a subprocess for the exit code, a closed pipe and the headline data-loss case.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pcm3.cli import main
from pcm3.data.prepared import Prepared, PreparedWriter
from tests.prepared_copies import copy_with_values

T, V, M = 32, 25, 2
TINY = ["model.encoder.hidden=16", "model.encoder.layers=2", "model.proj_dim=16", "model.queue_size=32",
        "model.decoder_hidden=16", "model.prompt_dim=4", "views.out_len=16", "views.min_len=16",
        "train.batch_size=16", "data.num_workers=0", "train.save_every=0", "train.epochs=1",
        "optim.milestones=[100]"]
SETS = [a for s in TINY for a in ("--set", s)]


# --------------------------------------------------------------------------- helpers

def make_prepared(out: Path, *, n: int = 40, layout: str = "ntu25", joints: int = V, persons: int = M,
                  kind: str = "clips", seed: int = 0) -> Path:
    """A tiny prepared folder: smooth random motion, 4 classes, xsub = 32 train / 8 test."""
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c", "d"]
    if kind == "clips":
        shape = (n, 3, T, joints, persons)
    else:
        shape = (n, 3, joints, persons)
    with PreparedWriter(out, kind=kind, shape=shape, dataset="tiny", layout=layout, class_names=names) as w:
        for i in range(n):
            length = int(rng.integers(20, T + 1))
            x = np.cumsum(rng.normal(0, 0.02, (3, length, joints, persons)), axis=1).astype(np.float32)
            if kind == "clips":
                clip = np.zeros((3, T, joints, persons), np.float32)
                clip[:, :length] = x
                w.set(i, clip, label=i % 4, length=length, name=f"s{i:03d}")
            else:
                w.append(x, name=f"v{i:03d}", intervals=[(i % 4, 0, length, 1.0)])
        w.set_splits({"xsub": {"train": list(range(32)), "test": list(range(32, n))}})
    return out


def tree(root: Path) -> dict:
    """Every file and folder under ``root`` (hidden ones too) -> content hash / 'dir'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def fails(capsys, argv, *needles, root: Path) -> str:
    """Run ``pcm3 argv`` in-process; assert the one-line error and an untouched ``root``."""
    before = tree(root)
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    assert tree(root) == before, "files changed, appeared or disappeared"
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("bad_input") / "data")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, data) -> Path:
    """An encoder exported from a one-epoch tiny run."""
    root = tmp_path_factory.mktemp("bad_input_run")
    assert main(["pretrain", "--data", str(data), "--out", str(root / "run"), "--quiet", *SETS]) == 0
    assert main(["export", str(root / "run"), "--out", str(root / "enc.pt")]) == 0
    return root / "enc.pt"


@pytest.fixture
def box(tmp_path, monkeypatch) -> Path:
    """The folder a case runs in (its cwd), holding a user's files that must survive."""
    (tmp_path / "thesis.tex").write_text("\\documentclass{article} ten years of work\n")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a01_s01_e01_skeleton3D.txt").write_text("0.1 0.2 0.3 1\n" * 19 + "0.1 0.2 zz 1\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------- prepare: data loss

RAW_TARGETS = [["msr3d", "--raw"], ["nwucla", "--raw"], ["ntu60", "--raw"], ["pku1", "--raw"], ["convert", "--src"]]


@pytest.mark.parametrize("target", RAW_TARGETS, ids=lambda t: t[0])
def test_out_equal_to_or_inside_raw_is_refused(box, capsys, target):
    name, flag = target
    raw = box / "raw"
    fails(capsys, ["prepare", name, flag, raw, "--out", raw], "raw", "input", root=box)
    fails(capsys, ["prepare", name, flag, raw, "--out", raw / "prepared"], "input", root=box)
    fails(capsys, ["prepare", name, flag, raw, "--out", "."], root=box)  # wipes cwd today


@pytest.mark.parametrize("target", RAW_TARGETS, ids=lambda t: t[0])
def test_out_a_symlink_to_no_folder_is_refused_first(box, capsys, target):
    """``--out loop`` where ``loop`` is a symbolic link to itself: the check against the inputs
    met a RuntimeError (pathlib's "Symlink loop") and printed a traceback; a dangling link was
    refused only after all the data had been read."""
    name, flag = target
    (box / "links").mkdir()
    loop = box / "links" / "loop"
    loop.symlink_to("loop")
    for link in (loop, box / "links" / "dangling"):  # refused before anything is read, as a link to no folder
        if link.name == "dangling":
            link.symlink_to("nowhere")
        fails(capsys, ["prepare", name, flag, box / "raw", "--out", link], link.name, "symbolic link",
              root=box / "raw")  # tree() cannot walk a loop
    assert sorted(os.listdir(box / "links")) == ["dangling", "loop"] and os.readlink(loop) == "loop"


@pytest.mark.parametrize("target", RAW_TARGETS + [["synthetic", None]], ids=lambda t: t[0])
def test_foreign_nonempty_out_is_refused_even_with_overwrite(box, capsys, target):
    name, flag = target
    theirs = box / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("keep me")
    src = [flag, box / "raw"] if flag else []
    for extra in ([], ["--overwrite"]):
        msg = fails(capsys, ["prepare", name, *src, "--out", theirs, *extra], "theirs", "did not create", root=box)
        assert "nothing was changed" in msg


def test_overwrite_replaces_a_prepared_folder_only_when_the_new_one_is_complete(box, capsys, data):
    old = box / "old"
    shutil.copytree(data, old)
    # an existing prepared folder needs --overwrite
    fails(capsys, ["prepare", "msr3d", "--raw", box / "raw", "--out", old], "--overwrite", root=box)
    # with --overwrite but a bad raw file, the old folder stays as it was
    fails(capsys, ["prepare", "msr3d", "--raw", box / "raw", "--out", old, "--overwrite", "--all", "--quiet"],
          "a01_s01_e01_skeleton3D.txt", root=box)
    assert Prepared(old).summary()["num_samples"] == 40


def test_overwrite_of_a_prepared_folder_works(tmp_path, capsys):
    out = tmp_path / "syn"
    argv = ["prepare", "synthetic", "--out", str(out), "--samples-per-class", "2", "--quiet"]
    assert main(argv) == 0
    first = tree(out)
    assert main(argv + ["--seed", "1", "--overwrite"]) == 0
    assert tree(out) != first and json.loads((out / ".pcm3").read_text())["kind"] == "prepared"
    assert [p.name for p in tmp_path.iterdir()] == ["syn"]  # no temporary or old folder left
    capsys.readouterr()


def test_disk_full_before_writing(box, capsys, monkeypatch):
    monkeypatch.setattr("pcm3.outputs.free_bytes", lambda folder: 10_000)
    fails(capsys, ["prepare", "synthetic", "--out", box / "syn", "--samples-per-class", "2", "--quiet"],
          "syn", "not enough free disk space", root=box)


def test_disk_full_while_writing_removes_the_temporary_folder(box, capsys, monkeypatch):
    calls = []

    def full(self, i, x, **kw):
        calls.append(i)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return PreparedWriter._real_set(self, i, x, **kw)

    monkeypatch.setattr(PreparedWriter, "_real_set", PreparedWriter.set, raising=False)
    monkeypatch.setattr(PreparedWriter, "set", full)
    fails(capsys, ["prepare", "synthetic", "--out", box / "syn", "--samples-per-class", "2", "--quiet"],
          "syn", "disk full", root=box)


def test_output_under_a_file(box, capsys, data):
    fails(capsys, ["prepare", "synthetic", "--out", box / "thesis.tex" / "out", "--quiet"], "thesis.tex", root=box)
    fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", box / "thesis.tex" / "run"],
          "thesis.tex", root=box)
    fails(capsys, ["demo", "--out", box / "thesis.tex" / "demo", "--quiet"], "thesis.tex", root=box)


def test_output_in_a_read_only_folder(box, capsys, request):
    ro = box / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only folder does not stop root (see test_output_under_a_file)")
        data, encoder = request.getfixturevalue("data"), request.getfixturevalue("encoder")
        fails(capsys, ["prepare", "synthetic", "--out", ro / "syn", "--quiet"], "ro", root=box)
        fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", ro / "run"], "ro", root=box)
        fails(capsys, ["export", encoder.parent / "run", "--out", ro / "e.pt"], "ro", root=box)
        fails(capsys, ["embed", encoder, "--data", data, "--out", ro / "f.npy"], "ro", root=box)
        fails(capsys, ["demo", "--out", ro / "demo", "--quiet"], "ro", root=box)
    finally:
        ro.chmod(0o755)


# --------------------------------------------------------------------------- config values

@pytest.mark.parametrize("item, key", [
    ("train.batch_size=0", "train.batch_size"), ("train.batch_size=-4", "train.batch_size"),
    ("optim.lr=-0.1", "optim.lr"), ("train.epochs=0", "train.epochs"), ("train.epochs=-1", "train.epochs"),
    ("data.stream=velocity", "data.stream"), ("x=[1,", "x=[1,"), ("optim.lr=1e-3x", "optim.lr"),
])
def test_bad_config_values_are_refused_before_anything_is_written(box, capsys, data, item, key):
    msg = fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", box / "run", "--set", item],
                key, root=box)
    assert msg.startswith(f"error: --set {item}")


def test_bad_value_in_a_file_names_the_file(box, capsys, data):
    cfg = box / "mine.yaml"
    cfg.write_text("base: demo.yaml\noptim:\n  lr: -1e-3\n")
    fails(capsys, ["pretrain", "--config", cfg, "--data", data, "--out", box / "run"], "mine.yaml", "optim.lr",
          root=box)


def test_scientific_notation_is_accepted(tmp_path, capsys, data):
    cfg = tmp_path / "sci.yaml"
    cfg.write_text("optim:\n  lr: 1e-3\n  weight_decay: 1e-4\n")
    assert main(["pretrain", "--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run"),
                 "--quiet", *SETS, "--set", "optim.lr=5e-2"]) == 0
    assert "lr: 0.05" in (tmp_path / "run" / "config.yaml").read_text()
    capsys.readouterr()


def test_config_file_that_is_not_text(box, capsys, data):
    cfg = box / "badbin.yaml"
    cfg.write_bytes(bytes(range(128, 256)) * 2 + b"\x00\xff")  # like `head -c 300 /dev/urandom`
    fails(capsys, ["pretrain", "--config", cfg, "--data", data, "--out", box / "run"], "badbin.yaml", "not a text file",
          root=box)


@pytest.mark.parametrize("items, blamed", [
    (["model.momentum=0.99", "model.momentum_schedule=bogus"], "model.momentum_schedule=bogus"),
    (["train.epochs=2", "train.epochs=abc"], "train.epochs=abc"),
])
def test_set_errors_name_the_override_at_fault(box, capsys, data, items, blamed):
    sets = [a for item in items for a in ("--set", item)]
    msg = fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", box / "run", *sets], root=box)
    assert msg.startswith(f"error: --set {blamed}: "), msg


def test_threads_option_is_named_as_typed(box, capsys, data):
    msg = fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", box / "run", "--threads", "-1"],
                "--threads", "-1", root=box)
    assert "--set" not in msg and "train.threads" not in msg


def test_data_path_is_taken_as_typed(box, capsys):
    """``--data 2024.10`` is the folder 2024.10, not the number 2024.1 (nor YAML of any kind)."""
    for name in ("2024.10", "[draft"):
        msg = fails(capsys, ["pretrain", "--config", "demo", "--data", name, "--out", box / "run"], name,
                    "no such folder", root=box)
        assert "--set" not in msg


# --------------------------------------------------------------------------- prepared folders


def _meta_list(root):
    (root / "meta.json").write_text("[1, 2]")
    return "meta.json", "JSON object"


def _meta_without_kind(root):
    meta = json.loads((root / "meta.json").read_text())
    del meta["kind"]
    (root / "meta.json").write_text(json.dumps(meta))
    return "meta.json", "'kind'"


def _meta_version_string(root):
    meta = json.loads((root / "meta.json").read_text())
    meta["version"] = "1"
    (root / "meta.json").write_text(json.dumps(meta))
    return "meta.json", "'version'"


def _splits_names(root):
    (root / "splits.json").write_text(json.dumps({"xsub": {"train": ["a"], "test": [1]}}))
    return "splits.json", "'a'"


def _splits_half_index(root):
    (root / "splits.json").write_text(json.dumps({"xsub": {"train": [0.5, 1, 2], "test": [3]}}))
    return "splits.json", "0.5"


@pytest.mark.parametrize("case", [_meta_list, _meta_without_kind, _meta_version_string, _splits_names,
                                  _splits_half_index], ids=lambda f: f.__name__.strip("_"))
def test_malformed_prepared_folder(box, capsys, data, case):
    bad = box / "bad"
    shutil.copytree(data, bad)
    name, needle = case(bad)
    fails(capsys, ["info", bad], f"{name}:", needle, root=box)
    fails(capsys, ["pretrain", "--config", "demo", "--data", bad, "--out", box / "run", *SETS], f"{name}:", needle,
          root=box)


def test_train_test_overlap_fails_validation(box, capsys, data):
    bad = box / "overlap"
    shutil.copytree(data, bad)
    (bad / "splits.json").write_text(json.dumps({"xsub": {"train": list(range(32)), "test": [5, 32, 33]}}))
    fails(capsys, ["info", bad], "splits.json", "xsub", "1 sample in both train and test", root=box)
    fails(capsys, ["info", bad, "--no-scan"], "splits.json", "1 sample in both train and test", root=box)
    # pretraining refuses it too (a hand-edited file), before the run folder is written
    fails(capsys, ["pretrain", "--config", "demo", "--data", bad, "--out", box / "run", *SETS], "splits.json",
          "1 sample in both train and test", root=box)
    assert not (box / "run").exists()
    # an evaluation refuses it before reading anything (it would test on training samples)
    fails(capsys, ["eval", "knn", "--raw-input", "--data", bad, "--benchmark", "xsub", "--out", box / "ev"],
          "splits.json", "1 sample in both train and test", root=box)
    assert not (box / "ev").exists()


def test_info_checks_the_sample_index_and_lengths(box, capsys, data):
    """A damaged samples.csv (visualize then finds no sample) or a length beyond the clips
    fail `pcm3 info`, with or without the scan."""
    rows = box / "rows"
    shutil.copytree(data, rows)
    (rows / "samples.csv").write_text("xx\n")
    for scan in ([], ["--no-scan"]):
        fails(capsys, ["info", rows, *scan], "samples.csv: 0 rows, expected one per sample (40)", root=box)
    long = box / "long"
    shutil.copytree(data, long)
    lengths = np.load(long / "lengths.npy")
    lengths[3] = 10 * T
    np.save(long / "lengths.npy", lengths)
    for scan in ([], ["--no-scan"]):
        fails(capsys, ["info", long, *scan], "lengths.npy: 1 samples longer than the clips' 32 frames", root=box)


# --------------------------------------------------------------------------- prepare: options


@pytest.mark.parametrize("argv, needle", [
    (["--seed", "-1"], "--seed"), (["--subjects", "0"], "--subjects"), (["--subjects", "1"], "--subjects"),
    (["--untrimmed", "--subjects", "0"], "--subjects"), (["--untrimmed", "--seed", "-2"], "--seed"),
])
def test_synthetic_options(box, capsys, argv, needle):
    fails(capsys, ["prepare", "synthetic", "--out", box / "syn", "--quiet", *argv], needle, root=box)


@pytest.mark.parametrize("target", ["ntu60", "pku1", "msr3d", "nwucla"])
@pytest.mark.parametrize("workers", ["0", "-3"])
def test_workers_must_be_positive(box, capsys, target, workers):
    fails(capsys, ["prepare", target, "--raw", box / "raw", "--out", box / "out", "--workers", workers], "--workers",
          workers, root=box)


def test_missing_pku_split_file_is_named(box, capsys):
    fails(capsys, ["prepare", "pku1", "--raw", box / "raw", "--out", box / "out", "--split-file", "foo.txt"],
          "foo.txt: no such split file", root=box)


# --------------------------------------------------------------------------- pretrain: data and run folder

def test_untrimmed_folder_needs_trimmed_clips(box, capsys):
    seq = make_prepared(box / "videos", kind="sequences")
    fails(capsys, ["pretrain", "--config", "demo", "--data", seq, "--out", box / "run"], "videos", "--trimmed",
          root=box)


def test_label_outside_the_classes(box, capsys, data):
    bad = box / "badlabel"
    shutil.copytree(data, bad)
    labels = np.load(bad / "labels.npy")
    labels[5] = 7
    np.save(bad / "labels.npy", labels)
    fails(capsys, ["pretrain", "--config", "demo", "--data", bad, "--out", box / "run", *SETS],
          "labels.npy", "sample 5", root=box)


def test_nan_in_a_clip_is_named(box, capsys, data):
    bad = copy_with_values(data, box / "nan", np.s_[3, 0, 5, 0, 0])
    fails(capsys, ["pretrain", "--config", "demo", "--data", bad, "--out", box / "run", *SETS],
          "data.npy", "sample 3 (s003)", root=box)


def test_nan_in_a_clip_named_by_the_loader_workers(tmp_path, capsys, data, monkeypatch):
    """When the split is too large to scan first, the DataLoader (with workers) names the sample."""
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.errors import DataError

    bad = copy_with_values(data, tmp_path / "nan", np.s_[3, 0, 5, 0, 0], value=np.inf)
    loader = torch.utils.data.DataLoader(SkeletonDataset(bad, "xsub", "train"), batch_size=8, num_workers=1)
    with pytest.raises(DataError) as e:
        list(loader)
    assert "\n" not in str(e.value) and "sample 3 (s003)" in str(e.value) and "data.npy" in str(e.value)


def test_run_folder_rules(box, capsys, data, encoder):
    run = encoder.parent / "run"  # a finished one-epoch run
    fails(capsys, ["pretrain", "--data", data, "--out", run, "--resume", *SETS], "finished", "train.epochs",
          root=box)
    fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", run, *SETS], "--resume", root=box)
    fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", box / "raw", "--resume"],
          "not a pcm3 run folder", root=box)
    fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", box / "raw"], "did not create", root=box)
    fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", data / "run"], "input", root=box)


def test_disk_full_before_pretraining(box, capsys, data, monkeypatch):
    monkeypatch.setattr("pcm3.outputs.free_bytes", lambda folder: 10_000)
    fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", box / "run", *SETS],
          "run", "not enough free disk space", root=box)


def test_disk_full_while_checkpointing(tmp_path, capsys, data, monkeypatch):
    real_save = torch.save

    def full(obj, f, *a, **kw):
        if str(f).endswith(".tmp"):
            Path(f).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full)
    run = tmp_path / "run"
    assert main(["pretrain", "--config", "demo", "--data", str(data), "--out", str(run), "--quiet", *SETS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint_last.pt" in err[0] and "disk full" in err[0]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".checkpoint")]


# --------------------------------------------------------------------------- export / embed

def test_export_and_embed_outputs(box, capsys, data, encoder):
    run = encoder.parent / "run"
    (box / "folder").mkdir()
    fails(capsys, ["export", run, "--out", box / "folder"], "folder", "is a folder", root=box)
    fails(capsys, ["embed", encoder, "--data", data, "--out", box / "folder"], "folder", root=box)
    # a file pcm3 did not write is never replaced, --overwrite or not
    mine = box / "mine.npy"
    np.save(mine, np.zeros((4, 3), np.float32))  # the user's own features, no labels file beside them
    for extra in ([], ["--overwrite"]):
        fails(capsys, ["export", run, "--out", box / "thesis.tex", *extra], "thesis.tex", "not written by pcm3 export",
              root=box)
        fails(capsys, ["embed", encoder, "--data", data, "--out", box / "thesis.tex", *extra], "not written by pcm3",
              root=box)
        fails(capsys, ["embed", encoder, "--data", data, "--out", mine, *extra], "mine.npy", "not written by pcm3",
              root=box)
        fails(capsys, ["import-release", encoder, "--out", box / "thesis.tex", *extra], "not written by pcm3",
              root=box)
    # what pcm3 wrote is replaced with --overwrite only
    assert main(["export", str(run), "--out", str(box / "enc.pt")]) == 0
    fails(capsys, ["export", run, "--out", box / "enc.pt"], "enc.pt", "--overwrite", root=box)
    assert main(["export", str(run), "--out", str(box / "enc.pt"), "--overwrite"]) == 0
    feats = ["embed", str(encoder), "--data", str(data), "--benchmark", "xsub", "--out", str(box / "f.npy")]
    assert main(feats) == 0
    fails(capsys, feats, "f.npy", "--overwrite", root=box)
    (box / "f.labels.npy").unlink()  # half a pair is not what embed writes
    fails(capsys, [*feats, "--overwrite"], "not written by pcm3 embed", root=box)


def test_export_never_replaces_a_file_of_the_run_it_reads(box, capsys, encoder):
    """``pcm3 export run --out run/config.yaml --overwrite`` replaced the run's config with the
    encoder; a file of the input run is never the output (a new file beside them is fine)."""
    run = box / "run"
    shutil.copytree(encoder.parent / "run", run)
    for name in ("config.yaml", "metrics.csv"):
        fails(capsys, ["export", run, "--out", run / name, "--overwrite"], name, "input", root=box)


def test_embed_never_writes_over_its_inputs(box, capsys, data, encoder):
    """``--overwrite`` replaces an earlier output, never the encoder being read or a file of the
    prepared folder being read (``--out data/data.npy`` destroyed the data set)."""
    enc = box / "enc.pt"
    shutil.copy(encoder, enc)
    mine = box / "data"
    shutil.copytree(data, mine)
    fails(capsys, ["embed", enc, "--data", mine, "--out", enc, "--overwrite"], "enc.pt", "input", root=box)
    odd = box / "f.labels.npy"  # an encoder whose name is that of --out f.npy's labels file
    shutil.copy(encoder, odd)
    fails(capsys, ["embed", odd, "--data", mine, "--out", box / "f.npy", "--overwrite"], "f.labels.npy", "input",
          root=box)
    fails(capsys, ["embed", enc, "--data", mine, "--out", mine / "data.npy", "--overwrite"], "data.npy", "input",
          root=box)
    fails(capsys, ["embed", enc, "--data", mine, "--out", mine / "feats.npy"], "input", root=box)


def test_embed_with_an_encoder_for_another_layout(box, capsys, encoder):
    other = make_prepared(box / "msr", layout="msr20", joints=20, persons=1)
    fails(capsys, ["embed", encoder, "--data", other, "--out", box / "f.npy"], "enc.pt", "msr20", root=box)


def test_embed_refuses_untrimmed_and_nan(box, capsys, data, encoder):
    seq = make_prepared(box / "videos", kind="sequences")
    fails(capsys, ["embed", encoder, "--data", seq, "--out", box / "f.npy"], "--trimmed", root=box)
    bad = copy_with_values(data, box / "nan", np.s_[35, 0, 5, 0, 0])
    fails(capsys, ["embed", encoder, "--data", bad, "--benchmark", "xsub", "--out", box / "f.npy"],
          "sample 35 (s035)", root=box)


def test_embed_refuses_non_finite_features(box, capsys, data, encoder):
    payload = torch.load(encoder, weights_only=False)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.dim() == 2)
    payload["state_dict"][key] = torch.full_like(payload["state_dict"][key], float("nan"))
    torch.save(payload, box / "broken.pt")
    fails(capsys, ["embed", box / "broken.pt", "--data", data, "--out", box / "f.npy"], "broken.pt", "not finite",
          root=box)


def test_incomplete_encoder_file(box, capsys, data, encoder):
    payload = torch.load(encoder, weights_only=False)
    del payload["state_dict"]
    torch.save(payload, box / "partial.pt")
    fails(capsys, ["embed", box / "partial.pt", "--data", data, "--out", box / "f.npy"], "partial.pt",
          "state_dict", root=box)


# --------------------------------------------------------------------------- evaluations: the data they read

RECOGNITION = ["linear", "knn", "semi", "occlusion"]
QUICK = {"linear": ["epochs=1", "crops=0"], "knn": [], "semi": ["epochs=1", "seeds=1", "fractions=[0.5]"],
         "occlusion": ["epochs=1", "crops=1"], "motion": ["observed=10", "predicted=5", "epochs=1"]}


def _copy(data: Path, to: Path, *, nan=(), labels=None, splits=None) -> Path:
    """A copy of ``data`` with NaN in clips ``nan``, ``labels`` {sample: label}, or ``splits``."""
    copy_with_values(data, to, *(np.s_[j, 0, 5, 0, 0] for j in nan))
    if labels:
        lab = np.load(to / "labels.npy")
        for j, value in labels.items():
            lab[j] = value
        np.save(to / "labels.npy", lab)
    if splits is not None:
        (to / "splits.json").write_text(json.dumps(splits))
    return to


def _eval(task: str, data: Path, out: Path, encoder: Path, quick: bool = False) -> list:
    """``pcm3 eval TASK`` (the raw-input row; motion, which has none, and ``pcm3 benchmark``
    with the encoder) on ``data``'s xsub."""
    sets = [a for s in QUICK.get(task, []) for a in ("--set", s)] if quick else []
    if task == "benchmark":
        return ["benchmark", "--encoders", encoder, "--data", data, "--benchmark", "xsub", "--out", out,
                "--device", "cpu", "--quiet"]
    row = ["--encoder", encoder] if task == "motion" else ["--raw-input"]
    return ["eval", task, *row, "--data", data, "--benchmark", "xsub", "--out", out, "--device", "cpu", "--quiet",
            *sets]


@pytest.mark.parametrize("task", [*RECOGNITION, "motion", "benchmark"])
@pytest.mark.parametrize("sample", [3, 35], ids=["train", "test"])
def test_eval_refuses_non_finite_clips(box, capsys, data, encoder, task, sample):
    """A NaN clip in the training or test part: one line naming it, before anything is written
    (it gave a wrong k-NN figure, a silent semi / motion run, a FloatingPointError traceback)."""
    bad = _copy(data, box / "nan", nan=[sample])
    fails(capsys, _eval(task, bad, box / "ev", encoder), "data.npy", f"sample {sample} (s{sample:03d})",
          "non-finite", root=box)


@pytest.mark.parametrize("task", [*RECOGNITION, "motion"])
def test_eval_loaders_refuse_non_finite_clips_beyond_the_scan(box, capsys, data, encoder, monkeypatch, task):
    """A data set too large for the scan before the run (here: no scan at all): the loaders name
    the NaN clip as they read it, one line, never a wrong figure or a diverged loss."""
    import pcm3.checks

    monkeypatch.setattr(pcm3.checks, "check_finite", lambda *a, **k: False)
    bad = _copy(data, box / "nan", nan=[35])
    fails(capsys, _eval(task, bad, box / "ev", encoder, quick=True), "data.npy", "sample 35 (s035)", "non-finite",
          root=box)


@pytest.mark.parametrize("task", RECOGNITION)
@pytest.mark.parametrize("sample, label", [(5, 7), (5, -1), (35, 4), (35, -1)],
                         ids=["train-7", "train-none", "test-4", "test-none"])
def test_eval_refuses_labels_outside_the_classes(box, capsys, data, task, sample, label):
    """4 classes: label 7 trained an 8-class head, 4 on a test clip scored against a class that
    does not exist, -1 (no label, fine for pretraining) ended in an IndexError traceback."""
    bad = _copy(data, box / "labels", labels={sample: label})
    fails(capsys, _eval(task, bad, box / "ev", box / "unused.pt"), "labels.npy",
          f"sample {sample} (s{sample:03d})", "no label" if label == -1 else f"label {label}", root=box)


@pytest.mark.parametrize("task", [*RECOGNITION, "motion", "benchmark"])
@pytest.mark.parametrize("empty", ["test", "train"])
def test_eval_refuses_an_empty_part(box, capsys, data, encoder, task, empty):
    """``pcm3 prepare pku2`` without a split file writes xview with no test clip: every
    evaluation ended in ``torch.cat(): expected a non-empty list of Tensors``."""
    parts = {"train": list(range(32)), "test": list(range(32, 40))}
    parts[empty] = []
    bad = _copy(data, box / "empty", splits={"xsub": parts})
    fails(capsys, _eval(task, bad, box / "ev", encoder), "empty", "benchmark 'xsub'",
          f"no {'training' if empty == 'train' else 'test'} clips", root=box)


def test_embed_refuses_an_empty_part(box, capsys, data, encoder):
    bad = _copy(data, box / "empty", splits={"xsub": {"train": list(range(32)), "test": []}})
    fails(capsys, ["embed", encoder, "--data", bad, "--benchmark", "xsub", "--part", "test", "--out", box / "f.npy"],
          "benchmark 'xsub' has no test clips", "embedding", root=box)


def test_knn_k_beyond_the_gallery(box, capsys, data):
    """k = 33 with a gallery of 32 clips voted among all of them, reported as knn33."""
    base = _eval("knn", data, box / "ev", box / "unused.pt")
    fails(capsys, [*base, "--set", "k=33"], "k: 33", "32 clips", root=box)
    fails(capsys, [*base, "--set", "ks=[1,40]"], "ks: 40", "32 clips", root=box)


@pytest.mark.parametrize("row, needle", [
    (["--raw-input", "--encoder", "ENC"], "--raw-input"),
    (["--raw-input", "--pretrain-config", "demo"], "--raw-input"),
    (["--random-init", "--encoder", "ENC", "--pretrain-config", "demo"], "--pretrain-config"),
    (["--supervised", "--run", "RUN", "--pretrain-config", "demo"], "--pretrain-config"),
    (["--encoder", "ENC", "--pretrain-config", "demo"], "--pretrain-config"),
    (["--pretrain-config", "demo"], "--pretrain-config"),
], ids=["raw+encoder", "raw+config", "random+encoder+config", "supervised+run+config", "encoder+config", "config"])
def test_eval_refuses_contradictory_rows(box, capsys, data, encoder, row, needle):
    """Options one of which the row would ignore (the raw input reads no encoder; an encoder
    already gives the architecture) are refused instead of silently dropped."""
    row = [encoder if a == "ENC" else encoder.parent / "run" if a == "RUN" else a for a in row]
    fails(capsys, ["eval", "knn", *row, "--data", data, "--benchmark", "xsub", "--out", box / "ev", "--device",
                   "cpu", "--quiet"], needle, root=box)


def test_fusion_takes_no_encoder(box, capsys, encoder):
    for row in (["--encoder", encoder], ["--random-init"]):
        fails(capsys, ["eval", "fusion", *row, "--scores", box / "a", box / "b", "--out", box / "ev"],
              row[0], "fusion", root=box)


# --------------------------------------------------------------------------- real processes

def _pcm3(*argv, cwd, **kw):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "pcm3.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, **kw)


def test_subprocess_out_equal_to_raw_keeps_the_raw_files(box):
    before = tree(box)
    r = _pcm3("prepare", "msr3d", "--raw", "raw", "--out", "raw", cwd=box)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "raw" in r.stderr
    assert tree(box) == before


def test_subprocess_config_error_exit_code(box, data):
    before = tree(box)
    r = _pcm3("pretrain", "--config", "demo", "--data", data, "--out", "run", "--set", "train.batch_size=0", cwd=box)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "train.batch_size" in r.stderr
    assert tree(box) == before


def test_subprocess_closed_pipe_is_quiet(box, data):
    """``pcm3 info DIR | head``: the reader is gone before pcm3 writes; no BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "pcm3.cli", "info", str(data)], cwd=box, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `head` exiting at once
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    proc.stderr.close()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141  # the closed pipe was met (and handled): 128 + SIGPIPE, as Unix tools


def test_output_in_a_read_only_folder_simulated(box, capsys, data, encoder, monkeypatch):
    """The same cases where the tests run as root (which a read-only folder does not stop):
    the folder is made to look read-only to ``os.access``."""
    ro = box / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else real(p, mode, **kw))
    fails(capsys, ["prepare", "synthetic", "--out", ro / "syn", "--quiet"], "read-only", root=box)
    fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", ro / "run", *SETS], "read-only", root=box)
    fails(capsys, ["export", encoder.parent / "run", "--out", ro / "e.pt"], "read-only", root=box)
    fails(capsys, ["embed", encoder, "--data", data, "--out", ro / "f.npy"], "read-only", root=box)
    fails(capsys, ["demo", "--out", ro / "demo", "--quiet"], "read-only", root=box)


def test_sizes_beyond_the_machine_are_one_line(box, capsys, data):
    """``--threads 100000`` crashed the OpenMP runtime (segmentation fault); a queue too large
    to allocate (or to describe to torch) ended in a traceback from the model's constructor."""
    base = ["pretrain", "--data", data, "--out", box / "run", "--quiet", *SETS]
    fails(capsys, [*base, "--threads", "100000"], "--threads", "at most", root=box)
    fails(capsys, [*base, "--set", "train.threads=100000"],
          "train.threads", root=box)
    for size in ("1e12", "1e30"):
        fails(capsys, [*base, "--set", f"model.queue_size={size}"], "model", "cannot build", root=box)


# --------------------------------------------------------------------------- single files, outputs in pcm3 folders

def test_embed_overwrite_never_replaces_the_users_pair(box, capsys, data, encoder):
    """Any ``(N, D)`` + ``(N,)`` pair passed for embed's: ``--overwrite`` replaced a user's own
    ``other.npy`` / ``other.labels.npy``; embed now replaces only a pair its record proves its own."""
    (box / "feats").mkdir()
    np.save(box / "feats" / "other.npy", np.ones((8, 4), np.float32))
    np.save(box / "feats" / "other.labels.npy", np.arange(8))
    fails(capsys, ["embed", encoder, "--data", data, "--benchmark", "xsub", "--part", "test",
                   "--out", box / "feats" / "other.npy", "--overwrite"], "other.npy", "not written by pcm3 embed",
          root=box)


def test_visualize_overwrite_never_replaces_the_users_gif(box, capsys, data):
    from PIL import Image

    (box / "mine").mkdir()
    Image.new("RGB", (8, 8), "red").save(box / "mine" / "b.gif")
    fails(capsys, ["visualize", data, "--sample", "0", "--out", box / "mine" / "b.gif", "--overwrite"], "b.gif",
          "not written by pcm3 visualize", root=box)


def test_outputs_inside_a_prepared_folder_are_refused(box, capsys, data, encoder):
    """Written there, they made ``pcm3 prepare --overwrite`` of the folder refuse."""
    mine = box / "data"
    shutil.copytree(data, mine)
    fails(capsys, ["visualize", mine, "--sample", "0", "--out", mine / "x.gif"], "x.gif", "input", root=box)
    other = make_prepared(box / "other", seed=1)
    fails(capsys, ["visualize", mine, "--sample", "0", "--out", other / "x.gif"], "pcm3 prepared folder", root=box)
    fails(capsys, ["report", box, "--out", other / "r.md"], "r.md", "pcm3 prepared folder", root=box)
    fails(capsys, ["embed", encoder, "--data", mine, "--out", other / "f.npy"], "pcm3 prepared folder", root=box)
    fails(capsys, ["export", encoder.parent / "run", "--out", other / "e.pt"], "pcm3 prepared folder", root=box)


def test_visualize_a_run_of_another_layout(box, capsys, encoder):
    """``RuntimeError: The size of tensor a (25) must match the size of tensor b (20)``."""
    msr = make_prepared(box / "msr", layout="msr20", joints=20, persons=1)
    fails(capsys, ["visualize", msr, "--sample", "0", "--checkpoint", encoder.parent / "run", "--out", box / "v.gif"],
          "run", "layout 'ntu25'", "'msr20'", root=box)


def test_overwrite_refusal_counts_what_it_does_not_name(box, capsys, data):
    old = box / "old"
    shutil.copytree(data, old)
    for i in range(6):
        (old / f"note{i}.txt").write_text("mine")
    fails(capsys, ["prepare", "msr3d", "--raw", box / "raw", "--out", old, "--overwrite"],
          "note0.txt, note1.txt, note2.txt and 3 more", root=box)


def test_embed_device_names_the_option(box, capsys, data, encoder):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    msg = fails(capsys, ["embed", encoder, "--data", data, "--device", "cuda", "--out", box / "f.npy"], "--device",
                root=box)
    assert "train.device" not in msg


def test_resume_with_a_config_of_another_length_is_refused(capsys, encoder, data):
    """``--resume --config demo`` on a 1-epoch run went on to demo's full length without a word
    (and rewrote config.yaml): the length changes only with --set train.epochs."""
    run = encoder.parent / "run"
    sets = [a for s in TINY if not s.startswith("train.epochs=") for a in ("--set", s)]
    from pcm3.config import load_config

    demo_epochs = load_config("demo").train.epochs
    fails(capsys, ["pretrain", "--config", "demo", "--data", data, "--out", run, "--resume", *sets],
          f"--resume: train.epochs differs from the run (1 there, {demo_epochs} in --config demo)",
          f"--set train.epochs={demo_epochs}", root=run)


def test_resume_of_a_run_without_its_config_asks_for_it(capsys, encoder, data, tmp_path):
    """With config.yaml gone, `--resume` took the paper's default config and refused it as
    "views.out_len differs (32 there, 64 now)"."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(encoder.parent / "run", run)
    (run / "config.yaml").unlink()
    fails(capsys, ["pretrain", "--data", data, "--out", run, "--resume", "--quiet"],
          f"--resume: {run / 'config.yaml'} (the run's resolved config) is missing", "--config", root=run)
