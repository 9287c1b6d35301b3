"""The training loop: outputs, resume exactness, divergence handling, learning."""

import csv

import pytest
import torch

from pcm3.cli import main
from pcm3.config import load_config
from pcm3.errors import ConfigError, DataError
from pcm3.pretrain import TrainingDiverged, fit, load_checkpoint, lr_at
from tests.mpl_backend import pdf_backend

TINY = [
    "model.encoder.hidden=16", "model.encoder.layers=2", "model.proj_dim=16", "model.queue_size=64",
    "model.decoder_hidden=16", "model.prompt_dim=4", "views.out_len=16", "views.min_len=16",
    "train.batch_size=32", "data.num_workers=0", "train.progress=false", "train.save_every=2",
    "optim.milestones=[100]",
]


def tiny_config(data, *extra):
    return load_config(None, [*TINY, f"data.path={data}", *extra])


def test_lr_schedules():
    cfg = load_config(None, ["optim.lr=0.02", "optim.milestones=[350]", "train.epochs=450"])
    assert lr_at(cfg, 0) == pytest.approx(0.02) and lr_at(cfg, 349) == pytest.approx(0.02)
    assert lr_at(cfg, 350) == pytest.approx(0.002)
    cos = load_config(None, ["optim.schedule=cosine", "train.epochs=10"])
    assert lr_at(cos, 0) == pytest.approx(0.02) and lr_at(cos, 5) == pytest.approx(0.01)
    with pytest.raises(ConfigError):
        lr_at(load_config(None, ["optim.schedule=linear"]), 0)


def test_loss_figure_is_redrawn_at_most_every_so_often(synthetic_small, tmp_path, monkeypatch):
    """metrics.csv after every epoch; loss.png after the first, the last, and when PLOT_EVERY_S
    has passed (here never in between)."""
    import pcm3.pretrain as pretrain

    drawn = []
    monkeypatch.setattr(pretrain, "PLOT_EVERY_S", 1e9)
    monkeypatch.setattr(pretrain, "plot_losses", lambda history, path: drawn.append(len(history)))
    fit(tiny_config(synthetic_small, "train.epochs=3", "train.max_steps_per_epoch=1"), tmp_path / "run")
    assert drawn == [1, 3] and len(list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))) == 3
    monkeypatch.setattr(pretrain, "PLOT_EVERY_S", 0.0)
    drawn.clear()
    fit(tiny_config(synthetic_small, "train.epochs=3", "train.max_steps_per_epoch=1"), tmp_path / "run2")
    assert drawn == [1, 2, 3]


def test_loss_figure_is_current_after_an_interrupt(synthetic_small, tmp_path, monkeypatch):
    """Ctrl-C (or a stop on divergence) between two redraws left loss.png showing the first
    epoch only while metrics.csv and the checkpoint held more: the figure is drawn on the way
    out with the epochs the checkpoint holds."""
    import pcm3.pretrain as pretrain

    drawn = []
    real = pretrain.train_one_epoch

    def interrupted(*args, **kwargs):
        if args[6] == 2:  # the third epoch
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "PLOT_EVERY_S", 1e9)
    monkeypatch.setattr(pretrain, "plot_losses", lambda history, path: drawn.append(len(history)))
    monkeypatch.setattr(pretrain, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(synthetic_small, "train.epochs=4", "train.max_steps_per_epoch=1"), tmp_path / "run")
    assert drawn == [1, 2] and len(list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))) == 2
    # the log says where it stopped (it ended after epoch 2's line before)
    last = (tmp_path / "run" / "log.txt").read_text().splitlines()[-1]
    assert last.endswith("interrupted during epoch 3; checkpoint_last.pt holds epoch 2: --resume continues"), last


def test_an_interrupt_while_an_epoch_is_saved_names_that_epoch(synthetic_small, tmp_path, monkeypatch):
    """Interrupted while epoch 3's checkpoint was being written (epoch 3 already in the history),
    the log said "interrupted during epoch 4": it names the epoch in progress, 3, and the
    checkpoint's epoch 2."""
    import pcm3.pretrain as pretrain

    real = pretrain.save_checkpoint

    def interrupted(path, model, optimizer, cfg, epoch, *args, **kwargs):
        if epoch == 3:
            raise KeyboardInterrupt
        return real(path, model, optimizer, cfg, epoch, *args, **kwargs)

    monkeypatch.setattr(pretrain, "save_checkpoint", interrupted)
    last, rows = _interrupted_fit(synthetic_small, tmp_path / "run", epochs=4)
    assert last.endswith("interrupted during epoch 3; checkpoint_last.pt holds epoch 2: --resume continues"), last
    assert rows == 2


