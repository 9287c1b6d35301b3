"""``pcm3 demo`` end to end on tiny data: every step, resume, the folder rules."""

import json

import pytest

from pcm3.cli import main
from pcm3.data.synthetic import prepare_synthetic, prepare_synthetic_untrimmed

FAST = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=16",
        "--supervised-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo") / "data"
    prepare_synthetic(data, seed=0, samples_per_class=4, num_subjects=4, progress=False)
    return data


def test_every_step_then_a_rerun_continues(tiny, tmp_path, capsys, monkeypatch):
    from pcm3.commands import demo

    # the suite and dense protocols at a few epochs: this test checks the wiring, not the figures
    monkeypatch.setitem(demo.SUITE_OVERRIDES, "linear", ["batch_size=16", "epochs=3", "milestones=[2]", "crops=2"])
    monkeypatch.setitem(demo.SUITE_OVERRIDES, "occlusion", ["batch_size=16", "epochs=3", "milestones=[2]", "crops=2"])
    monkeypatch.setitem(demo.SUITE_OVERRIDES, "semi", ["seeds=1", "epochs=2", "milestones=[1]", "fractions=[0.5]"])
    monkeypatch.setitem(demo.DENSE_OVERRIDES, "motion", ["observed=20", "predicted=5", "epochs=1", "milestones=[1]",
                                                        "max_train=32", "max_test=32"])
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(tiny), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    for row in ("raw_input", "random_init", "pretrained", "supervised (upper bound)"):
        assert row in printed
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["suite"]) == {"pretrained", "random_init", "raw_input", "supervised"}
    assert set(m["suite"]["pretrained"]) == {"linear", "knn", "occlusion", "semi"}
    assert "motion" in m["dense"] and "detection" not in m["dense"]  # --data: no untrimmed videos
    for task in ("knn", "linear"):  # the bound's own settings (--supervised-epochs 1), not the task's default 60
        sup = json.loads((out / "eval" / "supervised" / task / "metrics.json").read_text())
        assert sup["protocol"]["supervised"]["epochs"] == 1 and sup["encoder"]["supervised"]["epochs"] == 1
    report = (out / "report.md").read_text()
    assert "Table 1" in report and "Table 6" in report and (out / "report.html").exists()
    assert json.loads((out / ".pcm3").read_text())["kind"] == "demo"
    # a rerun continues: pretraining and finished eval folders are reused
    before = (out / "eval" / "pretrained" / "linear" / "metrics.json").stat().st_mtime_ns
    assert main(["demo", "--data", str(tiny), "--out", str(out), *FAST, "--steps", "suite,report"]) == 0
    assert (out / "eval" / "pretrained" / "linear" / "metrics.json").stat().st_mtime_ns == before
    # ... and keeps the figures of the steps it did not redo (the probe rows, the dense tasks)
    again = json.loads((out / "metrics.json").read_text())
    assert again["pretrained"] == m["pretrained"] and again["dense"] == m["dense"] and "suite" in again


