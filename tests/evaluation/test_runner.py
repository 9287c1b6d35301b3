"""Encoder rows from a pretraining run: ``--run``, its export, and the random-init twin agree."""

import json

from pcm3.cli import main
from tests.global_draws import draws, seed_all

from .tiny import cli, tiny_data


def test_run_folder_and_its_export_are_the_same_encoder(tmp_path_factory, tmp_path):
    data = tiny_data(tmp_path_factory)
    run = tmp_path / "run"
    assert main(["pretrain", "--config", "demo", "--data", str(data), "--out", str(run), "--quiet",
                 "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1", "--set", "train.batch_size=16",
                 "--set", "model.encoder.hidden=32"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "enc.pt")]) == 0
    base = ["--data", str(data), "--benchmark", "xsub"]
    assert cli("eval", "knn", "--run", str(run), "--out", str(tmp_path / "a"), *base) == 0
    assert cli("eval", "knn", "--encoder", str(tmp_path / "enc.pt"), "--out", str(tmp_path / "b"), *base) == 0
    assert cli("eval", "knn", "--random-init", "--run", str(run), "--out", str(tmp_path / "c"), *base) == 0
    a, b, c = (json.loads((tmp_path / x / "metrics.json").read_text()) for x in "abc")
    assert a["figures"] == b["figures"]
    assert a["encoder"]["config_hash"] == b["encoder"]["config_hash"] == c["encoder"]["config_hash"]
    assert b["encoder"]["config_hash_of"].startswith("pretraining config")
    assert c["encoder"]["kind"] == "random_init" and a["input"]["clip_len"] == 32
    # what it was pretrained on travels with the export; xsub's test subjects were not among them
    from pcm3.data.prepared import Prepared

    assert b["encoder"]["pretrained_on"] == {"dataset": "synthetic", "data": str(data), "benchmark": "xsub",
                                             "part": "train", "samples": 96,
                                             "fingerprint": Prepared(data).fingerprint()}
    assert not a.get("warnings") and not b.get("warnings")
    assert not any("planned epochs" in n for n in a.get("notes") or [])  # a finished run
    # a run evaluated before it finished (here: its checkpoint says 3 epochs were planned)
    import torch

    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=False)
    ckpt["config"]["train"]["epochs"] = 3
    torch.save(ckpt, run / "checkpoint_last.pt")
    assert cli("eval", "knn", "--run", str(run), "--out", str(tmp_path / "d"), *base) == 0
    d = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert ("the encoder's pretraining run had done 1 of its 3 planned epochs (an unfinished run: `pcm3 pretrain "
            "--resume` finishes it)") in d["notes"]


def test_testing_on_pretraining_clips_is_a_warning(tmp_path_factory, tmp_path, capsys):
    """xview's test clips include xsub's training clips: an xsub-pretrained encoder tested there
    went unnoticed."""
    data = tiny_data(tmp_path_factory)
    run = tmp_path / "run"
    assert main(["pretrain", "--config", "demo", "--data", str(data), "--out", str(run), "--quiet",
                 "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1", "--set", "train.batch_size=16",
                 "--set", "model.encoder.hidden=8", "--set", "model.prompt_dim=8"]) == 0
    capsys.readouterr()
    assert cli("eval", "knn", "--run", str(run), "--data", str(data), "--benchmark", "xview",
               "--out", str(tmp_path / "x")) == 0
    m = json.loads((tmp_path / "x" / "metrics.json").read_text())
    test = json.loads((data / "splits.json").read_text())["xview"]["test"]
    seen = set(json.loads((data / "splits.json").read_text())["xsub"]["train"])
    shared = len(set(test) & seen)
    assert shared and m["warnings"] == [f"{shared} of the {len(test)} test clips of xview were pretraining clips of "
                                        "this encoder (synthetic xsub/train): the test is not on unseen clips"]
    assert m["warnings"][0] in m["notes"] and f"warning: {m['warnings'][0]}" in capsys.readouterr().err
    assert cli("eval", "knn", "--random-init", "--run", str(run), "--data", str(data), "--benchmark", "xview",
               "--out", str(tmp_path / "y")) == 0
    assert not json.loads((tmp_path / "y" / "metrics.json").read_text()).get("warnings")  # not pretrained


