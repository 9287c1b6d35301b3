"""NTU RGB+D reader, preprocessing, splits and ``pcm3 prepare ntu60/ntu120``.

Real samples come from ``../shared/data/ntu_raw`` (or ``$PCM3_SHARED_DATA/ntu_raw``) and are
read in place; bad-input cases are fixture files written here.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from pcm3.cli import main
from pcm3.data import ntu
from pcm3.data.prepared import Prepared
from pcm3.errors import DataError


def _shared_data() -> Path | None:
    env = os.environ.get("PCM3_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="module")
def raw_dir() -> Path:
    shared = _shared_data()
    if shared is None or not (shared / "ntu_raw").is_dir():
        pytest.skip("real NTU samples not available: ../shared/data/ntu_raw (or $PCM3_SHARED_DATA/ntu_raw) missing")
    return (shared / "ntu_raw").resolve()


REAL = {  # name: (frames, bodies) of the 5 real files
    "S001C001P001R001A011": (82, 1),
    "S001C003P008R002A058": (70, 2),
    "S002C001P003R001A003": (100, 1),
    "S003C001P015R001A034": (71, 1),
    "S004C002P003R001A017": (124, 1),
}


# ----------------------------------------------------------------------------- fixture files

def _body(seed: int, frames: int, offset=(0.0, 0.0, 3.0), motion: float = 0.05) -> np.ndarray:
    """A plausible standing body ``(T, 25, 3)`` in metres, moving by ``motion`` per frame."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.3, (25, 3)) + np.asarray(offset)
    base[0], base[1] = np.asarray(offset) + [0, -0.3, 0], np.asarray(offset)   # hip, spine-mid
    base[4], base[8] = np.asarray(offset) + [-0.2, 0.2, 0], np.asarray(offset) + [0.2, 0.2, 0]
    return base + np.cumsum(rng.normal(0, motion, (frames, 1, 3)), axis=0)


def _skeleton_text(frames) -> str:
    """NTU text for ``frames``: a list per frame of ``(tracking id, (25, 3) joints)``."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body_id, joints in bodies:
            out.append(f"{body_id} 0 1 1 1 1 0 0.01 -0.25 2")
            out.append("25")
            for x, y, z in joints:
                out.append(f"{x:.7g} {y:.7g} {z:.7g} 336.5 192.8 1184.5 489.4 -0.22 0.034 0.97 -0.10 2")
    return "\r\n".join(out) + "\r\n"


def _write(path: Path, frames) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_skeleton_text(frames), newline="")
    return path


def _one_person(seed: int, frames: int = 3):
    body = _body(seed, frames)
    return [[("72057594037931648", body[t])] for t in range(frames)]


def _edit_line(text: str, line: int, fn) -> str:
    """Apply ``fn`` to 1-based ``line`` of ``text``."""
    lines = text.split("\r\n")
    lines[line - 1] = fn(lines[line - 1])
    return "\r\n".join(lines)


def _bad_texts():
    """``{case: (file text, expected 1-based line or None, message fragment)}``.

    Line layout of a one-person file: 1 frame count, 2 body count, 3 body info, 4 joint
    count, 5-29 joints of frame 1; frame 2 starts at line 30 (joints 33-57).
    """
    good = _skeleton_text(_one_person(0, 3))
    n = len(good.rstrip("\r\n").split("\r\n"))
    return {
        "truncated": ("\r\n".join(good.split("\r\n")[:40]), 40, "file ends early"),
        "cut_mid_line": (good.rstrip("\r\n")[:-30], n, "file ends early"),
        "non_numeric": (_edit_line(good, 7, lambda s: "abc " + s.split(" ", 1)[1]), 7, "non-numeric value ('abc')"),
        "bad_number": (_edit_line(good, 8, lambda s: "1-2 " + s.split(" ", 1)[1]), 8, "non-numeric value ('1-2')"),
        "joint_count": (_edit_line(good, 4, lambda s: "24"), 4, "wrong joint count (expected 25, found 24)"),
        "value_count": (_edit_line(good, 9, lambda s: s.rsplit(" ", 1)[0]), 9, "wrong number of values on a joint line"),
        # one line short of its x, a later one with a value too many: the file's total is right
        "value_count_cancels": (_edit_line(_edit_line(good, 5, lambda s: s.split(" ", 1)[1]), 20, lambda s: s + " 7"),
                                5, "wrong number of values on a joint line (expected 12, found 11)"),
        "nan": (_edit_line(good, 33, lambda s: "NaN " + s.split(" ", 1)[1]), 33, "non-finite coordinate"),
        "inf": (_edit_line(good, 34, lambda s: s.split(" ")[0] + " -inf " + s.split(" ", 2)[2]), 34,
                "non-finite coordinate"),
        "zero_frames": ("0\r\n", 1, "empty sample (0 frames)"),
        "no_bodies": ("3\r\n0\r\n0\r\n0\r\n", None, "empty sample (no bodies in any of 3 frames)"),
        "extra_content": (good + "1\r\n", n + 1, "unexpected content after the last frame"),
        "body_line": (_edit_line(good, 3, lambda s: s.rsplit(" ", 1)[0]), 3, "wrong number of values on the body-info"),
    }


BAD_CASES = sorted(_bad_texts())


# ----------------------------------------------------------------------------- reading

def _naive_xyz(path: Path) -> np.ndarray:
    """Every joint line's x, y, z in file order, read the slow obvious way."""
    lines = path.read_text().splitlines()
    i, out = 1, []
    for _ in range(int(lines[0])):
        bodies = int(lines[i])
        i += 1
        for _ in range(bodies):
            joints = int(lines[i + 1])
            out += [[float(v) for v in lines[j].split()[:3]] for j in range(i + 2, i + 2 + joints)]
            i += 2 + joints
    return np.array(out)


