"""PKU-MMD reader: real Part I samples, split files, clip fitting, centring, bad input."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pcm3.cli import main
from pcm3.data.pku import (PKU_CLASSES, center_frames, fit_length, prepare_pku, read_labels, read_skeleton,
                           read_split_file)
from pcm3.data.prepared import Prepared
from pcm3.errors import DataError


def shared_data() -> Path:
    env = os.environ.get("PCM3_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def real_pku() -> Path:
    root = shared_data() / "pku_mmd"
    if not (root / "skeleton").is_dir():
        pytest.skip(f"real PKU-MMD samples not found at {root} (set PCM3_SHARED_DATA)")
    return root


# ---------------------------------------------------------------------------------------------
# Synthetic raw folders
# ---------------------------------------------------------------------------------------------

def make_video(t: int, seed: int, two: bool = False) -> np.ndarray:
    """(T, 150) frames: person 1 always, person 2 when ``two``; non-zero, finite."""
    rng = np.random.default_rng(seed)
    x = np.zeros((t, 2, 25, 3))
    x[:, 0] = rng.normal(0, 0.3, (t, 25, 3)) + [0, 0, 3]
    if two:
        x[:, 1] = rng.normal(0, 0.3, (t, 25, 3)) + [1, 0, 3]
    return x.reshape(t, 150)


def write_skeleton(path: Path, rows: np.ndarray) -> None:
    path.write_text("\n".join(" ".join(f"{v:.6f}" for v in r) for r in rows) + "\n")


def make_raw(root: Path, videos=("0001-L", "0001-M", "0001-R", "0002-M"), t: int = 60,
             skel_name: str = "skeleton", label_name: str = "label") -> Path:
    (root / skel_name).mkdir(parents=True)
    (root / label_name).mkdir(parents=True)
    for k, v in enumerate(videos):
        write_skeleton(root / skel_name / f"{v}.txt", make_video(t, k, two=k % 2 == 1))
        (root / label_name / f"{v}.txt").write_text(f"{k + 1},3,20,1\n{51 - k},25,{t},2\n")
    return root


def run_cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------

def test_real_part1_sequences(tmp_path):
    root = real_pku()
    out = prepare_pku(root, tmp_path / "pku1", part=1, workers=1, progress=False, log=lambda s: None, align=None)
    ds = Prepared(out)
    assert ds.kind == "sequences" and ds.layout == "ntu25" and ds.class_names == list(PKU_CLASSES)
    assert sorted(ds.names) == ["0105-M", "0206-R", "0310-R"]
    for i, name in enumerate(ds.names):
        lines = (root / "skeleton" / f"{name}.txt").read_text().strip().splitlines()
        assert ds.lengths[i] == len(lines)
        x = ds.sample(i)
        assert x.shape == (3, len(lines), 25, 2)
        raw = read_skeleton(root / "skeleton" / f"{name}.txt")
        present = np.any(raw != 0, axis=(0, 2))
        # centred: person 1's spine-mid is the origin wherever person 1 is present
        assert np.abs(x[:, present[:, 0], 1, 0]).max() < 1e-6
        # and bone vectors are unchanged by centring
        np.testing.assert_allclose(x[:, :, 4] - x[:, :, 8], (raw[:, :, 4] - raw[:, :, 8]) * present[None],
                                   atol=1e-5)
        assert not np.any(x[..., ~present[:, 1], :, 1])
    ivs = ds.intervals()
    assert len(ivs) == 24
    first = [r for r in ivs if ds.names[r["index"]] == "0105-M"][0]
    assert (first["label"], first["start"], first["end"], first["confidence"]) == (25, 102, 194, 2.0)  # 26,103,194,2
    # no split files here: xview from the view suffix (M,R train / L test); no xsub
    assert ds.benchmarks == ["xview"]
    assert len(ds.split("xview", "train")) == 3 and len(ds.split("xview", "test")) == 0


def test_real_part1_trimmed(tmp_path, capsys):
    root = real_pku()
    code, err = run_cli(["prepare", "pku1", "--raw", str(root), "--out", str(tmp_path / "clips"), "--trimmed",
                         "--workers", "2", "--align", "none"], capsys)
    assert code == 0, err
    ds = Prepared(tmp_path / "clips")
    assert ds.kind == "clips" and ds.shape == (24, 3, 300, 25, 2)
    rows = ds.rows
    r = rows[0]
    assert r["name"] == "0105-M_00" and int(r["label"]) == 25 and int(r["start"]) == 102 and int(r["end"]) == 194
    video = center_frames(read_skeleton(root / "skeleton" / "0105-M.txt"), 1)
    np.testing.assert_array_equal(ds.sample(0)[:, :92], video[:, 102:194])
    assert not ds.sample(0)[:, 92:].any()
    assert ds.lengths[0] == 92 and int(r["source_length"]) == 92
    assert set(ds.labels.tolist()) == {int(x["label"]) for x in rows}


def test_real_split_file_sets_benchmarks(tmp_path):
    root = real_pku()
    split = tmp_path / "cross-subject.txt"
    split.write_text("Training videos: \n0105-M, 0206-R\nValidataion videos: \n0310-R, 0999-L\n")
    view = tmp_path / "cross-view.txt"
    view.write_text("Training videos: 0105-M 0206-R 0310-R\nValidation videos:\n")
    with pytest.raises(DataError, match="Validation videos"):
        prepare_pku(root, tmp_path / "o", split_files={"xview": view}, workers=1, progress=False, log=lambda s: None)
    out = prepare_pku(root, tmp_path / "o", split_files={"xsub": split}, workers=1, progress=False,
                      log=lambda s: None)
    ds = Prepared(out)
    assert ds.benchmarks == ["xsub", "xview"]
    assert [ds.names[i] for i in ds.split("xsub", "train")] == ["0105-M", "0206-R"]
    assert [ds.names[i] for i in ds.split("xsub", "test")] == ["0310-R"]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def test_read_split_file_official_format(tmp_path):
    p = tmp_path / "cross-view.txt"
    p.write_text("Training videos: \n0002-L, 0002-M, 0003-R,\n 0004-L.txt\n\nValidataion videos: \n0005-L, 0006-M\n")
    assert read_split_file(p) == {"train": ["0002-L", "0002-M", "0003-R", "0004-L"], "test": ["0005-L", "0006-M"]}
    p.write_text("training videos: 0002-L, 0002-M\ntest videos: 0005-L\n")
    assert read_split_file(p) == {"train": ["0002-L", "0002-M"], "test": ["0005-L"]}
    for text, msg in [("0002-L\nTraining videos: 0003-L\n", "before"), ("Training videos: 1\nFoo: 2\n", "unknown section"),
                      ("Training videos: 1\nValidation videos: 1\n", "both parts"), ("", "Training videos")]:
        p.write_text(text)
        with pytest.raises(DataError, match=msg):
            read_split_file(p)
    with pytest.raises(DataError, match="no such split file"):
        read_split_file(tmp_path / "missing.txt")


def test_fit_length_policies():
    x = np.arange(1, 1 + 3 * 10 * 2 * 2, dtype=np.float32).reshape(3, 10, 2, 2)
    y, n = fit_length(x, 16)
    assert n == 10 and y.shape == (3, 16, 2, 2) and (y[:, :10] == x).all() and not y[:, 10:].any()
    y, n = fit_length(x, 16, pad="repeat")
    assert n == 10 and (y[:, 10:] == x[:, :6]).all()
    y, n = fit_length(x, 4, long="crop")
    assert n == 4 and (y == x[:, 3:7]).all()
    y, n = fit_length(x, 4)  # resample: frames 0, 3, 6, 9 exactly
    assert n == 4 and np.allclose(y, x[:, [0, 3, 6, 9]])
    y, _ = fit_length(x, 7)  # source positions 0, 1.5, 3, 4.5, ...: means of neighbours
    assert np.allclose(y[:, 1], (x[:, 1] + x[:, 2]) / 2) and np.allclose(y[:, 2], x[:, 3])
    x[..., 1] = 0
    x[:, 5:, :, 1] = 5.0  # person 2 appears at frame 5: never blended with its zeros
    y, _ = fit_length(x, 7)
    assert set(np.unique(y[..., 1])) == {0.0, 5.0} and (y[:, 3, :, 1] == 5.0).all()


def test_center_frames_missing_person1_and_swap():
    x = np.zeros((3, 5, 25, 2), dtype=np.float32)
    x[:, :, :, 0] = np.arange(5, dtype=np.float32)[None, :, None] + 1
    x[:, :, 1, 0] += 10
    x[:, 2, :, 0] = 0  # person 1 lost in frame 2: nearest frame (1) gives the origin
    x[:, :, :, 1] = 7.0
    y = center_frames(x, 1)
    assert np.allclose(y[:, [0, 1, 3, 4], 1, 0], 0)
    assert not y[:, 2, :, 0].any()
    assert np.allclose(y[:, 2, :, 1], 7.0 - x[:, 1, 1, 0][:, None])
    only2 = np.zeros_like(x)
    only2[..., 1] = x[..., 0] + 1
    z = center_frames(only2, 1)
    assert not z[..., 1].any() and np.allclose(z[:, [0, 1, 3, 4], 1, 0], 0)


def test_read_skeleton_value_layout(tmp_path):
    """A frame's 150 values are person 1's 25 joints then person 2's, each joint x, y, z: value
    ``p * 75 + j * 3 + c`` of frame ``f`` lands at ``[c, f, j, p]`` (every value distinct)."""
    t = 3
    rows = np.arange(t * 150, dtype=np.float64).reshape(t, 150) / 1000 + 0.001
    path = tmp_path / "0001-M.txt"
    write_skeleton(path, rows)
    x = read_skeleton(path)
    assert x.shape == (3, t, 25, 2) and x.dtype == np.float32
    expected = np.empty((3, t, 25, 2))
    for f in range(t):
        for p in range(2):
            for j in range(25):
                for c in range(3):
                    expected[c, f, j, p] = rows[f, p * 75 + j * 3 + c]
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_read_labels_converts_to_zero_based(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("1,1,10,1\n51,5,60,2,\n\n")
    ivs, errs = read_labels(p, num_frames=60)
    assert errs == [] and [iv[1:] for iv in ivs] == [(0, 0, 10, 1.0), (50, 4, 60, 2.0)]


def test_read_labels_says_a_reversed_interval_is_reversed(tmp_path):
    """``3,500,400,2`` in a 1222-frame video is not outside the video: its start is after its end."""
    p = tmp_path / "l.txt"
    p.write_text("1,1,10,1\n3,500,400,2\n4,0,20,1\n5,1200,1300,1\n")
    ivs, errs = read_labels(p, num_frames=1222)
    assert [iv[0] for iv in ivs] == [1]
    assert [str(e) for e in errs] == [f"{p}:2: interval 500-400 reversed (start after end)",
                                      f"{p}:3: interval 0-20 outside the video of 1222 frames "
                                      "(frames are numbered from 1)",
                                      f"{p}:4: interval 1200-1300 outside the video of 1222 frames"]


# ---------------------------------------------------------------------------------------------
# Synthetic end to end
# ---------------------------------------------------------------------------------------------

def test_synthetic_part2_clips_and_folder_names(tmp_path, capsys):
    raw = make_raw(tmp_path / "raw", t=80, skel_name="PKU_Skeleton_Renew", label_name="Train_Label_PKU_final")
    (raw / "cross_subject_v2.txt").write_text("Training videos:\n0001-L, 0001-M\nValidation videos:\n0001-R, 0002-M\n")
    out = tmp_path / "p2"
    code, err = run_cli(["prepare", "pku2", "--raw", str(raw), "--out", str(out), "--frames", "40", "--workers", "1"],
                        capsys)
    assert code == 0, err
    ds = Prepared(out)
    assert ds.shape == (8, 3, 40, 25, 2) and ds.meta["dataset"] == "pku2"
    by_name = {r["name"]: r for r in ds.rows}
    long_clip = by_name["0001-L_01"]  # frames 25..80 (56 frames) resampled to 40
    assert int(long_clip["length"]) == 40 and int(long_clip["source_length"]) == 56
    assert int(by_name["0001-L_00"]["length"]) == 18 and int(by_name["0001-L_00"]["label"]) == 0
    assert ds.benchmarks == ["xsub", "xview"]
    assert sorted(ds.names[i][:6] for i in ds.split("xsub", "test")) == ["0001-R"] * 2 + ["0002-M"] * 2
    assert sorted({ds.names[i][:6] for i in ds.split("xview", "test")}) == ["0001-L"]
    assert "xview" in err and "M,R" in err


def test_explicit_folders_without_raw(tmp_path, capsys):
    raw = make_raw(tmp_path / "raw")
    code, err = run_cli(["prepare", "pku1", "--skeleton", str(raw / "skeleton"), "--labels", str(raw / "label"),
                         "--out", str(tmp_path / "o"), "--workers", "1", "--no-center", "--align", "none"], capsys)
    assert code == 0, err
    ds = Prepared(tmp_path / "o")
    np.testing.assert_allclose(ds.sample(0), read_skeleton(raw / "skeleton" / "0001-L.txt"))
    assert len(ds.intervals()) == 8


def _bad_cases():
    def truncated(raw):
        p = raw / "skeleton" / "0001-M.txt"
        text = p.read_text()
        p.write_text(text[: len(text) - 40])  # last line cut short
        return p, 60

    def wrong_count(raw):
        p = raw / "skeleton" / "0001-M.txt"
        lines = p.read_text().splitlines()
        lines[6] = lines[6] + " 0.5"
        p.write_text("\n".join(lines) + "\n")
        return p, 7

    def non_numeric(raw):
        p = raw / "skeleton" / "0001-M.txt"
        lines = p.read_text().splitlines()
        tokens = lines[9].split()
        tokens[5] = "abc"
        lines[9] = " ".join(tokens)
        p.write_text("\n".join(lines) + "\n")
        return p, 10

    def nan(raw):
        p = raw / "skeleton" / "0001-M.txt"
        lines = p.read_text().splitlines()
        lines[11] = " ".join(["nan"] + lines[11].split()[1:])
        p.write_text("\n".join(lines) + "\n")
        return p, 12

    def inf(raw):
        p = raw / "skeleton" / "0001-M.txt"
        lines = p.read_text().splitlines()
        lines[2] = " ".join(lines[2].split()[:-1] + ["inf"])
        p.write_text("\n".join(lines) + "\n")
        return p, 3

    def blank_line(raw):
        p = raw / "skeleton" / "0001-M.txt"
        lines = p.read_text().splitlines()
        lines.insert(4, "")
        p.write_text("\n".join(lines) + "\n")
        return p, 5

    def empty(raw):
        p = raw / "skeleton" / "0001-M.txt"
        p.write_text("")
        return p, None

    def label_range(raw):
        p = raw / "label" / "0001-M.txt"
        p.write_text("1,3,20,1\n52,25,40,2\n")
        return p, 2

    def label_zero(raw):
        p = raw / "label" / "0001-M.txt"
        p.write_text("0,3,20,1\n5,25,40,1\n")
        return p, 1

    def interval(raw):
        p = raw / "label" / "0001-M.txt"
        p.write_text("5,3,20,1\n7,50,61,1\n")
        return p, 2

    def interval_reversed(raw):
        p = raw / "label" / "0001-M.txt"
        p.write_text("5,30,20,1\n5,25,40,1\n")
        return p, 1

    def label_fields(raw):
        p = raw / "label" / "0001-M.txt"
        p.write_text("5,3,20,1\n5;3;20\n")
        return p, 2

    def no_label_file(raw):
        (raw / "label" / "0001-M.txt").unlink()
        return raw / "skeleton" / "0001-M.txt", None

    return [truncated, wrong_count, non_numeric, nan, inf, blank_line, empty, label_range, label_zero, interval,
            interval_reversed, label_fields, no_label_file]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda f: f.__name__)
@pytest.mark.parametrize("kind", ["--trimmed", "--no-center"])
def test_bad_input_stops_or_is_skipped(tmp_path, capsys, case, kind):
    raw = make_raw(tmp_path / "raw")
    path, line = case(raw)
    out = tmp_path / "out"
    code, err = run_cli(["prepare", "pku1", "--raw", str(raw), "--out", str(out), "--workers", "1", kind], capsys)
    assert code == 2
    where = f"{path}:{line}" if line else str(path)
    assert where in err, err
    assert not out.exists()
    code, err = run_cli(["prepare", "pku1", "--raw", str(raw), "--out", str(out), "--workers", "1", kind,
                         "--skip-bad"], capsys)
    assert code == 0, err
    with open(out / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["line"]) for r in rows] == [(str(path), str(line) if line else "")]
    assert "skipped.csv" in json.loads((out / ".pcm3").read_text())["entries"]  # recorded as pcm3's
    ds = Prepared(out)
    if path.parent.name == "skeleton" or case.__name__ == "no_label_file":
        assert not any(n.startswith("0001-M") for n in ds.names)
    else:  # only the bad label line is dropped
        assert any(n.startswith("0001-M") for n in ds.names)


def test_missing_paths_and_split_file(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(["prepare", "pku1", "--raw", str(tmp_path / "nope"), "--out", str(out)], capsys)
    assert code == 2 and "nope" in err and not out.exists()
    raw = make_raw(tmp_path / "raw")
    code, err = run_cli(["prepare", "pku1", "--raw", str(raw), "--out", str(out), "--xsub-split",
                         str(tmp_path / "cross_subject.txt")], capsys)
    assert code == 2 and "cross_subject.txt: no such split file" in err and not out.exists()
    code, err = run_cli(["prepare", "pku1", "--raw", str(raw), "--out", str(out), "--split-file",
                         str(tmp_path / "splits.txt")], capsys)  # missing: named, whatever its name says
    assert code == 2 and "splits.txt: no such split file" in err and not out.exists()
    (tmp_path / "splits.txt").write_text("Training videos: 0001-L\nValidation videos: 0001-M\n")
    code, err = run_cli(["prepare", "pku1", "--raw", str(raw), "--out", str(out), "--split-file",
                         str(tmp_path / "splits.txt")], capsys)
    assert code == 2 and "splits.txt: cannot tell the benchmark" in err and "--xsub-split" in err
    code, err = run_cli(["prepare", "pku1", "--raw", str(raw), "--out", str(out), "--split-file",
                         str(raw / "skeleton")], capsys)
    assert code == 2 and "is a folder" in err and not out.exists()
    (raw / "skeleton2").mkdir()
    (raw / "skeleton2" / "0009-L.txt").write_text("1 2 3\n")
    code, err = run_cli(["prepare", "pku1", "--raw", str(raw), "--out", str(out)], capsys)
    assert code == 2 and "several skeleton folders" in err
    code, err = run_cli(["prepare", "pku1", "--out", str(out)], capsys)
    assert code == 2 and "--raw" in err
