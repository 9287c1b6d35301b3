import re

import pytest
import torch

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
    files = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("eval_"))  # eval_*: protocols
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


# ----------------------------------------------------------------------------- issue 10

def test_scientific_notation_in_files_and_overrides(tmp_path):
    path = tmp_path / "sci.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  weight_decay: 1E-4\ntrain:\n  epochs: 1e2\n")
    cfg = load_config(path)
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == pytest.approx(1e-4)
    assert cfg.train.epochs == 100 and isinstance(cfg.train.epochs, int)
    cfg = load_config(path, ["optim.lr=5e-2", "optim.gamma=.5"])
    assert cfg.optim.lr == pytest.approx(0.05) and cfg.optim.gamma == 0.5


@pytest.mark.parametrize("item, key", [
    ("train.epochs=0", "train.epochs"), ("train.epochs=-2", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"), ("train.batch_size=-8", "train.batch_size"),
    ("train.batch_size=1", "train.batch_size"),   # it ended in a traceback of the regulariser, a half-made run
    ("optim.lr=-0.1", "optim.lr"), ("data.stream=velocity", "data.stream"),
    ("optim.schedule=linear", "optim.schedule"), ("optim.name=adam", "optim.name"), ("train.threads=-1", "train.threads"),
    ("optim.lr=nan", "optim.lr"), ("optim.lr=fast", "optim.lr"), ("train.epochs=2.5", "train.epochs"),
    # beyond what torch or the machine can take: a traceback, a segfault or a hang before
    ("train.seed=1e30", "train.seed"), ("train.seed=-1", "train.seed"), ("train.threads=100000", "train.threads"),
    ("data.num_workers=1e9", "data.num_workers"),
])
def test_bad_values_name_the_override(item, key):
    with pytest.raises(ConfigError) as e:
        load_config("demo", [item])
    msg = str(e.value)
    assert msg.startswith(f"--set {item}: ") and key in msg and "\n" not in msg


def test_bad_values_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, ["optim.lr=1e-3"])  # a good override: the file is to blame
    assert str(e.value).startswith(f"{path}: train.batch_size: must be at least 2")
    path.write_text("optim:\n  lr: 1e-3x\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: optim.lr: expected a number, got '1e-3x'"):
        load_config(path)


def test_unparsable_override_is_one_line():
    with pytest.raises(ConfigError) as e:
        parse_override("x=[1,")
    assert "\n" not in str(e.value) and str(e.value).startswith("--set x=[1,: cannot parse")


def test_validate_catches_assignments_after_loading():
    cfg = load_config("demo")
    cfg.validate()
    cfg.train.batch_size = 0
    with pytest.raises(ConfigError, match="train.batch_size"):
        cfg.validate()


@pytest.mark.parametrize("edit, msg", [
    (lambda c: setattr(c.optim, "lr", "fast"), "optim.lr: expected a number, got 'fast'"),
    (lambda c: setattr(c.views, "crop_ratio", (0.5,)), r"views.crop_ratio: expected 2 values, got 1"),
    (lambda c: setattr(c.loss, "temperature", float("inf")), "loss.temperature: expected a finite number"),
    (lambda c: setattr(c.model.encoder, "hidden", "big"), "model.encoder.hidden: expected an integer"),
])
def test_validate_checks_types_of_assignments_as_a_file_would(edit, msg):
    """A wrong type assigned in Python used to end in a TypeError/IndexError, or (inf) pass."""
    cfg = load_config("demo")
    edit(cfg)
    with pytest.raises(ConfigError, match=msg):
        cfg.validate()


def test_sections_given_as_mappings_in_python_become_their_dataclasses():
    from pcm3.models import LossConfig, ModelConfig
    from pcm3.pretrain import build_model

    cfg = Config(model={"queue_size": 8, "prompt_dim": 8, "encoder": {"hidden": 8, "layers": 1}}, loss={"w_mask": 1.0}).validate()
    assert isinstance(cfg.model, ModelConfig) and cfg.model.queue_size == 8 and cfg.model.encoder.hidden == 8
    assert isinstance(cfg.loss, LossConfig) and cfg.loss.w_mask == 1.0
    assert build_model(Config(model={"queue_size": 8, "prompt_dim": 8, "encoder": {"hidden": 8, "layers": 1}})).queue.shape[0] == 8
    with pytest.raises(ConfigError, match="model: unknown key 'nope'"):
        Config(model={"nope": 1}).validate()


