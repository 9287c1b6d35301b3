"""Property test: every reader, fed random corruptions of real sample files, either returns a
clean sample or raises a one-line :class:`pcm3.errors.DataError` naming the file.

Corruptions (1-3 per example, drawn by Hypothesis): cut the file at a byte, drop / duplicate /
swap lines, overwrite a byte, put a strange token (``nan``, ``inf``, ``1e999``, ``-``, a letter,
a NUL, an empty field, a huge number) in place of a value. A clean sample is finite and has the
reader's documented shape. Anything else (an IndexError, a ValueError, a hang) fails the test.

Real samples come from ``../shared/data`` (skipped when absent); NW-UCLA, of which no raw file is
shipped there, gets a json in its documented format built from an MSR recording (20 joints too).
Deterministic (``derandomize``) and without an example database, so CI runs the same examples
and nothing is written into the repository.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pcm3.data import msr3d, ntu, nwucla, pku  # noqa: E402
from pcm3.errors import DataError  # noqa: E402
from tests.conftest import shared_data_dir  # noqa: E402

SHARED = shared_data_dir()
pytestmark = pytest.mark.skipif(SHARED is None, reason="real samples not available: ../shared/data is absent")

TOKENS = [b"nan", b"inf", b"-inf", b"1e999", b"-", b"x", b"\x00", b"", b"1" * 400, b"0x1F", b"1,5", b"  "]

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

corruption = st.one_of(
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("drop_line"), st.floats(0, 1)),
    st.tuples(st.just("dup_line"), st.floats(0, 1)),
    st.tuples(st.just("swap_lines"), st.floats(0, 1), st.floats(0, 1)),
    st.tuples(st.just("byte"), st.floats(0, 1), st.integers(0, 255)),
    st.tuples(st.just("token"), st.floats(0, 1), st.sampled_from(TOKENS)),
)


def corrupt(data: bytes, ops) -> bytes:
    for op in ops:
        kind = op[0]
        lines = data.split(b"\n")
        at = lambda f, n: min(int(f * n), max(n - 1, 0))  # noqa: E731
        if kind == "cut":
            data = data[:at(op[1], len(data) + 1)]
        elif kind == "drop_line" and lines:
            del lines[at(op[1], len(lines))]
            data = b"\n".join(lines)
        elif kind == "dup_line" and lines:
            i = at(op[1], len(lines))
            lines.insert(i, lines[i])
            data = b"\n".join(lines)
        elif kind == "swap_lines" and len(lines) > 1:
            i, j = at(op[1], len(lines)), at(op[2], len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data = b"\n".join(lines)
        elif kind == "byte" and data:
            i = at(op[1], len(data))
            data = data[:i] + bytes([op[2]]) + data[i + 1:]
        elif kind == "token" and lines:
            i = at(op[1], len(lines))
            fields = lines[i].replace(b",", b" ").split()
            if fields:
                k = int(op[1] * 7919) % len(fields)
                fields[k] = op[2]
                sep = b"," if b"," in lines[i] else b" "
                lines[i] = sep.join(fields)
            data = b"\n".join(lines)
    return data


@pytest.fixture(scope="module")
def work():
    d = Path(tempfile.mkdtemp(prefix="pcm3-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def check_outcome(read, path: Path, check_clean) -> None:
    """``read(path)`` must return a clean sample or raise a one-line DataError naming the file."""
    try:
        result = read(path)
    except DataError as e:
        msg = str(e)
        assert "\n" not in msg and path.name in msg, msg
        return
    check_clean(result)


def _finite(x: np.ndarray, shape_tail) -> None:
    assert x.dtype == np.float32 and np.isfinite(x).all()
    assert x.shape[0] == 3 and x.shape[1] >= 1 and x.shape[2:] == shape_tail, x.shape


def _source(rel: str, max_lines: int | None = None) -> bytes:
    data = (SHARED / rel).read_bytes()
    if max_lines:  # a real file cut at a line boundary (whole frames): still a valid sample
        data = b"\n".join(data.split(b"\n")[:max_lines]) + b"\n"
    return data


@SETTINGS
@given(ops=st.lists(corruption, min_size=1, max_size=3), which=st.integers(0, 2))
def test_msr3d_reader(work, ops, which):
    name = ["a01_s01_e01_skeleton3D.txt", "a05_s03_e02_skeleton3D.txt", "a20_s10_e03_skeleton3D.txt"][which]
    src = SHARED / "msr_action3d" / name
    if not src.exists():
        src = sorted((SHARED / "msr_action3d").glob("*_skeleton3D.txt"))[which]
    path = work / src.name
    path.write_bytes(corrupt(src.read_bytes(), ops))
    check_outcome(msr3d.read_sequence, path, lambda r: _finite(r[0], (20, 1)))


@SETTINGS
@given(ops=st.lists(corruption, min_size=1, max_size=3), which=st.integers(0, 4))
def test_ntu_reader(work, ops, which):
    src = sorted((SHARED / "ntu_raw").glob("*.skeleton"))[which]
    path = work / src.name
    path.write_bytes(corrupt(src.read_bytes(), ops))

    def clean(sample):
        bodies = ntu.select_bodies(sample)  # what prepare does next must work on it too
        assert np.isfinite(bodies).all()

    check_outcome(ntu.read_skeleton, path, clean)


@SETTINGS
@given(ops=st.lists(corruption, min_size=1, max_size=3))
def test_pku_skeleton_reader(work, ops):
    src = sorted((SHARED / "pku_mmd" / "skeleton").glob("*.txt"))[0]
    path = work / src.name
    path.write_bytes(corrupt(_source(src.relative_to(SHARED).as_posix(), max_lines=120), ops))
    check_outcome(pku.read_skeleton, path, lambda x: _finite(x, (25, 2)))


@SETTINGS
@given(ops=st.lists(corruption, min_size=1, max_size=3))
def test_pku_label_reader(work, ops):
    src = sorted((SHARED / "pku_mmd" / "label").glob("*.txt"))[0]
    path = work / ("label_" + src.name)
    path.write_bytes(corrupt(src.read_bytes(), ops))

    def clean(result):
        intervals, errors = result
        for e in errors:  # bad lines are named, one line each
            assert isinstance(e, DataError) and "\n" not in str(e) and path.name in str(e)
        for line, label, start, end, conf in intervals:
            assert 0 <= label < len(pku.PKU_CLASSES) and 0 <= start < end

    check_outcome(lambda p: pku.read_labels(p, num_frames=5000), path, clean)


@SETTINGS
@given(ops=st.lists(corruption, min_size=1, max_size=3))
def test_nwucla_reader(work, ops):
    x, _ = msr3d.read_sequence(SHARED / "msr_action3d" / "a01_s01_e01_skeleton3D.txt")
    skeletons = np.round(x[..., 0].transpose(1, 2, 0)[:12], 4).tolist()  # [T][20][3]
    text = json.dumps({"file_name": "a01_s01_e01_v01", "skeletons": skeletons, "label": 1}, indent=0)
    path = work / "a01_s01_e01_v01.json"
    path.write_bytes(corrupt(text.encode(), ops))
    check_outcome(nwucla.read_sample, path, lambda s: _finite(s["x"], (20, 1)))
