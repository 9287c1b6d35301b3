"""PCM3 pretraining loop: ``fit`` (setup, epochs, checkpoints, resume) and ``train_one_epoch``.

A run folder holds:
    config.yaml               the resolved config
    log.txt                   one line per epoch (and the run's start/resume/stop)
    metrics.csv               per epoch: every loss term, learning rate, samples/s, seconds
    tb/                       TensorBoard events of the same scalars
    loss.png                  the loss curves
    checkpoint_last.pt        rewritten atomically after every epoch
    checkpoint_epochNNN.pt    every ``train.save_every`` epochs

Randomness is drawn from generators seeded by ``(seed, epoch)``: the data order, the views,
the mixing, the masks and the task-prompt offsets of epoch ``e`` do not depend on whether
the run was interrupted, so ``--resume`` continues exactly (the model, optimizer, queue and
pointer are in the checkpoint; the global RNG states are saved and restored too).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import sys
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Sampler

from pcm3 import distributed
from pcm3.augment import make_views, random_mix
from pcm3.checks import (check_clips, check_finite, check_samples, checkpoint_write_error, ensure_checkpoint_space,
                         size_warning)
from pcm3.config import Config, from_dict, resolve_threads, save_config, to_dict
from pcm3.data.dataset import SkeletonDataset
from pcm3.data.prepared import Prepared
from pcm3.errors import ConfigError, DataError, Pcm3Error, rank_specific_from_here
from pcm3.io import PRETRAIN_FORMAT, atomic_path
from pcm3.masking import make_mask
from pcm3.outputs import RunLock, create_run_dir, open_run_dir, remove_run_temporaries
from pcm3.rng import rng_state, set_rng_state
from pcm3.models import PCM3
from pcm3.monitor import STAT_NAMES, CollapseMonitor, DivergenceGuard, embedding_stats
from pcm3.skeleton import get_layout, to_stream

CHECKPOINT_FORMAT = PRETRAIN_FORMAT


class TrainingDiverged(Pcm3Error):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"train.device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available")
    return dev


def cpu_bf16_supported() -> bool:
    """Whether torch has oneDNN bfloat16 kernels for this CPU (x86 with AVX-512, native with
    AVX512-BF16 / AMX; Arm with BF16), which bfloat16 matrix products on the CPU use."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the check: float32
        return False


def amp_mode(requested: bool, device: torch.device) -> Tuple[bool, Optional[str]]:
    """Whether ``train.amp`` (bfloat16 autocast) runs on ``device``, and a one-line warning when
    it was asked for but cannot (the run then trains in float32).

    CUDA: as asked. CPU: where :func:`cpu_bf16_supported`. Other devices: float32.
    """
    if not requested or device.type == "cuda":
        return bool(requested), None
    if device.type == "cpu" and cpu_bf16_supported():
        return True, None
    where = "this CPU has no bfloat16 support in torch (oneDNN)" if device.type == "cpu" else \
        f"bfloat16 autocast is not used on {device.type}"
    return False, f"warning: train.amp: {where}; training in float32"


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed for each (run seed, epoch, purpose)."""
    return (seed * 1_000_003 + epoch * 9_176 + stream * 131) % (2**63 - 1)


class EpochSampler(Sampler):
    """A random permutation per epoch, drawn from ``epoch_seed(seed, epoch)``.

    With ``num_replicas > 1`` each rank takes every ``num_replicas``-th index (the
    permutation is the same on every rank), as ``DistributedSampler`` does.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, num_replicas: int = 1):
        self.n, self.seed, self.rank, self.num_replicas = n, seed, rank, num_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, 1))
        perm = torch.randperm(self.n, generator=g).tolist()
        return iter(perm[self.rank::self.num_replicas])

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))


