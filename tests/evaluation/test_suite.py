"""``pcm3 benchmark``: the suite for two streams with baseline rows and fusion, on tiny data."""

import json
import re

import pytest

from .tiny import cli, encoder_file, tiny_data


def test_benchmark_two_streams(tmp_path_factory, tmp_path, capsys):
    data = tiny_data(tmp_path_factory)
    joint, bone = encoder_file(tmp_path_factory, "joint"), encoder_file(tmp_path_factory, "bone", seed=4)
    out = tmp_path / "bench"
    fast = [f"--set={t}.{k}" for t in ("linear", "occlusion") for k in ("epochs=2", "crops=1", "min_len=8")]
    code = cli("benchmark", "--encoders", str(joint), str(bone), "--data", str(data), "--benchmark", "xsub",
               "--out", str(out), "--tasks", "linear,knn,occlusion", "--raw-input", "--no-report", *fast)
    assert code == 0
    table = (out / "benchmark.md").read_text()
    assert "2s fusion" in table and "Table 4: occlusion" in table and "raw input" in table
    assert "weights [0.50, 0.50] (equal)." in table  # the footer says what the fusion rows used
    for row in ("joint_pretrained", "joint_random_init", "bone_raw_input", "fusion_pretrained"):
        assert (out / row).is_dir(), row
    m = json.loads((out / "bone_random_init" / "linear" / "metrics.json").read_text())
    assert m["encoder"]["kind"] == "random_init" and m["input"]["stream"] == "bone"
    f = json.loads((out / "fusion_pretrained" / "metrics.json").read_text())
    assert f["weights"] == [0.5, 0.5] and {"joint_top1", "bone_top1"} <= set(f["figures"])
    # the fused folders are named where they are now, not in the suite's temporary folder
    assert f["runs"] == [str((out / r / "linear").resolve()) for r in ("joint_pretrained", "bone_pretrained")]
    assert f["streams"] == ["joint", "bone"] and all(__import__("os").path.isdir(r) for r in f["runs"])
    capsys.readouterr()
    assert cli("benchmark", "--encoders", str(joint), "--data", str(data), "--benchmark", "xsub",
               "--out", str(tmp_path / "b2"), "--set", "epochs=2") == 2
    assert "prefix the key with a task" in capsys.readouterr().err


def test_benchmark_takes_modules_as_evaluate_does(tmp_path_factory, tmp_path):
    """A module gave a pathlib TypeError before (only exported files were read)."""
    import pytest
    import torch

    from pcm3.errors import ConfigError
    from pcm3.evaluation.suite import run_benchmark
    from pcm3.export import load_encoder

    data = tiny_data(tmp_path_factory)
    enc = load_encoder(encoder_file(tmp_path_factory, "bone", seed=4)).train()
    torch.set_num_threads(1)
    result = run_benchmark([enc], data=data, benchmark="xsub", out=tmp_path / "b", tasks=("knn",), report=False)
    assert {"bone_pretrained", "bone_random_init"} <= {p.name for p in (tmp_path / "b").iterdir()}
    assert "`Encoder (module)`" in result["table"] and enc.training
    m = json.loads((tmp_path / "b" / "bone_pretrained" / "knn" / "metrics.json").read_text())
    assert m["input"]["stream"] == "bone" and m["input"]["clip_len"] == enc.clip_len

    class Custom(torch.nn.Module):  # no pcm3 config, no attributes: the joint stream
        def forward(self, x):
            return x.mean(dim=(2, 4)).flatten(1)

    calls = []

    class Counted(Custom):
        def forward(self, x):
            calls.append(1)
            return super().forward(x)

    with pytest.raises(ConfigError, match="random_init needs a pcm3 Encoder"):
        run_benchmark([Counted()], data=data, benchmark="xsub", out=tmp_path / "c", tasks=("knn",), report=False)
    assert not (tmp_path / "c").exists() and calls == []  # refused before any work
    run_benchmark([Custom()], data=data, benchmark="xsub", out=tmp_path / "c", tasks=("knn",), random_init=False,
                  report=False)
    assert (tmp_path / "c" / "joint_pretrained" / "knn" / "metrics.json").is_file()