def test_auto_threads_rule():
    from pcm3.config import auto_threads, physical_cores

    assert physical_cores() >= 1
    assert auto_threads(64) == 1 and auto_threads(128) == 1 and auto_threads(256) == 1
    assert auto_threads(1024) == physical_cores()


def test_torchrun_processes_share_the_cores(monkeypatch):
    """Under torchrun every process took all cores (LOCAL_WORLD_SIZE processes x all cores):
    a 2-process linear evaluation on 2 cores ran 6.5x slower."""
    import pcm3.config as config

    monkeypatch.setattr(config, "physical_cores", lambda: 16)
    assert config.cores_per_process() == 16 and config.auto_threads(1024) == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert config.cores_per_process() == 4 and config.auto_threads(1024) == 4 and config.auto_threads(64) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert config.cores_per_process() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "x")
    assert config.cores_per_process() == 16


def test_eval_threads_follow_the_run_encoder_width(tmp_path, monkeypatch):
    """`eval --run RUN` used every core whatever the encoder's width (the --encoder rule only)."""
    import pcm3.config as config
    from types import SimpleNamespace

    from pcm3.commands.eval import _auto_threads

    monkeypatch.setattr(config, "physical_cores", lambda: 8)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model:\n  encoder:\n    hidden: 64\n")
    assert _auto_threads(SimpleNamespace(encoder=None, run=str(run))) == 1
    (run / "config.yaml").write_text("model:\n  encoder:\n    hidden: 1024\n")
    assert _auto_threads(SimpleNamespace(encoder=None, run=str(run))) == 8
    (run / "config.yaml").write_text("model: [")  # unreadable: the evaluation says so, not this guess
    assert _auto_threads(SimpleNamespace(encoder=None, run=str(run))) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _auto_threads(SimpleNamespace(encoder=None, run=str(tmp_path / "none"))) == 4


def test_overrides_are_validated_together():
    """Switches that depend on each other may be turned off by separate --set items."""
    cfg = load_config("msr3d_xsub_joint", ["loss.masked_prediction=false", "loss.positives.mask=false",
                                           "loss.positives.predict=false"])
    assert not cfg.loss.masked_prediction and not cfg.loss.positives.predict
    with pytest.raises(ConfigError, match=r"^--set optim.lr=-1: "):
        load_config("msr3d_xsub_joint", ["train.epochs=5", "optim.lr=-1"])


def test_amp_spellings():
    assert load_config("demo", ["train.amp=bf16"]).train.amp is True
    assert load_config("demo", ["train.amp=fp32"]).train.amp is False
    assert load_config("demo", ["train.amp=true"]).train.amp is True
    with pytest.raises(ConfigError, match="train.amp"):
        load_config("demo", ["train.amp=fp16"])


def test_optimizer_choice():
    from pcm3.pretrain import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(params, load_config(None, []).optim)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9  # the paper
    adamw = build_optimizer(params, load_config(None, ["optim.name=adamw", "optim.lr=1e-3"]).optim)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 1e-3


# ----------------------------------------------------------------------------- review: bad input

def test_config_file_that_is_not_text(tmp_path):
    path = tmp_path / "badbin.yaml"
    path.write_bytes(bytes(range(128, 256)) * 2)  # not UTF-8
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: not a text file") and "\n" not in str(e.value)
    (tmp_path / "child.yaml").write_text("base: badbin.yaml\n")  # also when inherited
    with pytest.raises(ConfigError, match="badbin.yaml: not a text file"):
        load_config(tmp_path / "child.yaml")


@pytest.mark.parametrize("items, blamed", [
    # a key that starts another key's name is not that key
    (["model.momentum=0.99", "model.momentum_schedule=bogus"], "model.momentum_schedule=bogus"),
    (["model.momentum_schedule=bogus", "model.momentum=0.99"], "model.momentum_schedule=bogus"),
    # a key given twice: the value in force is the last one
    (["train.epochs=2", "train.epochs=abc"], "train.epochs=abc"),
    (["train.epochs=abc", "train.epochs=0"], "train.epochs=0"),
    # a section set whole is blamed for a key inside it
    (["optim.lr=0.1", "optim={lr: -1}"], "optim={lr: -1}"),
])
def test_the_override_at_fault_is_named(items, blamed):
    with pytest.raises(ConfigError) as e:
        load_config("demo", items)
    assert str(e.value).startswith(f"--set {blamed}: "), str(e.value)


