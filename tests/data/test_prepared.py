"""The prepared on-disk format: writing, reading, validation, atomicity, ``pcm3 info``."""

import json

import numpy as np
import pytest

from pcm3.cli import main
from pcm3.data.dataset import SkeletonDataset
from pcm3.data.prepared import Prepared, PreparedWriter
from pcm3.errors import DataError


def write_clips(out, n=6, t=10, nan_at=None):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(n, 3, t, 25, 2)).astype(np.float32)
    if nan_at is not None:
        data[nan_at, 0, 0, 0, 0] = np.nan
    with PreparedWriter(out, kind="clips", shape=data.shape, dataset="toy", layout="ntu25",
                        class_names=["a", "b", "c"]) as w:
        for i in range(n):
            w.set(i, data[i], label=i % 3, length=t - i % 2, name=f"s{i}", subject=i // 2)
        w.set_splits({"xsub": {"train": [0, 1, 2, 3], "test": [4, 5]}})
    return data


def test_clips_roundtrip(tmp_path):
    data = write_clips(tmp_path / "p")
    ds = Prepared(tmp_path / "p")
    assert ds.kind == "clips" and len(ds) == 6 and ds.num_classes == 3 and ds.shape == data.shape
    assert ds.input_size == (3, 25, 2)
    assert isinstance(ds.data, np.memmap)
    np.testing.assert_array_equal(ds.data, data)
    assert ds.labels.tolist() == [0, 1, 2, 0, 1, 2] and ds.lengths.tolist() == [10, 9, 10, 9, 10, 9]
    assert ds.names == [f"s{i}" for i in range(6)] and ds.rows[5]["subject"] == "2"
    assert ds.split("xsub", "test").tolist() == [4, 5] and ds.split(None, "train").size == 6
    s = ds.summary()
    assert s["splits"]["xsub/train"]["samples"] == 4 and s["splits"]["xsub/test"]["classes"] == 2
    assert ds.validate() == []
    item = SkeletonDataset(ds, "xsub", "test")[1]
    assert item[0].shape == (3, 10, 25, 2) and int(item[1]) == 9 and int(item[2]) == 2 and int(item[3]) == 5


def test_sequences_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    videos = [rng.normal(size=(3, t, 25, 2)).astype(np.float32) for t in (7, 3, 12)]
    with PreparedWriter(tmp_path / "s", kind="sequences", shape=(3, 3, 25, 2), dataset="toy", layout="ntu25",
                        class_names=["a", "b"]) as w:
        for i, v in enumerate(videos):
            w.append(v, name=f"v{i}", intervals=[(1, 0, 2, 1.0)] if i == 2 else [])
        w.set_splits({"xsub": {"train": [0, 1], "test": [2]}})
    ds = Prepared(tmp_path / "s")
    assert ds.kind == "sequences" and ds.lengths.tolist() == [7, 3, 12]
    assert ds.input_size == (3, 25, 2)   # from meta.json's (N, C, V, M)
    for i, v in enumerate(videos):
        np.testing.assert_array_equal(ds.sample(i), v)
    assert ds.intervals() == [{"index": 2, "label": 1, "start": 0, "end": 2, "confidence": 1.0}]
    # the summary counts a split's classes by its videos' intervals (it said 0: videos have no
    # label) and names the frames beside meta.json's (N, C, V, M)
    s = ds.summary()
    assert s["frames"] == 22 and s["splits"]["xsub/test"]["classes"] == 1 and s["splits"]["xsub/train"]["classes"] == 0
    from pcm3.data.prepared import format_summary
    assert "shape 3 videos, 22 frames of (3, 25, 2)" in format_summary(s)


@pytest.mark.parametrize("x, msg", [
    (np.ones((3, 10, 25, 1), np.float32), r"sample 0 \(s0\): shape \(3, 10, 25, 1\), the folder's clips are \(3, 10, 25, 2\)"),
    (np.ones((3, 1, 25, 2), np.float32), r"shape \(3, 1, 25, 2\)"),
])
def test_writer_refuses_a_clip_numpy_would_broadcast(tmp_path, x, msg):
    """One person written into a two-person folder used to fill both slots; one frame, every frame."""
    with pytest.raises(ValueError, match=msg):
        with PreparedWriter(tmp_path / "p", kind="clips", shape=(2, 3, 10, 25, 2), dataset="toy", layout="ntu25",
                            class_names=["a"]) as w:
            w.set(0, x, label=0, length=10, name="s0")
    assert not (tmp_path / "p").exists()  # nothing half-written


def test_writer_checks_layout_shape_index_and_length(tmp_path):
    kw = dict(kind="clips", dataset="toy", class_names=["a"])
    with pytest.raises(ValueError, match="layout ntu25 has 25 joints, shape"):
        PreparedWriter(tmp_path / "a", shape=(2, 3, 10, 17, 1), layout="ntu25", **kw)
    with pytest.raises(ValueError, match="layout 'nope' is not registered"):
        PreparedWriter(tmp_path / "a", shape=(2, 3, 10, 25, 1), layout="nope", **kw)
    with pytest.raises(ValueError, match=r"shape must be \(N, C, T, V, M\)"):
        PreparedWriter(tmp_path / "a", shape=(2, 3, 25, 1), layout="ntu25", **kw)
    with PreparedWriter(tmp_path / "b", shape=(1, 3, 10, 25, 1), layout="ntu25", **kw) as w:
        with pytest.raises(IndexError, match="sample 1"):
            w.set(1, np.zeros((3, 10, 25, 1), np.float32), label=0, length=10, name="s1")
        with pytest.raises(IndexError, match="sample -1"):  # numpy would write the last clip
            w.set(-1, np.zeros((3, 10, 25, 1), np.float32), label=0, length=10, name="s-1")
        with pytest.raises(ValueError, match="length 11 outside 0..10"):
            w.set(0, np.zeros((3, 10, 25, 1), np.float32), label=0, length=11, name="s0")
        w.set(0, np.zeros((3, 10, 25, 1), np.float32), label=0, length=10, name="s0")
        w.set_splits({"xsub": {"train": [0], "test": [0]}})
    with PreparedWriter(tmp_path / "s", kind="sequences", shape=(1, 3, 25, 2), dataset="toy", layout="ntu25",
                        class_names=["a"]) as w:
        with pytest.raises(ValueError, match=r"sequence 0 \(v0\): shape \(3, 5, 25, 1\).*\(3, T, 25, 2\)"):
            w.append(np.zeros((3, 5, 25, 1), np.float32), name="v0")
        w.append(np.zeros((3, 5, 25, 2), np.float32), name="v0")
        w.set_splits({"xsub": {"train": [0], "test": [0]}})


def test_writer_is_atomic(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with PreparedWriter(tmp_path / "p", kind="clips", shape=(2, 3, 4, 25, 1), dataset="toy",
                            layout="ntu25", class_names=["a"]) as w:
            w.set(0, np.zeros((3, 4, 25, 1), np.float32), label=0, length=4, name="x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="never set"):
        with PreparedWriter(tmp_path / "q", kind="clips", shape=(2, 3, 4, 25, 1), dataset="toy",
                            layout="ntu25", class_names=["a"]) as w:
            w.set(0, np.zeros((3, 4, 25, 1), np.float32), label=0, length=4, name="x")
    assert list(tmp_path.iterdir()) == []


def test_reader_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        Prepared(tmp_path / "missing")
    write_clips(tmp_path / "p")
    (tmp_path / "p" / "labels.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="labels.npy"):
        Prepared(tmp_path / "p")
    write_clips(tmp_path / "q")
    (tmp_path / "q" / "splits.json").unlink()
    with pytest.raises(DataError, match="splits.json"):
        Prepared(tmp_path / "q")
    write_clips(tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    meta["shape"][0] = 99
    (tmp_path / "r" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="disagrees"):
        Prepared(tmp_path / "r")
    write_clips(tmp_path / "s")
    with pytest.raises(DataError, match="no benchmark 'xview'"):
        Prepared(tmp_path / "s").split("xview", "train")


def test_info_command(tmp_path, capsys):
    write_clips(tmp_path / "p")
    assert main(["info", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "xsub/train" in out and "validation: ok" in out
    write_clips(tmp_path / "bad", nan_at=3)
    assert main(["info", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite" in err[0] and "[3]" in err[0]
    assert main(["info", str(tmp_path / "nowhere")]) == 2


def test_validation_benchmarks_hold_out_training_subjects(tmp_path):
    """``B-val`` and ``B-val<K>``: disjoint by subject, inside B's training part, seeded draws."""
    n = 40
    data = np.zeros((n, 3, 4, 25, 2), np.float32)
    with PreparedWriter(tmp_path / "p", kind="clips", shape=data.shape, dataset="toy", layout="ntu25",
                        class_names=["a", "b"]) as w:
        for i in range(n):
            w.set(i, data[i], label=i % 2, length=4, name=f"s{i}", subject=i // 4)  # 10 subjects
        w.set_splits({"xsub": {"train": list(range(32)), "test": list(range(32, 40))}})
    ds = Prepared(tmp_path / "p")
    subject = np.array([int(r["subject"]) for r in ds.rows])
    held = {}
    for name in ("xsub-val", "xsub-val0", "xsub-val1", "xsub-val2"):
        train, val = ds.split(name, "train"), ds.split(name, "test")
        assert set(train) | set(val) == set(range(32))  # the training part, all of it, never the test part
        assert not set(subject[train]) & set(subject[val])  # held out by subject
        held[name] = frozenset(subject[val].tolist())
        assert len(held[name]) == 2  # 30% of the 8 training subjects
    assert held["xsub-val"] == held["xsub-val0"]  # -val is draw 0
    assert len({held["xsub-val0"], held["xsub-val1"], held["xsub-val2"]}) == 3  # other draws, other subjects
    assert ds.split("xsub-val1", "test").tolist() == Prepared(tmp_path / "p").split("xsub-val1", "test").tolist()
    with pytest.raises(DataError, match="no benchmark 'xview' to carve 'xview-val1' from"):
        ds.split("xview-val1", "train")
    with pytest.raises(DataError, match="no benchmark 'xsub-valx'"):
        ds.split("xsub-valx", "train")


@pytest.mark.parametrize("name, parsed", [("xsub-val", ("xsub", 0)), ("xsub-val2", ("xsub", 2)),
                                          ("my-set-val10", ("my-set", 10)), ("xsub", None), ("xsub-val02", None),
                                          ("xsub-valx", None), ("-val", None), (None, None)])
def test_parse_validation_benchmark(name, parsed):
    from pcm3.data.prepared import parse_validation_benchmark

    assert parse_validation_benchmark(name) == parsed


def _edit_json(path, edit):
    obj = json.loads(path.read_text())
    path.write_text(json.dumps(edit(obj)))


@pytest.mark.parametrize("name, edit, msg", [
    ("meta.json", lambda m: [1, 2], "expected a JSON object"),
    ("meta.json", lambda m: {k: v for k, v in m.items() if k != "kind"}, "no 'kind'"),
    ("meta.json", lambda m: {**m, "kind": "frames"}, "'kind' is 'frames'"),
    ("meta.json", lambda m: {k: v for k, v in m.items() if k != "layout"}, "no 'layout'"),
    ("meta.json", lambda m: {**m, "version": "1"}, "'version' is '1', expected an integer"),
    ("meta.json", lambda m: {**m, "num_samples": "6"}, "'num_samples' is '6'"),
    ("meta.json", lambda m: {k: v for k, v in m.items() if k != "shape"}, "no 'shape'"),
    ("meta.json", lambda m: {**m, "class_names": 3}, "'class_names'"),
    ("splits.json", lambda s: [0, 1], "malformed"),
    ("splits.json", lambda s: {"xsub": [0, 1]}, "benchmark 'xsub' is not a mapping"),
    ("splits.json", lambda s: {"xsub": {"train": 3}}, "xsub/train is not a list"),
    ("splits.json", lambda s: {"xsub": {"train": ["a"], "test": [4]}}, "xsub/train: index 'a' is not a whole number"),
    ("splits.json", lambda s: {"xsub": {"train": [0, 0.5], "test": [4]}}, "xsub/train: index 0.5 is not a whole"),
    ("splits.json", lambda s: {"xsub": {"train": [0, True], "test": [4]}}, "index True"),
    ("splits.json", lambda s: {"xsub": {"train": [2 ** 70]}}, "too large"),
])
def test_malformed_meta_and_splits_name_the_file(tmp_path, name, edit, msg):
    write_clips(tmp_path / "p")
    _edit_json(tmp_path / "p" / name, edit)
    with pytest.raises(DataError) as e:
        Prepared(tmp_path / "p")
    assert str(e.value).startswith(f"{tmp_path / 'p' / name}: ") and msg in str(e.value), str(e.value)


@pytest.mark.parametrize("edit, msg", [
    (lambda m: {**m, "layout": "foo"}, "'layout' is 'foo', not a layout pcm3 knows"),
    (lambda m: {**m, "layout": "msr20"}, "'layout' msr20 has 20 joints"),
])
def test_meta_layout_must_be_known_and_fit_the_joints(tmp_path, edit, msg):
    write_clips(tmp_path / "p")
    _edit_json(tmp_path / "p" / "meta.json", edit)
    with pytest.raises(DataError) as e:
        Prepared(tmp_path / "p")
    assert str(e.value).startswith(f"{tmp_path / 'p' / 'meta.json'}: ") and msg in str(e.value), str(e.value)


def test_train_test_overlap_is_a_validation_problem(tmp_path, capsys):
    write_clips(tmp_path / "p")
    _edit_json(tmp_path / "p" / "splits.json", lambda s: {"xsub": {"train": [0, 1, 2, 3, 4], "test": [4, 5]},
                                                           "xview": {"train": [0, 1], "test": [2, 3]}})
    assert Prepared(tmp_path / "p").validate() == ["splits.json: xsub: 1 sample in both train and test (e.g. 4)"]
    assert main(["info", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "both train and test" in err[0]


def test_a_sample_listed_twice_is_a_split_problem_also_of_its_validation_benchmarks(tmp_path):
    write_clips(tmp_path / "p")
    _edit_json(tmp_path / "p" / "splits.json", lambda s: {"xsub": {"train": [0, 1, 1, 2, 3], "test": [5, 5, 4]}})
    ds = Prepared(tmp_path / "p")
    expected = ["splits.json: xsub: 1 sample listed more than once in train (e.g. 1)",
                "splits.json: xsub: 1 sample listed more than once in test (e.g. 5)"]
    assert ds.validate() == expected
    assert ds.split_problems(["xsub-val"]) == ds.split_problems(["xsub-val2", "xsub"]) == expected


@pytest.mark.parametrize("names, extra, expected", [
    # converted NTU data: no subject column, the performer is in the name
    ([f"S001C00{c}P00{p}R001A001" for p in (1, 2, 3) for c in (1, 2)], {}, ["P001", "P001", "P002", "P002",
                                                                          "P003", "P003"]),
    # PKU-MMD clips: one recording seen by cameras L and R is one group
    ([f"v{i}" for i in range(6)], {"video": ["0002-L", "0002-R", "0003-L", "0003-M", "0004-R", "0004-L"]},
     ["0002", "0002", "0003", "0003", "0004", "0004"]),
])
def test_validation_groups_without_a_subject_column(tmp_path, names, extra, expected):
    data = np.zeros((6, 3, 4, 25, 2), np.float32)
    with PreparedWriter(tmp_path / "p", kind="clips", shape=data.shape, dataset="toy", layout="ntu25",
                        class_names=["a", "b"]) as w:
        for i in range(6):
            w.set(i, data[i], label=i % 2, length=4, name=names[i], **{k: v[i] for k, v in extra.items()})
        w.set_splits({"xsub": {"train": [0, 1, 2, 3, 4, 5], "test": []}})
    ds = Prepared(tmp_path / "p")
    groups = ds.groups(np.arange(6))
    assert groups.tolist() == expected
    train, val = ds.validation_split("xsub", fraction=0.3, seed=0)
    assert set(groups[val]).isdisjoint(groups[train]) and val.size == 2  # whole recordings / performers
    assert ds.groups(np.arange(6), by="camera") is None