def lr_at(cfg: Config, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): step decay at milestones, or cosine; linear warmup."""
    o = cfg.optim
    if o.warmup_epochs and epoch < o.warmup_epochs:
        return o.lr * (epoch + 1) / o.warmup_epochs
    if o.schedule == "step":
        return o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        span = max(1, cfg.train.epochs - o.warmup_epochs)
        return o.lr * 0.5 * (1 + math.cos(math.pi * (epoch - o.warmup_epochs) / span))
    raise ConfigError(f"optim.schedule: unknown schedule {o.schedule!r} (step or cosine)")


def data_shape_into_config(cfg: Config, prepared: Prepared) -> None:
    """Set the encoder's input size (coordinates, joints, persons) from the data: ``meta.json``'s
    shape, ``(N, C, T, V, M)`` for clips, ``(N, C, V, M)`` for untrimmed videos."""
    enc = cfg.model.encoder
    enc.in_channels, enc.num_joints, enc.num_persons = prepared.input_size


def build_model(cfg: Config) -> PCM3:
    """The PCM3 module of ``cfg`` (initialised from ``train.seed``).

    Sizes too large to allocate (``model.queue_size: 1e12``...) are a :class:`ConfigError`, as
    is any value :meth:`Config.validate` refuses."""
    cfg.validate()
    torch.manual_seed(cfg.train.seed)
    try:
        return PCM3(cfg.model, cfg.loss)
    except MemoryError:
        problem = "not enough memory"
    except (RuntimeError, TypeError, ValueError, OverflowError) as e:
        text = str(e).lower()
        if "overflow" in text:
            problem = "a size too large for torch"
        elif "can't allocate" in text or "out of memory" in text:
            problem = "not enough memory"
        else:
            raise
    raise ConfigError(f"model: cannot build the model as configured ({problem}; check model.queue_size, "
                      f"model.encoder.hidden and the other sizes)") from None


def make_batch_inputs(x: torch.Tensor, lengths: torch.Tensor, cfg: Config, layout, generator: torch.Generator,
                      index: Optional[torch.Tensor] = None) -> dict:
    """From raw joints ``(N, C, T, V, M)`` to the model's inputs: views, stream, mix, mask.

    ``index`` ``(N,)``: the samples' indices in the prepared folder (queue bookkeeping)."""
    v1, v2, v3 = make_views(x, lengths, cfg.views, generator=generator, layout=layout)
    stream = cfg.data.stream
    v1, v2, v3 = (to_stream(v, stream, layout) for v in (v1, v2, v3))
    vc = cfg.views
    mixed, lam, partner, _ = random_mix(v1, layout, vc.mix_probs, vc.mix_parts, vc.mix_window, vc.mix_step,
                                        vc.mix_per_sample, generator=generator)
    n, _, t, _, m = v3.shape
    mask = make_mask(cfg.mask, n, t, layout, m, generator=generator, device=x.device)
    return {"view1": v1, "view2": v2, "view3": v3, "mask": mask, "mixed": mixed, "lam": lam,
            "partner": partner, "generator": generator, "index": index}


@dataclass
class EpochResult:
    metrics: Dict[str, float]
    samples: int
    seconds: float