def test_read_real_files(raw_dir):
    for name, (frames, bodies) in REAL.items():
        path = raw_dir / f"{name}.skeleton"
        s = ntu.read_skeleton(path)
        assert s["num_frames"] == frames
        assert len(s["bodies"]) == bodies and s["slots"].shape == (bodies, frames, 25, 3)
        present = s["slots"].any(axis=(2, 3))                                  # (S, T)
        got = np.concatenate([s["slots"][m, t] for t in range(frames) for m in range(bodies) if present[m, t]])
        np.testing.assert_array_equal(got, _naive_xyz(path))                   # bit-exact x, y, z
        for body in s["bodies"].values():
            assert body.shape == (frames, 25, 3) and np.isfinite(body).all()
    two = ntu.read_skeleton(raw_dir / "S001C003P008R002A058.skeleton")
    assert list(two["bodies"]) == ["72057594037944738", "72057594037944734"]  # ids kept exact (> 2**53)


def test_read_numbers_like_float(tmp_path):
    frames = _one_person(1, 1)
    text = _skeleton_text(frames)
    for line, value in ((5, "1.5E-05"), (6, "-2e3"), (7, "+.5"), (8, "3."), (9, "7")):
        text = _edit_line(text, line, lambda s, v=value: v + " " + s.split(" ", 1)[1])
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(text, newline="")
    xs = ntu.read_skeleton(path)["slots"][0, 0, :5, 0]
    assert xs.tolist() == [1.5e-05, -2000.0, 0.5, 3.0, 7.0]


@pytest.mark.parametrize("case", BAD_CASES)
def test_read_bad_file_names_file_and_line(tmp_path, case):
    text, line, fragment = _bad_texts()[case]
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(text, newline="")
    with pytest.raises(DataError) as err:
        ntu.read_skeleton(path)
    assert err.value.path == str(path) and err.value.line == line
    assert fragment in err.value.message
    where = f"{path}:{line}: " if line else f"{path}: "
    assert str(err.value).startswith(where) and "\n" not in str(err.value)


