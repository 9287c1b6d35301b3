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


@pytest.fixture(scope="module")
def kinect_clips(tmp_path_factory):
    """Six random clips of the 20-joint ``kinect_v1`` layout, one person."""
    out = tmp_path_factory.mktemp("features") / "kinect"
    g = np.random.default_rng(0)
    with PreparedWriter(out, kind="clips", shape=(6, 3, 40, 20, 1), dataset="kinect", layout="kinect_v1",
                        class_names=["a", "b"]) as w:
        for j in range(6):
            w.set(j, g.normal(size=(3, 40, 20, 1)).astype(np.float32), label=j % 2, length=40, name=f"k{j}",
                  subject=j % 2 + 1)
        w.set_splits({"xsub": {"train": [0, 2, 4], "test": [1, 3, 5]}})
    return out


def test_extract_features_defaults_to_the_datas_layout(kinect_clips):
    """A module without ``layout`` on 20-joint data: the bones of the data's layout (``ntu25`` before,
    whose bones index joints the data does not have)."""
    from pcm3.skeleton import to_stream

    dataset = SkeletonDataset(kinect_clips)
    feats, _ = extract_features(torch.nn.Flatten(), dataset, stream="bone", clip_len=OUT_LEN)
    named, _ = extract_features(torch.nn.Flatten(), dataset, stream="bone", clip_len=OUT_LEN, layout="kinect_v1")
    np.testing.assert_array_equal(feats, named)
    joints, _ = extract_features(torch.nn.Flatten(), dataset, stream="joint", clip_len=OUT_LEN)
    clips = torch.from_numpy(joints).view(6, 3, OUT_LEN, 20, 1)
    np.testing.assert_allclose(feats, to_stream(clips, "bone", "kinect_v1").flatten(1).numpy(), rtol=1e-6)


class PerFrame(torch.nn.Module):
    """A sequence model: ``(N, C, T, V, M) -> (N, T, 8)``, not one feature vector per clip."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 8)

    def forward(self, x):
        return self.lin(x.mean(dim=(3, 4)).transpose(1, 2))


def test_an_output_that_is_not_n_by_d_is_one_line_naming_the_module(ramps):
    """A per-frame output failed deep inside the tasks before (k-NN: a size mismatch; linear:
    "too many values to unpack")."""
    from pcm3.errors import ConfigError

    split = SkeletonDataset(ramps, "xsub", "test")
    message = r"^encoder PerFrame: returned shape \(4, 16, 8\) for 4 clips .* one feature vector per clip, \(N, D\)"
    for crops in (0, 2):
        with pytest.raises(ConfigError, match=message) as e:
            encode(PerFrame(), split, clip_len=OUT_LEN, stream="joint", layout="ntu25", crops=crops)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=message):
        extract_features(PerFrame(), split, clip_len=OUT_LEN)
    pair = torch.nn.Module()
    pair.forward = lambda x: (x.flatten(1), x)
    with pytest.raises(ConfigError, match=r"returned a tuple for 4 clips"):
        encode(pair, split, clip_len=OUT_LEN, stream="joint", layout="ntu25")


def test_encode_puts_back_every_submodules_mode_also_after_an_error(ramps):
    """A module in training with a frozen (eval) BatchNorm inside: ``train(was_training)`` made the
    BatchNorm train again before."""
    from pcm3.errors import ConfigError

    module = frozen_norm()
    split = SkeletonDataset(ramps, "xsub", "test")
    encode(module, split, clip_len=OUT_LEN, stream="joint", layout="ntu25")
    extract_features(module, split, clip_len=OUT_LEN)
    assert module.training and not module[1].training and module[0].training
    seq = PerFrame().train()
    with pytest.raises(ConfigError):
        encode(seq, split, clip_len=OUT_LEN, stream="joint", layout="ntu25")
    assert seq.training and seq.lin.training


def frozen_norm():
    """A module in training mode whose BatchNorm is frozen (eval)."""
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(3 * OUT_LEN * 25 * 2)).train()
    module[1].eval()
    return module


def test_feature_dim_is_the_attribute_or_one_forward_pass():
    from pcm3.errors import ConfigError
    from pcm3.evaluation.features import feature_dim
    from pcm3.models import Encoder, EncoderConfig

    def never():
        raise AssertionError("no forward pass for a module that says its D")

    assert feature_dim(Encoder(EncoderConfig(hidden=8, layers=1)), never) == 16
    module, seq = frozen_norm(), PerFrame()
    clip = torch.zeros(1, 3, OUT_LEN, 25, 2)
    assert feature_dim(module, lambda: clip) == 3 * OUT_LEN * 25 * 2 and module.training and not module[1].training
    with pytest.raises(ConfigError, match="encoder PerFrame: returned shape"):
        feature_dim(seq, lambda: clip)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kept_mode_and_device_moves_a_module_back_and_keeps_the_cuda_generator():
    from pcm3.evaluation.features import kept_mode_and_device
    from pcm3.rng import preserved_rng

    module = torch.nn.Linear(3, 2).train()
    with kept_mode_and_device(module):
        module.cuda().eval()
    assert module.weight.device.type == "cpu" and module.training
    torch.cuda.manual_seed_all(7)
    expected = torch.rand(2, device="cuda")
    torch.cuda.manual_seed_all(7)
    with preserved_rng():
        torch.manual_seed(0)
        torch.rand(5, device="cuda")
    assert torch.equal(torch.rand(2, device="cuda"), expected)


def test_features_of_the_wrong_count_and_the_probe_in_eval_mode():
    """An (M, D) output for N clips, M != N, is refused too; the probe forward pass runs in eval
    mode (a training BatchNorm refuses one sample) and leaves the module's mode as it was."""
    from pcm3.errors import ConfigError
    from pcm3.evaluation.features import check_features, feature_dim

    with pytest.raises(ConfigError, match=r"returned shape \(1, 16\) for 4 clips"):
        check_features(torch.nn.Identity(), torch.zeros(4, 3, 8, 25, 2), torch.zeros(1, 16))
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(6)).train()
    assert feature_dim(m, lambda: torch.zeros(1, 3, 1, 2, 1)) == 6 and m.training


def test_kept_mode_and_device_moves_a_module_back_on_the_cpu_too():
    from pcm3.evaluation.features import kept_mode_and_device

    m = torch.nn.Linear(2, 2, device="meta")
    with kept_mode_and_device(m):
        m.to_empty(device="cpu")
    assert m.weight.device.type == "meta"