def build_optimizer(params, o) -> torch.optim.Optimizer:
    """SGD (the paper) or AdamW, from ``optim`` (:class:`pcm3.config.OptimConfig`)."""
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def train_one_epoch(model: PCM3, loader: DataLoader, optimizer: torch.optim.Optimizer, cfg: Config,
                    layout, device: torch.device, epoch: int, progress: bool = True) -> EpochResult:
    """One pass over ``loader``; returns the mean of every loss term, of the embedding
    statistics of :func:`pcm3.monitor.embedding_stats`, and the throughput.

    The key encoder's momentum follows ``model.momentum_schedule`` over the run's
    ``epochs x steps per epoch`` optimisation steps."""
    from pcm3.progress import progress_bar

    model.train()
    gen = torch.Generator().manual_seed(epoch_seed(cfg.train.seed, epoch, 2 + 1000 * distributed.info().rank))
    world = distributed.info().world_size
    sums: Dict[str, torch.Tensor] = {}
    steps = samples = 0
    limit = cfg.train.max_steps_per_epoch or len(loader)
    steps_per_epoch = min(limit, len(loader))
    total_steps = steps_per_epoch * cfg.train.epochs
    start = time.perf_counter()
    use_amp, _ = amp_mode(cfg.train.amp, device)
    clipped = [p for g in optimizer.param_groups for p in g["params"]] if cfg.optim.clip_grad_norm else None
    bar = progress_bar(total=min(limit, len(loader)), desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                       unit="step", disable=not progress)
    for x, lengths, _, index in loader:
        if steps >= limit:
            break
        x = x.to(device, non_blocking=True)
        lengths = lengths.to(device, non_blocking=True)
        inputs = make_batch_inputs(x, lengths, cfg, layout, gen, index.to(device, non_blocking=True))
        model.set_momentum(cfg.model.momentum_at(epoch * steps_per_epoch + steps, total_steps))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(inputs)
        loss = out["loss"]
        if world > 1:  # every rank learns of a non-finite loss on any rank and stops at this step
            _stop_if_nonfinite_on_any_rank(loss, out, epoch, steps, world)
        elif not torch.isfinite(loss):
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.items() if _is_term(k, v))
            raise TrainingDiverged(f"epoch {epoch + 1}, step {steps + 1}: the loss is not finite ({terms}); "
                                   "the last good checkpoint is kept (lower optim.lr?)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clipped:  # not in the paper: bounds the masked branch's rare blow-ups
            torch.nn.utils.clip_grad_norm_(clipped, cfg.optim.clip_grad_norm)
        optimizer.step()
        terms = {k: v for k, v in out.items() if _is_term(k, v)}
        if "z_query" in out:
            terms.update(embedding_stats(out["z_query"], out["z_key"], getattr(model, "queue", None)))
        for k, v in terms.items():  # summed on the device: no host sync per term and step
            sums[k] = sums.get(k, 0.0) + v.detach().float()
        steps += 1
        samples += x.shape[0]
        if progress and (steps % 5 == 0 or steps == 1):
            elapsed = time.perf_counter() - start
            bar.set_postfix({**{k: f"{float(s) / steps:.3f}" for k, s in sums.items()
                                if k == "loss" or not (k.startswith("kl") or k in STAT_NAMES)},
                             "samples/s": f"{samples / max(elapsed, 1e-9):.0f}"}, refresh=False)
        bar.update(1)
    bar.close()
    if steps == 0:
        raise ConfigError(f"no training step: {len(loader.dataset)} samples is fewer than one batch of "
                          f"{cfg.train.batch_size} (lower train.batch_size)")
    seconds = time.perf_counter() - start
    means = {k: float(s) / steps for k, s in sums.items()}
    if world > 1:  # the logged figures are those of all ranks' samples (the global batch)
        means = distributed.mean_over_ranks(means, samples)
    return EpochResult(means, samples, seconds)


def _stop_if_nonfinite_on_any_rank(loss: torch.Tensor, out: dict, epoch: int, steps: int, world: int) -> None:
    """Under ``torchrun``: raise the same :class:`TrainingDiverged` on every rank when the loss
    of any rank is not finite (one small all-reduce per step, before the backward pass)."""
    bad = distributed.nonfinite_ranks(loss)
    if not bad:
        return
    names = [k for k, v in out.items() if _is_term(k, v)]
    values = distributed.rank_values([float(out[k].detach()) for k in names])[bad[0]]
    terms = ", ".join(f"{k}={v:.4g}" for k, v in zip(names, values))
    where = f"rank {bad[0]}" if len(bad) == 1 else f"ranks {', '.join(map(str, bad))}"
    raise TrainingDiverged(f"epoch {epoch + 1}, step {steps + 1}: the loss is not finite on {where} of {world} "
                           f"({terms}); the last good checkpoint is kept (lower optim.lr?)")


def _queue_warning(cfg: Config, samples: int) -> Optional[str]:
    """A warning when the queue holds more keys than the data set has samples (or None).

    Every sample then has several older keys in the queue at once; with
    ``model.exclude_own`` they are left out of its negatives, but the queue is mostly stale
    copies: size a small data set's queue below its number of training samples.
    """
    if not cfg.loss.contrast or cfg.model.queue_size <= samples:
        return None
    own = "excluded from its negatives" if cfg.model.exclude_own else "counted as negatives (model.exclude_own is off)"
    return (f"warning: model.queue_size {cfg.model.queue_size} exceeds the {samples} training samples: each sample has "
            f"several keys in the queue ({own}); a queue below the data set's size is advised for small data sets")


def _loss_terms(row: dict) -> Dict[str, float]:
    """The loss terms of a history row or epoch result (no bookkeeping, no embedding stats)."""
    skip = {"epoch", "lr", "samples_per_s", "seconds", "momentum", *STAT_NAMES}
    return {k: float(v) for k, v in row.items() if k not in skip}


def _is_term(key: str, value) -> bool:
    return torch.is_tensor(value) and value.dim() == 0 and key != "generator"


# --------------------------------------------------------------------------- run folder

def save_checkpoint(path: Path, model: PCM3, optimizer, cfg: Config, epoch: int, history: List[dict], data_info: dict) -> None:
    """Write a resumable checkpoint atomically (``epoch`` = epochs completed); rank 0 only."""
    if not distributed.is_main():
        return
    state = {"format": CHECKPOINT_FORMAT, "version": 1, "epoch": epoch, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(), "config": to_dict(cfg), "history": history,
             "rng": rng_state(), "data": data_info,
             "comm": model.comm.state_dict() if model.comm is not None else None}
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as e:
        err = checkpoint_write_error(path, e)
        if err is None:
            raise
        raise err from None


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, with a one-line error otherwise."""
    from pcm3.errors import DataError

    if not Path(path).exists():
        raise DataError(path, "no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # corrupt or foreign file
        raise DataError(path, f"not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(path, "not a pcm3 pretraining checkpoint")
    return state


PLOT_EVERY_S = 30.0  # loss.png is redrawn at most this often (and after the first and the last epoch)


def write_metrics(run: Path, history: List[dict], plot: bool = True) -> None:
    """``metrics.csv`` and (with ``plot``) ``loss.png`` from the per-epoch history (rank 0 only).

    Drawing the figure takes about 0.4 s, 8% of an epoch of the demo: the training loop redraws
    it every :data:`PLOT_EVERY_S` seconds, not every epoch; ``metrics.csv`` is always current."""
    if not history or not distributed.is_main():
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(run / "metrics.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(history)
    if plot:
        plot_losses(history, run / "loss.png")


def plot_losses(history: List[dict], path: Path) -> None:
    """Loss curves (the total and each term, log scale) and, when present, the embedding
    health statistics of :mod:`pcm3.monitor` in a second panel, per epoch. Drawn on a figure of
    its own (:func:`pcm3.visualize.new_figure`): matplotlib's backend and pyplot are left alone."""
    from pcm3.visualize import new_figure

    epochs = [r["epoch"] for r in history]
    terms = list(_loss_terms(history[-1]))
    stats = [k for k in STAT_NAMES if k in history[-1]]
    fig = new_figure(figsize=(12 if stats else 7, 4))
    axes = fig.subplots(1, 2 if stats else 1, squeeze=False)
    ax = axes[0, 0]
    for k in terms:
        vals = [r.get(k, float("nan")) for r in history]
        ax.plot(epochs, vals, label=k, lw=2 if k == "loss" else 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if all(v > 0 for r in history for k, v in r.items() if k in terms):
        ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    if stats:
        ax = axes[0, 1]
        for k in stats:
            ax.plot(epochs, [r.get(k, float("nan")) for r in history], label=k)
        ax.set_xlabel("epoch")
        ax.set_title("embedding health (collapse: emb_std -> 0, pos/queue cos -> 1)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _record_quietly(run: Path, history: List[dict], csv: bool) -> None:
    """``loss.png`` (and with ``csv`` ``metrics.csv``) of ``history`` while another error or an
    interrupt is on its way out. A failure to write must not hide it, nor must a second signal
    (torchrun sends SIGTERM to the survivors of a lost process while they clean up): the figure
    is a convenience, and checkpoint_last.pt holds the history."""
    try:
        write_metrics(run, history, plot=True) if csv else plot_losses(history, run / "loss.png")
    except (Exception, KeyboardInterrupt):  # noqa: BLE001
        pass


def _stopped_line(what: str, checkpointed: int, epochs: int) -> str:
    """The log line of a run that stopped early: ``what``, then what ``--resume`` will find."""
    if not checkpointed:
        return f"{what}; no epoch finished, so there is no checkpoint"
    if checkpointed >= epochs:
        return f"{what}; checkpoint_last.pt holds epoch {checkpointed}, the last: the run is complete"
    return f"{what}; checkpoint_last.pt holds epoch {checkpointed}: --resume continues"


def _log(run: Path, line: str, echo: bool) -> None:
    if not distributed.is_main():
        return
    with open(run / "log.txt", "a") as f:
        f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")
    if echo:
        print(line, flush=True)


def fit(cfg: Config, out: str | Path, resume: bool = False, progress: Optional[bool] = None) -> dict:
    """Pretrain PCM3 as configured; write the run folder ``out``; return the last epoch's metrics.

    With ``resume`` the run continues from ``out/checkpoint_last.pt`` (its model, optimizer,
    queue, epoch and RNG states); ``cfg`` may only extend ``train.epochs`` or change
    bookkeeping (progress, save_every, num_workers, device).

    The caller's state is left as it was, on return or on an error: ``cfg`` is not changed (the
    run works on a copy, whose encoder input size ``model.encoder.in_channels``/``num_joints``/
    ``num_persons`` is taken from the data: the run's resolved config is ``out/config.yaml``),
    and torch's thread count (set from ``train.threads`` for the run) and the global random
    states (Python, NumPy, torch CPU and CUDA; seeded from ``train.seed`` for the run) are put
    back.
    """
    with contextlib.ExitStack() as restore:
        restore.callback(torch.set_num_threads, torch.get_num_threads())
        return _fit(copy.deepcopy(cfg), out, resume, progress, restore)


def _fit(cfg: Config, out: str | Path, resume: bool, progress: Optional[bool], restore: contextlib.ExitStack) -> dict:
    """:func:`fit` on a copy of the caller's ``cfg`` (filled in here from the data); what the
    run changes of the process's state is put back by ``restore``'s callbacks."""
    progress = cfg.train.progress if progress is None else progress
    cfg.validate()
    if not cfg.data.path:
        raise ConfigError("data.path: no data; give --data DIR (a folder made by `pcm3 prepare`)")
    prepared = Prepared(cfg.data.path)
    check_clips(prepared)
    layout = get_layout(prepared.layout)
    data_shape_into_config(cfg, prepared)
    device = resolve_device(cfg.train.device)
    dist_info, device = distributed.init_from_env(device)  # under torchrun: this rank's device
    # the caller's random states, read once this rank's CUDA device is set (nothing has drawn yet)
    restore.callback(set_rng_state, rng_state())
    progress = progress and dist_info.is_main
    if dist_info.world_size > 1:  # a config error: before anything is written
        distributed.local_batch(cfg.train.batch_size, dist_info.world_size)
    torch.set_num_threads(resolve_threads(cfg.train.threads, cfg.model.encoder.hidden))
    run = open_run_dir(out, resume=resume, protect=[cfg.data.path])

    history: List[dict] = []
    start_epoch = 0
    ckpt = None
    length_note = None
    if resume:
        if not (run / "checkpoint_last.pt").exists():
            raise DataError(run / "checkpoint_last.pt", "--resume: no checkpoint: the run stopped before its first "
                                                        "epoch finished; start it again without --resume")
        ckpt = load_checkpoint(run / "checkpoint_last.pt")
        saved = from_dict(Config, ckpt["config"], str(run / "checkpoint_last.pt"))
        _check_resume_compatible(saved, cfg)
        start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
        if start_epoch > cfg.train.epochs:
            raise ConfigError(f"{run}: --resume: the run has done {start_epoch} epochs, more than train.epochs="
                              f"{cfg.train.epochs}; to train longer give more epochs, e.g. --set train.epochs="
                              f"{start_epoch + 10}")
        if start_epoch == cfg.train.epochs:
            raise ConfigError(f"{run}: --resume: the run is finished ({start_epoch} of {cfg.train.epochs} epochs "
                              f"done); to train longer give more epochs, e.g. --set train.epochs={start_epoch + 10}")
        stretched = [name for name, on in (("learning rate", cfg.optim.schedule == "cosine"),
                                           ("key momentum", cfg.model.momentum_schedule != "constant")) if on]
        if saved.train.epochs != cfg.train.epochs and stretched and dist_info.is_main:
            length_note = (f"note: --resume: the run's length changes from {saved.train.epochs} to "
                           f"{cfg.train.epochs} epochs, and its cosine {' and '.join(stretched)} schedule"
                           f"{'s follow' if len(stretched) > 1 else ' follows'} the new length from epoch "
                           f"{start_epoch + 1}: the result is neither the {saved.train.epochs}- nor the "
                           f"{cfg.train.epochs}-epoch run from scratch")
            print(length_note, file=sys.stderr, flush=True)
    for problem in prepared.split_problems([cfg.data.benchmark] if cfg.data.benchmark else []):
        raise DataError(cfg.data.path, problem)  # a hand-edited splits.json: samples twice in a part...
    dataset = SkeletonDataset(prepared, cfg.data.benchmark, cfg.data.part)
    if ckpt is not None:
        _check_resume_data(ckpt.get("data") or {}, prepared, len(dataset), cfg.data.path)
    check_samples(prepared, dataset.indices)
    check_finite(prepared, dataset.indices)
    if len(dataset) < cfg.train.batch_size:
        raise ConfigError(f"{cfg.data.path}: {len(dataset)} training samples, fewer than one batch of "
                          f"{cfg.train.batch_size} (lower train.batch_size)")
    model = build_model(cfg).to(device)
    queue_warning = _queue_warning(cfg, len(dataset))  # after the build: a queue too large for it is an error
    if queue_warning and distributed.is_main():
        print(queue_warning, file=sys.stderr, flush=True)
    num_params = sum(p.numel() for p in model.parameters())
    warning = size_warning(num_params, device)
    if warning and dist_info.is_main:
        print(warning, file=sys.stderr, flush=True)
    use_amp, amp_warning = amp_mode(cfg.train.amp, device)
    if amp_warning and dist_info.is_main:
        print(amp_warning, file=sys.stderr, flush=True)
    ensure_checkpoint_space(run, 3 * 4 * num_params)  # weights, optimizer momentum, key encoder (float32)
    error, stale = None, []
    if dist_info.is_main:
        try:
            create_run_dir(run)
            restore.callback(RunLock(run).acquire().release)  # one process trains a run at a time
            stale = remove_run_temporaries(run)  # of a process killed while it wrote a file
            save_config(cfg, run / "config.yaml")
        except (Pcm3Error, OSError) as e:
            error = e
    distributed.raise_from_main(error)  # rank 0's failure stops every rank (also the barrier)

    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])

    sampler = EpochSampler(len(dataset), cfg.train.seed)
    batch, train_model = cfg.train.batch_size, model
    if dist_info.world_size > 1:  # train.batch_size is the global batch; see pcm3.distributed
        batch = distributed.local_batch(batch, dist_info.world_size)
        sampler = distributed.RankSampler(sampler, dist_info.rank, dist_info.world_size, batch)
        distributed.prepare_model(model, cfg.model.key_bn, cfg.model.sync_bn, cfg.train.seed)
        comm_warning = _restore_comm(model, ckpt)
        if comm_warning and dist_info.is_main:
            _log(run, comm_warning, False)
            print(comm_warning, file=sys.stderr, flush=True)
        train_model = distributed.wrap(model, device)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True,
                        num_workers=cfg.data.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.data.num_workers > 0)
    data_info = {"path": str(cfg.data.path), "layout": layout.name, "shape": list(prepared.shape),
                 "samples": len(dataset), "dataset": prepared.meta.get("dataset"), "fingerprint": prepared.fingerprint(),
                 "benchmark": cfg.data.benchmark, "part": cfg.data.part}
    writer = _tensorboard(run) if dist_info.is_main else None
    _log(run, f"{'resume at' if resume else 'start:'} epoch {start_epoch + 1}/{cfg.train.epochs}, "
              f"{len(dataset)} samples ({cfg.data.benchmark}/{cfg.data.part}, {cfg.data.stream} stream), "
              f"device {device}{', bfloat16 autocast' if use_amp else ''}, "
              f"{dist_info.world_size} process{'es' if dist_info.world_size > 1 else ''}, "
              f"{num_params:,} parameters", progress)
    if length_note:
        _log(run, length_note, False)
    if stale:
        _log(run, f"removed {len(stale)} temporary file{'s' if len(stale) > 1 else ''} of an interrupted write: "
                  f"{', '.join(stale)}", False)

    last: dict = history[-1] if history else {}
    guard = DivergenceGuard(cfg.train.divergence_factor, _loss_terms(history[0]) if history else None)
    monitor = CollapseMonitor(cfg.model.proj_dim, batch, patience=cfg.train.collapse_patience)
    for row in history:  # a resumed run continues the monitor's count
        monitor.check(row["epoch"], row)
    monitor.warned = False  # this session has said nothing yet: a collapse that lasts warns once here
    last_plot = -math.inf  # the first epoch draws loss.png
    plotted = None  # len(history) when loss.png was last drawn
    checkpointed = len(history)  # the epochs in checkpoint_last.pt
    written = len(history)  # the epochs in metrics.csv and log.txt (checkpointed, or one fewer while written)
    running = start_epoch + 1  # the epoch in progress (until its checkpoint and metrics.csv are written)
    rank_specific_from_here()  # each rank trains on its own share: an error may be one rank's
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            running = epoch + 1
            sampler.set_epoch(epoch)
            lr = lr_at(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            result = train_one_epoch(train_model, loader, optimizer, cfg, layout, device, epoch, progress)
            last = {"epoch": epoch + 1, "lr": lr, "momentum": model.momentum, **result.metrics,
                    "samples_per_s": result.samples * dist_info.world_size / result.seconds, "seconds": result.seconds}
            diverged = guard.check(epoch + 1, _loss_terms(result.metrics))
            if diverged and cfg.train.on_divergence == "stop":
                _log(run, f"stopped: {diverged}; checkpoint_last.pt is the last good epoch", progress)
                raise TrainingDiverged(f"{diverged}; the last good checkpoint is kept")
            history.append(last)
            save_checkpoint(run / "checkpoint_last.pt", model, optimizer, cfg, epoch + 1, history, data_info)
            checkpointed = len(history)
            # the epoch's record, cheapest first, so that an interrupt leaves the least behind:
            # metrics.csv and the log line, then TensorBoard, then the slower files
            write_metrics(run, history, plot=False)
            written = len(history)
            terms = " ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
            first = guard.first  # each guarded term against its first-epoch value
            rel = " ".join(f"{k}={v / first[k]:.2f}x" for k, v in _loss_terms(result.metrics).items()
                           if first.get(k, 0) > 0 and epoch > 0)
            _log(run, f"epoch {epoch + 1}/{cfg.train.epochs} lr={lr:.4g} {terms} "
                      f"({last['samples_per_s']:.0f} samples/s, {result.seconds:.1f}s)"
                      + (f" [vs epoch 1: {rel}]" if rel else ""), progress)
            if writer is not None:
                for k, v in last.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch + 1)
                writer.flush()
            if cfg.train.save_every and (epoch + 1) % cfg.train.save_every == 0:
                save_checkpoint(run / f"checkpoint_epoch{epoch + 1:03d}.pt", model, optimizer, cfg, epoch + 1,
                                history, data_info)
            if epoch + 1 == cfg.train.epochs or time.perf_counter() - last_plot >= PLOT_EVERY_S:
                if dist_info.is_main:
                    plot_losses(history, run / "loss.png")
                last_plot, plotted = time.perf_counter(), len(history)
            for warning in (diverged, monitor.check(epoch + 1, result.metrics)):
                if warning and dist_info.is_main:  # warnings are printed even with --quiet (by rank 0)
                    line = warning if warning.startswith(("warning", "note")) else f"warning: {warning}"
                    _log(run, line, False)
                    print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:  # Ctrl-C, kill, a closed terminal (pcm3.cli): the log says where it stopped
        _log(run, _stopped_line(f"interrupted during epoch {running}", checkpointed, cfg.train.epochs), False)
        raise
    except RuntimeError as e:  # a collective failed: another process of the torchrun job stopped
        if distributed.lost_peer(e):
            _log(run, _stopped_line(f"stopped during epoch {running}: another process of the torchrun job "
                                    "stopped", checkpointed, cfg.train.epochs), False)
        raise
    except TrainingDiverged as e:
        if checkpointed:
            raise
        raise TrainingDiverged(str(e).replace("the last good checkpoint is kept",  # nothing to keep yet
                                              "no epoch finished, so there is no checkpoint")) from None
    finally:  # an interrupted or stopped run: metrics.csv and loss.png show what checkpoint_last.pt holds
        if checkpointed and dist_info.is_main and (written != checkpointed or plotted != checkpointed):
            _record_quietly(run, history[:checkpointed], csv=written != checkpointed)
    if writer is not None:
        writer.close()
    return last