def test_read_real_file_with_shifted_values_is_an_error(raw_dir, tmp_path):
    """A joint line that lost its x and another that gained a value do not go unnoticed."""
    lines = (raw_dir / "S001C001P001R001A011.skeleton").read_bytes().split(b"\n")
    lines[4] = lines[4].split(b" ", 1)[1]                     # frame 1, joint 1: x gone
    lines[100] = lines[100].replace(b"\r", b" 1\r")          # a later joint line: one value more
    path = tmp_path / "S001C001P001R001A011.skeleton"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError) as err:
        ntu.read_skeleton(path)
    assert err.value.line == 5 and "wrong number of values on a joint line (expected 12, found 11)" in str(err.value)


def test_values_are_counted_per_line_like_split(tmp_path):
    text = "2\r\n \t1 2  3\t\v4 \r\n\n5\f6\r7  \n\n   \n8"
    raw = text.encode()
    assert ntu._values_per_line(raw).tolist() == [len(line.split()) for line in raw.split(b"\n")]
    assert ntu._values_per_line(b"1\n").tolist() == [1, 0]
    frames = _one_person(3, 2)                                # irregular spacing, 12 values a line
    text = "\r\n".join(line.replace(" ", "  \t", 3) + " " if line.count(" ") == 11 else line
                        for line in _skeleton_text(frames).split("\r\n"))
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_text(text, newline="")
    np.testing.assert_allclose(ntu.read_skeleton(path)["slots"][0], np.array([b for [(_, b)] in frames]), rtol=1e-6)


def test_tracking_ids_and_slots(tmp_path):
    a, b = _body(1, 2), _body(2, 2, offset=(1, 0, 3))
    path = _write(tmp_path / "S001C001P001R001A050.skeleton", [[("11", a[0]), ("22", b[0])], [("22", b[1]), ("11", a[1])]])
    s = ntu.read_skeleton(path)
    np.testing.assert_allclose(s["bodies"]["11"], a, rtol=1e-6)              # written with 7 digits
    np.testing.assert_allclose(s["bodies"]["22"], b, rtol=1e-6)
    np.testing.assert_allclose(s["slots"][0], [a[0], b[1]], rtol=1e-6)       # slot = position in the frame


# ----------------------------------------------------------------------------- preprocessing