def test_the_supervised_row_never_trains_on_the_validation_subjects(tmp_path_factory, monkeypatch):
    """With ``val_fraction`` the protocol chooses epochs (and fusion weights) on validation
    subjects; the supervised encoder must be trained without them."""
    import numpy as np

    from pcm3.evaluation import baselines, runner
    from pcm3.evaluation.common import carve_validation, load_protocol, open_split

    from .tiny import encoder_file

    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    seen = {}

    def fake_train(arch, train, **kw):
        seen["indices"] = np.asarray(train.indices)
        raise RuntimeError("stop here")

    monkeypatch.setattr(baselines, "train_supervised", fake_train)
    protocol = load_protocol(runner.task_module("linear").PROTOCOL, "eval_linear", ["val_fraction=0.5"])
    try:
        runner.build_encoder("supervised", data=data, benchmark="xsub", protocol=protocol, encoder_path=enc,
                             device="cpu", seed=0, progress=False)
    except RuntimeError:
        pass
    train_idx, val_idx = carve_validation(open_split(data, "xsub", "train"), 0.5, 0, "subject")
    assert val_idx.size and np.array_equal(np.sort(seen["indices"]), np.sort(train_idx))


def test_random_init_row_is_fresh_weights_of_the_same_architecture(tmp_path_factory):
    import torch

    from pcm3.evaluation.baselines import random_init_encoder
    from pcm3.evaluation.runner import build_encoder
    from pcm3.export import load_encoder

    from .tiny import encoder_file

    enc = encoder_file(tmp_path_factory, stream="bone", seed=3)
    pretrained = load_encoder(enc)
    fresh, info = build_encoder("random_init", data=tiny_data(tmp_path_factory), benchmark="xsub", protocol=None,
                                encoder_path=enc, device="cpu", seed=1, progress=False)
    assert fresh is not pretrained and info["weights"] == "random init, seed 1"
    a, b = fresh.state_dict(), pretrained.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    same_seed = random_init_encoder(pretrained.config, 1).state_dict()
    assert all(torch.equal(a[k], same_seed[k]) for k in a)
    assert (fresh.stream, fresh.layout, fresh.clip_len) == ("bone", pretrained.layout, pretrained.clip_len)


def test_contradictory_rows_are_refused_and_the_documented_ones_kept():
    """An option the row would ignore is an error; ``--random-init``/``--supervised`` with an
    encoder (its architecture) are the documented rows."""
    import pytest

    from pcm3.errors import ConfigError
    from pcm3.evaluation.runner import check_row

    for kind in ("random_init", "supervised"):
        check_row("linear", kind, encoder_path="e.pt")
        check_row("linear", kind, run="run")
        check_row("linear", kind, pretrain_config="demo")
    check_row("linear", "raw_input")
    check_row("linear", "pretrained", encoder_path="e.pt")
    check_row("fusion", "pretrained")
    refused = [
        (dict(task="knn", kind="raw_input", encoder_path="e.pt"), "--raw-input: .*--encoder would be ignored"),
        (dict(task="knn", kind="raw_input", run="run"), "--raw-input: .*--run would be ignored"),
        (dict(task="knn", kind="random_init", encoder_path="e.pt", pretrain_config="demo"),
         "--pretrain-config: the architecture already comes from --encoder"),
        (dict(task="knn", kind="supervised", run="run", pretrain_config="demo"), "already comes from --run"),
        (dict(task="knn", kind="pretrained", pretrain_config="demo"), "--pretrain-config: gives the architecture"),
        (dict(task="knn", kind="pretrained", encoder_path="e.pt", run="run"), "give one of them"),
        (dict(task="knn", kind="pretrained"), "needs --encoder FILE or --run RUN"),
        (dict(task="knn", kind="random_init"), "--random-init needs the encoder architecture"),
        (dict(task="fusion", kind="pretrained", encoder_path="e.pt"), "^--encoder: eval fusion reads the saved"),
        (dict(task="fusion", kind="supervised"), "^--supervised: eval fusion"),
    ]
    for kw, message in refused:
        task, kind = kw.pop("task"), kw.pop("kind")
        with pytest.raises(ConfigError, match=message):
            check_row(task, kind, **kw)


