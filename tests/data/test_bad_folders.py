"""Prepared folders damaged by hand: each refused by the reader (or listed by ``pcm3 info``) as
one line naming the file, never a numpy traceback or a wrong figure.

Small folders are written with :class:`PreparedWriter` (clips ``c``: 6 samples of 10 frames, 3
classes; sequences ``s``: 3 videos of 7, 3 and 12 frames) and broken one file at a time.
"""

import csv
import io
import json
import shutil

import numpy as np
import pytest

from pcm3.cli import main
from pcm3.data.dataset import SkeletonDataset
from pcm3.data.prepared import Prepared, PreparedWriter
from pcm3.errors import DataError
from tests.cli_errors import one_line_error

VIDEO_FRAMES = (7, 3, 12)


def write_clips(out, n=6, t=10):
    rng = np.random.default_rng(0)
    with PreparedWriter(out, kind="clips", shape=(n, 3, t, 25, 2), dataset="toy", layout="ntu25",
                        class_names=["a", "b", "c"]) as w:
        for i in range(n):
            w.set(i, rng.normal(size=(3, t, 25, 2)).astype(np.float32), label=i % 3, length=t - i % 2,
                  name=f"s{i}", subject=i % 2)
        w.set_splits({"xsub": {"train": [0, 1, 2, 3], "test": [4, 5]}})
    return out


def write_sequences(out):
    rng = np.random.default_rng(1)
    intervals = {0: [(0, 1, 5, 1.0)], 2: [(1, 0, 4, 1.0), (2, 6, 12, 0.5)]}
    with PreparedWriter(out, kind="sequences", shape=(3, 3, 25, 2), dataset="toy", layout="ntu25",
                        class_names=["a", "b", "c"]) as w:
        for i, t in enumerate(VIDEO_FRAMES):
            w.append(rng.normal(size=(3, t, 25, 2)).astype(np.float32), name=f"v{i}",
                     intervals=intervals.get(i, []), subject=i % 2)
        w.set_splits({"xsub": {"train": [0, 1], "test": [2]}})
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("bad") / "c")


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    return write_sequences(tmp_path_factory.mktemp("bad") / "s")


def copy(src, tmp_path, name="bad"):
    return shutil.copytree(src, tmp_path / name)


# --------------------------------------------------------------------------- T1: integer arrays