def _interrupted_fit(data, run, epochs: int):
    """Fit that ends in KeyboardInterrupt: the last line of log.txt and the rows of metrics.csv."""
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(data, f"train.epochs={epochs}", "train.max_steps_per_epoch=1"), run)
    return (run / "log.txt").read_text().splitlines()[-1], len(list(csv.DictReader(open(run / "metrics.csv"))))


def test_an_interrupt_while_the_figure_is_drawn_after_the_checkpoint(synthetic_small, tmp_path, monkeypatch):
    """Ctrl-C while loss.png of the last epoch was drawn (epoch 2 of 2 in checkpoint_last.pt) left
    the log without epoch 2's line and saying "no epoch finished" or "holds epoch 1: --resume
    continues", which --resume then refused as finished; loss.png showed epoch 1."""
    import pcm3.pretrain as pretrain

    drawn = []

    def draw(history, path):
        if len(history) == 2 and not drawn.count(2):
            drawn.append(2)
            raise KeyboardInterrupt
        drawn.append(len(history))

    monkeypatch.setattr(pretrain, "plot_losses", draw)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(synthetic_small, "train.epochs=2", "train.max_steps_per_epoch=1"), tmp_path / "run")
    log = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert log[-2].split(" ", 2)[2].startswith("epoch 2/2 ")
    assert log[-1].endswith("interrupted during epoch 2; checkpoint_last.pt holds epoch 2, the last: the run is "
                            "complete"), log[-1]
    assert drawn == [1, 2, 2]  # redrawn on the way out with both epochs


def test_an_interrupt_between_the_checkpoint_and_metrics_csv(synthetic_small, tmp_path, monkeypatch):
    """checkpoint_last.pt held epoch 2 while metrics.csv was still being written: the log said it
    held epoch 1. It names the checkpoint's epoch, and metrics.csv is completed on the way out."""
    import pcm3.pretrain as pretrain

    real, calls = pretrain.write_metrics, []

    def write(run, history, plot=True):
        calls.append(len(history))
        if len(history) == 2 and calls.count(2) == 1:
            raise KeyboardInterrupt
        return real(run, history, plot=plot)

    monkeypatch.setattr(pretrain, "write_metrics", write)
    last, rows = _interrupted_fit(synthetic_small, tmp_path / "run", epochs=3)
    assert last.endswith("interrupted during epoch 2; checkpoint_last.pt holds epoch 2: --resume continues"), last
    assert rows == 2  # completed on the way out


def test_a_lost_torchrun_peer_is_logged(synthetic_small, tmp_path, monkeypatch):
    """A survivor of a torchrun job whose other process died wrote nothing in log.txt."""
    import pcm3.pretrain as pretrain

    real = pretrain.train_one_epoch

    def peer_gone(*args, **kwargs):
        if args[6] == 1:
            raise RuntimeError("[gloo/transport/tcp/pair.cc:534] Connection reset by peer")
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrain, "train_one_epoch", peer_gone)
    monkeypatch.setattr(pretrain.distributed, "lost_peer", lambda e: "reset by peer" in str(e))
    with pytest.raises(RuntimeError):
        fit(tiny_config(synthetic_small, "train.epochs=3", "train.max_steps_per_epoch=1"), tmp_path / "run")
    last = (tmp_path / "run" / "log.txt").read_text().splitlines()[-1]
    assert last.endswith("stopped during epoch 2: another process of the torchrun job stopped; "
                         "checkpoint_last.pt holds epoch 1: --resume continues"), last


