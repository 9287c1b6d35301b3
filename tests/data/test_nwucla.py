"""NW-UCLA reader (CTR-GCN json release): fixtures written here, splits, centring, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pcm3.cli import main
from pcm3.data.nwucla import NWUCLA_ACTION_IDS, NWUCLA_CLASSES, prepare_nwucla, read_sample
from pcm3.data.prepared import Prepared
from pcm3.errors import DataError


def skeletons(t: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.3, (t, 20, 3)) + [0, 0, 3]).round(5).tolist()


def write_sample(folder: Path, action: int, subject: int, episode: int, view: int, t: int = 30, **override) -> Path:
    name = f"a{action:02d}_s{subject:02d}_e{episode:02d}_v{view:02d}"
    obj = {"file_name": name, "skeletons": skeletons(t, action * 100 + view), "label": NWUCLA_ACTION_IDS.index(action) + 1}
    obj.update(override)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(obj))
    return path


def make_raw(root: Path) -> Path:
    folder = root / "all_sqe"
    folder.mkdir(parents=True)
    for i, action in enumerate((1, 5, 8, 12)):
        for view in (1, 2, 3):
            write_sample(folder, action, subject=i + 1, episode=0, view=view, t=20 + 5 * view)
    return root


def test_prepare_roundtrip_splits_and_centring(tmp_path, capsys):
    raw = make_raw(tmp_path / "raw")
    long = write_sample(raw / "all_sqe", 9, 3, 1, 1, t=50)
    code = main(["prepare", "nwucla", "--raw", str(raw), "--out", str(tmp_path / "o"), "--frames", "40",
                 "--workers", "1", "--align", "none"])
    assert code == 0, capsys.readouterr().err
    ds = Prepared(tmp_path / "o")
    assert ds.shape == (13, 3, 40, 20, 1) and ds.layout == "kinect_v1" and ds.class_names == list(NWUCLA_CLASSES)
    assert ds.benchmarks == ["xview"]
    views = {r["name"]: int(r["view"]) for r in ds.rows}
    assert {views[ds.names[i]] for i in ds.split("xview", "train")} == {1, 2}
    assert {views[ds.names[i]] for i in ds.split("xview", "test")} == {3}
    i = ds.names.index("a08_s03_e00_v02")
    raw_x = np.asarray(json.loads((raw / "all_sqe" / "a08_s03_e00_v02.json").read_text())["skeletons"], np.float32)
    x = ds.sample(i)
    assert ds.labels[i] == 6 and ds.lengths[i] == 30
    np.testing.assert_allclose(x[:, :30, :, 0], (raw_x - raw_x[:, 1:2]).transpose(2, 0, 1), atol=1e-6)
    assert not x[:, 30:].any()
    j = ds.names.index(long.stem)
    assert ds.lengths[j] == 40 and int(ds.rows[j]["source_length"]) == 50
    assert ds.meta["alignment"].startswith("none")


def test_prepare_aligns_views_by_default(tmp_path, capsys):
    """NW-UCLA is a cross-view benchmark: by default every sample is rotated to a canonical view
    (hip -> spine along +z, shoulders along +x at the first frame), recorded in meta.json."""
    from pcm3.skeleton import ALIGN_JOINTS, KINECT_V1

    raw = make_raw(tmp_path / "raw")
    assert main(["prepare", "nwucla", "--raw", str(raw), "--out", str(tmp_path / "o"), "--workers", "1"]) == 0
    ds = Prepared(tmp_path / "o")
    assert "+z" in ds.meta["alignment"]
    hip, spine, ls, rs = (KINECT_V1.joint_names.index(n) for n in ALIGN_JOINTS["kinect_v1"])
    for i in range(len(ds)):
        x = ds.sample(i)
        u = x[:, 0, spine, 0] - x[:, 0, hip, 0]
        np.testing.assert_allclose(u / np.linalg.norm(u), [0, 0, 1], atol=1e-5)
        s = x[:, 0, rs, 0] - x[:, 0, ls, 0]
        assert s[0] > 0 and abs(s[1]) < 1e-5


def test_read_sample_fields(tmp_path):
    p = write_sample(tmp_path, 11, 7, 3, 2, t=12)
    s = read_sample(p)
    assert s["x"].shape == (3, 12, 20, 1) and s["label"] == 8
    assert (s["action"], s["subject"], s["episode"], s["view"]) == (11, 7, 3, 2)


def _bad_cases():
    def invalid_json(folder):
        p = write_sample(folder, 1, 9, 0, 1)
        p.write_text('{"file_name": "a01_s09_e00_v01",\n "skeletons": [[[1, 2, 3]]],\n "label": }\n')
        return p, 3

    def empty(folder):
        p = write_sample(folder, 1, 9, 0, 1)
        p.write_text("")
        return p, None

    def missing_key(folder):
        p = write_sample(folder, 1, 9, 0, 1)
        obj = json.loads(p.read_text())
        del obj["skeletons"]
        p.write_text(json.dumps(obj))
        return p, None

    def wrong_joints(folder):
        return write_sample(folder, 1, 9, 0, 1, skeletons=np.ones((5, 25, 3)).tolist()), None

    def ragged(folder):
        sk = skeletons(3, 0)
        sk[1] = sk[1][:19]
        return write_sample(folder, 1, 9, 0, 1, skeletons=sk), None

    def no_frames(folder):
        return write_sample(folder, 1, 9, 0, 1, skeletons=[]), None

    def nan(folder):
        sk = skeletons(4, 1)
        sk[2][3][1] = float("nan")  # json.dumps writes NaN, which json.loads accepts
        return write_sample(folder, 1, 9, 0, 1, skeletons=sk), None

    def label_range(folder):
        return write_sample(folder, 1, 9, 0, 1, label=11), None

    def label_mismatch(folder):
        return write_sample(folder, 8, 9, 0, 1, label=8), None

    def bad_name(folder):
        return write_sample(folder, 1, 9, 0, 1, file_name="sample_one"), None

    def bad_view(folder):
        return write_sample(folder, 1, 9, 0, 4), None

    return [invalid_json, empty, missing_key, wrong_joints, ragged, no_frames, nan, label_range, label_mismatch,
            bad_name, bad_view]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda f: f.__name__)
def test_bad_input_stops_or_is_skipped(tmp_path, capsys, case):
    raw = make_raw(tmp_path / "raw")
    bad_dir = raw / "extra"
    bad_dir.mkdir()
    path, line = case(bad_dir)
    out = tmp_path / "out"
    code = main(["prepare", "nwucla", "--raw", str(raw), "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert (f"{path}:{line}" if line else str(path)) in err, err
    assert not out.exists()
    code = main(["prepare", "nwucla", "--raw", str(raw), "--out", str(out), "--workers", "1", "--skip-bad"])
    assert code == 0, capsys.readouterr().err
    with open(out / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(path)]
    assert len(Prepared(out)) == 12
    assert "skipped.csv" in json.loads((out / ".pcm3").read_text())["entries"]  # recorded as pcm3's


def test_missing_or_empty_folder(tmp_path, capsys):
    assert main(["prepare", "nwucla", "--raw", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no such raw data folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .json files"):
        prepare_nwucla(tmp_path / "empty", tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_duplicate_sample_names(tmp_path):
    raw = make_raw(tmp_path / "raw")
    (raw / "copy").mkdir()
    write_sample(raw / "copy", 1, 1, 0, 1)
    with pytest.raises(DataError, match="more than one file"):
        prepare_nwucla(raw, tmp_path / "o", workers=1, progress=False, log=lambda s: None)