@pytest.mark.parametrize("text, needle", [
    ("train:\n  epochs: 1\ntrain:\n  seed: 2\n", "key 'train' set twice (lines 1 and 3)"),
    ("train:\n  epochs: 1\n  epochs: 2\n", "key 'epochs' set twice (lines 2 and 3)"),
    ("[]\n", "expected a mapping at the top level"),
    ("0\n", "expected a mapping at the top level"),
    ("base: c.yaml\n", "a cycle"),
    ('"1": 3\n1: 2\n', "unknown key"),
])
def test_malformed_config_files_are_one_line(tmp_path, text, needle):
    """A key set twice was silently the last one; ``[]`` or ``0`` were read as an empty config
    (the paper's 100M-parameter model); ``base:`` naming the file itself recursed until a
    RecursionError; number and string keys together met a TypeError while sorting them."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(str(path)) and needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, expected", [
    # an unclosed list is found on the next key's line; where the list started is said too
    ("train:\n  epochs: 2\n  milestones: [1, 2\nmodel:\n  hidden: 3\n",
     ":4: not valid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence from line 3)"),
    ("train:\n  epochs: 2\n   seed: 3\n", ":3: not valid YAML: mapping values are not allowed here"),
    ('optim:\n  name: "sgd\n', ":2: not valid YAML: found unexpected end of stream (while scanning a quoted scalar)"),
    ("train:\n\tepochs: 2\n", ":2: not valid YAML: found character '\\t' that cannot start any token "
                                "(YAML is indented with spaces, not tabs)"),
    ("train:\n  epochs: 2\n  seed: \x07\n", ":3: not valid YAML: unacceptable character #x0007"),
    ("train:\n  epochs: 1\ntrain:\n  seed: 2\n", ":3: key 'train' set twice (lines 1 and 3)"),
    # found at the end of the file: no line past it, and no "from line" after the problem's line
    ("x: [\n", ":1: not valid YAML: expected the node content, but found '<stream end>' (while parsing a flow node)"),
])
def test_yaml_syntax_errors_name_the_line(tmp_path, text, expected):
    """``error: bad.yaml: not valid YAML (while parsing a flow sequence)`` said neither where nor
    what: the parser's problem and its line (1-based) are given, ``file:LINE: ...``."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}{expected}"), str(e.value)
    assert "\n" not in str(e.value)
    (tmp_path / "child.yaml").write_text("base: bad.yaml\n")  # a base file's error names that file
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "child.yaml")
    assert str(e.value).startswith(f"{path}{expected}"), str(e.value)


def test_base_cycle_through_two_files(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="a cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing set\n")  # an empty file is still the defaults
    assert to_dict(load_config(tmp_path / "empty.yaml")) == to_dict(Config())


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


_NO_PROMPTS = {"loss.domain_prompts": False, "loss.task_prompts": False}
_NO_MASK_PREDICT = {"loss.positives.mask": False, "loss.positives.predict": False}

# Each ablation config against the full method on its benchmark (ntu60 xview joint): exactly
# the switches of its table row. Table 8 ablates positives and L_KL of the full method without
# prompts (its last row is Table 9's first), so the masked-prediction task stays on; Table 7's
# Contrastive Learning and Multi-Task are the two pipelines without the synergy terms and
# without L_KL (Multi-Task = Table 8 row 2, 87.5 in both tables).
ABLATION_ROWS = {
    "ablation_t7_contrastive": {"loss.masked_prediction": False, **_NO_MASK_PREDICT, "loss.distill": False,
                                **_NO_PROMPTS},
    "ablation_t7_masked_prediction": {"loss.contrast": False, **_NO_PROMPTS},
    "ablation_t7_multitask": {**_NO_MASK_PREDICT, "loss.distill": False, **_NO_PROMPTS},
    "ablation_t8_intra": {"loss.positives.inter": False, **_NO_MASK_PREDICT, "loss.distill": False, **_NO_PROMPTS},
    "ablation_t8_intra_inter": {**_NO_MASK_PREDICT, "loss.distill": False, **_NO_PROMPTS},
    "ablation_t8_intra_inter_kl": {**_NO_MASK_PREDICT, **_NO_PROMPTS},
    "ablation_t8_intra_inter_predict_kl": {"loss.positives.mask": False, **_NO_PROMPTS},
    "ablation_t8_intra_mask_kl": {"loss.positives.inter": False, "loss.positives.predict": False, **_NO_PROMPTS},
    "ablation_t8_all_kl": dict(_NO_PROMPTS),
    "ablation_t9_domain": {"loss.task_prompts": False},
    "ablation_t9_domain_task": {},
    "ablation_grad_stop": {"loss.predict_grad_to_decoder": False},
    **{f"ablation_t10_{kind}_{pct}": {**({"mask.strategy": "random_joint"} if kind == "random" else {}),
                                      **({"mask.ratio": pct / 100} if pct != 60 else {})}
       for kind in ("topology", "random") for pct in (20, 40, 60, 80)},
}


