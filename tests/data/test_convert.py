"""Import of CMD/skeleton-contrast folders, CTR-GCN npz and pyskl pickles: round trips and bad input."""

from __future__ import annotations

import pickle
import sys
import tracemalloc
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pcm3.cli import main
from pcm3.data.convert import (class_names_for, convert, detect_format, guess_benchmark, guess_dataset,
                               motion_energy, open_npz_member)
from pcm3.data.pku import PKU_CLASSES
from pcm3.data.prepared import Prepared
from pcm3.errors import DataError

N_TR, N_TE, T = 7, 5, 300


def clips(n: int, seed: int, t: int = T, v: int = 25, m: int = 2) -> tuple:
    """(n, 3, t, v, m) float32 with zero padding after a random length; person 2 sometimes absent."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.5, (n, 3, t, v, m)).astype(np.float32)
    lengths = rng.integers(20, t + 1, n)
    lengths[0] = t
    for i, length in enumerate(lengths):
        x[i, :, length:] = 0
        if i % 2:
            x[i, ..., 1] = 0
    return x, lengths


def write_cmd(folder: Path, num_frame: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for stem, n, seed in (("train", N_TR, 0), ("val", N_TE, 1)):
        x, lengths = clips(n, seed)
        np.save(folder / f"{stem}_data_joint.npy", x)
        names = [f"S001C001P00{i}R001A0{10 + i}.skeleton" for i in range(n)]
        labels = [(i * 7 + seed) % 60 for i in range(n)]
        with open(folder / f"{stem}_label.pkl", "wb") as f:
            pickle.dump((names, labels), f)
        if num_frame:
            np.save(folder / f"{stem}_num_frame.npy", lengths)
        parts[stem] = (x, lengths, names, labels)
    return parts


def test_cmd_roundtrip(tmp_path, capsys):
    src = tmp_path / "NTU60" / "xview"
    parts = write_cmd(src)
    out = tmp_path / "out"
    assert main(["prepare", "convert", "--src", str(src), "--out", str(out), "--chunk", "3"]) == 0, \
        capsys.readouterr().err
    ds = Prepared(out)
    assert ds.meta["dataset"] == "ntu60" and ds.layout == "ntu25" and ds.benchmarks == ["xview"]
    x_tr, len_tr, names_tr, lab_tr = parts["train"]
    x_te, len_te, _, lab_te = parts["val"]
    np.testing.assert_array_equal(ds.data[:N_TR], x_tr)
    np.testing.assert_array_equal(ds.data[N_TR:], x_te)
    assert ds.labels.tolist() == lab_tr + lab_te
    assert ds.lengths.tolist() == len_tr.tolist() + len_te.tolist()
    assert ds.names[0] == names_tr[0][: -len(".skeleton")]
    assert ds.split("xview", "train").tolist() == list(range(N_TR))
    assert ds.split("xview", "test").tolist() == list(range(N_TR, N_TR + N_TE))
    assert len(ds.class_names) >= 60


def test_cmd_without_num_frame_infers_lengths(tmp_path):
    src = tmp_path / "data"
    parts = write_cmd(src, num_frame=False)
    ds = Prepared(convert(src, tmp_path / "o", benchmark="xsub", dataset="pku1", log=lambda s: None))
    assert ds.lengths.tolist() == parts["train"][1].tolist() + parts["val"][1].tolist()
    assert ds.class_names == list(PKU_CLASSES) and ds.benchmarks == ["xsub"]


def test_cmd_copies_in_chunks_from_a_memory_map(tmp_path):
    src = tmp_path / "big"
    src.mkdir()
    n = 48  # 48 x 180 KB = 8.6 MB of data: reading it without mmap_mode would exceed the bound below
    x = np.lib.format.open_memmap(src / "train_data_joint.npy", mode="w+", dtype=np.float32, shape=(n, 3, T, 25, 2))
    x[:] = 1.0
    x.flush()
    del x
    with open(src / "train_label.pkl", "wb") as f:
        pickle.dump(([f"s{i}" for i in range(n)], list(range(n))), f)
    tracemalloc.start()
    try:
        convert(src, tmp_path / "o", chunk=2, dataset="other", log=lambda s: None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, peak
    ds = Prepared(tmp_path / "o")
    assert ds.shape == (n, 3, T, 25, 2) and ds.benchmarks == ["default"] and ds.split("default", "train").size == n
    assert ds.class_names[:2] == ["class_001", "class_002"] and len(ds.class_names) == n


@pytest.mark.parametrize("compressed", [False, True])
def test_ctrgcn_npz_roundtrip(tmp_path, compressed):
    x_tr, len_tr = clips(N_TR, 2)
    x_te, len_te = clips(N_TE, 3)

    def flat(x):  # (N, C, T, V, M) -> (N, T, M*V*C), person-major as CTR-GCN stores it
        return x.transpose(0, 2, 4, 3, 1).reshape(x.shape[0], T, 150)

    y_tr = np.eye(60)[np.arange(N_TR) * 5 % 60]
    y_te = np.eye(60)[np.arange(N_TE) * 3 % 60]
    path = tmp_path / "NTU60_CS.npz"
    (np.savez_compressed if compressed else np.savez)(path, x_train=flat(x_tr), y_train=y_tr, x_test=flat(x_te),
                                                       y_test=y_te)
    member = open_npz_member(path, "x_train")
    assert isinstance(member, np.memmap) != compressed
    ds = Prepared(convert(path, tmp_path / "o", log=lambda s: None))
    assert ds.meta["dataset"] == "ntu60" and ds.benchmarks == ["xsub"]
    np.testing.assert_array_equal(ds.data[:N_TR], x_tr)
    np.testing.assert_array_equal(ds.data[N_TR:], x_te)
    assert ds.labels.tolist() == (np.arange(N_TR) * 5 % 60).tolist() + (np.arange(N_TE) * 3 % 60).tolist()
    assert ds.lengths.tolist() == len_tr.tolist() + len_te.tolist()
    # feature v*6 + c*2 + m of the recurrent encoder's flattening matches (N, C, T, V, M)
    feat = np.asarray(ds.data[:1]).transpose(0, 2, 3, 1, 4).reshape(1, T, 150)
    assert feat[0, 5, 7 * 6 + 2 * 2 + 1] == x_tr[0, 2, 5, 7, 1]


def pyskl_annotations(seed: int = 4):
    rng = np.random.default_rng(seed)
    annos = []
    for i, (m, t) in enumerate([(1, 50), (2, 300), (2, 20), (3, 40), (1, 330)]):
        kp = rng.normal(0, 0.5, (m, t, 25, 3)).astype(np.float32)
        if m == 3:
            kp[1] *= 0.01  # the least moving person is dropped
        annos.append({"frame_dir": f"S001C00{1 + i % 3}P001R001A00{i + 1}", "label": i * 2, "total_frames": t,
                      "keypoint": kp, "img_shape": (1080, 1920)})
    split = {"xsub_train": [a["frame_dir"] for a in annos[:3]], "xsub_val": [a["frame_dir"] for a in annos[3:]],
             "xview_train": [annos[0]["frame_dir"]], "xview_val": [annos[4]["frame_dir"]]}
    return {"split": split, "annotations": annos}


def test_pyskl_roundtrip(tmp_path):
    obj = pyskl_annotations()
    path = tmp_path / "mine_3danno.pkl"
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    ds = Prepared(convert(path, tmp_path / "o", log=lambda s: None))
    assert ds.shape == (5, 3, T, 25, 2) and ds.benchmarks == ["xsub", "xview"]
    assert ds.split("xsub", "train").tolist() == [0, 1, 2] and ds.split("xsub", "test").tolist() == [3, 4]
    assert ds.split("xview", "test").tolist() == [4]
    annos = obj["annotations"]
    np.testing.assert_array_equal(ds.data[0, :, :50, :, 0], annos[0]["keypoint"][0].transpose(2, 0, 1))
    assert not ds.data[0, :, 50:].any() and not ds.data[0, ..., 1].any()
    np.testing.assert_array_equal(ds.data[1], annos[1]["keypoint"].transpose(3, 1, 2, 0))
    kp3 = annos[3]["keypoint"]
    energy = [motion_energy(p) for p in kp3]
    assert energy[1] < min(energy[0], energy[2])
    keep = [0, 2] if energy[0] >= energy[2] else [2, 0]
    np.testing.assert_array_equal(ds.data[3, :, :40], kp3[keep].transpose(3, 1, 2, 0))
    assert ds.lengths.tolist() == [50, 300, 20, 40, 300] and ds.rows[4]["source_length"] == "330"
    assert ds.labels.tolist() == [0, 2, 4, 6, 8] and ds.names[2] == annos[2]["frame_dir"]


def test_pyskl_train_val_test_splits_keep_every_part(tmp_path):
    """A pickle with train, val and test splits (mmaction2 / custom pyskl files): the val split
    was written as "test" and then silently replaced by the test split, losing its samples."""
    obj = pyskl_annotations()
    names = [a["frame_dir"] for a in obj["annotations"]]
    obj["split"] = {"train": names[:2], "val": names[2:3], "test": names[3:],
                    "xsub_train": names[:3], "xsub_val": names[3:]}
    path = tmp_path / "mine_3danno.pkl"
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    ds = Prepared(convert(path, tmp_path / "o", log=lambda s: None))
    assert ds.split("default", "train").tolist() == [0, 1]
    assert ds.split("default", "test").tolist() == [3, 4]      # the test split is the test part
    assert ds.split("default", "val").tolist() == [2]          # the val split is kept, not dropped
    assert ds.split("xsub", "test").tolist() == [3, 4]         # val alone is still the test part


def three_persons() -> np.ndarray:
    """``(3, 4, 25, 3)``: persons whose motion energies are easy to compute by hand.

    Person 0 walks: every joint at (1, 1, 1) in frames 0-1 and at (1.2, 1, 1) in frames 2-3;
        x takes 1 and 1.2 equally often: std 0.1; y, z constant. Energy 0.1.
    Person 1 stands still, arms out: y is 0 at joints 0-1, 2 at joints 2-3, 1 at the 21 others,
        in every frame: variance (4 x 1) / 25, std 0.4; x, z constant. Energy 0.4.
    Person 2 fidgets, then leaves: x 1 in frame 0, 1.02 in frame 1, absent (zeros) in frames
        2-3, which do not count: std 0.01 (counting them, about 1.5). Energy 0.01.

    The NTU rule keeps persons 1 then 0. Ranking by each joint's own std over time (summed
    over joints and coordinates) would give 2.5, 0, 0.25 and keep persons 0 and 2.
    """
    kp = np.ones((3, 4, 25, 3), np.float32)
    kp[0, 2:, :, 0] = 1.2
    kp[1, :, 0:2, 1] = 0.0
    kp[1, :, 2:4, 1] = 2.0
    kp[2, 1, :, 0] = 1.02
    kp[2, 2:] = 0.0
    return kp


def test_motion_energy_by_hand_and_as_the_ntu_recipe():
    kp = three_persons()
    np.testing.assert_allclose([motion_energy(p) for p in kp], [0.1, 0.4, 0.01], rtol=1e-5)
    ntu = pytest.importorskip("pcm3.data.ntu")
    rng = np.random.default_rng(0)
    for person in [*kp, rng.normal(size=(30, 25, 3)), np.zeros((5, 25, 3))]:
        person = np.asarray(person, np.float64)
        assert motion_energy(person) == pytest.approx(ntu.motion_energy(person), rel=1e-12, abs=1e-12)


def test_pyskl_keeps_the_two_most_energetic_persons_most_energetic_first(tmp_path):
    kp = three_persons()
    obj = {"split": {"xsub_train": ["three"], "xsub_val": ["one"]},
           "annotations": [{"frame_dir": "three", "label": 0, "total_frames": 4, "keypoint": kp},
                           {"frame_dir": "one", "label": 1, "total_frames": 4, "keypoint": kp[2:]}]}
    path = tmp_path / "three_3danno.pkl"
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    ds = Prepared(convert(path, tmp_path / "o", frames=4, log=lambda s: None))
    np.testing.assert_array_equal(ds.data[0], kp[[1, 0]].transpose(3, 1, 2, 0))
    np.testing.assert_array_equal(ds.data[1, ..., 0], kp[2].transpose(2, 0, 1))  # one person: as it is
    assert not ds.data[1, ..., 1].any()


def test_class_names_from_the_ntu_module_or_fallback(monkeypatch):
    fake = types.ModuleType("pcm3.data.ntu")
    fake.NTU120_CLASS_NAMES = tuple(f"action {i}" for i in range(1, 121))
    fake.OTHER = ["x"] * 60
    monkeypatch.setitem(sys.modules, "pcm3.data.ntu", fake)
    assert class_names_for("ntu60", 60) == [f"action {i}" for i in range(1, 61)]
    assert len(class_names_for("ntu120", 120)) == 120
    monkeypatch.setitem(sys.modules, "pcm3.data.ntu", None)  # module absent
    assert class_names_for("ntu60", 3) == ["class_001", "class_002", "class_003"]
    assert class_names_for("pku1", 60)[:2] == ["class_001", "class_002"]  # labels beyond 51 names


def test_guessing_names_and_formats(tmp_path):
    assert guess_benchmark(Path("/d/NTU120_CSet.npz")) == "xset" and guess_dataset(Path("/d/NTU120_CSet.npz")) == "ntu120"
    assert guess_benchmark(Path("/d/NTU-RGB-D-60-AGCN/xsub")) == "xsub"
    assert guess_benchmark(Path("/d/docs/data")) is None and guess_dataset(Path("/home/a/b/c/data")) is None
    write_cmd(tmp_path / "c")
    assert detect_format(tmp_path / "c") == "cmd" and detect_format(tmp_path / "c" / "train_label.pkl") == "cmd"
    assert detect_format(Path("x.npz")) == "ctrgcn" and detect_format(Path("ntu60_3danno.pkl")) == "pyskl"
    with pytest.raises(DataError, match="cannot tell the format"):
        detect_format(Path("data.h5"))


# ---------------------------------------------------------------------------------------------
# Bad input: DataError, exit code 2, nothing written
# ---------------------------------------------------------------------------------------------

def _cmd_cases():
    def wrong_shape(src):
        np.save(src / "val_data_joint.npy", np.zeros((N_TE, 3, T, 25), np.float32))
        return src / "val_data_joint.npy", "expected (N, C, T, V, M)"

    def other_part_shape(src):
        np.save(src / "val_data_joint.npy", np.ones((N_TE, 3, 64, 25, 2), np.float32))
        return src / "val_data_joint.npy", "differs from the other part"

    def label_count(src):
        with open(src / "train_label.pkl", "wb") as f:
            pickle.dump((["a"] * N_TR, [0] * (N_TR - 1)), f)
        return src / "train_label.pkl", f"{N_TR - 1} labels for {N_TR} samples"

    def not_a_pair(src):
        with open(src / "train_label.pkl", "wb") as f:
            pickle.dump({"labels": [0] * N_TR}, f)
        return src / "train_label.pkl", "(sample_names, labels)"

    def unreadable_pickle(src):
        (src / "train_label.pkl").write_bytes(b"\x80\x04garbage that is not a pickle")
        return src / "train_label.pkl", "unreadable pickle"

    def non_finite(src):
        x = np.load(src / "val_data_joint.npy")
        x[3, 1, 2, 3, 0] = np.nan
        np.save(src / "val_data_joint.npy", x)
        return src / "val_data_joint.npy", "non-finite values (NaN or inf) in sample 3"

    def all_zero_sample(src):
        x = np.load(src / "train_data_joint.npy")
        x[2] = 0
        np.save(src / "train_data_joint.npy", x)
        (src / "train_num_frame.npy").unlink()
        return src / "train_data_joint.npy", "sample 2"

    def bad_num_frame(src):
        np.save(src / "train_num_frame.npy", np.full(N_TR, T + 1))
        return src / "train_num_frame.npy", "outside 1..300"

    def fractional_num_frame(src):
        lengths = np.load(src / "train_num_frame.npy").astype(np.float64)
        lengths[3] = 50.5
        np.save(src / "train_num_frame.npy", lengths)
        return src / "train_num_frame.npy", "frame count 50.5 of sample 3 is not a whole number"

    def not_npy(src):
        (src / "train_data_joint.npy").write_bytes(b"hello")
        return src / "train_data_joint.npy", "unreadable .npy"

    def negative_label(src):
        with open(src / "val_label.pkl", "wb") as f:
            pickle.dump((["a"] * N_TE, [-1] * N_TE), f)
        return src / "val_label.pkl", "negative label"

    return [wrong_shape, other_part_shape, label_count, not_a_pair, unreadable_pickle, non_finite, all_zero_sample,
            bad_num_frame, fractional_num_frame, not_npy, negative_label]


@pytest.mark.parametrize("case", _cmd_cases(), ids=lambda f: f.__name__)
def test_cmd_bad_input(tmp_path, capsys, case):
    src = tmp_path / "src"
    write_cmd(src)
    path, msg = case(src)
    out = tmp_path / "out"
    assert main(["prepare", "convert", "--src", str(src), "--out", str(out), "--format", "cmd"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and msg in err, err
    assert not out.exists()


def _npz_cases():
    x = np.ones((4, T, 150), np.float32)
    y = np.eye(60)[:4]
    return [
        ("wrong_width", dict(x_train=np.ones((4, T, 149), np.float32), y_train=y), "not persons x 25 joints x 3"),
        ("wrong_ndim", dict(x_train=np.ones((4, 3, T, 25, 2), np.float32), y_train=y), "expected (N, T, M*V*C)"),
        ("label_count", dict(x_train=x, y_train=np.eye(60)[:3]), "3 labels for 4 samples"),
        ("not_one_hot", dict(x_train=x, y_train=y * 2), "not one-hot"),
        ("missing_y", dict(x_train=x), "x_train without y_train"),
        ("non_finite", dict(x_train=np.where(np.arange(150) == 3, np.inf, x), y_train=y), "non-finite"),
        ("no_arrays", dict(z=x), "no x_train / x_test"),
    ]


@pytest.mark.parametrize("arrays,msg", [c[1:] for c in _npz_cases()], ids=[c[0] for c in _npz_cases()])
def test_ctrgcn_bad_input(tmp_path, capsys, arrays, msg):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    out = tmp_path / "out"
    assert main(["prepare", "convert", "--src", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and msg in err, err
    assert not out.exists()


def test_ctrgcn_not_a_zip(tmp_path, capsys):
    path = tmp_path / "data.npz"
    path.write_bytes(b"not a zip")
    assert main(["prepare", "convert", "--src", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "unreadable npz" in capsys.readouterr().err
    with zipfile.ZipFile(tmp_path / "e.npz", "w"):
        pass
    assert main(["prepare", "convert", "--src", str(tmp_path / "e.npz"), "--out", str(tmp_path / "o")]) == 2


def _pyskl_cases():
    def bad_shape(obj):
        obj["annotations"][1]["keypoint"] = np.ones((2, 300, 25), np.float32)

    def other_joints(obj):
        obj["annotations"][2]["keypoint"] = np.ones((1, 20, 17, 3), np.float32)

    def non_finite(obj):
        obj["annotations"][0]["keypoint"][0, 3, 4, 1] = np.nan

    def total_frames(obj):
        obj["annotations"][0]["total_frames"] = 51

    def unknown_id(obj):
        obj["split"]["xsub_val"].append("S999")

    def missing_key(obj):
        del obj["annotations"][3]["label"]

    def not_pyskl(obj):
        obj.pop("split")

    return [(bad_shape, "keypoint is not an (M, T, V, C) array"), (other_joints, "others have V=25"),
            (non_finite, "non-finite keypoints"), (total_frames, "total_frames 51"), (unknown_id, "unknown sample 'S999'"),
            (missing_key, "lacks frame_dir / label / keypoint"), (not_pyskl, "expected a pyskl pickle")]


@pytest.mark.parametrize("case,msg", _pyskl_cases(), ids=lambda c: getattr(c, "__name__", ""))
def test_pyskl_bad_input(tmp_path, capsys, case, msg):
    obj = pyskl_annotations()
    case(obj)
    path = tmp_path / "anno.pkl"
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    out = tmp_path / "out"
    assert main(["prepare", "convert", "--src", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and msg in err, err
    assert not out.exists()


def test_missing_source(tmp_path, capsys):
    assert main(["prepare", "convert", "--src", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["--frames", "0"], "error: --frames: must be at least 1, got 0"),
    (["--chunk", "-2"], "error: --chunk: must be at least 1, got -2"),
    (["--layout", "foo"], "error: --layout: unknown skeleton layout 'foo'"),
])
def test_options_name_themselves(tmp_path, capsys, argv, msg):
    """"--frames/--chunk: must be at least 1" named neither; "unknown skeleton layout 'foo'"
    named no option."""
    src = tmp_path / "cmd"
    write_cmd(src)
    assert main(["prepare", "convert", "--src", str(src), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(msg) and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_skipped_files_summary_reads_by_reason():
    from pcm3.data.common import BadFiles

    report = BadFiles(skip_bad=True)
    for path, message in (("a", "799 lines, not a multiple of 20"), ("b", "empty file"), ("c", "empty file")):
        report.handle(DataError(path, message))
    assert report.summary() == "skipped 3 bad files: empty file (2 files); 799 lines, not a multiple of 20 (1 file)"