def _restore_comm(model: PCM3, ckpt: Optional[dict]) -> Optional[str]:
    """Continue the key shuffles of a multi-process run where the checkpoint stopped them; a
    warning (or None) when the checkpoint predates the saved shuffle state: the resumed run's
    shuffles then start afresh, so it is not the uninterrupted run."""
    if ckpt is None or model.comm is None:
        return None
    if ckpt.get("comm"):
        model.comm.load_state_dict(ckpt["comm"])
        return None
    if "comm" not in ckpt and model.comm.shuffle_keys and int(ckpt.get("epoch", 0)) > 0:
        return ("warning: --resume: the checkpoint has no key-shuffle state (written by an older pcm3): the key "
                "shuffles (model.key_bn: shuffle) start afresh, so the resumed run differs from an uninterrupted one")
    return None


def _tensorboard(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; stay usable without it
        return None
    return SummaryWriter(str(run / "tb"))


#: Config values that do not change a run's results: where the data sits, where and how fast it
#: runs, what it prints and how often it checkpoints (``pcm3 demo`` compares reruns without them).
BOOKKEEPING = frozenset({("train", "progress"), ("train", "threads"), ("train", "save_every"), ("data", "num_workers"),
                         ("train", "device"), ("data", "path")})
_RESUMABLE = BOOKKEEPING | {("train", "epochs")}  # --resume may also lengthen the run


def _check_resume_data(saved: dict, prepared: Prepared, samples: int, path) -> None:
    """The data of a resumed run must be the interrupted run's (its folder may have moved): the
    same layout, clip shape and number of training samples; other data would continue the
    sampler's order and the queue's sample indices on different samples."""
    if "samples" in saved and int(saved["samples"]) != samples:
        raise ConfigError(f"{path}: --resume: {samples} training samples here, {saved['samples']} in the interrupted "
                          f"run (data {saved.get('path')}): not the same data")
    if "shape" in saved and list(saved["shape"])[1:] != list(prepared.shape)[1:]:
        raise ConfigError(f"{path}: --resume: clips of shape {tuple(prepared.shape[1:])} here, "
                          f"{tuple(saved['shape'][1:])} in the interrupted run: not the same data")
    if saved.get("layout") not in (None, prepared.layout):
        raise ConfigError(f"{path}: --resume: layout {prepared.layout} here, {saved['layout']} in the interrupted "
                          f"run: not the same data")


def _check_resume_compatible(saved: Config, cfg: Config) -> None:
    a, b = to_dict(saved), to_dict(cfg)
    for section, values in a.items():
        for key, value in values.items():
            if (section, key) in _RESUMABLE:
                continue
            if b[section][key] != value:
                raise ConfigError(f"--resume: {section}.{key} differs from the interrupted run "
                                  f"({value!r} there, {b[section][key]!r} now)")
