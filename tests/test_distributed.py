"""torchrun support: 2 CPU processes with gloo (127.0.0.1, a free port).

1. DDP on the PCM3 module for a few steps, deterministic configuration (no task prompts,
   whose offsets are random per sample; synchronised BatchNorm everywhere; equal mask counts
   per sample): both ranks' queues hold both ranks' keys and indices, identical on both
   ranks; parameters identical across ranks; 2 processes x batch B give the loss curve,
   parameters and queue of 1 process x batch 2B.
2. ``python -m torch.distributed.run --nproc_per_node=2 -m pcm3 pretrain`` on a small built-in
   data set, then ``--resume`` of the same run in one process.
3. ``train_one_epoch`` on 2 ranks (the views replaced by the deterministic global batches of 1.):
   the per-epoch loss terms it returns (what rank 0 logs) are averaged over the ranks and equal
   those of 1 process x 2B; a NaN loss on rank 1 alone stops both ranks at the same step with
   the same error, in well under the process group's (short) timeout.
"""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pcm3.cli import main
from pcm3.distributed import RankSampler, free_port, prepare_model, wrap

from .ranks import run_two_ranks
from pcm3.models import PCM3, EncoderConfig, LossConfig, ModelConfig

B, C, T, V, M, STEPS = 4, 3, 6, 5, 2, 3
QUEUE = 32  # > STEPS * 2B: nothing is overwritten



def _leave_together() -> None:
    """End a test rank's gloo group: first a barrier (the peer is done with its collectives), then
    the DDP wrappers collected, then the group destroyed. Torn down while the peer still used it,
    or with a DDP reducer alive, gloo aborted the process now and then ("terminate called
    without an active exception")."""
    import gc

    if not dist.is_initialized():
        return
    try:
        dist.barrier()
    except RuntimeError:  # the peer is gone already: nothing to wait for
        pass
    gc.collect()
    dist.destroy_process_group()

def build(key_bn="sync"):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=EncoderConfig(num_joints=V, hidden=8, layers=2), proj_dim=8, queue_size=QUEUE,
                      decoder_hidden=8, key_bn=key_bn, sync_bn=True)
    return PCM3(cfg, LossConfig(task_prompts=False))


def global_inputs(step):
    """A global batch of 2B samples; the mixing partner stays within each half (each rank's batch)."""
    g = torch.Generator().manual_seed(100 + step)
    n = 2 * B
    views = {k: torch.randn(n, C, T, V, M, generator=g) for k in ("view1", "view2", "view3", "mixed")}
    scores = torch.rand(n, T * V * M, generator=g)
    mask = scores < scores.median(dim=1, keepdim=True).values  # the same count masked in every sample
    local = torch.roll(torch.arange(B), 1)
    return {**views, "mask": mask.view(n, T, V, M), "lam": torch.rand(n, generator=g),
            "partner": torch.cat([local, local + B]), "index": torch.arange(n) + step * n}


def local_inputs(inputs, rank):
    part = {k: v[rank * B:(rank + 1) * B] for k, v in inputs.items() if k != "partner"}
    part["partner"] = inputs["partner"][:B]
    return part


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for key_bn in ("sync", "shuffle"):
            model = build(key_bn)
            prepare_model(model, key_bn, sync_bn=True)
            ddp = wrap(model, torch.device("cpu"))
            opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
            losses = []
            for step in range(STEPS):
                res = ddp(local_inputs(global_inputs(step), rank))
                opt.zero_grad()
                res["loss"].backward()
                opt.step()
                loss = res["loss"].detach().clone()
                dist.all_reduce(loss)
                losses.append(float(loss) / 2)
            torch.save({"losses": losses, "state": model.state_dict()}, Path(out) / f"{key_bn}{rank}.pt")
    finally:
        _leave_together()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    return out


def single_process():
    torch.set_num_threads(1)
    model = build()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for step in range(STEPS):
        out = model(global_inputs(step))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses, model.state_dict()


def test_two_ranks_equal_one_process_of_the_global_batch(two_ranks):
    r0, r1 = (torch.load(two_ranks / f"sync{r}.pt") for r in (0, 1))
    s0, s1 = r0["state"], r1["state"]
    # parameters (and the queue) identical across ranks
    for k in s0:
        torch.testing.assert_close(s0[k], s1[k], rtol=0, atol=1e-6, msg=k)
    # both ranks' keys and sample indices, in rank order, on both ranks
    n = STEPS * 2 * B
    assert s0["queue_index"][:n].tolist() == list(range(n))
    assert (s0["queue_index"][n:] == -1).all() and int(s0["queue_ptr"]) == n
    # 1 process x 2B: the same loss curve, parameters, queue
    losses, ref = single_process()
    assert r0["losses"] == pytest.approx(losses, rel=1e-4)
    for k, v in ref.items():
        torch.testing.assert_close(s0[k].float(), v.float(), rtol=1e-3, atol=1e-4, msg=k)
    assert losses[0] != losses[-1]  # training moved