@pytest.mark.parametrize("name", sorted(ABLATION_ROWS))
def test_ablation_configs_switch_exactly_their_table_row(name):
    full = _flat(to_dict(load_config(CONFIG_DIR / "ntu60_xview_joint.yaml")))
    cfg = _flat(to_dict(load_config(CONFIG_DIR / f"{name}.yaml")))
    assert {k: v for k, v in cfg.items() if full[k] != v} == ABLATION_ROWS[name]


def test_every_ablation_config_is_checked():
    assert {p.stem for p in CONFIG_DIR.glob("ablation_*.yaml")} == set(ABLATION_ROWS)


@pytest.mark.parametrize("stream", ["bone", "motion"])
def test_release_recipes_switch_what_the_release_drops(stream):
    """The release's PCM3_woprompt (bone, motion): no prompts, no L_KL in the loss, and the
    predicted view is detached (``recons_im.detach()``), so its contrastive term does not
    reach the decoder."""
    paper = _flat(to_dict(load_config(CONFIG_DIR / f"ntu60_xsub_{stream}.yaml")))
    cfg = _flat(to_dict(load_config(CONFIG_DIR / f"release_ntu60_xsub_{stream}.yaml")))
    assert {k: v for k, v in cfg.items() if paper[k] != v} == {
        "loss.distill": False, **_NO_PROMPTS, "loss.predict_grad_to_decoder": False}


def test_a_section_check_that_raises_valueerror_is_named_by_its_section(monkeypatch):
    from pcm3.config import OptimConfig

    def boom(self):
        raise ValueError("boom")

    cfg = load_config("demo")
    monkeypatch.setattr(OptimConfig, "__post_init__", boom)
    with pytest.raises(ConfigError, match="^optim: boom$"):
        cfg.validate()


def test_build_model_validates_the_config():
    """PCM3 itself takes an infinite temperature; build_model refuses it by name."""
    from pcm3.pretrain import build_model

    cfg = load_config("demo")
    cfg.loss.temperature = float("inf")
    with pytest.raises(ConfigError, match="loss.temperature: expected a finite number"):
        build_model(cfg)


def test_validate_takes_paths_and_numpy_numbers():
    """Sweeps built from numpy values and pathlib paths were refused ('expected a string')."""
    from pathlib import Path

    import numpy as np

    cfg = load_config("demo")
    cfg.data.path, cfg.train.epochs, cfg.optim.lr = Path("/data/x"), np.int64(3), np.float32(0.5)
    cfg.validate()
    assert cfg.data.path == "/data/x" and type(cfg.train.epochs) is int and type(cfg.optim.lr) is float
    cfg.train.epochs = np.float64(2.5)
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        cfg.validate()


def test_a_key_below_a_value_names_its_own_override():
    """`--set train.epochs=1 --set train.epochs.x=3` blamed `--set train.epochs=1` (the message
    names train.epochs, a value the second override made a section)."""
    with pytest.raises(ConfigError) as e:
        load_config("demo", ["train.epochs=1", "train.epochs.x=3"])
    assert str(e.value).startswith("--set train.epochs.x=3: train.epochs:")


def test_a_missing_or_malformed_base_is_named_by_the_config_that_asks_for_it(tmp_path):
    """`base: nonexist.yaml` was reported as "nonexist.yaml: no such config file" without the
    config that named it; `base: 5` as "5: no such config file"."""
    child = tmp_path / "child.yaml"
    child.write_text("base: nonexist.yaml\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(child))}: base: nonexist.yaml: no such config file"):
        load_config(child)
    child.write_text("base: 5\n")
    with pytest.raises(ConfigError, match=r"child.yaml: base: expected the name or path of a config, got 5"):
        load_config(child)
