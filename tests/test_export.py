"""Export of the query encoder, ``pcm3.load_encoder`` and ``pcm3 embed``."""

import numpy as np
import pytest
import torch

import pcm3
from pcm3.cli import main
from pcm3.errors import DataError
from pcm3.pretrain import fit, load_checkpoint

from tests.test_pretrain import tiny_config


@pytest.fixture(scope="module")
def tiny_run(synthetic_small, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    fit(tiny_config(synthetic_small, "train.epochs=1"), run)
    return run


def test_export_and_load(tiny_run, tmp_path):
    out = tmp_path / "encoder.pt"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    enc = pcm3.load_encoder(out)
    assert not enc.training and enc.stream == "joint" and enc.layout == "ntu25" and enc.clip_len == 16
    names = [n for n, _ in enc.named_parameters()]
    assert not any("prompt" in n or "proj" in n or "decoder" in n for n in names)
    x = torch.randn(4, 3, 16, 25, 2)
    feats = enc(x)
    assert feats.shape == (4, enc.feature_dim)
    # identical to the run's query encoder
    state = load_checkpoint(tiny_run / "checkpoint_last.pt")["model"]
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state["encoder_q." + k]), k


def test_load_encoder_errors(tmp_path):
    with pytest.raises(DataError, match="no such"):
        pcm3.load_encoder(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="bad.pt"):
        pcm3.load_encoder(bad)


def test_embed_writes_features(tiny_run, synthetic_small, tmp_path):
    enc_path = tmp_path / "encoder.pt"
    main(["export", str(tiny_run), "--out", str(enc_path)])
    out = tmp_path / "feats.npy"
    assert main(["embed", str(enc_path), "--data", str(synthetic_small), "--benchmark", "xsub",
                 "--part", "test", "--out", str(out), "--device", "cpu"]) == 0
    feats = np.load(out)
    labels = np.load(tmp_path / "feats.labels.npy")
    assert feats.shape[0] == labels.shape[0] > 0 and np.isfinite(feats).all()
    assert main(["export", str(tmp_path / "norun"), "--out", str(tmp_path / "x.pt")]) == 2


@pytest.mark.parametrize("part", ["train", "test"])
def test_embed_encodes_the_requested_part(tmp_path_factory, tmp_path, part):
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.evaluation.features import extract_features
    from tests.evaluation.tiny import encoder_file, tiny_data

    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    out = tmp_path / "feats.npy"
    assert main(["embed", str(enc), "--data", str(data), "--benchmark", "xsub", "--part", part, "--out", str(out),
                 "--device", "cpu"]) == 0
    dataset = SkeletonDataset(data, "xsub", part)
    other = SkeletonDataset(data, "xsub", {"train": "test", "test": "train"}[part])
    assert not set(dataset.indices.tolist()) & set(other.indices.tolist())
    labels = np.load(tmp_path / "feats.labels.npy")
    assert labels.tolist() == dataset.prepared.labels[dataset.indices].tolist()
    expected, _ = extract_features(pcm3.load_encoder(enc), dataset)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