@pytest.mark.parametrize("name, value", [
    ("labels.npy", np.array(["a"] * 6)),
    ("labels.npy", np.array([0.5, 1, 2, 0, 1, 2])),       # was truncated to 0 by the evaluations
    ("labels.npy", np.array([0.0, 1, 2, 0, 1, 2])),       # whole numbers in a float array: refused too
    ("labels.npy", np.ones(6, dtype=bool)),
    ("lengths.npy", np.array(["10"] * 6)),
    ("lengths.npy", np.full(6, 9.5)),
])
def test_labels_and_lengths_must_be_integers(clips, tmp_path, capsys, name, value):
    bad = copy(clips, tmp_path)
    np.save(bad / name, value)
    with pytest.raises(DataError, match=rf"{name}: dtype {value.dtype}, expected integers"):
        Prepared(bad)
    for argv in (["info", bad], ["visualize", bad, "--sample", "0", "--out", tmp_path / "v.gif"],
                 ["eval", "knn", "--raw-input", "--data", bad, "--benchmark", "xsub", "--out", tmp_path / "ev"]):
        assert main([str(a) for a in argv]) == 2
        one_line_error(capsys, f"{name}: dtype {value.dtype}, expected integers (int64)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # no GIF, no evaluation folder


def test_integer_arrays_of_any_width_are_read_as_int64(clips, tmp_path):
    bad = copy(clips, tmp_path)
    np.save(bad / "labels.npy", np.load(bad / "labels.npy").astype(np.int32))
    np.save(bad / "lengths.npy", np.load(bad / "lengths.npy").astype(np.uint16))
    p = Prepared(bad)
    assert p.labels.dtype == p.lengths.dtype == np.int64 and p.validate() == []


def test_labels_below_minus_one_are_a_validation_problem(clips, tmp_path):
    bad = copy(clips, tmp_path)
    labels = np.load(bad / "labels.npy")
    labels[2] = -7
    np.save(bad / "labels.npy", labels)
    assert Prepared(bad).validate(scan=False) == ["labels.npy: label -7 < -1 (-1: no label)"]


def test_data_of_strings_is_refused(clips, tmp_path):
    bad = copy(clips, tmp_path)
    np.save(bad / "data.npy", np.full((6, 3, 10, 25, 2), "x"))
    with pytest.raises(DataError, match=r"data.npy: dtype <U1, expected float32 coordinates"):
        Prepared(bad)


# --------------------------------------------------------------------------- T2: offsets.npy


def _offsets(value):
    def edit(a):
        a = a.copy()
        a[1] = value
        return a
    return edit


@pytest.mark.parametrize("edit, needle", [
    (_offsets(10 ** 9), "offsets must not decrease: offsets[1] = 1000000000, offsets[2] = 10 (video 1)"),
    (_offsets(11), "offsets must not decrease: offsets[1] = 11, offsets[2] = 10 (video 1); 1 such videos"),
    (lambda a: a + 1, "the first offset is 1, expected 0"),
    (lambda a: np.append(a, a[-1]), "shape (5,) for 3 videos, expected (4,)"),
    (lambda a: a[:-1], "shape (3,) for 3 videos, expected (4,)"),
    (lambda a: np.array([0, 7, 10, 21]), "the last offset is 21, data.npy holds 22 frames"),
    (lambda a: a.astype(np.float64), "dtype float64, expected integers (int64)"),
    (lambda a: a[None], "shape (1, 4) for 3 videos, expected (4,)"),
])
def test_inconsistent_offsets_are_refused_when_the_folder_is_opened(sequences, tmp_path, capsys, edit, needle):
    """``a[1] = 10**9`` passed (only the length and the last offset were checked): detection then
    failed with "negative dimensions", visualize with an IndexError."""
    bad = copy(sequences, tmp_path)
    np.save(bad / "offsets.npy", edit(np.load(bad / "offsets.npy")))
    with pytest.raises(DataError) as e:
        Prepared(bad)
    assert str(e.value).startswith(f"{bad / 'offsets.npy'}: {needle}"), str(e.value)
    assert main(["info", str(bad)]) == 2
    one_line_error(capsys, "offsets.npy", needle)


def test_missing_offsets_are_named(sequences, tmp_path):
    bad = copy(sequences, tmp_path)
    (bad / "offsets.npy").unlink()
    with pytest.raises(DataError, match=r"offsets.npy: missing: not a complete prepared folder"):
        Prepared(bad)


def test_lengths_that_disagree_with_the_offsets_are_a_validation_problem(sequences, tmp_path):
    bad = copy(sequences, tmp_path)
    np.save(bad / "lengths.npy", np.array([7, 4, 12]))
    assert Prepared(bad).validate(scan=False) == [
        "lengths.npy: 1 videos whose length differs from their frames in offsets.npy"]


# --------------------------------------------------------------------------- T2 / W3: intervals.csv

HEADER = "index,label,start,end,confidence\n"
GOOD = HEADER + "0,0,1,5,1.0\n2,1,0,4,1.0\n2,2,6,12,0.5\n"


INTERVAL_CASES = [
    (GOOD[:40], "line 2: 4 fields, the header has 5 (a truncated file?)"),       # truncate -s
    (b"\x80\x81\xfe" * 30, "line 1: not UTF-8 text (byte 0)"),
    (GOOD.encode() + b"2,1,\xff,9,1.0\n", "line 5: not UTF-8 text (byte 74)"),
    (GOOD + "0,x,1,2,1.0\n", "line 5: label 'x' is not a whole number"),
    (GOOD + "0,1,1.5,2,1.0\n", "line 5: start '1.5' is not a whole number"),
    (GOOD + "0,1,1,2,high\n", "line 5: confidence 'high' is not a number"),
    (GOOD + "0,1,1,2,nan\n", "line 5: confidence nan is not finite"),
    (GOOD + "0,999,1,2,1.0\n", "line 5: label 999 outside 0..2 (3 classes in meta.json)"),
    (GOOD + "0,-1,1,2,1.0\n", "line 5: label -1 outside 0..2"),
    (GOOD + "3,1,1,2,1.0\n", "line 5: video 3 outside 0..2"),
    (GOOD + "0,1,-5,2,1.0\n", "line 5: frames -5..2 of video 0, expected 0 <= start < end <= 7"),
    (GOOD + "0,1,1,8,1.0\n", "line 5: frames 1..8 of video 0, expected 0 <= start < end <= 7"),
    (GOOD + "1,1,2,2,1.0\n", "line 5: frames 2..2 of video 1, expected 0 <= start < end <= 3"),
    (GOOD + "1,1,3,1,1.0\n", "line 5: frames 3..1 of video 1"),
    ("index,label,start,end\n0,0,1,5\n", "line 1: no column confidence (header index,label,start,end,confidence)"),
    (GOOD + "0,1," + "1" * 200_000 + ",2,1.0\n", "line 5: not valid CSV (field larger than field limit"),
]


@pytest.mark.parametrize("text, needle", INTERVAL_CASES, ids=[needle for _, needle in INTERVAL_CASES])
def test_damaged_intervals_name_the_line(sequences, tmp_path, capsys, text, needle):
    """A truncated, binary or non-numeric intervals.csv crashed info, detection and visualize
    (TypeError, UnicodeDecodeError, ValueError); a class or frames outside the data set passed."""
    bad = copy(sequences, tmp_path)
    path = bad / "intervals.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    p = Prepared(bad)  # opening the folder does not read it
    with pytest.raises(DataError) as e:
        p.intervals()
    assert str(e.value).startswith(f"{path}: {needle}"), str(e.value)
    assert f"intervals.csv: {needle}" in "; ".join(p.validate(scan=False))
    for scan in ([], ["--no-scan"]):
        assert main(["info", str(bad), *scan]) == 2
        one_line_error(capsys, "validation failed", f"intervals.csv: {needle}")
    from pcm3.evaluation.detection import Videos

    with pytest.raises(DataError, match="intervals.csv: line"):  # what eval detection reads first
        Videos(Prepared(bad))


def test_missing_intervals_fail_validation_and_detection(sequences, tmp_path, capsys):
    """Without intervals.csv `pcm3 info` said ok and detection scored every video as background
    (mAP 0). Videos without labelled actions have the header alone."""
    from pcm3.evaluation.detection import Videos

    bad = copy(sequences, tmp_path)
    (bad / "intervals.csv").unlink()
    p = Prepared(bad)  # still opens: its videos can be drawn
    assert p.sample(2).shape == (3, 12, 25, 2)
    with pytest.raises(DataError, match=r"intervals.csv: missing: the labelled actions"):
        p.intervals()
    assert main(["info", str(bad), "--no-scan"]) == 2
    one_line_error(capsys, "validation failed: intervals.csv: missing")
    assert p.summary()["intervals"] is None  # the summary still prints
    with pytest.raises(DataError, match="intervals.csv: missing"):
        Videos(p)
    (bad / "intervals.csv").write_text(HEADER)  # the header alone: no labelled action...
    with pytest.raises(DataError, match="0 labelled actions, meta.json records 3"):  # ...but it had 3
        Prepared(bad).intervals()
    meta = json.loads((bad / "meta.json").read_text())
    (bad / "meta.json").write_text(json.dumps({**meta, "num_intervals": 0}))
    assert Prepared(bad).intervals() == [] and Prepared(bad).validate() == []


def test_intervals_cut_at_a_line_end(sequences, tmp_path, capsys):
    """A file cut exactly after a line parsed as a whole one: meta.json now records the count."""
    bad = copy(sequences, tmp_path)
    path = bad / "intervals.csv"
    path.write_text(GOOD.rsplit("2,2,", 1)[0])  # the last row gone, the line before it whole
    with pytest.raises(DataError) as e:
        Prepared(bad).intervals()
    assert str(e.value) == f"{path}: 2 labelled actions, meta.json records 3 (a truncated or edited file?)"
    assert main(["info", str(bad), "--no-scan"]) == 2
    one_line_error(capsys, "validation failed", "2 labelled actions, meta.json records 3")
    meta = json.loads((bad / "meta.json").read_text())
    del meta["num_intervals"]  # a folder from before the count: read as it is
    (bad / "meta.json").write_text(json.dumps(meta))
    assert len(Prepared(bad).intervals()) == 2
    (bad / "meta.json").write_text(json.dumps({**meta, "num_intervals": "3"}))
    with pytest.raises(DataError, match="'num_intervals' is '3', expected a count"):
        Prepared(bad)


def test_intervals_of_a_sound_folder(sequences):
    p = Prepared(sequences)
    assert p.intervals() == [{"index": 0, "label": 0, "start": 1, "end": 5, "confidence": 1.0},
                             {"index": 2, "label": 1, "start": 0, "end": 4, "confidence": 1.0},
                             {"index": 2, "label": 2, "start": 6, "end": 12, "confidence": 0.5}]
    p.intervals()[0]["start"] = 99  # read once, handed out as copies
    assert p.intervals()[0]["start"] == 1
    assert p.validate() == [] and p.summary()["intervals"] == 3
    assert p.meta["num_intervals"] == 3  # written by PreparedWriter


def test_eval_detection_refuses_broken_intervals(sequences, tmp_path, capsys):
    import torch

    from pcm3.evaluation.runner import save_encoder
    from pcm3.models import Encoder, EncoderConfig

    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(hidden=8, layers=1)).eval()
    enc.layout, enc.stream, enc.clip_len, enc.test_crop = "ntu25", "joint", 16, 0.95
    save_encoder(enc, tmp_path / "enc.pt", {})
    bad = copy(sequences, tmp_path)
    (bad / "intervals.csv").write_text(GOOD + "0,999,1,2,1.0\n")
    out = tmp_path / "ev"
    assert main(["eval", "detection", "--encoder", str(tmp_path / "enc.pt"), "--data", str(bad), "--benchmark",
                 "xsub", "--out", str(out), "--set", "epochs=1", "--set", "milestones=[1]", "--quiet"]) == 2
    one_line_error(capsys, "intervals.csv: line 5: label 999 outside 0..2")
    assert not out.exists()
    # checked before the output folder (it used to be read inside it): a folder that is no
    # pcm3 output is not what the error is about, and is left as it was
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    (bad / "intervals.csv").write_text(GOOD.rsplit("2,2,", 1)[0])
    assert main(["eval", "detection", "--encoder", str(tmp_path / "enc.pt"), "--data", str(bad), "--out", str(out),
                 "--quiet"]) == 2
    one_line_error(capsys, "2 labelled actions, meta.json records 3")
    assert [f.name for f in out.iterdir()] == ["mine.txt"]
    assert main(["eval", "detection", "--raw-input", "--data", str(bad), "--out", str(out), "--quiet"]) == 2
    one_line_error(capsys, "--raw-input: not defined for detection")