# --------------------------------------------------------------------------- a module given from Python

def _frozen_norm_encoder(**attrs):
    """A small pcm3 Encoder in training mode with its input BatchNorm frozen (eval)."""
    import torch

    from pcm3.models import Encoder, EncoderConfig

    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(hidden=8, layers=1)).train()
    enc.input_norm.eval()
    for k, v in attrs.items():
        setattr(enc, k, v)
    return enc


LINEAR_FAST = ["epochs=2", "milestones=[1]", "crops=1", "min_len=8", "batch_size=32"]


def test_evaluate_leaves_the_callers_module_and_random_states_as_they_were(tmp_path_factory, tmp_path):
    """``enc.to(device).eval()`` left the caller's module in eval mode, and ``seed_everything``
    left the global generators at the run's seed: the next draw was the one after seed 0."""
    import torch

    from pcm3.evaluation.runner import evaluate

    data = tiny_data(tmp_path_factory)
    enc = _frozen_norm_encoder(layout="ntu25", stream="joint", clip_len=16, test_crop=0.95)
    seed_all(123)
    expected = draws()
    seed_all(123)
    torch.set_num_threads(1)
    runs = [evaluate("linear", data=data, benchmark="xsub", out=tmp_path / f"lin{i}", encoder=enc,
                     overrides=LINEAR_FAST, seed=4) for i in range(2)]
    assert enc.training and enc.gru.training and not enc.input_norm.training
    assert draws() == expected
    assert runs[0]["figures"] == runs[1]["figures"]  # the seed alone sets the run's draws


def test_evaluate_puts_them_back_when_the_task_raises(tmp_path_factory, tmp_path, monkeypatch):
    import pytest

    from pcm3.evaluation import runner

    data = tiny_data(tmp_path_factory)
    enc = _frozen_norm_encoder(layout="ntu25", stream="joint", clip_len=16, test_crop=0.95)
    seen = {}

    def failing(ctx):
        seen["training"] = ctx.encoder.training
        raise RuntimeError("the task fails")

    monkeypatch.setattr(runner.task_module("knn"), "run", failing)
    seed_all(5)
    expected = draws()
    seed_all(5)
    with pytest.raises(RuntimeError, match="the task fails"):
        runner.evaluate("knn", data=data, benchmark="xsub", out=tmp_path / "knn", encoder=enc)
    assert seen["training"] is False  # the task saw it in eval mode
    assert draws() == expected
    assert enc.training and not enc.input_norm.training


class _NotPcm3(__import__("torch").nn.Module):
    """A custom encoder: no ``config``, ``feature_dim`` or input attributes; ``(N, ...) -> (N, 8)``."""

    def __init__(self):
        import torch

        super().__init__()
        self.lin = torch.nn.Linear(3, 8)

    def forward(self, x):
        return self.lin(x.mean(dim=(2, 3, 4)))


def test_random_init_and_supervised_of_a_module_that_is_no_pcm3_encoder_are_one_line(tmp_path_factory, tmp_path):
    """They rebuild the architecture from a pcm3 EncoderConfig: an AttributeError ('config') before."""
    import pytest

    from pcm3.errors import ConfigError
    from pcm3.evaluation.runner import build_encoder, evaluate

    data = tiny_data(tmp_path_factory)
    for kind in ("random_init", "supervised"):
        with pytest.raises(ConfigError, match=f"^{kind} needs a pcm3 Encoder .*; got _NotPcm3$"):
            evaluate("knn", data=data, benchmark="xsub", out=tmp_path / kind, kind=kind, encoder=_NotPcm3())
        assert not (tmp_path / kind).exists()  # refused before the output folder is touched
        with pytest.raises(ConfigError, match="needs a pcm3 Encoder"):
            build_encoder(kind, data=data, benchmark="xsub", protocol=None, encoder=_NotPcm3(), device="cpu", seed=0,
                          progress=False)