def _field_reference(path: Path, max_frames: int = 300) -> np.ndarray:
    """The field's recipe, written out plainly (per person, frame by frame): (3, T, 25, 2)."""
    s = ntu.read_skeleton(path)
    T = s["num_frames"]
    data = np.zeros((4, T, 25, 3))
    data[:min(4, len(s["slots"]))] = s["slots"][:4]
    energy = []
    for body in data:
        valid = body[body.sum(axis=(1, 2)) != 0]
        energy.append(sum(valid[..., c].std() for c in range(3)) if len(valid) else 0)
    data = data[np.argsort(energy)[::-1][:2]]
    buf = np.zeros((2, max_frames, 25, 3))
    buf[:, :min(T, max_frames)] = data[:, :max_frames]
    for person in buf:                                        # pad each person on its own
        if person.sum() == 0:
            continue
        if person[0].sum() == 0:
            keep = person[person.sum(axis=(1, 2)) != 0].copy()
            person[:] = 0
            person[:len(keep)] = keep
        for f in range(max_frames):
            if person[f].sum() == 0 and person[f:].sum() == 0:
                person[f:] = np.concatenate([person[:f]] * (max_frames // f + 1))[:max_frames - f]
                break
    center = buf[0, :, 1:2].copy()
    for m in range(2):
        if buf[m].sum() != 0:
            buf[m] = (buf[m] - center) * (buf[m].sum(-1, keepdims=True) != 0)

    def euler_rodrigues(v, target):
        axis = np.cross(v, target)
        angle = np.arccos(np.clip(v @ target / np.linalg.norm(v), -1, 1))
        if np.abs(axis).sum() < 1e-6 or abs(angle) < 1e-6:
            return np.eye(3)
        axis = axis / np.linalg.norm(axis)
        a = np.cos(angle / 2)
        b, c, d = -axis * np.sin(angle / 2)
        return np.array([[a * a + b * b - c * c - d * d, 2 * (b * c + a * d), 2 * (b * d - a * c)],
                         [2 * (b * c - a * d), a * a + c * c - b * b - d * d, 2 * (c * d + a * b)],
                         [2 * (b * d + a * c), 2 * (c * d - a * b), a * a + d * d - b * b - c * c]])

    for (j0, j1), target in (((0, 1), [0, 0, 1.0]), ((4, 8), [1.0, 0, 0])):
        r = euler_rodrigues(buf[0, 0, j1] - buf[0, 0, j0], np.array(target))
        for m in range(2):
            for f in range(max_frames):
                if buf[m, f].sum() != 0:
                    buf[m, f] = buf[m, f] @ r.T
    return buf.transpose(3, 1, 2, 0)


def test_preprocess_matches_field_recipe_on_real_files(raw_dir):
    for name in REAL:
        path = raw_dir / f"{name}.skeleton"
        x, length = ntu.preprocess(ntu.read_skeleton(path))
        assert x.shape == (3, 300, 25, 2) and x.dtype == np.float32
        np.testing.assert_allclose(x, _field_reference(path), atol=2e-6)


def test_preprocess_invariants_on_real_files(raw_dir):
    for name, (frames, bodies) in REAL.items():
        x, length = ntu.preprocess(ntu.read_skeleton(raw_dir / f"{name}.skeleton"))
        assert length == frames and np.isfinite(x).all()
        p1 = x[..., 0].astype(np.float64)                                      # (C, T, V)
        np.testing.assert_allclose(p1[:, 0, 1], 0, atol=1e-7)                  # spine-mid at origin
        shoulders = p1[:, 0, 8] - p1[:, 0, 4]
        assert shoulders[0] > 0.1 and np.abs(shoulders[1:]).max() < 1e-6       # along +x
        hip_spine = p1[:, 0, 1] - p1[:, 0, 0]
        assert np.degrees(np.arccos(hip_spine[2] / np.linalg.norm(hip_spine))) < 10  # about +z
        idx = np.arange(300) % length
        np.testing.assert_array_equal(x, x[:, idx])                            # repeat padding
        second = np.abs(x[..., 1]).max()
        assert (second > 0.1) if bodies == 2 else (second == 0)


def test_first_rotation_puts_hip_spine_on_z(raw_dir):
    s = ntu.read_skeleton(raw_dir / "S001C003P008R002A058.skeleton")
    clip = ntu.center_on_spine(ntu.trim_frames(ntu.select_bodies(s)))
    r = ntu.rotation_to(clip[0, 0, 1] - clip[0, 0, 0], [0, 0, 1])
    v = r @ (clip[0, 0, 1] - clip[0, 0, 0])
    np.testing.assert_allclose(v[:2], 0, atol=1e-12)
    assert v[2] > 0
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1)


def test_body_selection_by_energy():
    t = 20
    still = _body(1, t, motion=0.0)
    busy = _body(2, t, offset=(1, 0, 3), motion=0.2)
    mid = _body(3, t, offset=(-1, 0, 3), motion=0.05)
    sample = {"num_frames": t, "slots": np.stack([still, busy, mid]), "bodies": {"a": still, "b": busy, "c": mid}}
    energies = [ntu.motion_energy(b) for b in (still, busy, mid)]
    assert energies[1] > energies[2] > energies[0] > 0
    for by in ("slot", "id"):
        np.testing.assert_array_equal(ntu.select_bodies(sample, 2, by=by), np.stack([busy, mid]))
    lone = {"num_frames": t, "slots": still[None], "bodies": {"a": still}}
    kept = ntu.select_bodies(lone)
    assert kept.shape == (2, t, 25, 3) and not kept[1].any()
    assert ntu.motion_energy(np.zeros((5, 25, 3))) == 0.0


def test_trim_center_pad_on_synthetic_frames():
    t = 12
    bodies = np.zeros((2, t, 25, 3))
    bodies[0, 3:9] = _body(1, 6)                 # person 1 in frames 3-8
    bodies[1, 4:7] = _body(2, 3, offset=(1, 0, 3))
    clip = ntu.trim_frames(bodies, max_frames=300)
    assert clip.shape[1] == 6                    # leading 3 and trailing 3 empty frames dropped
    np.testing.assert_array_equal(clip, bodies[:, 3:9])
    assert ntu.trim_frames(bodies, max_frames=4).shape[1] == 4
    centred = ntu.center_on_spine(clip)
    np.testing.assert_allclose(centred[0, :, 1], 0)
    np.testing.assert_allclose(centred[1, 1:4], clip[1, 1:4] - clip[0, 1:4, 1:2])
    assert not centred[1, [0, 4, 5]].any()       # absent frames stay zero
    x = ntu.pad_clip(centred.astype(np.float32), 10)
    assert x.shape == (3, 10, 25, 2)
    np.testing.assert_array_equal(x[:, 6:], x[:, :4])


def test_preprocess_empty_coordinates_is_an_error(tmp_path):
    zeros = np.zeros((25, 3))
    path = _write(tmp_path / "S001C001P001R001A001.skeleton", [[("1", zeros)], [("1", zeros)]])
    with pytest.raises(DataError, match="empty sample"):
        ntu.preprocess(ntu.read_skeleton(path))


# ----------------------------------------------------------------------------- names and splits

def test_names_and_splits():
    info = ntu.parse_name("S001C003P008R002A058.skeleton")
    assert info == ntu.SampleName(setup=1, camera=3, subject=8, replication=2, action=58)
    assert ntu.parse_name("S001C003P008R002A058_rgb.avi") is None
    assert len(ntu.NTU_ACTIONS) == 120 and ntu.NTU_ACTIONS[57] == "handshaking"
    assert len(ntu.NTU60_XSUB_TRAIN_SUBJECTS) == 20 and len(ntu.NTU120_XSUB_TRAIN_SUBJECTS) == 53
    expect = {  # name: (xsub train, xview train, xset train)
        "S001C001P001R001A011": (True, False, False),
        "S001C003P008R002A058": (True, True, False),
        "S002C001P003R001A003": (False, False, True),
        "S003C001P015R001A034": (True, False, False),
        "S004C002P003R001A017": (False, True, True),
        "S018C002P045R001A061": (True, True, True),
        "S019C001P044R002A120": (False, False, False),
    }
    for name, flags in expect.items():
        info = ntu.parse_name(name)
        assert tuple(ntu.is_train(info, b) for b in ("xsub", "xview", "xset")) == flags, name
    assert ntu.in_variant(ntu.parse_name("S017C001P001R001A060"), "ntu60")
    assert not ntu.in_variant(ntu.parse_name("S018C001P001R001A001"), "ntu60")
    assert not ntu.in_variant(ntu.parse_name("S001C001P001R001A061"), "ntu60")
    assert ntu.in_variant(ntu.parse_name("S032C001P106R002A120"), "ntu120")
    infos = [ntu.parse_name(n) for n in expect]
    splits = ntu.make_splits(infos, "ntu120")
    assert set(splits) == {"xsub", "xset"} and splits["xset"]["train"] == [2, 4, 5]


def test_missing_list(tmp_path):
    f = tmp_path / "missing.txt"
    f.write_text("# published list\nS001C002P005R002A008\n\nS001C002P006R001A008.skeleton\n")
    assert ntu.read_missing_list(f) == {"S001C002P005R002A008", "S001C002P006R001A008"}
    f.write_text("S001C002P005R002A008\nhello\n")
    with pytest.raises(DataError, match=r"missing.txt:2: not an NTU sample name"):
        ntu.read_missing_list(f)


# ----------------------------------------------------------------------------- prepare, end to end

def _cli(*args) -> int:
    return main(["prepare", *args, "--quiet"])


def test_prepare_ntu60_real(raw_dir, tmp_path, capsys):
    out = tmp_path / "ntu60"
    assert _cli("ntu60", "--raw", str(raw_dir), "--out", str(out), "--workers", "1") == 0
    printed = capsys.readouterr().out
    assert "xsub/train" in printed and "xview/test" in printed
    ds = Prepared(out)
    assert ds.shape == (5, 3, 300, 25, 2) and ds.num_classes == 60 and ds.class_names[0] == "drink water"
    assert ds.names == sorted(REAL)
    assert ds.lengths.tolist() == [REAL[n][0] for n in ds.names]
    assert ds.labels.tolist() == [int(n[-3:]) - 1 for n in ds.names]
    assert ds.splits["xsub"]["train"].tolist() == [0, 1, 3] and ds.splits["xview"]["train"].tolist() == [1, 4]
    row = ds.rows[1]
    assert (row["setup"], row["camera"], row["subject"], row["replication"]) == ("1", "3", "8", "2")
    for i, name in enumerate(ds.names):
        x, _ = ntu.preprocess(ntu.read_skeleton(raw_dir / f"{name}.skeleton"))
        np.testing.assert_array_equal(ds.sample(i), x)
    assert ds.validate() == []
    assert not ntu.work_dir(out).exists() and not (out / "skipped.csv").exists()
    assert ds.meta["preprocessing"]["max_frames"] == 300


def test_prepare_parallel_equals_serial_and_ntu120(raw_dir, tmp_path):
    serial = ntu.prepare_ntu(raw_dir, tmp_path / "a", "ntu120", workers=1, progress=False)
    parallel = ntu.prepare_ntu(raw_dir, tmp_path / "b", "ntu120", workers=2, progress=False, max_frames=64)
    assert serial["samples"] == parallel["samples"] == 5
    a, b = Prepared(tmp_path / "a"), Prepared(tmp_path / "b")
    assert a.benchmarks == ["xset", "xsub"] and a.num_classes == 120
    assert b.shape == (5, 3, 64, 25, 2) and b.lengths.max() == 64
    np.testing.assert_array_equal(np.asarray(a.data)[:, :, :64], np.asarray(b.data))  # every clip >= 64 frames


def _raw_with(tmp_path: Path, good: int, bad=()) -> Path:
    raw = tmp_path / "raw"
    for i in range(good):
        _write(raw / "sub" / f"S001C00{1 + i % 3}P00{1 + i}R001A00{1 + i}.skeleton", _one_person(i, 4 + i))
    texts = _bad_texts()
    for j, case in enumerate(bad):
        (raw / f"S002C001P001R001A{10 + j:03d}.skeleton").write_text(texts[case][0], newline="")
    return raw


@pytest.mark.parametrize("case", BAD_CASES)
def test_prepare_stops_at_bad_file(tmp_path, capsys, case):
    raw = _raw_with(tmp_path, 2, [case])
    out = tmp_path / "out"
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out), "--workers", "1") == 2
    err = capsys.readouterr().err.strip()
    line = _bad_texts()[case][1]
    assert err.startswith(f"error: {raw / 'S002C001P001R001A010.skeleton'}" + (f":{line}:" if line else ":"))
    assert "\n" not in err
    assert not out.exists() and not ntu.work_dir(out).exists()  # nothing cached: no cache folder left