# --------------------------------------------------------------------------- T3 / W4: samples.csv


def _rows(path):
    return list(csv.reader(io.StringIO(path.read_text())))


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


SAMPLES_CASES = [
    (lambda p: p.write_bytes(bytes(range(128, 256)) * 4), "line 1: not UTF-8 text (byte 0)"),
    (lambda p: _write_rows(p, _rows(p)[:4]), "3 rows, expected one per sample (6)"),
    (lambda p: p.write_bytes(p.read_bytes()[:-5]), "line 7: 4 fields, the header has 5"),
    (lambda p: _write_rows(p, _rows(p)[:3] + [_rows(p)[3] + ["x"]] + _rows(p)[4:]), "line 4: 6 fields, the header has 5"),
    (lambda p: _write_rows(p, [["index", "title", "label", "length", "subject"]] + _rows(p)[1:]),
     "no 'name' column"),
    (lambda p: _write_rows(p, _rows(p)[:1] + _rows(p)[2:] + _rows(p)[1:2]), "line 2: index '1', expected 0"),
    (lambda p: p.write_text(p.read_text() + "6," + "s" * 200_000 + "\n"), "line 8: not valid CSV (field larger"),
]


@pytest.mark.parametrize("damage, needle", SAMPLES_CASES, ids=[needle for _, needle in SAMPLES_CASES])
def test_damaged_samples_csv_is_refused_by_every_reader(clips, tmp_path, capsys, damage, needle):
    """Random bytes (UnicodeDecodeError) or a truncated file (IndexError) crashed visualize, eval
    detection and the subject carving of ``eval linear --set val_fraction=...``; pretraining ran."""
    bad = copy(clips, tmp_path)
    damage(bad / "samples.csv")
    p = Prepared(bad)  # opening does not read samples.csv
    with pytest.raises(DataError) as e:
        p.rows
    assert str(e.value).startswith(f"{bad / 'samples.csv'}: {needle}"), str(e.value)
    assert p.sample_name(0) == "?"  # for another file's message
    for call in (lambda: p.names, lambda: p.groups(np.arange(4)), lambda: SkeletonDataset(p, "xsub", "train")):
        with pytest.raises(DataError, match="samples.csv"):
            call()
    assert main(["info", str(bad), "--no-scan"]) == 2
    one_line_error(capsys, f"validation failed: samples.csv: {needle}")
    assert main(["eval", "knn", "--raw-input", "--data", str(bad), "--benchmark", "xsub", "--out",
                 str(tmp_path / "ev"), "--set", "ks=[1]"]) == 2
    one_line_error(capsys, "samples.csv", needle)
    assert not (tmp_path / "ev").exists()