def test_missing_input_attributes_are_named_not_silently_defaulted(tmp_path_factory, tmp_path):
    """A module without ``clip_len`` (...) is read with 64 frames: metrics.json says so."""
    import json

    from pcm3.evaluation.runner import evaluate

    data = tiny_data(tmp_path_factory)
    m = evaluate("knn", data=data, benchmark="xsub", out=tmp_path / "custom", encoder=_NotPcm3())
    assert m["input"] == {"stream": "joint", "layout": "ntu25", "clip_len": 64, "test_crop": 0.95}
    assert m["encoder"]["missing_attributes"] == ["layout", "stream", "clip_len", "test_crop"]
    assert json.loads((tmp_path / "custom" / "metrics.json").read_text())["encoder"]["missing_attributes"]
    note = "_NotPcm3 has no layout, stream, clip_len, test_crop attribute: used layout of the data, stream joint"
    assert note in (tmp_path / "custom" / "results.md").read_text()
    m = evaluate("knn", data=data, benchmark="xsub", out=tmp_path / "set", encoder=_NotPcm3(),
                 overrides=["clip_len=16"])
    assert m["input"]["clip_len"] == 16 and "clip_len" not in m["encoder"]["missing_attributes"]
    full = evaluate("knn", data=data, benchmark="xsub", out=tmp_path / "full", encoder=_frozen_norm_encoder(
        layout="ntu25", stream="joint", clip_len=16, test_crop=0.95))
    assert "missing_attributes" not in full["encoder"]
    # the random-init twin of a bare pcm3 Encoder (no input attributes): an AttributeError before
    rnd = evaluate("knn", data=data, benchmark="xsub", out=tmp_path / "rnd", kind="random_init",
                   encoder=_frozen_norm_encoder(), seed=2)
    assert rnd["input"]["clip_len"] == 64 and rnd["input"]["layout"] == "ntu25"


