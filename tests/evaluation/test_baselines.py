"""Baseline rows: raw input (centring, shape), random init (seeded), supervised training."""

import numpy as np
import torch

from pcm3.evaluation.baselines import RawInput, random_init_encoder, raw_input_features, train_supervised
from pcm3.evaluation.common import open_split
from pcm3.models import EncoderConfig

from .tiny import tiny_data


def test_raw_input_centres_present_persons_only():
    x = torch.randn(2, 3, 8, 25, 2) + 5.0
    x[:, :, :, :, 1] = 0      # second person absent
    out = RawInput("ntu25", "joint", 8)(x).view(2, 3, 8, 25, 2)
    assert torch.allclose(out[:, :, :, 1, 0].mean(2), torch.zeros(2, 3), atol=1e-5)  # centre joint mean at origin
    assert (out[..., 1] == 0).all()
    bone = RawInput("ntu25", "bone", 8)(x)
    assert torch.equal(bone, x.flatten(1))   # streams other than joint are only flattened


def test_raw_input_features_shape(tmp_path_factory):
    train = open_split(tiny_data(tmp_path_factory), "xsub", "train")
    x, y = raw_input_features(train, clip_len=10)
    assert x.shape == (96, 3 * 10 * 25 * 2) and y.shape == (96,) and np.isfinite(x).all()


def test_random_init_is_seeded():
    cfg = EncoderConfig(hidden=8, layers=1)
    a, b, c = (random_init_encoder(cfg, s) for s in (0, 0, 1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert (a.layout, a.stream, a.clip_len, a.test_crop) == ("ntu25", "joint", 64, 0.95)


def test_supervised_training_changes_weights_and_keeps_attributes(tmp_path_factory):
    train = open_split(tiny_data(tmp_path_factory), "xsub", "train")
    cfg = EncoderConfig(hidden=8, layers=1)
    init = random_init_encoder(cfg, 0)
    enc = train_supervised(cfg, train, epochs=1, batch_size=32, clip_len=12, min_len=8, stream="bone", seed=0)
    assert not enc.training and enc.stream == "bone" and enc.clip_len == 12 and enc.supervised_trained
    assert not all(torch.equal(p, q) for p, q in zip(init.parameters(), enc.parameters()))


def test_seeding_the_weights_leaves_cudas_generators_alone(monkeypatch):
    """fork_rng(devices=[]) restores the CPU generator only; torch.manual_seed inside it also
    reseeded every CUDA generator (a caller's CUDA draws changed)."""
    import torch

    from pcm3.evaluation.baselines import random_init_encoder
    from pcm3.models import EncoderConfig

    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    random_init_encoder(EncoderConfig(hidden=8, layers=1), 3)
    assert calls == []


def test_random_init_refuses_a_config_of_other_joints_than_the_layout():
    """random_init_encoder(load_config("msr3d_xsub_joint").model.encoder, layout="msr20") built
    an encoder labelled msr20 that read NTU's 25 joints (a packaged config's input size is
    NTU's until pretraining takes it from the data)."""
    import pytest

    from pcm3.errors import ConfigError

    with pytest.raises(ConfigError, match="reads 25 joints, layout msr20 has 20"):
        random_init_encoder(EncoderConfig(hidden=8, layers=1), 0, layout="msr20")
    enc = random_init_encoder(EncoderConfig(hidden=8, layers=1, num_joints=20, num_persons=1), 0, layout="msr20")
    assert enc.config.num_joints == 20 and enc.layout == "msr20"


def test_supervised_training_takes_the_input_size_from_the_data(tmp_path_factory):
    """A config whose input size is not the data's (a packaged config's NTU defaults on other
    data) ended in a traceback from the encoder's shape check on the first batch: the input
    size is taken from the training clips, as pretraining does."""
    train = open_split(tiny_data(tmp_path_factory), "xsub", "train")
    cfg = EncoderConfig(hidden=8, layers=1, num_persons=1)   # the data has 2 persons
    enc = train_supervised(cfg, train, epochs=1, batch_size=32, clip_len=12, min_len=8, seed=0)
    assert (enc.config.in_channels, enc.config.num_joints, enc.config.num_persons) == (3, 25, 2)
    assert cfg.num_persons == 1   # the caller's config is left as it was
    import pytest

    from pcm3.errors import ConfigError

    with pytest.raises(ConfigError, match="the encoder's layout msr20 \\(20 joints\\) is not the data's ntu25 \\(25 joints\\)"):
        train_supervised(cfg, train, layout="msr20", epochs=1, batch_size=32, clip_len=12, min_len=8)


def test_save_encoder_writes_a_loadable_encoder_without_info(tmp_path):
    """The README's save_encoder(random_init_encoder(...), path) needed a third argument."""
    from pcm3.evaluation.runner import save_encoder
    from pcm3.export import load_encoder

    enc = random_init_encoder(EncoderConfig(hidden=8, layers=1), 0, clip_len=16)
    save_encoder(enc, tmp_path / "rand.pt")
    back = load_encoder(tmp_path / "rand.pt")
    assert back.clip_len == 16 and all(torch.equal(p, q) for p, q in zip(enc.state_dict().values(),
                                                                          back.state_dict().values()))
    assert [p.name for p in tmp_path.iterdir()] == ["rand.pt"]   # no temporary left beside it