def test_pretraining_refuses_a_truncated_samples_csv(clips, tmp_path, capsys):
    bad = copy(clips, tmp_path)
    _write_rows(bad / "samples.csv", _rows(bad / "samples.csv")[:3])
    out = tmp_path / "run"
    assert main(["pretrain", "--config", "demo", "--data", str(bad), "--out", str(out), "--quiet",
                 "--set", "train.batch_size=2"]) == 2
    one_line_error(capsys, "samples.csv: 2 rows, expected one per sample (6)")
    assert not out.exists()


def test_a_byte_order_mark_and_a_trailing_blank_line_are_fine(clips, tmp_path):
    bad = copy(clips, tmp_path)
    (bad / "samples.csv").write_bytes(b"\xef\xbb\xbf" + (bad / "samples.csv").read_bytes() + b"\r\n")
    p = Prepared(bad)
    assert p.names == [f"s{i}" for i in range(6)] and p.rows[0]["index"] == "0" and p.validate() == []


# --------------------------------------------------------------------------- info --no-scan


def test_info_without_the_scan_still_checks_labels_and_lengths(clips, tmp_path, capsys):
    """``--no-scan`` skipped every check of labels.npy and lengths.npy, not only the scan of
    data.npy: a sample of 0 frames (which pretrain, eval and visualize refuse) passed."""
    bad = copy(clips, tmp_path)
    lengths = np.load(bad / "lengths.npy")
    lengths[2] = 0
    np.save(bad / "lengths.npy", lengths)
    for scan in ([], ["--no-scan"]):
        assert main(["info", str(bad), *scan]) == 2
        one_line_error(capsys, "validation failed: lengths.npy: 1 samples with no frames")