def test_prepare_skip_bad_reports(tmp_path, capsys):
    raw = _raw_with(tmp_path, 3, BAD_CASES)
    (raw / "notes.skeleton").write_text("x")
    out = tmp_path / "out"
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out), "--workers", "2", "--skip-bad") == 0
    printed = capsys.readouterr().out
    assert f"skipped {len(BAD_CASES) + 1} bad files" in printed and "empty sample" in printed
    ds = Prepared(out)
    assert len(ds) == 3 and ds.validate() == []
    with open(out / "skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    texts = _bad_texts()
    by_path = {Path(r["path"]).name: r for r in rows}
    assert "notes.skeleton" in by_path
    for j, case in enumerate(BAD_CASES):
        r = by_path[f"S002C001P001R001A{10 + j:03d}.skeleton"]
        assert r["line"] == (str(texts[case][1]) if texts[case][1] else "") and texts[case][2] in r["problem"]


def test_prepare_missing_list_and_other_datasets(tmp_path, capsys):
    raw = _raw_with(tmp_path, 2, ["zero_frames"])
    _write(raw / "S018C001P001R001A001.skeleton", _one_person(5))            # NTU 120 only: ignored
    missing = tmp_path / "missing.txt"
    missing.write_text("S002C001P001R001A010\n")
    out = tmp_path / "out"
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out), "--missing", str(missing)) == 0
    assert "left out 1 samples" in capsys.readouterr().out
    assert len(Prepared(out)) == 2
    assert _cli("ntu120", "--raw", str(raw), "--out", str(tmp_path / "o120"), "--missing", str(missing)) == 0
    assert len(Prepared(tmp_path / "o120")) == 3


