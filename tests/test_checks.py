"""The checks run before anything is written: labels and lengths, NaN/inf, by sample."""

import numpy as np
import pytest

from pcm3.checks import check_finite, check_samples, refuse_non_finite
from pcm3.data.prepared import Prepared, PreparedWriter
from pcm3.errors import DataError


@pytest.fixture
def folder(tmp_path):
    """6 clips of 3 classes; clip 4 holds a NaN, clip 5 has no label (-1)."""
    out = tmp_path / "d"
    with PreparedWriter(out, kind="clips", shape=(6, 3, 8, 25, 1), dataset="t", layout="ntu25",
                        class_names=["a", "b", "c"]) as w:
        for i in range(6):
            x = np.ones((3, 8, 25, 1), np.float32)
            if i == 4:
                x[1, 2, 3, 0] = np.inf
            w.set(i, x, label=-1 if i == 5 else i % 3, length=8, name=f"s{i}")
        w.set_splits({"xsub": {"train": [0, 1, 2, 5], "test": [3, 4]}})
    return Prepared(out)


def test_no_label_is_fine_for_pretraining_not_for_a_labelled_evaluation(folder):
    check_samples(folder, np.array([0, 1, 5]))
    with pytest.raises(DataError, match=r"labels.npy: sample 5 \(s5\) has no label \(-1\).*0\.\.2"):
        check_samples(folder, np.array([0, 1, 5]), labelled=True)
    check_samples(folder, np.array([0, 1, 2]), labelled=True)


def test_label_beyond_the_classes_is_named(folder, tmp_path):
    folder.labels[2] = 3
    for labelled in (False, True):
        with pytest.raises(DataError, match=r"sample 2 \(s2\) has label 3, outside 0\.\.2 \(3 classes"):
            check_samples(folder, np.array([0, 2]), labelled=labelled)


def test_non_finite_clip_is_named_by_the_scan_and_by_a_loader(folder):
    with pytest.raises(DataError, match=r"data.npy: sample 4 \(s4\) holds non-finite"):
        check_finite(folder, np.array([3, 4]))
    assert check_finite(folder, np.array([0, 1])) is True
    assert check_finite(folder, np.array([3, 4]), max_bytes=10) is False  # too large: left to the loaders
    block = np.asarray(folder.data[[3, 4]])
    with pytest.raises(DataError, match=r"sample 4 \(s4\)") as e:
        refuse_non_finite(folder, np.array([3, 4]), block)
    assert "\n" not in str(e.value)
    refuse_non_finite(folder, np.array([0, 1]), np.asarray(folder.data[[0, 1]]))
    refuse_non_finite(folder, np.array([], dtype=np.int64), np.zeros((0, 3, 8, 25, 1), np.float32))