def test_an_array_header_numpy_cannot_parse_is_one_line(clips, tmp_path, capsys):
    """A labels.npy header with an unbalanced parenthesis ended in numpy's tokenize.TokenError
    traceback (`pcm3 info` crashed)."""
    bad = copy(clips, tmp_path)
    raw = (bad / "labels.npy").read_bytes().replace(b"'shape': (", b"'shape': ((", 1).replace(b" \n", b"\n", 1)
    (bad / "labels.npy").write_bytes(raw)
    with pytest.raises(DataError, match="labels.npy: unreadable array"):
        Prepared(bad)
    assert main(["info", str(bad)]) == 2
    one_line_error(capsys, "labels.npy: unreadable array")


def test_the_writer_writes_utf8_whatever_the_locale(tmp_path, monkeypatch):
    """The readers decode samples.csv and intervals.csv as UTF-8; the writer used the locale's
    encoding (cp1252 on Windows: a non-ASCII sample name would be refused as not UTF-8)."""
    import builtins

    import pcm3.data.prepared as prepared

    opened = {}

    def recording_open(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".csv"):
            opened[str(file).rsplit("/", 1)[-1]] = kwargs.get("encoding")
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(prepared, "open", recording_open, raising=False)
    write_sequences(tmp_path / "s")
    assert opened == {"samples.csv": "utf-8", "intervals.csv": "utf-8"}


def test_a_folder_of_no_samples_keeps_the_samples_header(tmp_path):
    """With no rows the writer wrote an empty header, which the reader then refused as "no
    'name' column": the format's columns are always written."""
    with PreparedWriter(tmp_path / "z", kind="clips", shape=(0, 3, 10, 25, 2), dataset="toy", layout="ntu25",
                        class_names=["a"]) as w:
        w.set_splits({"xsub": {"train": [], "test": []}})
    assert (tmp_path / "z" / "samples.csv").read_text().splitlines() == ["index,name,label,length"]
    assert Prepared(tmp_path / "z").validate() == []
