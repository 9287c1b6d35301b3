"""MSR Action3D reader: the whole real data set, the msr20 layout's evidence, bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pcm3.cli import main
from pcm3.data.msr3d import MSR20_TO_KINECT_V1, MSR_CLASSES, prepare_msr3d, read_sequence
from pcm3.data.prepared import Prepared
from pcm3.skeleton import KINECT_V1, LAYOUTS, MSR20


def shared_data() -> Path:
    env = os.environ.get("PCM3_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def real_msr() -> Path:
    root = shared_data() / "msr_action3d"
    if not (root / "a01_s01_e01_skeleton3D.txt").exists():
        pytest.skip(f"real MSR Action3D files not found at {root} (set PCM3_SHARED_DATA)")
    return root


@pytest.fixture(scope="module")
def msr_prepared(tmp_path_factory):
    root = real_msr()
    out = tmp_path_factory.mktemp("msr") / "msr3d"
    return Prepared(prepare_msr3d(root, out, progress=False, log=lambda s: None))


def test_real_prepare_all_listed(msr_prepared):
    ds = msr_prepared
    assert ds.shape == (557, 3, 300, 20, 1) and ds.layout == "msr20" and ds.class_names == list(MSR_CLASSES)
    assert len(ds.split("xsub", "train")) == 284 and len(ds.split("xsub", "test")) == 273
    subj = {r["name"]: int(r["subject"]) for r in ds.rows}
    assert {subj[ds.names[i]] for i in ds.split("xsub", "train")} == {1, 3, 5, 7, 9}
    assert "a13_s09_e02" not in ds.names and ds.lengths.max() == 76
    i = ds.names.index("a13_s02_e02")  # 12 untracked frames dropped
    assert int(ds.rows[i]["untracked"]) == 12 and ds.lengths[i] == 18
    assert ds.meta["fps"] == 15  # motion prediction reads it (ms per predicted frame)
    assert not ds.validate()


def _tracked(ds, i):
    return ds.sample(i)[:, : ds.lengths[i], :, 0].transpose(1, 2, 0)  # (T, V, 3)


def test_layout_bones_are_rigid_and_limbs_sided(msr_prepared):
    ds = msr_prepared
    seqs = [_tracked(ds, i) for i in range(len(ds))]
    # every bone of msr20 keeps its length within 2 cm; a non-bone pair (hand-hand) does not
    for child, parent in MSR20.bones:
        std = np.mean([np.linalg.norm(x[:, child] - x[:, parent], axis=1).std() for x in seqs])
        assert std < 0.02, (MSR20.joint_names[child], MSR20.joint_names[parent], std)
    hands = np.mean([np.linalg.norm(x[:, 11] - x[:, 12], axis=1).std() for x in seqs])
    assert hands > 0.04
    # upright, metres: head above the centre, feet ~1 m below it
    head_y = np.median(np.concatenate([x[:, 19, 1] for x in seqs]))
    feet_y = np.median(np.concatenate([x[:, [17, 18], 1].ravel() for x in seqs]))
    assert 0.3 < head_y < 0.6 and -1.3 < feet_y < -0.9
    # the right hand waves in a01 (the dataset asked for the right arm); right is +x
    motion = np.mean([x.std(axis=0).sum(-1) for x, n in zip(seqs, ds.names) if n.startswith("a01")], axis=0)
    assert MSR20.joint_names[int(np.argmax(motion))] == "right_hand"
    dx = np.concatenate([x[:, 1, 0] - x[:, 0, 0] for x in seqs])
    assert (dx > 0).mean() > 0.95
    # centred on the spine
    assert max(np.abs(x[:, MSR20.center]).max() for x in seqs) < 1e-6


def test_kinect_v1_reordering():
    assert sorted(MSR20_TO_KINECT_V1) == list(range(20))
    names = [MSR20.joint_names[j] for j in MSR20_TO_KINECT_V1]
    assert names[0] == "hip_center" and names[2] == "neck" and names[3] == "head"
    assert names[4:] == list(KINECT_V1.joint_names[4:])
    assert LAYOUTS["msr20"] is MSR20


def test_all_files_flags_the_broken_recording(tmp_path, capsys):
    root = real_msr()
    raw = tmp_path / "raw"
    raw.mkdir()
    names = ["a13_s09_e02", "a01_s01_e01", "a02_s02_e01"]
    for n in names:
        shutil.copy(root / f"{n}_skeleton3D.txt", raw)
    out = tmp_path / "o"
    assert main(["prepare", "msr3d", "--raw", str(raw), "--out", str(out)]) == 2
    assert "a13_s09_e02_skeleton3D.txt: all-zero recording" in capsys.readouterr().err and not out.exists()
    assert main(["prepare", "msr3d", "--raw", str(raw), "--out", str(out), "--skip-bad"]) == 0
    assert sorted(Prepared(out).names) == ["a01_s01_e01", "a02_s02_e01"]
    with open(out / "skipped.csv") as f:
        assert [r["problem"] for r in csv.DictReader(f)] == ["all-zero recording (broken)"]
    assert "skipped.csv" in json.loads((out / ".pcm3").read_text())["entries"]  # recorded as pcm3's


# ---------------------------------------------------------------------------------------------
# Fixtures written here
# ---------------------------------------------------------------------------------------------

def write_recording(path: Path, frames: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (frames * 20, 3)) + [0, 0, 2.6]
    conf = np.ones((frames * 20, 1))
    path.write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in np.hstack([x, conf])) + "\n")
    return path


def make_raw(root: Path) -> Path:
    root.mkdir(parents=True)
    for a, s in ((1, 1), (2, 2), (3, 3), (4, 4)):
        write_recording(root / f"a{a:02d}_s{s:02d}_e01_skeleton3D.txt", seed=a)
    return root


def test_fixture_roundtrip_and_file_list(tmp_path):
    raw = make_raw(tmp_path / "raw")
    (raw / "files_used_in_cvpr12_paper.txt").write_text("a01_s01_e01\na03_s03_e01\n")
    ds = Prepared(prepare_msr3d(raw, tmp_path / "o", frames=10, center=False, progress=False, log=lambda s: None))
    assert ds.names == ["a01_s01_e01", "a03_s03_e01"] and ds.labels.tolist() == [0, 2]
    x, untracked = read_sequence(raw / "a03_s03_e01_skeleton3D.txt")
    np.testing.assert_array_equal(ds.sample(1)[:, :6], x)
    assert untracked == 0 and not ds.sample(1)[:, 6:].any()
    assert ds.split("xsub", "train").tolist() == [0, 1] and ds.split("xsub", "test").tolist() == []
    ds = Prepared(prepare_msr3d(raw, tmp_path / "o2", use_list=False, frames=10, progress=False, log=lambda s: None))
    assert len(ds) == 4 and ds.split("xsub", "test").tolist() == [1, 3]


def _bad_cases():
    def partial_frame(raw):
        p = raw / "a02_s02_e01_skeleton3D.txt"
        lines = p.read_text().splitlines()
        p.write_text("\n".join(lines[:-3]) + "\n")
        return p, 101

    def three_values(raw):
        p = raw / "a02_s02_e01_skeleton3D.txt"
        lines = p.read_text().splitlines()
        lines[22] = " ".join(lines[22].split()[:3])
        p.write_text("\n".join(lines) + "\n")
        return p, 23

    def non_numeric(raw):
        p = raw / "a02_s02_e01_skeleton3D.txt"
        lines = p.read_text().splitlines()
        lines[40] = "0.1 zero 2.5 1.0"
        p.write_text("\n".join(lines) + "\n")
        return p, 41

    def nan(raw):
        p = raw / "a02_s02_e01_skeleton3D.txt"
        lines = p.read_text().splitlines()
        lines[7] = "0.1 nan 2.5 1.0"
        p.write_text("\n".join(lines) + "\n")
        return p, 8

    def empty(raw):
        p = raw / "a02_s02_e01_skeleton3D.txt"
        p.write_text("\n")
        return p, None

    def all_zero(raw):
        p = raw / "a02_s02_e01_skeleton3D.txt"
        p.write_text("0 0 0 0\n" * 40)
        return p, None

    def bad_action(raw):
        return write_recording(raw / "a21_s01_e01_skeleton3D.txt"), None

    def listed_missing(raw):
        p = raw / "files_used_in_cvpr12_paper.txt"
        p.write_text("a01_s01_e01\na02_s02_e01\na09_s09_e09\n")
        return p, None

    return [partial_frame, three_values, non_numeric, nan, empty, all_zero, bad_action, listed_missing]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda f: f.__name__)
def test_bad_input_stops_or_is_skipped(tmp_path, capsys, case):
    raw = make_raw(tmp_path / "raw")
    path, line = case(raw)
    out = tmp_path / "out"
    assert main(["prepare", "msr3d", "--raw", str(raw), "--out", str(out), "--frames", "10"]) == 2
    err = capsys.readouterr().err
    assert (f"{path}:{line}" if line else f"{path}:") in err, err
    assert not out.exists()
    assert main(["prepare", "msr3d", "--raw", str(raw), "--out", str(out), "--frames", "10", "--skip-bad"]) == 0
    with open(out / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["path"], r["line"]) for r in rows] == [(str(path), str(line) if line else "")]
    names = Prepared(out).names
    if case.__name__ == "listed_missing":
        assert names == ["a01_s01_e01", "a02_s02_e01"]
    else:
        assert len(names) == 4 - (path.name.startswith("a02")) and path.name[:11] not in names