def test_resume_from_a_checkpoint_without_the_shuffle_state_warns():
    """A checkpoint written before the key-shuffle generator was saved resumed a multi-process
    shuffle-BN run silently with fresh shuffles (not the uninterrupted run): a warning says so."""
    from types import SimpleNamespace

    from pcm3.pretrain import _restore_comm

    loaded = []
    comm = SimpleNamespace(shuffle_keys=True, load_state_dict=loaded.append)
    model = SimpleNamespace(comm=comm)
    assert "no key-shuffle state" in _restore_comm(model, {"epoch": 1})  # an older checkpoint
    assert _restore_comm(model, {"epoch": 1, "comm": {"shuffle_rng": 1}}) is None and loaded == [{"shuffle_rng": 1}]
    assert _restore_comm(model, {"epoch": 1, "comm": None}) is None  # from a one-process run: another G
    assert _restore_comm(SimpleNamespace(comm=SimpleNamespace(shuffle_keys=False)), {"epoch": 1}) is None
    assert _restore_comm(model, None) is None


def test_run_folder_contents(synthetic_small, tmp_path):
    run = tmp_path / "run"
    last = fit(tiny_config(synthetic_small, "train.epochs=2"), run)
    for name in ("config.yaml", "log.txt", "metrics.csv", "loss.png", "checkpoint_last.pt", "checkpoint_epoch002.pt"):
        assert (run / name).exists(), name
    assert any((run / "tb").iterdir())
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("loss", "lr", "samples_per_s", "mask_mse", "con_intra", "con_inter", "con_mask", "con_predict"):
        assert key in rows[0], key
    assert last["epoch"] == 2 and torch.isfinite(torch.tensor(last["loss"]))
    # a second run into the same folder must not silently overwrite it
    with pytest.raises(ConfigError, match="--resume"):
        fit(tiny_config(synthetic_small, "train.epochs=2"), run)


