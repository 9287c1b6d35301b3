"""Linear evaluation (Table 1): a new linear layer on the frozen encoder's feature.

Protocol (defaults of :class:`LinearProtocol`; source: ``../shared/docs/method-and-protocols.md``
section 3, the field's linear protocol as released with CMD/PCM3): the encoder in eval mode, SGD
momentum 0.9, lr 0.1, no weight decay, 100 epochs, lr x0.1 at epochs 20, 50 and 80, batch 1024,
training inputs random crops ``U(0.5, 1)`` of the valid frames (at least 64 frames where the
clip is longer, the field's ``valid_crop_resize``) resized to the clip length, test input the
centre 95% crop. The model of the last epoch is reported; with ``select: val`` the epoch is
chosen on a validation split carved from training subjects (``val_fraction``), never on test.

Because the encoder is frozen, the features of ``crops`` random training crops per sample are
computed once; each epoch then draws, per sample, one of them (with ``crops: 0`` every epoch
encodes fresh random crops: the exact protocol, ``epochs`` encoder passes).

Files written: ``scores.npy`` (test softmax probabilities, with ``scores_index.npy`` and
``scores_labels.npy``), ``val_scores.npy``... when a validation split is carved (for fusion
weights), ``linear_head.pt``, ``test_features.npy`` (float16, for the report's t-SNE),
``history.csv`` (per-epoch loss, lr, training and validation accuracy).

Under ``torchrun --nproc_per_node=G -m pcm3 eval linear ...`` (:mod:`pcm3.distributed`): every
feature pass is shared by the ``G`` processes, each encoding a contiguous run of the batches
(the same crops as one process) and all of them gathered (:func:`encode_shared`);
``batch_size`` is the global batch, each step's batch is split over the processes and the
layer's gradients are averaged by DistributedDataParallel (the loss scaled so that the step is
the one-process step on the whole batch, the last smaller batch included); the per-epoch
figures are summed over the processes. The result is the one-process result up to float
rounding; rank 0 alone writes the files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from pcm3 import distributed
from pcm3.errors import ConfigError
from pcm3.evaluation.common import (EvalContext, InputProtocol, _check_crop_range, carve_validation, check_ranges,
                                    check_recognition_data, check_schedule_and_crops, encode_kwargs, feature_module,
                                    input_spec, open_split, open_splits, save_scores, topk_accuracy)
from pcm3.evaluation.features import encode

DEFAULT_CONFIG = "eval_linear"


@dataclass
class LinearProtocol(InputProtocol):
    """Linear evaluation settings (defaults: the field's protocol, see the module docstring).

    Attributes:
        epochs: training epochs of the linear layer (100).
        batch_size: samples per step (1024).
        lr: SGD learning rate (0.1).
        momentum: SGD momentum (0.9).
        weight_decay: (0).
        milestones: epochs (0-based, each >= 0) at which the lr is multiplied by ``gamma`` ((20, 50, 80)).
        gamma: lr factor at each milestone (0.1).
        crop_range: training crop of the valid frames ``U(crop_range)`` ((0.5, 1)).
        min_len: minimum training crop in frames (>= 1) where the clip is longer; None = the clip
            length (64 frames in the paper, as the field's ``valid_crop_resize``). A value longer
            than a clip is harmless: its crop is clamped to the clip's valid frames.
        crops: random training crops per sample whose features are precomputed (10); 0 =
            encode fresh random crops every epoch (exact, ``epochs`` encoder passes).
        crop_dtype: storage of the precomputed crop features, ``float16`` (default: NTU 120
            xsub, 63k clips x 10 crops x 2048, is 2.6 GB instead of 5.2 GB) or ``float32``.
        val_fraction: share of training subjects carved out as validation (0: none).
        val_by: ``samples.csv`` column that groups samples for carving (``subject``).
        select: ``last`` (the last epoch's model) or ``val`` (the best epoch on validation).
        save_features: write the test features (float16) for the report's t-SNE.
        standardize: train on features standardised with the training mean and std (folded
            into the saved layer afterwards); not the field's protocol (False), but it removes
            the protocol's dependence on the feature scale, which matters on small data sets.
    """

    epochs: int = 100
    batch_size: int = 1024
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: Tuple[int, ...] = (20, 50, 80)
    gamma: float = 0.1
    crop_range: Tuple[float, float] = (0.5, 1.0)
    min_len: Optional[int] = None
    crops: int = 10
    crop_dtype: str = "float16"
    val_fraction: float = 0.0
    val_by: str = "subject"
    select: str = "last"
    save_features: bool = True
    standardize: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_ranges("linear", self, [("epochs", lambda v: v >= 1, ">= 1"), ("batch_size", lambda v: v >= 1, ">= 1"),
                                      ("lr", lambda v: v > 0, "> 0"), ("crops", lambda v: v >= 0, ">= 0")])
        _check_crop_range("crop_range", self.crop_range)
        check_schedule_and_crops(self.milestones, self.min_len)
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.crop_dtype not in ("float16", "float32"):
            raise ConfigError(f"crop_dtype: must be 'float16' or 'float32', got {self.crop_dtype!r}")
        if self.select not in ("last", "val"):
            raise ConfigError(f"select: must be 'last' or 'val', got {self.select!r}")
        if self.select == "val" and self.val_fraction == 0:
            raise ConfigError("select: 'val' needs a validation split (val_fraction > 0)")


PROTOCOL = LinearProtocol


def check_inputs(data, benchmark, protocol: LinearProtocol, kind: str) -> None:
    """Before anything is written: the training and test parts (present, not empty, labels
    0..C-1, lengths, NaN/inf; :func:`pcm3.evaluation.common.check_recognition_data`)."""
    check_recognition_data(data, benchmark, ("train", "test"))


def lr_at_epoch(p: LinearProtocol, epoch: int) -> float:
    """Step schedule: ``lr * gamma ** (number of milestones <= epoch)`` (epochs 0-based)."""
    return p.lr * p.gamma ** sum(epoch >= m for m in p.milestones)


def fit_linear(epoch_features: Callable[[int], torch.Tensor], labels: np.ndarray, num_classes: int,
               p: LinearProtocol, *, device: torch.device, seed: int,
               val: Optional[Tuple[torch.Tensor, np.ndarray]] = None, progress: bool = False
               ) -> Tuple[torch.nn.Linear, list]:
    """Train a linear classifier on frozen features with the protocol's SGD schedule.

    Args:
        epoch_features: ``epoch -> (N, D)`` the training features of that epoch (one random crop
            per sample), float32 on any device.
        labels: ``(N,)`` classes.
        num_classes: outputs of the layer.
        val: optional validation features ``(M, D)`` and labels ``(M,)``; its top-1 is logged per
            epoch and ``select: val`` keeps the best epoch's weights.

    Returns:
        the trained ``Linear(D, num_classes)`` (on ``device``) and the per-epoch history.
    """
    from pcm3.progress import track

    y = torch.as_tensor(labels, dtype=torch.long)
    first = epoch_features(0)
    n, d = first.shape
    if p.standardize:  # statistics of the first epoch's training features; folded into the layer at the end
        mean = first.float().mean(0)
        std = first.float().std(0).clamp_min(1e-6)
        raw_features = epoch_features
        epoch_features = lambda e: (raw_features(e).float() - mean) / std  # noqa: E731
        first = (first.float() - mean) / std
        if val is not None:
            val = ((torch.as_tensor(val[0]) - mean) / std, val[1])
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: CUDA's is left alone
        torch.default_generator.manual_seed(seed)
        head = torch.nn.Linear(d, num_classes)
    # the field's linear layer init: weights N(0, 0.01), bias 0
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.01)
        head.bias.zero_()
    head = head.to(device)
    opt = torch.optim.SGD(head.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    order = torch.Generator().manual_seed(seed + 1)
    world = distributed.info().world_size
    step_head = distributed.wrap(head, device) if world > 1 else head
    history, best, best_acc = [], None, -1.0
    for epoch in track(range(p.epochs), desc="linear", disable=not progress):
        feats = first if epoch == 0 else epoch_features(epoch)
        for group in opt.param_groups:
            group["lr"] = lr_at_epoch(p, epoch)
        perm = torch.randperm(n, generator=order)
        total, correct, count = torch.zeros((), device=device), torch.zeros((), device=device), 0
        for s in range(0, n, p.batch_size):
            b = perm[s:s + p.batch_size]
            if world > 1:  # this rank's part of the global batch; the gradient is the whole batch's mean
                total, correct, count = _rank_step(step_head, opt, feats, y, b, world, device, total, correct, count)
                continue
            xb, yb = feats[b].to(device, non_blocking=True).float(), y[b].to(device)
            logits = head(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(b)
            correct += (logits.detach().argmax(1) == yb).sum()
            count += len(b)
        if world > 1:  # the epoch's figures over every rank's samples
            total, correct, count = distributed.sum_over_ranks([float(total), float(correct), count])
        row = {"epoch": epoch + 1, "lr": lr_at_epoch(p, epoch), "loss": float(total) / count,
               "train_top1": 100.0 * float(correct) / count}
        if val is not None:
            row["val_top1"] = topk_accuracy(predict(head, val[0], device), val[1], (1,))["top1"]
            if p.select == "val" and row["val_top1"] > best_acc:
                best_acc, best = row["val_top1"], {k: v.detach().clone() for k, v in head.state_dict().items()}
                row["selected"] = True
        history.append(row)
        if not np.isfinite(row["loss"]):
            raise FloatingPointError("linear evaluation diverged (non-finite loss); lower lr")
    if best is not None:
        head.load_state_dict(best)
    if p.standardize:  # W (x - m) / s + b  ==  (W / s) x + (b - W (m / s))
        with torch.no_grad():
            w = head.weight / std.to(device)
            head.bias.sub_(head.weight @ (mean / std).to(device))
            head.weight.copy_(w)
    return head, history


def _rank_step(step_head, opt, feats: torch.Tensor, y: torch.Tensor, b: torch.Tensor, world: int,
               device: torch.device, total, correct, count):
    """One SGD step of the DDP-wrapped layer on this rank's part of the global batch ``b``.

    The summed cross-entropy of the part, times ``world / len(b)``: DDP's average over the ranks
    is then the gradient of the mean loss over the whole batch ``b``, however it splits (a rank
    with no sample contributes zero)."""
    mine = distributed.split_batch(b, world, distributed.info().rank)
    xb, yb = feats[mine].to(device, non_blocking=True).float(), y[mine].to(device)
    logits = step_head(xb)
    loss = F.cross_entropy(logits, yb, reduction="sum")
    opt.zero_grad(set_to_none=True)
    (loss * (world / len(b))).backward()
    opt.step()
    return total + loss.detach(), correct + (logits.detach().argmax(1) == yb).sum(), count + len(mine)


@torch.no_grad()
def predict(head: torch.nn.Module, feats, device: torch.device, batch: int = 8192) -> np.ndarray:
    """Logits ``(N, K)`` of features ``(N, D)`` (float32 NumPy)."""
    x = torch.as_tensor(feats, dtype=torch.float32)
    out = [head(x[s:s + batch].to(device)).float().cpu() for s in range(0, x.shape[0], batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, head.out_features), np.float32)


@torch.no_grad()
def encode_shared(module: torch.nn.Module, dataset, *, clip_len: int, stream: str, layout: str,
                  test_crop: float = 0.95, crops: int = 0, crop_range: Tuple[float, float] = (0.5, 1.0),
                  min_len: int = 64, seed: int = 0, batch_size: int = 256, device: str | torch.device = "cpu",
                  num_workers: int = 0, progress: bool = False, desc: str = "features",
                  dtype: torch.dtype = torch.float32) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`pcm3.evaluation.features.encode` of the whole ``dataset``, on every process.

    One process: ``encode`` itself. Under ``torchrun`` (``G`` processes) rank ``r`` encodes its
    contiguous run of ``encode``'s batches (:func:`pcm3.distributed.ranges`), with the crops one
    process draws for those batches (``encode``'s ``first_batch``), and the rows of all ranks
    are gathered in order: every rank returns what one process's ``encode`` returns.

    Returns:
        features ``(N, D)`` (``crops == 0``) or ``(K, N, D)`` of ``dtype``, labels ``(N,)`` and
        prepared-folder indices ``(N,)``, in dataset order.
    """
    from pcm3.data.dataset import SkeletonDataset

    args = dict(clip_len=clip_len, stream=stream, layout=layout, test_crop=test_crop, crops=crops,
                crop_range=crop_range, min_len=min_len, seed=seed, batch_size=batch_size, device=device,
                num_workers=num_workers, progress=progress, desc=desc, dtype=dtype)
    info = distributed.info()
    if info.world_size == 1:
        return encode(module, dataset, **args)
    batches = -(-len(dataset) // batch_size)
    lo, hi = distributed.ranges(batches, info.world_size, info.rank)
    part = SkeletonDataset(dataset.prepared, indices=dataset.indices[lo * batch_size:hi * batch_size])
    if len(part) == 0:  # fewer batches than ranks: one sample tells this rank the feature shape
        probe, _, _ = encode(module, SkeletonDataset(dataset.prepared, indices=dataset.indices[:1]),
                             **{**args, "progress": False})
        feats = torch.from_numpy(probe)[..., :0, :]
        labels = index = torch.zeros(0, dtype=torch.int64)
    else:  # this rank's batches, with the crops one process draws for them
        f, y, idx = encode(module, part, **args, first_batch=lo)
        feats, labels, index = torch.from_numpy(f), torch.from_numpy(y), torch.from_numpy(idx)
    if crops:  # K x N x D: gathered per crop (one crop's rows at a time in flight)
        feats = torch.stack([distributed.all_gather_rows(feats[k]) for k in range(feats.shape[0])])
    else:
        feats = distributed.all_gather_rows(feats)
    return (feats.numpy(), distributed.all_gather_rows(labels).numpy().astype(np.int64),
            distributed.all_gather_rows(index).numpy().astype(np.int64))


def prepare_linear(ctx: EvalContext, p: LinearProtocol) -> Dict[str, object]:
    """Everything the linear classifier needs: splits, the feature module, training-feature supply.

    Returns a dict with ``module``, ``spec``, ``train`` / ``val`` / ``test`` datasets (``val``
    None without carving), ``epoch_features`` (``epoch -> (N, D)``), ``train_labels``,
    ``val_feats``/``val_labels``, ``num_classes``, ``splits`` (sizes).
    """
    train, test = open_splits(ctx)
    val = None
    if p.val_fraction > 0:
        tr_idx, va_idx = carve_validation(train, p.val_fraction, ctx.seed, p.val_by)
        train = open_split(ctx.data, ctx.benchmark, "train", indices=tr_idx)
        val = open_split(ctx.data, ctx.benchmark, "train", indices=va_idx)
    spec = input_spec(ctx)
    module = feature_module(ctx)
    common = encode_kwargs(ctx, spec, p)
    crop = dict(crop_range=p.crop_range, min_len=p.min_len or spec["clip_len"])
    if p.crops > 0:
        pool, train_labels, _ = encode_shared(module, train, crops=p.crops, seed=ctx.seed,
                                              desc=f"train features x{p.crops}",
                                              dtype=torch.float16 if p.crop_dtype == "float16" else torch.float32,
                                              **crop, **common)
        pool_t = torch.from_numpy(pool)  # K x N x D
        picker = torch.Generator().manual_seed(ctx.seed + 7)

        def epoch_features(epoch: int) -> torch.Tensor:
            k = torch.randint(0, pool_t.shape[0], (pool_t.shape[1],), generator=picker)
            return pool_t[k, torch.arange(pool_t.shape[1])]  # N x D: one stored crop per sample
    else:
        train_labels = train.labels.astype(np.int64)

        def epoch_features(epoch: int) -> torch.Tensor:
            f, _, _ = encode_shared(module, train, crops=1, seed=ctx.seed * 1009 + epoch,
                                    desc=f"epoch {epoch + 1} features", **crop, **common)
            return torch.from_numpy(f[0])
    val_feats = val_labels = None
    if val is not None:
        val_feats, val_labels, val_index = encode_shared(module, val, desc="validation features", **common)
    else:
        val_index = None
    num_classes = max(int(train.num_classes), int(train.labels.max()) + 1 if len(train) else 0)
    return {"module": module, "spec": spec, "train": train, "val": val, "test": test, "common": common,
            "epoch_features": epoch_features, "train_labels": train_labels, "val_feats": val_feats,
            "val_labels": val_labels, "val_index": val_index, "num_classes": num_classes,
            "splits": {"train": len(train), **({"val": len(val)} if val is not None else {}), "test": len(test)}}


def run(ctx: EvalContext) -> dict:
    """Linear evaluation of ``ctx.encoder`` (or the raw input): top-1/top-5 in percent."""
    p: LinearProtocol = ctx.protocol
    prep = prepare_linear(ctx, p)
    val = (torch.from_numpy(prep["val_feats"]), prep["val_labels"]) if prep["val"] is not None else None
    head, history = fit_linear(prep["epoch_features"], prep["train_labels"], prep["num_classes"], p,
                               device=ctx.device, seed=ctx.seed, val=val, progress=ctx.progress)
    test_feats, test_labels, test_index = encode_shared(prep["module"], prep["test"], desc="test features",
                                                        **prep["common"])
    logits = predict(head, test_feats, ctx.device)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    figures = topk_accuracy(logits, test_labels, (1, 5))
    figures["train_top1_last_epoch"] = history[-1]["train_top1"]
    out = Path(ctx.out)
    writes = distributed.is_main()  # under torchrun rank 0 alone writes
    if writes:
        save_scores(out, probs, test_index, test_labels)
    if val is not None:
        vlog = predict(head, prep["val_feats"], ctx.device)
        if writes:
            save_scores(out, torch.softmax(torch.from_numpy(vlog), 1).numpy(), prep["val_index"], prep["val_labels"],
                        "val_")
        figures["val_top1"] = topk_accuracy(vlog, prep["val_labels"], (1,))["top1"]
    if writes:
        if p.save_features:
            np.save(out / "test_features.npy", test_feats.astype(np.float16))
        torch.save({"weight": head.weight.detach().cpu(), "bias": head.bias.detach().cpu()}, out / "linear_head.pt")
        write_history(out / "history.csv", history)
    selected = next((r["epoch"] for r in reversed(history) if r.get("selected")), history[-1]["epoch"])
    return {"figures": figures, "splits": prep["splits"], "input": prep["spec"], "selected_epoch": selected,
            "num_classes": prep["num_classes"],
            "notes": [f"model of epoch {selected} of {p.epochs} ({'best on validation' if p.select == 'val' else 'last epoch'}); "
                      f"training crops: {'fresh every epoch' if p.crops == 0 else f'{p.crops} precomputed per sample'}"]}


def write_history(path: Path, history: list) -> None:
    """Per-epoch rows as CSV."""
    import csv

    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
