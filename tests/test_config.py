import pytest

from pcm3.cli import main
from pcm3.config import CONFIG_DIR, Config, load_config, parse_override, save_config, to_dict
from pcm3.errors import ConfigError


def test_defaults_are_the_papers_values():
    cfg = Config()
    assert cfg.optim.lr == 0.02 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 1e-4
    assert cfg.optim.milestones == [350] and cfg.optim.gamma == 0.1
    assert cfg.train.epochs == 450 and cfg.train.batch_size == 128
    assert cfg.model.queue_size == 16384 and cfg.model.momentum == 0.999 and cfg.model.proj_dim == 128
    assert cfg.model.encoder.hidden == 1024 and cfg.model.encoder.layers == 3
    assert cfg.model.prompt_dim == 128
    assert cfg.loss.temperature == 0.07 and cfg.loss.kl_tq == 0.1 and cfg.loss.kl_tk == 0.05
    assert cfg.loss.w_mask == 40.0 and cfg.loss.w_kl == 1.0
    assert cfg.mask.ratio == 0.6 and cfg.mask.strategy == "topology"


def test_yaml_overrides_and_roundtrip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\noptim:\n  lr: 1\n")
    cfg = load_config(path, ["train.batch_size=16", "data.stream=bone", "optim.milestones=[1, 2]"])
    assert cfg.train.epochs == 3 and cfg.train.batch_size == 16 and cfg.data.stream == "bone"
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float) and cfg.optim.milestones == [1, 2]
    save_config(cfg, tmp_path / "resolved.yaml")
    assert to_dict(load_config(tmp_path / "resolved.yaml")) == to_dict(cfg)


def test_base_inheritance(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  epochs: 7\n  seed: 3\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain:\n  seed: 5\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.train.epochs == 7 and cfg.train.seed == 5


@pytest.mark.parametrize("text, key", [
    ("train:\n  epochz: 3\n", "epochz"),
    ("trian:\n  epochs: 3\n", "trian"),
    ("model:\n  encoder:\n    hiden: 3\n", "hiden"),
])
def test_unknown_keys_are_errors(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=key) as err:
        load_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("item", ["train.epochs=abc", "train.amp=maybe", "optim.lr=[1]", "nokey", "train.nope=1"])
def test_bad_overrides(item):
    with pytest.raises(ConfigError):
        load_config(None, [item])


def test_parse_override_types():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=0.5") == ("a", 0.5)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=xsub") == ("a", "xsub")


def test_missing_or_invalid_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_every_packaged_config_loads():
    files = sorted(CONFIG_DIR.glob("*.yaml"))
    assert files, "no packaged configs"
    for path in files:
        load_config(path)


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochz: 3\n")
    code = main(["pretrain", "--config", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "epochz" in err[0] and err[0].startswith("error:")
    assert not (tmp_path / "run").exists()