def test_resume_equals_uninterrupted(synthetic_small, tmp_path):
    full = tmp_path / "full"
    fit(tiny_config(synthetic_small, "train.epochs=3"), full)
    part = tmp_path / "part"
    fit(tiny_config(synthetic_small, "train.epochs=1"), part)
    fit(tiny_config(synthetic_small, "train.epochs=3"), part, resume=True)
    a = load_checkpoint(full / "checkpoint_last.pt")
    b = load_checkpoint(part / "checkpoint_last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k  # parameters, queue and pointer
    assert [r["loss"] for r in a["history"]] == pytest.approx([r["loss"] for r in b["history"]], rel=0, abs=0)


def test_resume_to_another_length_says_when_a_schedule_stretches(synthetic_small, tmp_path, capsys):
    """--resume --set train.epochs=N changed a cosine momentum schedule (and the result) silently;
    a run that has done more epochs than asked was "finished (3 of 1 epochs done)"."""
    run = tmp_path / "run"
    fit(tiny_config(synthetic_small, "train.epochs=2", "model.momentum_schedule=cosine"), run)
    capsys.readouterr()
    fit(tiny_config(synthetic_small, "train.epochs=3", "model.momentum_schedule=cosine"), run, resume=True)
    err = capsys.readouterr().err
    assert ("note: --resume: the run's length changes from 2 to 3 epochs, and its cosine key momentum schedule "
            "follows the new length from epoch 3") in err, err
    assert "changes from 2 to 3 epochs" in (run / "log.txt").read_text()
    with pytest.raises(ConfigError, match=r"the run has done 3 epochs, more than train.epochs=1; .*train.epochs=13"):
        fit(tiny_config(synthetic_small, "train.epochs=1", "model.momentum_schedule=cosine"), run, resume=True)
    plain = tmp_path / "plain"  # step learning rate, constant momentum: the resumed run is the long one
    fit(tiny_config(synthetic_small, "train.epochs=1"), plain)
    capsys.readouterr()
    fit(tiny_config(synthetic_small, "train.epochs=2"), plain, resume=True)
    assert "note: --resume" not in capsys.readouterr().err


def test_quiet_is_not_saved_into_the_run(synthetic_small, tmp_path, capsys):
    """`pretrain --quiet` wrote train.progress: false into config.yaml, which silenced every later
    `--resume` (even without --quiet)."""
    import yaml

    run = tmp_path / "run"
    sets = [a for s in TINY if s != "train.progress=false" for a in ("--set", s)]
    assert main(["pretrain", "--data", str(synthetic_small), "--out", str(run), "--quiet", *sets,
                 "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=1"]) == 0
    assert capsys.readouterr().out == ""
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["progress"] is True
    assert main(["pretrain", "--data", str(synthetic_small), "--out", str(run), "--resume",
                 "--set", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and out.rstrip().splitlines()[-1].startswith("done: ")


def test_a_run_being_trained_cannot_be_resumed_by_a_second_process(synthetic_small, tmp_path):
    """A second --resume of a run still training was accepted: both processes rewrote its
    checkpoint, metrics.csv and log.txt (every epoch line twice)."""
    import subprocess
    import sys

    from pcm3.outputs import RUN_LOCK

    run = tmp_path / "run"
    fit(tiny_config(synthetic_small, "train.epochs=1", "train.max_steps_per_epoch=1"), run)
    holder = subprocess.Popen(  # another process holding the run's lock, as a training process does
        [sys.executable, "-c", "import sys, time; from pcm3.outputs import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
                               "print('locked', flush=True); time.sleep(60)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        log = (run / "log.txt").read_text()
        with pytest.raises(DataError, match=rf"another process is training this run \(pid {holder.pid}\)"):
            fit(tiny_config(synthetic_small, "train.epochs=2", "train.max_steps_per_epoch=1"), run, resume=True)
        assert (run / "log.txt").read_text() == log  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: the run resumes
    fit(tiny_config(synthetic_small, "train.epochs=2", "train.max_steps_per_epoch=1"), run, resume=True)
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 2 and (run / RUN_LOCK).is_file()


def test_temporaries_of_a_killed_write_are_removed_when_the_run_restarts(synthetic_small, tmp_path):
    """kill -9 while checkpoint_last.pt was written left its partial temporary for good."""
    run = tmp_path / "run"
    fit(tiny_config(synthetic_small, "train.epochs=1", "train.max_steps_per_epoch=1"), run)
    stale = [".checkpoint_last.pt.abc_1234.tmp", ".metrics.csv.x1y2z3w4.tmp", ".checkpoint_epoch002.pt.qqqqqqqq.tmp",
             ".loss.png.k2j4h6g8.png.tmp"]
    for name in stale:
        (run / name).write_bytes(b"partial")
    kept = [".notes.abcdefgh.tmp", "checkpoint_last.pt.tmp", ".checkpoint_last.pt.abcdefgh.tmp.bak",
            ".metrics.csv.mine.tmp"]  # not pcm3's names
    for name in kept:
        (run / name).write_text("mine")
    fit(tiny_config(synthetic_small, "train.epochs=2", "train.max_steps_per_epoch=1"), run, resume=True)
    assert not any((run / n).exists() for n in stale) and all((run / n).exists() for n in kept)
    assert "removed 4 temporary files of an interrupted write" in (run / "log.txt").read_text()


def test_resume_refuses_changed_method(synthetic_small, tmp_path):
    run = tmp_path / "run"
    fit(tiny_config(synthetic_small, "train.epochs=1"), run)
    with pytest.raises(ConfigError, match="loss.w_mask"):
        fit(tiny_config(synthetic_small, "train.epochs=2", "loss.w_mask=1"), run, resume=True)


def test_resume_refuses_other_data(synthetic_small, tmp_path, resplit):
    run = tmp_path / "run"
    fit(tiny_config(synthetic_small, "train.epochs=1"), run)

    def shorter(splits):  # the same clips, a training part one sample shorter
        splits["xsub"]["train"] = splits["xsub"]["train"][:-1]
        return splits

    other = resplit(synthetic_small, tmp_path / "other", shorter)
    cfg = tiny_config(synthetic_small, "train.epochs=2")
    cfg.data.path = str(other)
    with pytest.raises(ConfigError, match="training samples here, .* in the interrupted run"):
        fit(cfg, run, resume=True)
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(synthetic_small, tmp_path, monkeypatch):
    run = tmp_path / "run"
    fit(tiny_config(synthetic_small, "train.epochs=1"), run)
    from pcm3.models import PCM3

    real_forward = PCM3.forward

    def nan_forward(self, inputs):
        out = real_forward(self, inputs)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(PCM3, "forward", nan_forward)
    with pytest.raises(TrainingDiverged, match="not finite.*the last good checkpoint is kept"):
        fit(tiny_config(synthetic_small, "train.epochs=3"), run, resume=True)
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 1
    # in the first epoch there is nothing to keep, and --resume then has nothing to continue
    fresh = tmp_path / "fresh"
    with pytest.raises(TrainingDiverged, match="no epoch finished, so there is no checkpoint") as e:
        fit(tiny_config(synthetic_small, "train.epochs=3"), fresh)
    assert "kept" not in str(e.value) and not (fresh / "checkpoint_last.pt").exists()
    with pytest.raises(DataError, match="--resume: no checkpoint: the run stopped before its first epoch finished"):
        fit(tiny_config(synthetic_small, "train.epochs=3"), fresh, resume=True)


def _exploding_mask_mse(monkeypatch, after_calls):
    """PCM3.forward whose mask_mse (and so loss) is 1e6 times larger after ``after_calls`` calls."""
    from pcm3.models import PCM3

    real_forward, calls = PCM3.forward, {"n": 0}

    def forward(self, inputs):
        out = real_forward(self, inputs)
        calls["n"] += 1
        if calls["n"] > after_calls:
            out["loss"] = out["loss"] + out["mask_mse"] * (1e6 - 1)
            out["mask_mse"] = out["mask_mse"] * 1e6
        return out

    monkeypatch.setattr(PCM3, "forward", forward)


def test_divergence_stops_the_run_at_the_last_good_epoch(synthetic_small, tmp_path, monkeypatch, capsys):
    steps = ["train.epochs=3", "train.max_steps_per_epoch=2", "optim.lr=0"]  # lr 0: only the patch moves a term
    _exploding_mask_mse(monkeypatch, after_calls=2)                         # epoch 2 onwards
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="mask_mse") as stopped:
        fit(tiny_config(synthetic_small, *steps), run)
    assert "epoch 2" in str(stopped.value)
    assert load_checkpoint(run / "checkpoint_last.pt")["epoch"] == 1
    assert [row["epoch"] for row in csv.DictReader(open(run / "metrics.csv"))] == ["1"]
    assert "stopped: epoch 2" in (run / "log.txt").read_text()
    capsys.readouterr()
    _exploding_mask_mse(monkeypatch, after_calls=2)
    fit(tiny_config(synthetic_small, *steps, "train.on_divergence=warn"), tmp_path / "warned")  # runs on
    assert load_checkpoint(tmp_path / "warned" / "checkpoint_last.pt")["epoch"] == 3
    warned = [line for line in capsys.readouterr().err.splitlines() if "diverging" in line]
    assert [line.split(":")[0:2] for line in warned] == [["warning", " epoch 2"], ["warning", " epoch 3"]]
    assert all("mask_mse=" in line for line in warned)


def test_fit_prints_the_collapse_monitor_warning(synthetic_small, tmp_path, monkeypatch, capsys):
    from pcm3.models import PCM3

    real_forward = PCM3.forward

    def collapsed(self, inputs):  # every embedding the same point: std 0, instance top-1 at chance
        out = real_forward(self, inputs)
        point = torch.nn.functional.normalize(torch.ones_like(out["z_query"]), dim=1)
        out["z_query"], out["z_key"] = point, point.clone()
        return out

    monkeypatch.setattr(PCM3, "forward", collapsed)
    run = tmp_path / "run"
    fit(tiny_config(synthetic_small, "train.epochs=1", "train.max_steps_per_epoch=1", "train.collapse_patience=1"),
        run)
    assert float(next(csv.DictReader(open(run / "metrics.csv")))["emb_std"]) == pytest.approx(0, abs=1e-6)
    lines = [line for line in capsys.readouterr().err.splitlines() if "collapse" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: epoch 1: contrastive collapse?")
    assert lines[0] in (run / "log.txt").read_text()
    # a resumed run that is still collapsed says so once in its own session
    fit(tiny_config(synthetic_small, "train.epochs=3", "train.max_steps_per_epoch=1", "train.collapse_patience=1"),
        run, resume=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "collapse" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: epoch 2: contrastive collapse?"), lines


def test_tiny_run_loss_falls(synthetic_small, tmp_path):
    history = []
    fit(tiny_config(synthetic_small, "train.epochs=8", "optim.lr=0.05"), tmp_path / "run")
    for row in csv.DictReader(open(tmp_path / "run" / "metrics.csv")):
        history.append(row)
    first, last = history[0], history[-1]
    assert float(last["mask_mse"]) < 0.8 * float(first["mask_mse"])
    assert float(last["loss"]) < float(first["loss"])


@pytest.mark.parametrize("stream", ["bone", "motion"])
def test_streams_train(synthetic_small, tmp_path, stream):
    last = fit(tiny_config(synthetic_small, "train.epochs=1", f"data.stream={stream}"), tmp_path / stream)
    assert torch.isfinite(torch.tensor(last["loss"]))


@pytest.mark.parametrize("stream", ["bone", "motion"])
def test_batch_inputs_are_in_the_configured_stream(stream):
    """The three views reach the model as ``data.stream`` of the same joint views (same draws)."""
    from pcm3.pretrain import make_batch_inputs
    from pcm3.skeleton import get_layout, to_stream

    x = torch.randn(4, 3, 40, 25, 2, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([40, 33, 28, 40])
    layout = get_layout("ntu25")
    joint = make_batch_inputs(x, lengths, load_config(None, TINY), layout, torch.Generator().manual_seed(0))
    other = make_batch_inputs(x, lengths, load_config(None, [*TINY, f"data.stream={stream}"]), layout,
                              torch.Generator().manual_seed(0))
    for view in ("view1", "view2", "view3"):
        assert not torch.allclose(other[view], joint[view]), view
        torch.testing.assert_close(other[view], to_stream(joint[view], stream, layout), msg=view)
    assert torch.equal(other["mask"], joint["mask"])


def test_cli_pretrain_and_bad_inputs(synthetic_small, tmp_path, capsys):
    args = ["pretrain", "--data", str(synthetic_small), "--out", str(tmp_path / "run"), "--quiet"]
    sets = [a for s in TINY for a in ("--set", s)]
    assert main([*args, *sets, "--set", "train.epochs=1"]) == 0
    assert main([*args, *sets, "--set", "train.epochs=2", "--resume"]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["epoch"] == 2
    capsys.readouterr()
    assert main(["pretrain", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing" in err[0]
    assert main([*args[:-1], "--set", "data.stream=velocity", *sets, "--out", str(tmp_path / "r3")]) == 2


def test_queue_larger_than_the_data_set_is_warned():
    from pcm3.config import load_config
    from pcm3.pretrain import _queue_warning

    cfg = load_config("msr3d_xsub_joint")
    assert _queue_warning(cfg, 284) is None  # the packaged small config: 256 keys for 284 clips
    msg = _queue_warning(load_config("msr3d_xsub_joint", ["model.queue_size=1024"]), 284)
    assert msg.startswith("warning:") and "1024" in msg and "284" in msg and "excluded" in msg
    assert _queue_warning(load_config("msr3d_xsub_joint", ["loss.contrast=false", "loss.positives.mask=false",
                                                           "loss.positives.predict=false", "loss.distill=false",
                                                           "model.queue_size=1024"]), 284) is None


def _first_step(data, run, monkeypatch, *extra):
    """Loss terms of one training step (epoch 1, one step) and whether the forward ran under CPU autocast."""
    from pcm3.models import PCM3

    seen, real_forward = [], PCM3.forward

    def forward(self, inputs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return real_forward(self, inputs)

    monkeypatch.setattr(PCM3, "forward", forward)
    last = fit(tiny_config(data, "train.epochs=1", "train.max_steps_per_epoch=1", "train.device=cpu", *extra), run)
    monkeypatch.setattr(PCM3, "forward", real_forward)
    return last, seen


def test_bf16_amp_on_cpu_runs_under_autocast_close_to_fp32(synthetic_small, tmp_path, monkeypatch):
    from pcm3.pretrain import cpu_bf16_supported

    if not cpu_bf16_supported():
        pytest.skip("this CPU has no bfloat16 support in torch (torch.ops.mkldnn._is_mkldnn_bf16_supported)")
    fp32, seen32 = _first_step(synthetic_small, tmp_path / "fp32", monkeypatch)
    bf16, seen16 = _first_step(synthetic_small, tmp_path / "bf16", monkeypatch, "train.amp=bf16")
    assert seen32 == [False] and seen16 == [True]
    assert "bfloat16 autocast" in (tmp_path / "bf16" / "log.txt").read_text()
    assert "bfloat16" not in (tmp_path / "fp32" / "log.txt").read_text()
    terms = [k for k in fp32 if k == "loss" or k.startswith(("con_", "kl_", "mask_mse"))]
    assert "con_intra" in terms and "mask_mse" in terms
    for k in terms:  # the same first step (same weights and batch): bf16 rounding only
        assert torch.isfinite(torch.tensor(bf16[k])), k
        assert bf16[k] == pytest.approx(fp32[k], rel=0.03), k
    assert bf16["loss"] != fp32["loss"]  # it did compute in bfloat16


def test_bf16_amp_without_cpu_support_warns_and_trains_fp32(synthetic_small, tmp_path, monkeypatch, capsys):
    import pcm3.pretrain

    monkeypatch.setattr(pcm3.pretrain, "cpu_bf16_supported", lambda: False)
    last, seen = _first_step(synthetic_small, tmp_path / "run", monkeypatch, "train.amp=bf16")
    assert seen == [False] and torch.isfinite(torch.tensor(last["loss"]))
    err = [line for line in capsys.readouterr().err.splitlines() if "train.amp" in line]
    assert len(err) == 1 and err[0].startswith("warning: train.amp:") and "float32" in err[0]
    assert pcm3.pretrain.amp_mode(False, torch.device("cpu")) == (False, None)  # fp32: nothing to say
    assert pcm3.pretrain.amp_mode(True, torch.device("meta"))[0] is False


def test_clip_grad_norm_bounds_the_step(synthetic_small, tmp_path, monkeypatch):
    """``optim.clip_grad_norm``: the global gradient norm seen by the optimizer is at most the bound."""
    norms = []
    real_step = torch.optim.SGD.step

    def step(self, *args, **kwargs):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    base = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.device=cpu"]
    fit(tiny_config(synthetic_small, *base), tmp_path / "free")
    free, norms[:] = list(norms), []
    fit(tiny_config(synthetic_small, *base, "optim.clip_grad_norm=0.01"), tmp_path / "clipped")
    assert min(free) > 0.02  # the bound below is active
    assert len(norms) == 2 and max(norms) <= 0.01 * (1 + 1e-4)


def test_fit_leaves_the_callers_threads_random_states_and_config_alone(synthetic_small, tmp_path):
    """``fit`` set the thread count and seeded the global generators for good, and filled the
    caller's config in from the data."""
    from pcm3.config import read_yaml
    from tests.global_draws import draws, seed_all

    def seed():
        seed_all(123)

    cfg = tiny_config(synthetic_small, "train.epochs=1", "train.max_steps_per_epoch=1", "train.threads=1")
    cfg.model.encoder.num_joints = 7  # the data's 25 in the run's copy
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        seed()
        expected = draws()
        seed()
        fit(cfg, tmp_path / "run")
        assert torch.get_num_threads() == 3
        assert draws() == expected
        assert cfg.model.encoder.num_joints == 7
        assert read_yaml(tmp_path / "run" / "config.yaml")["model"]["encoder"]["num_joints"] == 25
        seed()
        with pytest.raises(DataError, match="--resume: no such run folder"):  # after the run set its thread count
            fit(cfg, tmp_path / "new", resume=True)
        assert torch.get_num_threads() == 3 and draws() == expected
    finally:
        torch.set_num_threads(threads)


def test_loss_figure_leaves_the_matplotlib_backend_alone(tmp_path):
    """``matplotlib.use("Agg")`` stopped a notebook's inline plots after a pretraining run."""
    from pcm3.pretrain import plot_losses

    with pdf_backend() as unchanged:
        plot_losses([{"epoch": 1, "loss": 2.0, "con_x": 1.0, "emb_std": 0.5},
                     {"epoch": 2, "loss": 1.5, "con_x": 0.8, "emb_std": 0.4}], tmp_path / "loss.png")
        unchanged()
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
