"""Semi-supervised evaluation (Table 2): fine-tune encoder + linear layer on a labelled fraction.

Protocol (defaults of :class:`SemiProtocol`; schedule as CMD's released semi-supervised script,
as issue 7 records it: 80 epochs, SGD momentum 0.9 lr 0.01, x0.1 at epochs 50 and 70, batch 64):
the encoder (pretrained, random init or supervised; the raw-input row trains the linear layer
alone) and a new linear layer are trained on a subset of the training split, random training
crops ``U(0.5, 1)`` of the valid frames, then tested on the centre crop of the test split.

Subsets are deterministic from ``(seed, fraction)``:

- ``per_class`` (default): ``max(1, round(p * n_c))`` samples of each class ``c``;
- ``uniform`` (as CMD): ``max(1, round(p * N))`` samples of the whole split; a class left
  without samples is an error.

Each fraction runs with ``seeds`` (default 3: mean and std). Files: ``subset_frac<p>_seed<s>.npy``
(prepared-folder indices of the labelled samples), ``frac<p>_seed<s>_scores.npy`` (+ index, labels;
test softmax probabilities) for fusion.

Under ``torchrun --nproc_per_node=G -m pcm3 eval semi ...`` (:mod:`pcm3.distributed`):
``batch_size`` is the global batch. Every process draws the same batches and crops as one
process (it loads and crops the whole batch), encodes and back-propagates its contiguous part
of it; DistributedDataParallel averages the gradients of the loss scaled so that the step is
the one-process step on the whole batch, and the encoder's BatchNorm statistics are those of
the whole batch (synchronised). A batch smaller than ``G`` (an epoch's last, at most) is not
trained on (one process does train on it). The test features are shared out and gathered as in
the linear evaluation; rank 0 alone writes the files. The result is the one-process result up
to float rounding.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pcm3 import distributed
from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.common import (EvalContext, InputProtocol, _check_crop_range, check_ranges, check_recognition_data,
                                    check_schedule_and_crops, feature_module, input_spec, open_split, open_splits,
                                    save_scores, topk_accuracy)
from pcm3.evaluation.features import make_clips
from pcm3.evaluation.linear import encode_shared, lr_at_epoch

DEFAULT_CONFIG = "eval_semi"


@dataclass
class SemiProtocol(InputProtocol):
    """Semi-supervised settings.

    Attributes:
        fractions: labelled fractions of the training split ((0.01, 0.1)); any in (0, 1].
        sampling: ``per_class`` or ``uniform``.
        seeds: number of subset/initialisation seeds per fraction (3), seeds ``seed + i``.
        epochs, lr, momentum, weight_decay, milestones, gamma, batch_size: SGD schedule (milestones:
            epochs, 0-based, each >= 0).
        encoder_lr_factor: the encoder's lr is ``lr * encoder_lr_factor`` (1: as released; 0: the
            encoder frozen, in eval mode: its BatchNorm statistics are kept).
        crop_range, min_len: training crops of the valid frames (``min_len`` in frames, >= 1; None =
            the clip length; longer than a clip is harmless: its crop is clamped to the valid frames).
    """

    fractions: Tuple[float, ...] = (0.01, 0.1)
    sampling: str = "per_class"
    seeds: int = 3
    epochs: int = 80
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    milestones: Tuple[int, ...] = (50, 70)
    gamma: float = 0.1
    batch_size: int = 64
    encoder_lr_factor: float = 1.0
    crop_range: Tuple[float, float] = (0.5, 1.0)
    min_len: Optional[int] = None

    def __post_init__(self):
        super().__post_init__()
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"fractions: each must be in (0, 1], got {list(self.fractions)}")
        if self.sampling not in ("per_class", "uniform"):
            raise ConfigError(f"sampling: must be 'per_class' or 'uniform', got {self.sampling!r}")
        check_ranges("semi", self, [("seeds", lambda v: v >= 1, ">= 1"), ("epochs", lambda v: v >= 1, ">= 1"),
                                    ("batch_size", lambda v: v >= 2, ">= 2"), ("lr", lambda v: v > 0, "> 0"),
                                    ("encoder_lr_factor", lambda v: v >= 0, ">= 0")])
        _check_crop_range("crop_range", self.crop_range)
        check_schedule_and_crops(self.milestones, self.min_len)


PROTOCOL = SemiProtocol


def check_inputs(data, benchmark, protocol: SemiProtocol, kind: str) -> None:
    """Before anything is written: the training and test parts
    (:func:`pcm3.evaluation.common.check_recognition_data`) and a training sample of every class
    (a labelled subset holds each class)."""
    from pcm3.data.prepared import Prepared

    parts = check_recognition_data(data, benchmark, ("train", "test"))
    prepared = Prepared(data)
    check_classes(prepared, prepared.labels[parts["train"]], benchmark)


def check_classes(prepared, labels: np.ndarray, benchmark) -> None:
    """Every class of the folder has a training sample: one-line DataError naming the folder,
    the benchmark and the first class without one."""
    labels = np.asarray(labels)
    num_classes = max(prepared.num_classes, int(labels.max()) + 1 if labels.size else 0)
    missing = np.setdiff1d(np.arange(num_classes), labels)
    if missing.size:
        c = int(missing[0])
        name = prepared.class_names[c] if c < len(prepared.class_names) else str(c)
        raise DataError(prepared.root, f"benchmark {benchmark!r}: {missing.size} of {num_classes} classes have no "
                                       f"training sample (first: {c}, {name!r}); the semi-supervised subsets hold "
                                       "every class")


def fraction_label(p: float) -> str:
    """``0.01 -> "1%"``, ``0.005 -> "0.5%"``."""
    return f"{100 * p:.10g}%"


def sample_subset(labels: np.ndarray, fraction: float, sampling: str, seed: int, num_classes: int) -> np.ndarray:
    """Positions (into ``labels``) of the labelled subset, sorted; deterministic from ``seed``.

    Args:
        labels: ``(N,)`` classes of the training split.
        fraction: in (0, 1].
        sampling: ``per_class`` (``max(1, round(p * n_c))`` of each class) or ``uniform``
            (``max(1, round(p * N))`` of all).
        num_classes: classes that must be present.

    Raises:
        DataError: a class has no training sample, or the uniform subset leaves a class empty.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([int(seed), int(round(fraction * 1e6))])
    missing = [c for c in range(num_classes) if not (labels == c).any()]
    if missing:
        raise DataError("training split", f"class {missing[0]} has no training sample; a subset cannot hold every class")
    if sampling == "per_class":
        picks = []
        for c in range(num_classes):
            pos = np.flatnonzero(labels == c)
            n = max(1, int(round(fraction * len(pos))))
            picks.append(rng.choice(pos, size=min(n, len(pos)), replace=False))
        return np.sort(np.concatenate(picks))
    n = max(1, int(round(fraction * len(labels))))
    pick = np.sort(rng.choice(len(labels), size=min(n, len(labels)), replace=False))
    empty = [c for c in range(num_classes) if not (labels[pick] == c).any()]
    if empty:
        raise ConfigError(f"fractions: {fraction} with uniform sampling (seed {seed}) leaves class {empty[0]} "
                          f"without a labelled sample ({len(pick)} samples for {num_classes} classes); use a larger "
                          "fraction or sampling: per_class")
    return pick