def test_shuffle_bn_keeps_the_queue_identical(two_ranks):
    s0, s1 = (torch.load(two_ranks / f"shuffle{r}.pt")["state"] for r in (0, 1))
    torch.testing.assert_close(s0["queue"], s1["queue"], rtol=0, atol=0)
    assert s0["queue_index"][:STEPS * 2 * B].tolist() == list(range(STEPS * 2 * B))
    torch.testing.assert_close(s0["encoder_q.gru.weight_hh_l1"], s1["encoder_q.gru.weight_hh_l1"], rtol=0, atol=1e-6)


def test_rank_sampler_splits_each_global_batch():
    class Perm:
        def __init__(self):
            self.order = list(range(23))[::-1]

        def __iter__(self):
            return iter(self.order)

        def __len__(self):
            return 23

        def set_epoch(self, e):
            pass

    parts = [list(RankSampler(Perm(), r, 2, 4)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(RankSampler(Perm(), 0, 2, 4)) == 8  # 2 steps of 4
    order = Perm().order
    for s in range(2):  # global batch s of one process = rank 0's then rank 1's batch s
        assert parts[0][4 * s:4 * s + 4] + parts[1][4 * s:4 * s + 4] == order[8 * s:8 * s + 8]


def test_torchrun_pretrain_resume_exactly_then_in_one_process(synthetic_small, tmp_path):
    run = tmp_path / "run"
    common = ["--data", str(synthetic_small), "--out", str(run), "--quiet",
              "--set", "model.encoder.hidden=8", "--set", "model.encoder.layers=1", "--set", "model.queue_size=32",
              "--set", "model.decoder_hidden=8", "--set", "model.prompt_dim=4", "--set", "views.out_len=8",
              "--set", "views.min_len=8", "--set", "train.batch_size=8", "--set", "data.num_workers=0",
              "--set", "train.max_steps_per_epoch=2", "--set", "train.threads=1", "--set", "train.save_every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "pcm3", "pretrain", *common, "--set", "train.epochs=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=False)
    assert ckpt["epoch"] == 1
    # 2 steps x 8 global samples: both ranks' keys are in the saved queue
    idx = ckpt["model"]["queue_index"]
    assert int((idx >= 0).sum()) == 16 and len(set(idx[idx >= 0].tolist())) == 16
    assert (run / "log.txt").read_text().count("epoch 1/1 lr=") == 1  # rank 0 alone writes
    # resumed on 2 processes it equals an uninterrupted 2-epoch run, key shuffles included
    # (MoCo's shuffle BN draws from a generator the checkpoint keeps)
    done = subprocess.run(cmd[:-1] + ["train.epochs=2", "--resume"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    whole = tmp_path / "whole"
    straight = [a if a != str(run) else str(whole) for a in cmd[:-1]] + ["train.epochs=2"]
    done = subprocess.run(straight, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = torch.load(run / "checkpoint_last.pt", weights_only=False)
    uninterrupted = torch.load(whole / "checkpoint_last.pt", weights_only=False)
    assert resumed["epoch"] == uninterrupted["epoch"] == 2
    for k, v in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][k], v), k
    # resume with another number of processes (one, in this process)
    assert main(["pretrain", *common, "--set", "train.epochs=3", "--resume"]) == 0
    assert torch.load(run / "checkpoint_last.pt", weights_only=False)["epoch"] == 3


# --------------------------------------------------------------------------- train_one_epoch on 2 ranks

def _epoch_setup(monkeypatch_inputs):
    """A config for ``train_one_epoch`` and the deterministic inputs in place of the views."""
    import pcm3.pretrain as pretrain
    from pcm3.config import Config

    cfg = Config()
    cfg.train.epochs, cfg.train.seed = 1, 0

    def inputs(x, lengths, cfg, layout, generator, index):  # the batch's step and half from its indices
        step, first = int(index[0]) // (2 * B), int(index[0]) % (2 * B)
        g = global_inputs(step)
        return g if len(index) == 2 * B else local_inputs(g, first // B)

    monkeypatch_inputs(pretrain, "make_batch_inputs", inputs)
    return cfg


def _loader(rank=None):
    """STEPS batches ``(x, lengths, labels, index)``: the global ones, or rank ``rank``'s halves."""
    out = []
    for step in range(STEPS):
        index = torch.arange(2 * B) + step * 2 * B
        if rank is not None:
            index = index[rank * B:(rank + 1) * B]
        out.append((torch.zeros(len(index), 1), torch.ones(len(index)), torch.zeros(len(index)), index))
    return out


class _NanOnRank:
    """The DDP model, whose loss becomes NaN on rank ``rank`` at call ``at``."""

    def __init__(self, inner, rank, at):
        self.inner, self.rank, self.at, self.calls = inner, rank, at, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, inputs):
        out = self.inner(inputs)
        self.calls += 1
        if dist.get_rank() == self.rank and self.calls == self.at:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out


def _epoch_worker(rank, port, out):
    from pcm3.pretrain import TrainingDiverged, train_one_epoch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=20))
    result = {}
    try:
        cfg = _epoch_setup(lambda mod, name, f: setattr(mod, name, f))
        model = build()
        prepare_model(model, "sync", sync_bn=True)
        ddp = wrap(model, torch.device("cpu"))
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        result["metrics"] = train_one_epoch(ddp, _loader(rank), opt, cfg, None, torch.device("cpu"), 0,
                                            progress=False).metrics
        model = build()
        prepare_model(model, "sync", sync_bn=True)
        ddp = _NanOnRank(wrap(model, torch.device("cpu")), rank=1, at=2)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        start = time.perf_counter()
        try:
            train_one_epoch(ddp, _loader(rank), opt, cfg, None, torch.device("cpu"), 0, progress=False)
            result["nan"] = ("no error", 0.0)
        except TrainingDiverged as e:
            result["nan"] = (f"TrainingDiverged: {e}", time.perf_counter() - start)
        except Exception as e:  # a timeout in a collective: the other rank was left waiting
            result["nan"] = (f"{type(e).__name__}: {e}", time.perf_counter() - start)
        torch.save(result, Path(out) / f"epoch{rank}.pt")
    finally:
        _leave_together()


def test_train_one_epoch_on_two_ranks(tmp_path, monkeypatch):
    from pcm3.pretrain import train_one_epoch

    run_two_ranks(_epoch_worker, (free_port(), str(tmp_path)), 90)
    r0, r1 = (torch.load(tmp_path / f"epoch{r}.pt") for r in (0, 1))
    # (a) NaN on rank 1 alone: both ranks stop at step 2 with the same one-line error, at once
    assert r0["nan"][0] == r1["nan"][0], (r0["nan"], r1["nan"])
    message = r0["nan"][0]
    assert message.startswith("TrainingDiverged: epoch 1, step 2: the loss is not finite on rank 1 of 2 (")
    assert "loss=nan" in message  # rank 1's terms, on both ranks
    assert "\n" not in message and "last good checkpoint is kept" in message
    assert max(r0["nan"][1], r1["nan"][1]) < 10  # the process group's timeout is 20 s
    # (b) the figures rank 0 logs are the global batch's: equal on the ranks, equal to 1 process x 2B
    assert r0["metrics"] == r1["metrics"]
    torch.set_num_threads(1)
    cfg = _epoch_setup(monkeypatch.setattr)
    model = build()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    one = train_one_epoch(model, _loader(), opt, cfg, None, torch.device("cpu"), 0, progress=False).metrics
    terms = [k for k in one if k not in ("emb_std", "inst_top1")]  # per-batch statistics: per rank's B
    assert "loss" in terms and "pos_cos" in terms and len(terms) > 3
    for k in terms:
        assert r0["metrics"][k] == pytest.approx(one[k], rel=1e-4, abs=1e-6), k


# --------------------------------------------------------------------------- errors before training, 2 ranks

def _setup_error_worker(rank, port, data, root):
    import contextlib
    import io

    import pcm3.pretrain as pretrain
    from pcm3.errors import DataError

    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    if rank == 0:  # rank 0 alone writes the run folder; its write fails

        def unwritable(cfg, path):
            raise DataError(path, "cannot write (test)")

        pretrain.save_config = unwritable
    root, codes = Path(root), {}
    common = ["pretrain", "--data", data, "--quiet", "--set", "model.encoder.hidden=8", "--set", "model.queue_size=32",
              "--set", "model.decoder_hidden=8", "--set", "model.prompt_dim=4", "--set", "train.epochs=1",
              "--set", "train.threads=1", "--set", "data.num_workers=0", "--set", "train.max_steps_per_epoch=1"]
    for name, extra in (("odd", ["--set", "train.batch_size=15"]), ("unwritable", ["--set", "train.batch_size=8"])):
        err = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main([*common, "--out", str(root / name), *extra])
            except Exception as e:  # noqa: BLE001 -- a rank left waiting in a collective
                code = f"{type(e).__name__}: {str(e)[:200]}"
        codes[name] = (code, err.getvalue(), time.perf_counter() - start)
    (root / f"setup{rank}.json").write_text(__import__("json").dumps(codes))
    import torch.distributed as dist

    _leave_together()


def test_setup_errors_stop_every_rank_before_writing(synthetic_small, tmp_path):
    import json

    run_two_ranks(_setup_error_worker, (free_port(), str(synthetic_small), str(tmp_path)), 90)
    codes = [json.loads((tmp_path / f"setup{r}.json").read_text()) for r in (0, 1)]
    for name, words in (("odd", "train.batch_size 15 does not split over 2 processes"),
                        ("unwritable", "cannot write (test)")):
        (c0, e0, t0), (c1, e1, t1) = codes[0][name], codes[1][name]
        assert c0 == c1 == 2 and e1 == "" and e0.count("\n") == 1 and words in e0, (name, codes[0][name], codes[1][name])
        assert max(t0, t1) < 30
    assert not (tmp_path / "odd").exists()  # a config error: no run folder