def test_refuses_a_folder_it_did_not_make(tiny, tmp_path, capsys):
    box = tmp_path / "thesis"
    box.mkdir()
    (box / "thesis.tex").write_text("mine")
    assert main(["demo", "--data", str(tiny), "--out", str(box), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not create" in err
    assert sorted(p.name for p in box.iterdir()) == ["thesis.tex"]
    assert main(["demo", "--data", str(tiny), "--out", str(tmp_path / "d"), "--steps", "probe,plots", *FAST]) == 2
    assert "--steps" in capsys.readouterr().err
    for empty in (",", ""):  # nothing asked for: refused, not a silent pretraining
        assert main(["demo", "--data", str(tiny), "--out", str(tmp_path / "d"), "--steps", empty, *FAST]) == 2
        assert "--steps: empty" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_supervised_bound_trained_alongside_equals_the_serial_one(tiny, tmp_path):
    """``pcm3 demo`` trains the supervised bound in a second process during pretraining; that
    encoder is the one the probe would have trained in this process."""
    import torch

    from pcm3.commands import demo
    from pcm3.config import load_config
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.data.prepared import Prepared
    from pcm3.evaluation.baselines import random_init_encoder, train_supervised
    from pcm3.pretrain import data_shape_into_config

    cfg = load_config("demo", [f"data.path={tiny}", "model.encoder.hidden=8", "views.out_len=16", "views.min_len=16"])
    proc, path = demo._start_supervised(tmp_path, tiny, cfg, epochs=2)
    shaped = load_config("demo", [f"data.path={tiny}", "model.encoder.hidden=8", "views.out_len=16", "views.min_len=16"])
    data_shape_into_config(shaped, Prepared(tiny))
    pretrained = random_init_encoder(shaped.model.encoder, 5, layout=Prepared(tiny).layout, clip_len=16)
    background = demo._collect_supervised(proc, path, cfg, pretrained)
    assert background is not None and background.supervised_trained and path.exists()
    assert background.supervised_settings["epochs"] == 2  # what it was trained with, carried to its evaluations
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = train_supervised(pretrained.config, SkeletonDataset(tiny, "xsub", "train"),
                                  **demo.supervised_kwargs(cfg, 16, pretrained.layout, 2))
    finally:
        torch.set_num_threads(threads)
    for (name, a), (_, b) in zip(background.state_dict().items(), serial.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    assert not torch.equal(background.state_dict()["input_norm.running_mean"],
                           pretrained.state_dict()["input_norm.running_mean"])  # it did train
    assert background.supervised_settings == serial.supervised_settings
    # a bound saved by an older version (no settings in the file): the settings it was trained with
    saved = torch.load(path, map_location="cpu", weights_only=False)
    saved.pop("settings")
    torch.save(saved, path)
    old = demo._collect_supervised(None, path, cfg, pretrained, 2, tiny)
    assert old.supervised_settings == serial.supervised_settings


def test_the_dense_tasks_run_alongside_and_equal_the_serial_ones(tiny, tmp_path, monkeypatch):
    """``pcm3 demo`` runs the dense tasks in a second process during the probe and the suite;
    its folders hold what one process computes, and the later call only reads them."""
    from pcm3.commands import demo
    from pcm3.config import load_config

    monkeypatch.setitem(demo.DENSE_OVERRIDES, "motion", ["observed=20", "predicted=5", "epochs=1", "milestones=[1]",
                                                        "max_train=32", "max_test=32"])  # reaches the child too
    run, enc = tmp_path / "run", tmp_path / "enc.pt"
    assert main(["pretrain", "--config", "demo", "--data", str(tiny), "--out", str(run), "--quiet",
                 "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1", "--set", "train.batch_size=16",
                 "--set", "model.encoder.hidden=8", "--set", "model.prompt_dim=8", "--set", "model.queue_size=16"]) == 0
    assert main(["export", str(run), "--out", str(enc)]) == 0
    cfg = load_config("demo", [f"data.path={tiny}"])
    proc = demo._start_dense(tmp_path / "a", tiny, cfg, enc, builtin=False)
    proc.join()
    assert proc.exitcode == 0
    done = tmp_path / "a" / "dense" / "pretrained" / "motion" / "metrics.json"
    assert done.exists() and json.loads(done.read_text())["protocol"]["epochs"] == 1
    stamp = done.stat().st_mtime_ns
    alongside, _ = demo.run_dense(tmp_path / "a" / "dense", tiny, "xsub", cfg.train.seed, enc, False, progress=False)
    assert done.stat().st_mtime_ns == stamp  # read, not computed again
    serial, _ = demo.run_dense(tmp_path / "b" / "dense", tiny, "xsub", cfg.train.seed, enc, False, progress=False)
    assert set(alongside["motion"]) == {"pretrained", "random_init"}
    assert alongside == serial


def test_a_failing_background_task_exits_quietly(tmp_path, capfd):
    """The demo's children fail with exit 1 and no traceback; the parent redoes the work and
    reports any error itself in one line."""
    import multiprocessing

    from pcm3.commands import demo

    missing = tmp_path / "nothing"
    ctx = multiprocessing.get_context("spawn")
    dense = ctx.Process(target=demo._run_dense_child, args=(str(tmp_path / "dense"), str(missing), "xsub", 0,
                                                           str(missing / "enc.pt"), False, dict(demo.DENSE_OVERRIDES)))
    sup = ctx.Process(target=demo._train_supervised_to, args=(str(tmp_path / "s.pt"), {}, str(missing), "xsub", {}))
    for p in (dense, sup):
        p.start()
        p.join()
        assert p.exitcode == 1
    assert "Traceback" not in capfd.readouterr().err


def test_bad_options_and_data_are_refused_before_the_folder_is_made(tiny, tmp_path, capsys):
    untrimmed = tmp_path / "u"
    prepare_synthetic_untrimmed(untrimmed, seed=0, num_subjects=2, videos_per_view=1, actions_per_video=2,
                                progress=False)
    # a benchmark without test clips: the probe failed after pretraining, leaving a demo folder
    import shutil

    no_test = tmp_path / "no_test"
    shutil.copytree(tiny, no_test)
    splits = json.loads((no_test / "splits.json").read_text())
    splits["xsub"] = {"train": splits["xsub"]["train"] + splits["xsub"]["test"], "test": []}
    (no_test / "splits.json").write_text(json.dumps(splits))
    for argv, needle in ((["--data", str(untrimmed)], "holds untrimmed videos"),
                         (["--data", str(no_test)], "has no test clips"),
                         (["--data", str(tiny), "--set", "foo.bar=1"], "--set foo.bar=1"),
                         (["--data", str(tiny), "--config", "nosuch"], "nosuch"),
                         (["--data", str(tiny), "--supervised-epochs", "-1"], "--supervised-epochs"),
                         (["--data", str(tiny), "--threads", "-1"], "error: --threads: must be >= 0")):
        assert main(["demo", "--out", str(tmp_path / "d"), *argv, "--steps", "probe", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and needle in err, err
        assert not (tmp_path / "d").exists()


def test_a_rerun_with_other_settings_is_refused_and_the_same_reuses_everything(tiny, tmp_path, capsys):
    """Finished folders of a demo are reused on a rerun, so a rerun with other settings (more
    epochs: the suite would keep the old encoder's figures) is refused; the same rerun reuses
    the supervised bound instead of training it again."""
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(tiny), "--out", str(out), *FAST, "--steps", "probe"]) == 0
    first = json.loads((out / "metrics.json").read_text())
    stamp = (out / "supervised_encoder.pt").stat().st_mtime_ns
    capsys.readouterr()
    for argv, needle in ((["--set", "train.epochs=2"], "train.epochs differs (1 there, 2 now)"),
                         (["--set", "optim.lr=0.5"], "optim.lr differs"),
                         (["--supervised-epochs", "2"], "--supervised-epochs differs")):
        assert main(["demo", "--data", str(tiny), "--out", str(out), *FAST, *argv, "--steps", "probe"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert main(["demo", "--data", str(tiny), "--out", str(out), *FAST, "--steps", "probe"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert (out / "supervised_encoder.pt").stat().st_mtime_ns == stamp  # not trained again
    for row in ("pretrained", "random_init", "raw_input", "supervised"):
        assert again[row]["linear"] == first[row]["linear"] and again[row]["knn1"] == first[row]["knn1"]


def test_a_background_task_stopped_with_sigterm_cleans_up(tiny, tmp_path):
    """When the demo exits on an error (or is killed), multiprocessing stops its daemonic
    children with SIGTERM: they exit through their clean-up (exit 1), leaving no temporary file."""
    import multiprocessing
    import time

    from pcm3.commands import demo
    from pcm3.config import load_config

    cfg = load_config("demo", [f"data.path={tiny}", "model.encoder.hidden=8"])
    proc, path = demo._start_supervised(tmp_path, tiny, cfg, epochs=100000)
    time.sleep(8)  # started and training
    assert proc.is_alive()
    proc.terminate()
    proc.join(30)
    assert proc.exitcode == 1  # KeyboardInterrupt -> SystemExit(1), not killed by the signal (-15)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_suite_on_a_gallery_smaller_than_the_largest_k(tmp_path, capsys):
    """`pcm3 demo --data` on a small data set stopped at k-NN ("ks: 20 neighbours, but the gallery
    holds 16 clips ... --set ks=[1,5]"), an advice demo's --set (pretraining keys) cannot take: the
    suite keeps the packaged ks that the gallery holds, and records them."""
    data = tmp_path / "small"
    prepare_synthetic(data, seed=0, samples_per_class=2, num_subjects=4, progress=False)
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--data", str(data), "--set", "train.epochs=1", "--set",
                 "train.batch_size=4", "--supervised-epochs", "1", "--steps", "suite", "--quiet"]) == 0
    m = json.loads((out / "eval" / "pretrained" / "knn" / "metrics.json").read_text())
    assert m["protocol"]["ks"] == [1, 5] and m["splits"]["train"] == 16 and "knn20" not in m["figures"]
    assert "kNN-1" in capsys.readouterr().out


def test_the_table_names_the_stream_and_both_raw_inputs():
    """With a motion-stream encoder the probe's raw input row is the joint coordinates (the
    stronger baseline, the one the margin is taken against), and the stream's own raw input is
    shown beside it; a joint-stream table keeps its one raw input row."""
    from pcm3.commands.demo import format_table

    row = {"linear": 0.5, "knn1": 0.25}
    m = {"data": "d", "benchmark": "xsub", "train_samples": 9, "test_samples": 9, "epochs": 15,
         "pretrain_seconds": 80.0, "stream": "motion", "raw_input": row, "raw_input_motion": row,
         "random_init": row, "pretrained": row, "margin_linear_vs_raw_input": 0.1, "margin_knn1_vs_raw_input": 0.2}
    text = format_table(m)
    assert "encoders on the motion stream" in text.splitlines()[0]
    assert [line.split("  ")[1] for line in text.splitlines()[2:]] == [
        "raw_input (joint)", "raw_input (motion)", "random_init", "pretrained", "pretrained - raw_input (joint)"]
    joint = {k: v for k, v in m.items() if k not in ("stream", "raw_input_motion")}
    assert "raw_input (" not in format_table(joint) and "on the joint stream" in format_table(joint)