def finetune(module: torch.nn.Module, train_ds, num_classes: int, p: SemiProtocol, spec: dict, *,
             device: torch.device, seed: int, progress: bool = False) -> Tuple[torch.nn.Module, torch.nn.Linear]:
    """Train a copy of ``module`` and a new linear layer on ``train_ds`` (cross-entropy, SGD steps).

    Returns:
        the fine-tuned module and the linear layer, in eval mode, on ``device``.
    """
    from pcm3.progress import track

    module = copy.deepcopy(module).to(device)
    with torch.no_grad():  # the feature size, from one clip
        x, length, _, _ = train_ds[0]
        clip = make_clips(x[None].to(device), length[None].to(device), clip_len=spec["clip_len"], stream=spec["stream"],
                          layout=spec["layout"], crop=spec["test_crop"])
        d = module.eval()(clip).shape[1]
    head = new_head(d, num_classes, seed).to(device)
    groups = [{"params": list(head.parameters()), "lr": p.lr, "factor": 1.0}]
    enc_params = [q for q in module.parameters() if q.requires_grad]
    if enc_params and p.encoder_lr_factor > 0:
        groups.append({"params": enc_params, "lr": p.lr * p.encoder_lr_factor, "factor": p.encoder_lr_factor})
    opt = torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    order = torch.Generator().manual_seed(seed)
    crops = torch.Generator(device=device).manual_seed(seed + 1)
    if distributed.info().world_size > 1:
        _finetune_ranks(module, head, opt, train_ds, p, spec, order, crops, device, progress)
        return module.eval(), head.eval()
    loader = DataLoader(train_ds, batch_size=p.batch_size, shuffle=True, generator=order, num_workers=p.num_workers)
    module.train(_trains_encoder(opt))  # a frozen encoder (encoder_lr_factor 0) keeps its BatchNorm statistics
    head.train()
    loss = None
    for epoch in track(range(p.epochs), desc="semi", disable=not progress):
        _set_lr(opt, p, epoch)
        for x, lengths, y, _ in loader:
            if len(y) < 2:  # BatchNorm in training mode needs two samples
                continue
            x, lengths, y = x.to(device), lengths.to(device), y.to(device)
            clip = make_clips(x, lengths, clip_len=spec["clip_len"], stream=spec["stream"], layout=spec["layout"],
                              crop_range=p.crop_range, min_len=p.min_len or spec["clip_len"], generator=crops)
            loss = F.cross_entropy(head(module(clip)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if loss is not None and not torch.isfinite(loss.detach()).item():
            raise FloatingPointError("semi-supervised training diverged (non-finite loss); lower lr")
    return module.eval(), head.eval()


def new_head(dim: int, num_classes: int, seed: int) -> torch.nn.Linear:
    """The new linear layer of seed ``seed``, initialised from a random stream of its own.

    Not ``torch.manual_seed(seed)``: the supervised row's encoder was trained with a layer
    initialised that way (seed + 1), and an encoder trained with labels stays aligned with its
    layer's initial weights, so seed 1's "new" layer scored 88% after one step where seed 0's
    scored 9%."""
    stream = int(np.random.SeedSequence([int(seed), 0x5E41]).generate_state(1)[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream)
        return torch.nn.Linear(dim, num_classes)


def _trains_encoder(opt: torch.optim.Optimizer) -> bool:
    """Whether the optimiser updates the encoder (a second parameter group): only then does the
    encoder run in training mode; frozen (``encoder_lr_factor: 0``), it stays in eval mode so that
    its BatchNorm running statistics are not re-estimated on the labelled subset."""
    return len(opt.param_groups) > 1


def _set_lr(opt: torch.optim.Optimizer, p: SemiProtocol, epoch: int) -> None:
    """The protocol's step schedule at ``epoch``, times each parameter group's ``factor``."""
    lr = lr_at_epoch(p, epoch)
    for g in opt.param_groups:
        g["lr"] = lr * g["factor"]


class _Classifier(torch.nn.Module):
    """``head(module(clip))``: the encoder and its new layer as one module for DDP."""

    def __init__(self, module: torch.nn.Module, head: torch.nn.Linear):
        super().__init__()
        self.module, self.head = module, head

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.head(self.module(clip))


def _finetune_ranks(module, head, opt, train_ds, p: SemiProtocol, spec: dict, order: torch.Generator,
                    crops: torch.Generator, device: torch.device, progress: bool) -> None:
    """The epochs of :func:`finetune` under ``torchrun``, in place (see the module docstring).

    The global batches are those of one process's loader (an index loader with the same
    generator), and each batch's crops are drawn on the whole batch from the same generator,
    so every rank and one process see the same clips. Each rank reads the whole batch's
    samples itself (``num_workers`` is not used here)."""
    from torch.utils.data import default_collate

    from pcm3.progress import track

    world, rank = distributed.info().world_size, distributed.info().rank
    distributed.convert_sync_batchnorm(module)  # BatchNorm statistics of the whole batch (eval mode: unchanged)
    model = distributed.wrap(_Classifier(module, head), device)
    batches = DataLoader(range(len(train_ds)), batch_size=p.batch_size, shuffle=True, generator=order)
    module.train(_trains_encoder(opt))
    head.train()
    last = None
    for epoch in track(range(p.epochs), desc="semi", disable=not progress):
        _set_lr(opt, p, epoch)
        for positions in batches:
            if len(positions) < 2:  # as one process: BatchNorm in training mode needs two samples
                continue
            x, lengths, y, _ = default_collate([train_ds[int(i)] for i in positions])
            x, lengths, y = x.to(device), lengths.to(device), y.to(device)
            clip = make_clips(x, lengths, clip_len=spec["clip_len"], stream=spec["stream"], layout=spec["layout"],
                              crop_range=p.crop_range, min_len=p.min_len or spec["clip_len"], generator=crops)
            if len(y) < world:  # a rank would have no sample
                continue
            lo, hi = distributed.ranges(len(y), world, rank)
            loss = F.cross_entropy(model(clip[lo:hi]), y[lo:hi], reduction="sum")
            opt.zero_grad(set_to_none=True)
            (loss * (world / len(y))).backward()  # DDP's mean over ranks: the whole batch's mean loss
            opt.step()
            last = loss.detach() / len(y)
        if last is not None:  # the last batch's loss over all ranks, as one process checks it
            total = distributed.sum_over_ranks([float(last)])[0]
            if not np.isfinite(total):
                raise FloatingPointError("semi-supervised training diverged (non-finite loss); lower lr")


def run(ctx: EvalContext) -> dict:
    """Fine-tune on each fraction for each seed; top-1/top-5 (percent) mean and std."""
    p: SemiProtocol = ctx.protocol
    train, test = open_splits(ctx)
    spec = input_spec(ctx)
    module = feature_module(ctx)
    num_classes = max(train.num_classes, int(train.labels.max()) + 1)
    labels = train.labels
    check_classes(train.prepared, labels, ctx.benchmark)
    subsets = {(f, i): sample_subset(labels, f, p.sampling, ctx.seed + i, num_classes)
               for f in p.fractions for i in range(p.seeds)}  # all checked before any training
    figures, per_seed, units = {}, [], {}
    for f in p.fractions:
        tops = []
        for i in range(p.seeds):
            seed = ctx.seed + i
            idx = train.indices[subsets[(f, i)]]
            tag = f"frac{f:g}_seed{seed}"
            if distributed.is_main():  # under torchrun rank 0 alone writes
                np.save(ctx.out / f"subset_{tag}.npy", idx)
            sub = open_split(ctx.data, ctx.benchmark, "train", indices=idx)
            tuned, head = finetune(module, sub, num_classes, p, spec, device=ctx.device, seed=seed,
                                   progress=ctx.progress)
            feats, tey, tei = encode_shared(tuned, test, clip_len=spec["clip_len"], stream=spec["stream"],
                                            layout=spec["layout"], test_crop=spec["test_crop"],
                                            batch_size=p.feature_batch_size, device=ctx.device,
                                            num_workers=p.num_workers)
            with torch.no_grad():
                logits = head(torch.from_numpy(feats).to(ctx.device)).float().cpu()
            acc = topk_accuracy(logits, tey, (1, 5))
            if distributed.is_main():
                save_scores(ctx.out, torch.softmax(logits, 1).numpy(), tei, tey, prefix=f"{tag}_")
            per_seed.append({"fraction": f, "seed": seed, "labelled": int(len(idx)), **acc})
            tops.append(acc)
        label = fraction_label(f)
        for key in ("top1", "top5"):
            vals = np.array([t[key] for t in tops])
            figures[f"{label}_{key}_mean"] = float(vals.mean())
            # one seed has no spread to report: null (results.md: n/a), not a standard deviation of 0
            figures[f"{label}_{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else None
        figures[f"{label}_labelled"] = float(np.mean([len(subsets[(f, i)]) for i in range(p.seeds)]))
    units.update({f"{fraction_label(f)}_labelled": "clips" for f in p.fractions})
    return {"figures": figures, "units": units, "per_seed": per_seed, "seeds": [ctx.seed + i for i in range(p.seeds)],
            "splits": {"train": len(train), "test": len(test)}, "input": spec,
            "notes": [f"{p.sampling} subsets, {p.seeds} seed(s) per fraction (std: sample standard deviation"
                      f"{'; one seed: n/a' if p.seeds == 1 else ''}); "
                      "subset_frac<fraction>_seed<s>.npy lists the labelled samples",
                      *_fraction_notes(p.fractions, subsets, p.seeds, len(train))]}


def _fraction_notes(fractions, subsets, seeds: int, total: int) -> list:
    """A note for each fraction whose labelled subset is far from its nominal share of the
    ``total`` training clips (at least one clip per class: 1% of a small set is far more)."""
    notes = []
    for f in fractions:
        n = float(np.mean([len(subsets[(f, i)]) for i in range(seeds)]))
        if total and abs(n / total - f) > 0.5 * f:
            notes.append(f"{fraction_label(f)}: {n:g} labelled clips of {total} ({100 * n / total:.1f}%, not "
                         f"{100 * f:g}%: at least one per class)")
    return notes