def test_a_stream_override_that_contradicts_the_pretrained_encoder_is_refused(tmp_path_factory, tmp_path, capsys):
    """``--encoder bone.pt --set stream=joint`` evaluated a bone-pretrained encoder on joint clips
    without a word. The rows that choose their stream keep the override: random init (fresh
    weights of that architecture), raw input (no encoder), supervised (trained on that stream,
    and recorded so); a module given from Python yields to the override, as documented."""
    import pytest

    from pcm3.errors import ConfigError
    from pcm3.evaluation.runner import check_stream, evaluate
    from pcm3.export import load_encoder

    from .tiny import encoder_file

    data, bone = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory, stream="bone", seed=3)
    base = ["--data", str(data), "--benchmark", "xsub"]
    capsys.readouterr()
    assert cli("eval", "knn", "--encoder", str(bone), *base, "--set", "stream=joint",
               "--out", str(tmp_path / "new" / "a")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: stream=joint: the encoder ({bone}) was pretrained on the bone stream"), err
    assert not (tmp_path / "new").exists()  # refused before any folder is made, its parent included
    # the encoder's own stream, given or not, is its stream
    for name, sets in (("b", ["--set", "stream=bone"]), ("c", [])):
        assert cli("eval", "knn", "--encoder", str(bone), *base, *sets, "--out", str(tmp_path / name)) == 0
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        assert m["input"]["stream"] == m["encoder"]["stream"] == "bone"
    assert cli("eval", "knn", "--random-init", "--encoder", str(bone), *base, "--set", "stream=joint",
               "--out", str(tmp_path / "ri")) == 0
    ri = json.loads((tmp_path / "ri" / "metrics.json").read_text())
    assert ri["encoder"]["kind"] == "random_init" and ri["input"]["stream"] == "joint"
    assert cli("eval", "knn", "--supervised", "--encoder", str(bone), *base, "--set", "stream=joint",
               "--set", "supervised.epochs=1", "--set", "supervised.min_len=8", "--out", str(tmp_path / "sup")) == 0
    sup = json.loads((tmp_path / "sup" / "metrics.json").read_text())
    assert sup["input"]["stream"] == sup["encoder"]["stream"] == "joint"  # it was trained on joint clips
    assert load_encoder(tmp_path / "sup" / "supervised_encoder.pt").stream == "joint"
    module = load_encoder(bone)
    m = evaluate("knn", data=data, benchmark="xsub", out=tmp_path / "mod", encoder=module, overrides=["stream=joint"])
    assert m["input"]["stream"] == "joint"
    # the check itself, per row
    p = __import__("types").SimpleNamespace(stream="motion")
    with pytest.raises(ConfigError, match="^stream=motion: the encoder \\(b.pt\\) was pretrained on the bone stream"):
        check_stream("pretrained", {"stream": "bone", "path": "b.pt"}, p)
    for kind in ("random_init", "supervised", "raw_input"):
        check_stream(kind, {"stream": "bone"}, p)
    check_stream("pretrained", {}, p)  # a module: nothing recorded
    check_stream("pretrained", {"stream": "bone"}, __import__("types").SimpleNamespace(stream=None))
    check_stream("pretrained", {"stream": "bone"}, object())  # detection: no stream setting


def test_dense_supervised_rows(tmp_path_factory, tmp_path, capsys):
    """Motion's --supervised row without --benchmark trains on the task's default split (it said
    '--benchmark: required'); detection has no supervised row, said in one line."""
    from .tiny import encoder_file

    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    assert cli("eval", "motion", "--supervised", "--encoder", str(enc), "--data", str(data), "--out",
               str(tmp_path / "m"), "--set", "observed=10", "--set", "predicted=4", "--set", "epochs=1",
               "--set", "supervised.epochs=1", "--set", "supervised.min_len=8") == 0
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["benchmark"] == "xsub" and "on the xsub training split" in m["encoder"]["weights"]
    capsys.readouterr()
    assert cli("eval", "detection", "--supervised", "--encoder", str(enc), "--data", str(data),
               "--out", str(tmp_path / "d")) == 2
    assert "--supervised: detection has no supervised row" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_stream_check_after_loading_backs_up_the_early_one(tmp_path_factory, tmp_path, monkeypatch):
    """Should the early read of the file say nothing (unreadable there), the loaded encoder's
    recorded stream still refuses a contradicting override."""
    import pytest

    from pcm3.errors import ConfigError
    from pcm3.evaluation import runner

    from .tiny import encoder_file

    data, bone = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory, stream="bone", seed=3)
    monkeypatch.setattr(runner, "_recorded_input", lambda *a: {})
    with pytest.raises(ConfigError, match="pretrained on the bone stream"):
        runner.evaluate("knn", data=data, benchmark="xsub", out=tmp_path / "k", encoder_path=bone,
                        overrides=["stream=joint"])


def test_a_module_attribute_set_to_none_counts_as_missing(tmp_path_factory, tmp_path):
    """``clip_len = None`` was a TypeError traceback in input_spec (int(None))."""
    import torch

    from pcm3.evaluation.runner import evaluate

    class M(torch.nn.Module):
        clip_len = None

        def forward(self, x):
            return x.mean(dim=(2, 4)).flatten(1)

    m = evaluate("knn", data=tiny_data(tmp_path_factory), benchmark="xsub", out=tmp_path / "k", encoder=M())
    assert m["input"]["clip_len"] == 64 and "clip_len" in m["encoder"]["missing_attributes"]
