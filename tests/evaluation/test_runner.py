"""Encoder rows from a pretraining run: ``--run``, its export, and the random-init twin agree."""

import json

from pcm3.cli import main

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
