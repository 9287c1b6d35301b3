"""Frozen-encoder features: the test-time centre crop, and labels / indices in sample order."""

import numpy as np
import pytest
import torch

from pcm3.data.dataset import SkeletonDataset
from pcm3.data.prepared import PreparedWriter
from pcm3.evaluation.features import encode, extract_features
from tests.prepared_copies import copy_with_values

LENGTHS = [80, 41, 16, 100, 57, 33, 64, 90]
OUT_LEN = 16


@pytest.fixture(scope="module")
def ramps(tmp_path_factory):
    """Clips whose every coordinate is ``100 * j + t + 1`` at frame ``t`` of sample ``j`` (a ramp in
    time, so linear resizing is exact; zero padding after the valid frames); labels ``(3 j) % 5``."""
    out = tmp_path_factory.mktemp("features") / "ramps"
    n = len(LENGTHS)
    with PreparedWriter(out, kind="clips", shape=(n, 3, 100, 25, 2), dataset="ramps", layout="ntu25",
                        class_names=[f"c{k}" for k in range(5)]) as w:
        for j, length in enumerate(LENGTHS):
            x = np.zeros((3, 100, 25, 2), dtype=np.float32)
            x[:, :length] = (100 * j + np.arange(length) + 1)[None, :, None, None]
            w.set(j, x, label=(3 * j) % 5, length=length, name=f"s{j}", subject=j % 2 + 1)
        w.set_splits({"xsub": {"train": list(range(0, n, 2)), "test": list(range(1, n, 2))}})
    return out


def expected_ramp(j, ratio):
    """Frame ``i`` of the centre ``ratio`` crop of sample ``j`` resized to OUT_LEN (align_corners=False):
    ``int((1 - ratio) * L / 2)`` frames dropped at each end, then segment position
    ``max((i + 0.5) * crop / OUT_LEN - 0.5, 0)``."""
    length = LENGTHS[j]
    bias = int((1 - ratio) * length / 2)
    crop = length - 2 * bias
    pos = np.maximum((np.arange(OUT_LEN) + 0.5) * crop / OUT_LEN - 0.5, 0)
    return 100 * j + 1 + bias + pos


def first_coordinate(features):
    """``(N, C * T * V * M)`` flattened clips -> ``(N, T)`` of coordinate x, joint 0, person 1."""
    return features.reshape(len(features), 3, OUT_LEN, 25, 2)[:, 0, :, 0, 0]


def test_encode_applies_the_centre_crop(ramps):
    order = [3, 0, 1, 2]                                    # 100, 80, 41, 16 frames: 2, 2, 1, 0 dropped per end
    dataset = SkeletonDataset(ramps, indices=order)
    kw = dict(clip_len=OUT_LEN, stream="joint", layout="ntu25")
    default, _, _ = encode(torch.nn.Flatten(), dataset, **kw)   # test_crop 0.95 by default
    full, _, _ = encode(torch.nn.Flatten(), dataset, test_crop=1.0, **kw)
    for row, j in enumerate(order):
        np.testing.assert_allclose(first_coordinate(default)[row], expected_ramp(j, 0.95), rtol=1e-6)
        np.testing.assert_allclose(first_coordinate(full)[row], expected_ramp(j, 1.0), rtol=1e-6)
    assert not np.allclose(default, full)
    half, _, _ = encode(torch.nn.Flatten(), dataset, test_crop=0.5, **kw)
    np.testing.assert_allclose(first_coordinate(half)[0], expected_ramp(3, 0.5), rtol=1e-6)


def test_labels_and_indices_follow_the_samples_across_batches(ramps):
    order = [5, 2, 7, 0, 3, 6, 1]
    dataset = SkeletonDataset(ramps, indices=order)
    features, labels, index = encode(torch.nn.Flatten(), dataset, clip_len=OUT_LEN, stream="joint", layout="ntu25",
                                     batch_size=3)
    assert index.tolist() == order
    assert labels.tolist() == [(3 * j) % 5 for j in order]
    sample = np.floor(first_coordinate(features)[:, 0] / 100).astype(int)   # each row's own ramp
    assert sample.tolist() == order
    feats2, labels2 = extract_features(torch.nn.Flatten(), dataset, batch_size=3, clip_len=OUT_LEN)
    np.testing.assert_allclose(feats2, features)
    assert labels2.tolist() == labels.tolist()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_encode_names_a_non_finite_clip(ramps, tmp_path, num_workers):
    """The feature loader (the memory map read directly, or DataLoader workers) refuses a NaN clip
    by name: a data set too large to scan before the run must not give a wrong figure."""

    from pcm3.errors import DataError
    from pcm3.evaluation.baselines import RawInput

    bad = copy_with_values(ramps, tmp_path / "nan", np.s_[5, 0, 3, 0, 0])
    ds = SkeletonDataset(bad, "xsub", "test")
    with pytest.raises(DataError, match=r"data.npy: sample 5 \(s5\) holds non-finite") as e:
        encode(RawInput("ntu25", "joint", OUT_LEN), ds, clip_len=OUT_LEN, stream="joint", layout="ntu25",
               batch_size=2, num_workers=num_workers)
    assert "\n" not in str(e.value)


def test_non_finite_features_are_one_line_not_a_figure(ramps):
    """An encoder with a NaN weight on finite clips: a wrong kNN / linear figure before."""
    from pcm3.errors import DataError

    class Broken(torch.nn.Module):
        def forward(self, x):  # (N, C, T, V, M) -> (N, D), one sample's feature NaN
            f = x.flatten(1)[:, :8].clone()
            f[1, 3] = float("nan")
            return f

    split = SkeletonDataset(ramps, "xsub", "test")
    with pytest.raises(DataError, match=r"non-finite features .* 1 of 4 clips, the first sample 3 \(s3\)"):
        encode(Broken(), split, clip_len=OUT_LEN, stream="joint", layout="ntu25")
    broken = Broken()
    broken.file = "runs/x"  # set by the runner's loaders: the file or run is named
    with pytest.raises(DataError, match="^runs/x: gives non-finite features"):
        encode(broken, split, clip_len=OUT_LEN, stream="joint", layout="ntu25", crops=2)