def test_published_missing_list_is_shipped_and_left_out_by_default(tmp_path, capsys):
    names = ntu.read_missing_list(ntu.PUBLISHED_MISSING)
    assert len(names) == 535 and sum(int(n[1:4]) <= 17 for n in names) == 302  # NTU 120's list, NTU 60's part
    assert "S001C002P005R002A008" in names and "S032C003P067R002A077" in names
    raw = tmp_path / "raw"
    raw.mkdir()
    _write(raw / "S001C001P001R001A001.skeleton", _one_person(1))
    _write(raw / "S001C002P005R002A008.skeleton", [[]] * 3)  # listed: a file without bodies, as many are
    out = tmp_path / "out"
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out)) == 0
    assert "left out 1 samples named in the published missing-skeleton list" in capsys.readouterr().out
    assert len(Prepared(out)) == 1 and "published" in Prepared(out).meta["missing_list"]
    assert _cli("ntu60", "--raw", str(raw), "--out", str(tmp_path / "all"), "--missing", "none") == 2
    err = capsys.readouterr().err
    assert "S001C002P005R002A008.skeleton" in err and "empty sample" in err and "--skip-bad" in err


def test_prepare_raw_folder_errors(tmp_path, capsys):
    assert _cli("ntu60", "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "o")) == 2
    assert "no such NTU raw skeleton folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _cli("ntu60", "--raw", str(tmp_path / "empty"), "--out", str(tmp_path / "o")) == 2
    assert "no .skeleton files found" in capsys.readouterr().err
    raw = _raw_with(tmp_path, 0)
    _write(raw / "S020C001P001R001A001.skeleton", _one_person(1))
    assert _cli("ntu60", "--raw", str(raw), "--out", str(tmp_path / "o")) == 2
    assert "none of the 1 .skeleton files is a ntu60 sample" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_prepare_resumes_from_cache(tmp_path, monkeypatch):
    raw = _raw_with(tmp_path, 6, ["truncated"])                              # the bad file sorts last
    out = tmp_path / "out"
    with pytest.raises(DataError, match="file ends early") as err:
        ntu.prepare_ntu(raw, out, workers=1, progress=False, shard_size=2)
    assert not out.exists() and len(list(ntu.work_dir(out).glob("shard-*.npz"))) == 3
    assert f"stay cached in {ntu.work_dir(out)}" in str(err.value) and err.value.line == 40

    reads = []
    real_read = ntu.read_skeleton
    monkeypatch.setattr(ntu, "read_skeleton", lambda p: reads.append(Path(p).name) or real_read(p))
    first = raw / "sub" / "S001C001P001R001A001.skeleton"
    first.write_text(_skeleton_text(_one_person(99, 5)), newline="")         # changes shard 0 only
    res = ntu.prepare_ntu(raw, out, workers=1, progress=False, shard_size=2, skip_bad=True)
    assert sorted(reads) == sorted([first.name, "S001C001P004R001A004.skeleton", "S002C001P001R001A010.skeleton"])
    assert res["reused"] == 4 and res["read"] == 3 and res["samples"] == 6 and res["skipped"] == 1
    assert not ntu.work_dir(out).exists()
    ds = Prepared(out)
    assert ds.lengths.tolist()[0] == 5
    x, _ = ntu.preprocess(real_read(first))
    np.testing.assert_array_equal(ds.sample(0), x)


def _tree(root: Path) -> dict:
    """Every file (-> content) and folder (-> 'dir') below ``root``, hidden ones too."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def test_overwrite_refuses_a_folder_holding_the_users_files(tmp_path, capsys):
    raw = _raw_with(tmp_path, 2)
    out = tmp_path / "out"
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out), "--workers", "1") == 0
    (out / "my_notes.txt").write_text("notes")
    (out / "my_results").mkdir()
    (out / "my_results" / "r.txt").write_text("x")
    capsys.readouterr()
    before = _tree(tmp_path)
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out), "--workers", "1", "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out}: ") and "\n" not in err
    assert "my_notes.txt" in err and "my_results/" in err and "move them out" in err and "nothing was changed" in err
    assert _tree(tmp_path) == before                                          # no cache folder either
    (out / "my_notes.txt").unlink()
    (out / "my_results" / "r.txt").unlink()
    (out / "my_results").rmdir()
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out), "--workers", "1", "--overwrite") == 0
    assert len(Prepared(out)) == 2 and sorted(os.listdir(tmp_path)) == ["out", "raw"]


@pytest.mark.parametrize("content", [[], ["shard-notes.txt"], ["shard-00000-0123456789abcdef.npz"]])
def test_a_cache_folder_pcm3_did_not_make_is_left_alone(tmp_path, capsys, content):
    raw = _raw_with(tmp_path, 2)
    out = tmp_path / "o6"
    work = ntu.work_dir(out)
    work.mkdir()
    for name in content:
        (work / name).write_text("the user's")
    before = _tree(tmp_path)
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out), "--workers", "1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {work}: exists and was not made by pcm3") and "\n" not in err
    assert _tree(tmp_path) == before


def test_success_removes_only_the_cache_files_pcm3_wrote(tmp_path):
    raw = _raw_with(tmp_path, 3, ["truncated"])
    out = tmp_path / "out"
    with pytest.raises(DataError, match="stay cached in"):
        ntu.prepare_ntu(raw, out, workers=1, progress=False, shard_size=2)
    work = ntu.work_dir(out)
    (work / "shard-notes.txt").write_text("the user's")                       # put in pcm3's cache folder
    res = ntu.prepare_ntu(raw, out, workers=1, progress=False, shard_size=2, skip_bad=True)
    assert res["reused"] == 2 and res["samples"] == 3
    assert os.listdir(work) == ["shard-notes.txt"]                            # the shards and marker are gone


def test_disk_full_while_caching_names_the_file(tmp_path, capsys, monkeypatch):
    import errno

    raw = _raw_with(tmp_path, 2)
    out = tmp_path / "out"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ntu.np, "savez", full)
    assert _cli("ntu60", "--raw", str(raw), "--out", str(out), "--workers", "1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ntu.work_dir(out) / 'shard-00000-'}") and ".npz: disk full while writing" in err
    assert "\n" not in err and sorted(os.listdir(tmp_path)) == ["raw"]       # no output, no temporary, no cache