def test_the_supervised_row_records_what_it_was_trained_with_and_is_kept(tmp_path_factory, tmp_path):
    """Its metrics said the task's default supervised epochs (60 from knn's protocol) while it was
    trained once with linear's settings; no supervised_encoder.pt was kept."""
    data, joint = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory, "joint")
    out = tmp_path / "bsup"
    assert cli("benchmark", "--encoders", str(joint), "--data", str(data), "--benchmark", "xsub", "--out", str(out),
               "--tasks", "knn", "--supervised", "--no-random-init", "--no-report",
               "--set", "linear.supervised.epochs=1", "--set", "linear.supervised.min_len=8",
               "--set", "linear.val_fraction=0.5") == 0  # read by the supervised row: not refused
    m = json.loads((out / "joint_supervised" / "knn" / "metrics.json").read_text())
    assert m["protocol"]["supervised"]["epochs"] == 1 and m["encoder"]["supervised"]["epochs"] == 1
    assert m["encoder"]["supervised"]["train_samples"] < 96  # less the validation subjects
    assert (out / "joint_supervised" / "supervised_encoder.pt").is_file()
    assert "on the xsub training split" in m["encoder"]["weights"]  # not "trained by the caller"
    assert m["encoder"]["path"] == str(out / "joint_supervised" / "supervised_encoder.pt")


@pytest.mark.parametrize("sets, msg", [
    (["--set", "linear.epochs=3"], "linear.epochs=3: linear is not among --tasks \\(knn\\)"),
    (["--set", "knn.supervised.epochs=1", "--supervised"], "trained once per encoder, with linear's settings: "
                                                            "give --set linear.supervised.epochs=1"),
    (["--set", "linear.supervised.epochs=1"], "without --supervised there is no supervised row"),
    (["--set", "fusion.grid_step=0.5"], "no fusion is run"),
    (["--tasks", "linear", "--set", "fusion.grid_step=0.5"], "no fusion is run"),  # linear, but one encoder
    (["--set", "linear.val_fraction=0.2"], "linear.val_fraction=0.2: linear is not among"),  # no supervised row
])
def test_settings_the_benchmark_would_ignore_are_refused(tmp_path_factory, tmp_path, capsys, sets, msg):
    data, joint = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory, "joint")
    capsys.readouterr()
    assert cli("benchmark", "--encoders", str(joint), "--data", str(data), "--benchmark", "xsub",
               "--out", str(tmp_path / "b"), "--tasks", "knn", "--no-report", *sets) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(msg, err[0]), err
    assert not (tmp_path / "b").exists()


def test_a_rows_warning_is_printed_once_for_all_its_tasks(tmp_path_factory, tmp_path, capsys):
    """Every task of an xsub-pretrained encoder run on xview warns of the same overlap: once."""
    from pcm3.cli import main

    data = tiny_data(tmp_path_factory)
    run = tmp_path / "run"
    assert main(["pretrain", "--config", "demo", "--data", str(data), "--out", str(run), "--quiet",
                 "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1", "--set", "train.batch_size=16",
                 "--set", "model.encoder.hidden=8", "--set", "model.prompt_dim=8"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "enc.pt")]) == 0
    capsys.readouterr()
    assert cli("benchmark", "--encoders", str(tmp_path / "enc.pt"), "--data", str(data), "--benchmark", "xview",
               "--out", str(tmp_path / "b"), "--tasks", "knn,occlusion", "--no-random-init", "--no-report",
               "--set", "occlusion.epochs=1", "--set", "occlusion.crops=1", "--set", "occlusion.min_len=8") == 0
    err = capsys.readouterr().err
    assert err.count("were pretraining clips of this encoder") == 1, err


def test_an_empty_task_list_is_refused_by_name(tmp_path_factory, tmp_path, capsys):
    """`--tasks ""` was refused with the benchmark's temporary folder as the culprit
    ("/tmp/.ob.zje6q4b7.tmp: holds no eval results")."""
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    assert cli("benchmark", "--encoders", str(enc), "--data", str(data), "--benchmark", "xsub",
               "--out", str(tmp_path / "b"), "--tasks", "") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tasks: empty") and ".tmp" not in err and not (tmp_path / "b").exists()
    assert cli("benchmark", "--encoders", str(enc), "--data", str(data), "--benchmark", "xsub",
               "--out", str(tmp_path / "b"), "--threads", "0") == 2   # it became 1 silently
    assert capsys.readouterr().err.startswith("error: --threads: must be >= 1, got 0")


def test_the_reports_warnings_reach_the_benchmarks_caller(tmp_path_factory, tmp_path, capsys, monkeypatch):
    """A figure the report left out (a damaged scores file) was said by `pcm3 report` only: the
    benchmark returns the report's warnings and prints them."""
    from pcm3.evaluation import report

    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    real = report.write_report

    def damaged(*args, **kwargs):
        return {**real(*args, **kwargs), "warnings": ["x/scores.npy: truncated; figure \"Confusion matrix\" left out"]}

    monkeypatch.setattr(report, "write_report", damaged)
    assert cli("benchmark", "--encoders", str(enc), "--data", str(data), "--benchmark", "xsub", "--tasks", "knn",
               "--no-random-init", "--out", str(tmp_path / "b")) == 0
    assert "warning: x/scores.npy: truncated; figure \"Confusion matrix\" left out" in capsys.readouterr().err
