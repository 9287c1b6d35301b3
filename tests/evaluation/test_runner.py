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
