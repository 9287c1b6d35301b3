"""What every evaluation task shares: its context, protocol configs, inputs, scores and results.

A task is a module ``pcm3.evaluation.<task>`` with

- ``PROTOCOL``: its protocol dataclass (defaults = the field's protocol, each value's source in
  the docstring),
- ``DEFAULT_CONFIG = "eval_<task>"``: the packaged YAML (``src/pcm3/configs/eval_<task>.yaml``),
- ``run(ctx: EvalContext) -> dict``: the task's results. The dict has ``"figures"``, a flat
  mapping ``name -> number`` (accuracies in percent, MPJPE in millimetres...), optionally
  ``"units"`` (``name -> unit`` for figures that are not percentages), ``"splits"`` (``part ->
  number of samples``) and any other JSON-able entries (per-seed results, chosen weights...).

``pcm3 eval`` (:mod:`pcm3.commands.eval`) builds the :class:`EvalContext`, calls ``run`` inside
:func:`pcm3.outputs.output_dir`, adds the common facts (:func:`assemble_metrics`) and writes
``metrics.json`` and ``results.md`` with :func:`write_results`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from pcm3.config import _set_path, from_dict, parse_override, read_yaml, to_dict
from pcm3.errors import ConfigError, DataError

TASKS = ("linear", "semi", "knn", "occlusion", "fusion", "detection", "motion")
ENCODER_KINDS = ("pretrained", "random_init", "raw_input", "supervised")
STREAMS = ("joint", "bone", "motion")


@dataclass
class EvalContext:
    """Everything a task's ``run`` needs.

    Attributes:
        task: ``linear``, ``semi``, ``knn``, ``occlusion``, ``fusion``, ``detection``, ``motion``.
        data: prepared data folder.
        benchmark: split name in ``splits.json`` (``xsub``, ``xview``...).
        encoder: ``(N, C, T, V, M) -> (N, D)`` with attributes ``layout``, ``stream``,
            ``clip_len``, ``test_crop``; ``None`` for the raw-input baseline (use
            :func:`feature_module`, which gives the raw-input module in that case).
        encoder_kind: ``pretrained``, ``random_init``, ``raw_input`` or ``supervised``.
        encoder_info: path, pretraining config hash, epochs... (written into metrics.json).
        protocol: the task's protocol dataclass instance (its YAML + ``--set``).
        out: folder to write the task's files into (a temporary folder moved into place when
            ``run`` returns).
        device: where the encoder and heads run.
        seed: the base seed of every random draw of the task.
        progress: show progress bars.
    """

    task: str
    data: Path
    benchmark: str
    encoder: Optional[torch.nn.Module]
    encoder_kind: str
    encoder_info: dict
    protocol: Any
    out: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    progress: bool = False


# --------------------------------------------------------------------------- protocol configs

def check_ranges(owner: str, obj, rules) -> None:
    """One-line ConfigError naming the first setting of ``obj`` outside its range: ``rules`` are
    ``(name, ok(value) -> bool, "the rule")``, e.g. ``("epochs", lambda v: v >= 1, ">= 1")``."""
    for name, ok, rule in rules:
        value = getattr(obj, name)
        if not ok(value):
            raise ConfigError(f"{owner}.{name}: must be {rule}, got {value!r}")


@dataclass
class SupervisedConfig:
    """How the ``--supervised`` baseline is trained (issue 6: 60 epochs, Adam, crop-resize).

    Attributes:
        epochs: passes over the training split.
        batch_size: clips per step.
        lr: Adam learning rate (constant).
        weight_decay: Adam weight decay.
        crop_range: random crop of the valid frames, ``U(crop_range)``, resized to the clip length.
        min_len: minimum crop length in frames (>= 1, where the clip is longer); None = the clip
            length; longer than a clip is harmless: its crop is clamped to the valid frames.
    """

    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    crop_range: Tuple[float, float] = (0.5, 1.0)
    min_len: Optional[int] = None

    def __post_init__(self):
        check_ranges("supervised", self, [("epochs", lambda v: v >= 1, ">= 1"),
                                          ("batch_size", lambda v: v >= 2, ">= 2"), ("lr", lambda v: v > 0, "> 0")])
        _check_crop_range("supervised.crop_range", self.crop_range)
        check_schedule_and_crops(None, self.min_len, "supervised.")


def check_schedule_and_crops(milestones, min_len, owner: str = "") -> None:
    """The fields ``milestones`` (epochs, 0-based: each >= 0, as pretraining's
    ``optim.milestones``; None: a protocol without them) and ``min_len`` (frames: >= 1, or None
    for the clip length) of a recognition protocol; a one-line ConfigError naming the field
    (``owner.`` before it, e.g. ``supervised.``) otherwise. A ``min_len`` longer than the clips is
    allowed: each crop is clamped to the clip's valid frames."""
    bad = [m for m in milestones or () if isinstance(m, bool) or not isinstance(m, (int, float)) or m < 0]
    if bad:
        raise ConfigError(f"{owner}milestones: each must be an epoch >= 0 (0-based), got {list(milestones)}")
    if min_len is not None and (isinstance(min_len, bool) or not isinstance(min_len, int) or min_len < 1):
        raise ConfigError(f"{owner}min_len: must be a whole number of frames >= 1 (or null: the clip length), "
                          f"got {min_len!r}")


def _check_crop_range(name: str, r) -> None:
    if not 0 < r[0] <= r[1] <= 1:
        raise ConfigError(f"{name}: must satisfy 0 < low <= high <= 1, got {tuple(r)}")


@dataclass
class InputProtocol:
    """Input and feature settings shared by the recognition protocols.

    Attributes:
        stream: ``joint``, ``bone`` or ``motion``; None = the encoder's (its pretraining stream).
        clip_len: frames fed to the encoder; None = the encoder's (64 in the paper).
        test_crop: centre crop of the valid frames at test time; None = the encoder's (0.95).
        feature_batch_size: clips per forward pass when computing features.
        num_workers: DataLoader worker processes reading the memory-mapped data.
        supervised: training of the ``--supervised`` baseline.
    """

    stream: Optional[str] = None
    clip_len: Optional[int] = None
    test_crop: Optional[float] = None
    feature_batch_size: int = 256
    num_workers: int = 0
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)

    def __post_init__(self):
        if self.stream is not None and self.stream not in STREAMS:
            raise ConfigError(f"stream: must be one of {', '.join(STREAMS)}, got {self.stream!r}")
        if self.clip_len is not None and self.clip_len < 1:
            raise ConfigError(f"clip_len: must be >= 1, got {self.clip_len}")
        if self.test_crop is not None and not 0 < self.test_crop <= 1:
            raise ConfigError(f"test_crop: must be in (0, 1], got {self.test_crop}")
        if self.feature_batch_size < 1 or self.num_workers < 0:
            raise ConfigError("feature_batch_size must be >= 1 and num_workers >= 0")


def load_protocol(cls, config: Optional[str | os.PathLike] = None, overrides: Sequence[str] = ()):
    """Build protocol dataclass ``cls`` from a YAML file or packaged name and ``key=value`` overrides.

    Unknown keys, wrong types and unparsable values raise :class:`ConfigError` naming the file
    and the key (as pretraining configs).
    """
    tree = read_yaml(config) if config else {}
    where = str(config) if config else cls.__name__
    for item in overrides:
        key, value = parse_override(item)
        _set_path(tree, key, value)
    if overrides:
        where = f"{where} (with --set)"
    return from_dict(cls, tree, f"{where}:")  # "eval_linear.yaml: epochs: ...", not "eval_linear.yaml.epochs"


def protocol_dict(protocol) -> dict:
    """The protocol as a plain dict (for metrics.json)."""
    return to_dict(protocol) if dataclasses.is_dataclass(protocol) else dict(protocol or {})


def config_hash(tree: Any) -> str:
    """Short SHA-256 of a JSON-able config (sorted keys): which pretraining produced an encoder."""
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- seeds and devices

def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


# --------------------------------------------------------------------------- data

def _clips_for_recognition(data, benchmark):
    """The open prepared folder of a recognition task: clips, and a benchmark named."""
    from pcm3.data.prepared import Prepared

    prepared = Prepared(data)
    if benchmark in (None, "all"):
        raise ConfigError(f"--benchmark: required (training and test parts of a split); {data} has: "
                          f"{', '.join(prepared.benchmarks) or 'none'}")
    if prepared.kind != "clips":
        raise DataError(data, f"holds untrimmed sequences ({prepared.kind}); this task needs clips")
    return prepared


def open_split(data: str | os.PathLike, benchmark: Optional[str], part: str, indices=None):
    """The :class:`SkeletonDataset` of ``part`` of ``benchmark``; one-line DataError when absent."""
    from pcm3.data.dataset import SkeletonDataset

    prepared = _clips_for_recognition(data, benchmark)
    prepared.split(benchmark, part)  # raises the one-line error for a missing benchmark/part
    return SkeletonDataset(prepared, benchmark, part, indices=indices)


PART_NAMES = {"train": "training", "test": "test"}
_FINITE_SCANNED: set = set()  # (folder, data.npy's size and time, samples) already scanned in this process


def check_parts(data, benchmark: Optional[str], parts: Sequence[str] = ("train", "test"), *,
                labelled: bool = True, unit: str = "clips", command: str = "this evaluation") -> Dict[str, np.ndarray]:
    """Check what an evaluation reads before it writes anything; ``{part: indices}``.

    Every part of ``parts`` of ``benchmark`` (``None``/``all``: every sample) must exist and
    hold samples; their labels must be classes of the folder (``labelled``: 0..C-1, as a task
    that trains or tests on them needs; otherwise -1, "no label", is allowed), their lengths
    fit the clips (:func:`pcm3.checks.check_samples`), and their clips must be finite
    (:func:`pcm3.checks.check_finite`, up to its byte budget; beyond it the loaders refuse a
    non-finite clip as they read it). Each error is one line naming the folder, benchmark and
    part, or the file and sample.

    Args:
        data: a prepared folder or an open :class:`pcm3.data.prepared.Prepared`.
        unit: what the samples are called in the message (``clips``, ``videos``).
        command: what needs them, in the message (``pcm3 embed``: ``"embedding"``).
    """
    from pcm3.checks import check_finite, check_samples
    from pcm3.data.prepared import Prepared

    prepared = data if isinstance(data, Prepared) else Prepared(data)
    out = {}
    for part in parts:
        idx = np.asarray(prepared.split(benchmark, part), dtype=np.int64)
        if idx.size == 0:
            usable = [b for b in prepared.benchmarks
                      if all(len(prepared.splits[b].get(q, ())) for q in parts)]
            hint = (f"benchmarks of this folder that have them: {', '.join(usable)}" if usable else
                    "no benchmark of this folder has them: prepare the data with a split file that does")
            which = f"benchmark {benchmark!r}" if benchmark not in (None, "all") else "the folder"
            raise DataError(prepared.root, f"{which} has no {PART_NAMES.get(part, part)} {unit} (its {part!r} part "
                                           f"is empty); {command} needs {unit} in "
                                           f"{' and '.join(repr(q) for q in parts)} ({hint})")
        out[part] = idx
    for part, idx in out.items():
        check_samples(prepared, idx, labelled=labelled)
    for part, idx in out.items():
        _check_finite_once(prepared, idx, check_finite)
    return out


def _check_finite_once(prepared, idx: np.ndarray, check_finite) -> None:
    """:func:`pcm3.checks.check_finite`, skipped when these samples of this unchanged file were
    already scanned in this process (the pre-check of ``evaluate`` and the task's own check)."""
    try:
        st = os.stat(prepared.root / "data.npy")
        key = (str(Path(prepared.root).resolve()), st.st_size, st.st_mtime_ns, st.st_ino,
               hashlib.sha1(np.ascontiguousarray(idx).tobytes()).hexdigest())
    except OSError:
        key = None
    if key is not None and key in _FINITE_SCANNED:
        return
    if check_finite(prepared, idx) and key is not None:
        _FINITE_SCANNED.add(key)


def check_recognition_data(data, benchmark: Optional[str], parts: Sequence[str] = ("train", "test")
                           ) -> Dict[str, np.ndarray]:
    """What a recognition task (linear, knn, semi, occlusion, the supervised row) reads, checked
    before anything is written: clips, a benchmark, no sample in two parts, then
    :func:`check_parts` (labelled). Returns ``{part: indices}``."""
    prepared = _clips_for_recognition(data, benchmark)
    for problem in prepared.split_problems([benchmark]):  # a hand-edited splits.json
        raise DataError(data, f"{problem}: evaluating on training samples is no evaluation")
    return check_parts(prepared, benchmark, parts, labelled=True)


def carve_validation(dataset, fraction: float, seed: int, by: str = "subject") -> Tuple[np.ndarray, np.ndarray]:
    """Split a training set into training and validation parts by whole groups (subjects).

    Never touches the test split: settings are chosen on this validation part only.

    Args:
        dataset: a :class:`SkeletonDataset` (its ``indices`` are prepared-folder indices).
        fraction: share of the groups (column ``by`` of ``samples.csv``) put into validation.
        seed: which groups.
        by: the grouping column (``subject`` for cross-subject carving).

    Returns:
        ``(train_indices, val_indices)``, prepared-folder indices, disjoint.
    """
    idx = np.asarray(dataset.indices, dtype=np.int64)
    groups = dataset.prepared.groups(idx, by)  # the column, or for subjects what stands for them
    if groups is None:
        raise DataError(dataset.prepared.root / "samples.csv", f"no column {by!r} to carve a validation split from "
                                                                 "(set val_by to an existing column, or val_fraction: 0)")
    unique = np.unique(groups)
    n_val = int(round(fraction * len(unique)))
    if not 0 < n_val < len(unique):
        raise ConfigError(f"val_fraction: {fraction} of {len(unique)} {by} groups leaves the training or "
                          "validation part empty")
    rng = np.random.default_rng(seed)
    val_groups = rng.choice(unique, size=n_val, replace=False)
    is_val = np.isin(groups, val_groups)
    return idx[~is_val], idx[is_val]


def check_compatible(encoder: Optional[torch.nn.Module], prepared, where: str = "--encoder") -> None:
    """Refuse an encoder whose input layout or shape differs from the data's (one-line DataError).

    Args:
        encoder: module with ``layout`` and (for :class:`pcm3.models.Encoder`) ``config``.
        prepared: an open :class:`pcm3.data.prepared.Prepared`.
        where: the flag or file to name in the message.
    """
    if encoder is None:
        return
    layout = getattr(encoder, "layout", None)
    if layout is not None and layout != prepared.layout:
        raise DataError(where, f"encoder of layout {layout!r} cannot read {prepared.root} (layout "
                               f"{prepared.layout!r}); pretrain or convert for this layout")
    cfg = getattr(encoder, "config", None)
    if cfg is not None and hasattr(cfg, "num_joints"):
        c, v, m = prepared.input_size
        if (cfg.in_channels, cfg.num_joints, cfg.num_persons) != (c, v, m):
            raise DataError(where, f"encoder reads (C, V, M) = {(cfg.in_channels, cfg.num_joints, cfg.num_persons)}, "
                                   f"{prepared.root} holds {(c, v, m)}")


def input_spec(ctx: EvalContext) -> Dict[str, Any]:
    """How clips are made for the encoder: ``stream``, ``layout``, ``clip_len``, ``test_crop``.

    From the encoder's export attributes; the protocol may override ``stream``/``clip_len``/
    ``test_crop`` (fields of the same names, ``None`` = the encoder's).
    """
    from pcm3.data.prepared import Prepared

    enc = ctx.encoder
    p = ctx.protocol
    layout = Prepared(ctx.data).layout

    from pcm3.evaluation.features import input_attribute

    def pick(name):  # the protocol's value, else the module's (None: missing), else the default
        value = getattr(p, name, None)
        return value if value is not None else input_attribute(enc, name)

    spec = {"stream": pick("stream"), "layout": input_attribute(enc, "layout") or layout,
            "clip_len": int(pick("clip_len")), "test_crop": float(pick("test_crop"))}
    if spec["stream"] not in STREAMS:
        raise ConfigError(f"stream: must be one of {', '.join(STREAMS)}, got {spec['stream']!r}")
    return spec


def smoke_test_notes(train_idx, test_idx, unit: str) -> List[str]:
    """The note a dense task adds when its train and test parts share ``unit`` (videos, clips):
    ``--benchmark all`` or a folder without a split, a smoke test of the pipeline only."""
    shared = np.intersect1d(np.asarray(train_idx), np.asarray(test_idx)).size
    return [f"train and test share {shared} {unit}: a smoke test, not an evaluation"] if shared else []


def pretraining_overlap(pretrained_on: Optional[dict], data, benchmark: Optional[str],
                        part: str = "test") -> Optional[str]:
    """A note when clips of ``part`` of ``benchmark`` in ``data`` were among the encoder's
    pretraining clips (``pretrained_on`` of an exported encoder: ``dataset``, ``benchmark``,
    ``part``, ``fingerprint``), else ``None``: the same clips (the folder's
    :meth:`~pcm3.data.prepared.Prepared.fingerprint`; without one recorded, the same folder) and
    the pretraining part, taken from ``data``'s own splits, sharing samples with the evaluated
    part. Unknown (an older encoder file, another preparation, a benchmark ``data`` lacks): None."""
    from pcm3.data.prepared import Prepared

    if not pretrained_on or data is None or not pretrained_on.get("dataset"):
        return None
    try:
        prepared = Prepared(data)
        if prepared.meta.get("dataset") != pretrained_on["dataset"]:
            return None
        if pretrained_on.get("fingerprint"):  # the same clips, wherever the folder lies
            if prepared.fingerprint() != pretrained_on["fingerprint"]:
                return None
        elif os.path.realpath(str(data)) != os.path.realpath(str(pretrained_on.get("data") or "")):
            return None  # no fingerprint recorded: the same folder only
        seen = prepared.split(pretrained_on.get("benchmark"), pretrained_on.get("part") or "train")
        tested = prepared.split(benchmark, part)
    except (DataError, KeyError, ValueError):
        return None
    shared = np.intersect1d(seen, tested).size
    if not shared:
        return None
    where = f"{pretrained_on.get('benchmark') or 'all'}/{pretrained_on.get('part') or 'train'}"
    return (f"{shared} of the {tested.size} {part} clips of {benchmark or 'all'} were pretraining clips of this "
            f"encoder ({pretrained_on['dataset']} {where}): the {part} is not on unseen clips")


def open_splits(ctx: EvalContext):
    """The ``train`` and ``test`` parts of ``ctx.benchmark``, after checking them
    (:func:`check_recognition_data`) and that the encoder fits them."""
    check_recognition_data(ctx.data, ctx.benchmark, ("train", "test"))
    train = open_split(ctx.data, ctx.benchmark, "train")
    test = open_split(ctx.data, ctx.benchmark, "test")
    check_compatible(ctx.encoder, train.prepared, ctx.encoder_info.get("path", "--encoder"))
    return train, test


def dense_benchmark(ctx: EvalContext, prepared, unit: str) -> str:
    """The benchmark a dense task (detection: ``unit`` "video"; motion prediction: "clip") trains
    and tests on: ``--benchmark``, else ``xsub``; never every sample for both parts unless asked
    (``all``, a smoke test), and never a split whose training part holds test samples."""
    benchmark = ctx.benchmark or ("xsub" if "xsub" in prepared.splits else None)
    if benchmark is None:  # never fall back to every sample for both parts: that trains on the test ones
        raise ConfigError(f"--benchmark: required, {ctx.data} has no xsub; it has: "
                          f"{', '.join(prepared.benchmarks) or 'none'} (`all` trains and tests on every {unit}: "
                          "a smoke test only)")
    for problem in prepared.split_problems([benchmark]):  # a hand-edited splits.json
        raise DataError(ctx.data, f"{problem}: evaluating on training {unit}s is no evaluation")
    return benchmark


def encode_kwargs(ctx: EvalContext, spec: Dict[str, Any], protocol) -> Dict[str, Any]:
    """The keyword arguments of :func:`pcm3.evaluation.features.encode` for this task: the clip
    settings of ``spec`` (:func:`input_spec`) and the protocol's batch size and workers."""
    return dict(clip_len=spec["clip_len"], stream=spec["stream"], layout=spec["layout"], test_crop=spec["test_crop"],
                batch_size=protocol.feature_batch_size, device=ctx.device, num_workers=protocol.num_workers,
                progress=ctx.progress)


def feature_module(ctx: EvalContext) -> torch.nn.Module:
    """The module that maps prepared clips ``(N, C, clip_len, V, M)`` to features ``(N, D)``.

    The encoder, or for ``raw_input`` (``ctx.encoder is None``) the raw-input module of
    :mod:`pcm3.evaluation.baselines`, so that every row goes through the same code.
    """
    if ctx.encoder is not None:
        return ctx.encoder
    from pcm3.evaluation.baselines import RawInput

    spec = input_spec(ctx)
    return RawInput(layout=spec["layout"], stream=spec["stream"], clip_len=spec["clip_len"],
                    test_crop=spec["test_crop"])


# --------------------------------------------------------------------------- scores and accuracy

def topk_correct(scores: torch.Tensor | np.ndarray, labels, ks: Iterable[int] = (1, 5)) -> Dict[int, np.ndarray]:
    """Per-sample hits of top-k prediction.

    Args:
        scores: ``(N, K)`` class scores (any monotone scale: logits, probabilities).
        labels: ``(N,)`` true classes.
        ks: the k values; k larger than K counts as K.

    Returns:
        ``{k: (N,) bool}``.
    """
    s = torch.as_tensor(np.asarray(scores) if not torch.is_tensor(scores) else scores).float()
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).long().to(s.device)
    kmax = min(max(ks), s.shape[1])
    top = s.topk(kmax, dim=1).indices  # (N, kmax), best first
    hit = top == y.view(-1, 1)
    return {k: hit[:, :min(k, kmax)].any(dim=1).cpu().numpy() for k in ks}


def topk_accuracy(scores, labels, ks: Iterable[int] = (1, 5)) -> Dict[str, float]:
    """Top-k accuracy in percent: ``{"top1": ..., "top5": ...}``."""
    hits = topk_correct(scores, labels, ks)
    return {f"top{k}": 100.0 * float(h.mean()) if h.size else float("nan") for k, h in hits.items()}


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list:
    """Accuracy in percent per class (``None`` for a class absent from ``labels``)."""
    out = []
    for c in range(num_classes):
        sel = labels == c
        out.append(100.0 * float((pred[sel] == c).mean()) if sel.any() else None)
    return out


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


SCORES_FILE = "scores.npy"
SCORE_INDEX_FILE = "scores_index.npy"
SCORE_LABELS_FILE = "scores_labels.npy"


def save_scores(out: str | os.PathLike, scores: np.ndarray, indices: np.ndarray, labels: np.ndarray,
                prefix: str = "") -> None:
    """Write test class scores for fusion and the report.

    Files (in ``out``): ``{prefix}scores.npy`` ``(N, K)`` float32 (softmax probabilities or
    logits, as the task says), ``{prefix}scores_index.npy`` ``(N,)`` the samples' indices in the
    prepared folder (the order of the rows), ``{prefix}scores_labels.npy`` ``(N,)`` true classes.
    """
    out = Path(out)
    np.save(out / f"{prefix}{SCORES_FILE}", np.asarray(scores, dtype=np.float32))
    np.save(out / f"{prefix}{SCORE_INDEX_FILE}", np.asarray(indices, dtype=np.int64))
    np.save(out / f"{prefix}{SCORE_LABELS_FILE}", np.asarray(labels, dtype=np.int64))


def _first_line(error: BaseException) -> str:
    """The first line of an exception's text (its class name when it has none), at most 160 characters."""
    from pcm3.io import first_line

    return first_line(str(error)) or type(error).__name__


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` file read whole (numbers only, never a pickle).

    Raises a one-line :class:`DataError` naming ``path`` when it is missing, not a ``.npy``
    file, cut short (``truncated: N of M bytes``: its header says how long its data is) or
    otherwise unreadable, instead of numpy's ``ValueError: EOF...``.
    """
    path = Path(path)
    fmt = np.lib.format
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
                raise DataError(path, "empty: no array in it (truncated?)" if size == 0
                                else "not a .npy array file")
            f.seek(0)
            try:
                version = fmt.read_magic(f)
                read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read_header(f)
            except Exception as e:  # noqa: BLE001 - numpy's header parser: ValueError, EOFError, tokenize errors...
                raise DataError(path, f"truncated or damaged .npy header ({_first_line(e)})") from None
            start = f.tell()
    except FileNotFoundError:
        raise DataError(path, "missing") from None
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror or _first_line(e)})") from None
    if dtype.hasobject:
        raise DataError(path, "holds Python objects, not numbers: not an array pcm3 wrote")
    need = start + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < need:
        raise DataError(path, f"truncated: {size} of the {need} bytes its header announces (cut short while "
                              "written or copied; rerun what wrote it)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(path, f"unreadable array ({_first_line(e)})") from None


def load_scores(folder: str | os.PathLike, prefix: str = "") -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read what :func:`save_scores` wrote: ``(scores (N, K), indices (N,), labels (N,))``.

    One-line :class:`DataError` naming the file when one is missing, truncated or unreadable
    (:func:`load_array`), of the wrong kind of numbers, or when a score is NaN or infinite
    (results are never computed from damaged scores)."""
    folder = Path(folder)
    arrays = []
    for name in (SCORES_FILE, SCORE_INDEX_FILE, SCORE_LABELS_FILE):
        path = folder / f"{prefix}{name}"
        if not path.exists():
            raise DataError(path, "missing: not an eval folder with saved scores (run `pcm3 eval linear` or `semi`)")
        arrays.append(load_array(path))
    scores, index, labels = arrays
    if scores.ndim != 2 or index.shape != (scores.shape[0],) or labels.shape != index.shape:
        raise DataError(folder, f"saved scores have inconsistent shapes {scores.shape}, {index.shape}, {labels.shape}")
    path = folder / f"{prefix}{SCORES_FILE}"
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise DataError(path, f"holds {scores.dtype} values, not class scores")
    for name, arr in ((SCORE_INDEX_FILE, index), (SCORE_LABELS_FILE, labels)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataError(folder / f"{prefix}{name}", f"holds {arr.dtype} values, not whole numbers")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise DataError(path, f"{int(bad.sum())} non-finite score(s) (NaN or inf) in {int(bad.any(1).sum())} of its "
                              f"{len(scores)} rows: damaged scores, rerun the eval that wrote them")
    return scores, index, labels


# --------------------------------------------------------------------------- results

def assemble_metrics(ctx: EvalContext, result: dict, *, wall_seconds: float, splits: Optional[dict] = None) -> dict:
    """The ``metrics.json`` content: the common facts of a run plus the task's ``result``.

    Keys: ``task``, ``data``, ``benchmark``, ``splits`` (``part -> samples``), ``encoder``
    (``kind`` and ``info``, with the pretraining config hash), ``protocol``, ``seed``,
    ``figures``, ``units`` and every other entry of ``result``, ``wall_seconds``.
    """
    if "figures" not in result:
        raise ValueError(f"task {ctx.task!r} returned no 'figures'")
    dataset, class_names = None, None
    if ctx.data is not None and (Path(ctx.data) / "meta.json").is_file():
        try:
            meta = json.loads((Path(ctx.data) / "meta.json").read_text())
            dataset, class_names = meta.get("dataset"), meta.get("class_names")
        except (OSError, ValueError):
            pass
    metrics = {
        "task": ctx.task, "data": str(ctx.data), "dataset": dataset, "class_names": class_names,
        "benchmark": result.get("benchmark_used") or ctx.benchmark,  # a task's default split, when it chose one
        "splits": {**(splits or {}), **result.get("splits", {})},
        "encoder": {"kind": ctx.encoder_kind, **dict(ctx.encoder_info or {})},
        "protocol": protocol_dict(ctx.protocol), "seed": ctx.seed, "device": str(ctx.device),
    }
    unseen = _classes_without_training_clips(ctx) if ctx.task in ("linear", "knn", "occlusion") else None
    if unseen:
        result = {**result, "notes": [*(result.get("notes") or []), unseen],
                  "warnings": [*(result.get("warnings") or []), unseen]}
    trained = getattr(ctx.encoder, "supervised_settings", None) if ctx.encoder_kind == "supervised" else None
    if trained:  # the supervised row was trained before this task (by the caller, `benchmark`, the demo): its
        metrics["protocol"]["supervised"] = dict(trained)  # settings, not this task's unused defaults
        metrics["encoder"]["supervised"] = dict(trained)
    for k, v in result.items():
        if k != "splits":
            metrics[k] = v
    metrics["wall_seconds"] = float(wall_seconds)
    return metrics


def _classes_without_training_clips(ctx: EvalContext) -> Optional[str]:
    """A warning when test clips belong to classes the training part lacks: a classifier or a
    k-NN gallery cannot predict those classes, so they count as errors (0% when all are)."""
    from pcm3.data.prepared import Prepared

    try:
        prepared = Prepared(ctx.data)
        train = prepared.labels[prepared.split(ctx.benchmark, "train")]
        test = prepared.labels[prepared.split(ctx.benchmark, "test")]
    except (DataError, KeyError, ValueError, TypeError):
        return None
    missing = np.setdiff1d(np.unique(test[test >= 0]), np.unique(train[train >= 0]))
    if missing.size == 0:
        return None
    clips = int(np.isin(test, missing).sum())
    names = prepared.class_names
    named = [names[c] if 0 <= c < len(names) else str(int(c)) for c in missing[:5].tolist()]
    shown = ", ".join(named) + (f" and {missing.size - 5} more" if missing.size > 5 else "")
    return (f"{clips} of the {test.size} test clips belong to {missing.size} class(es) with no training clip "
            f"({shown}): they cannot be classified correctly")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return None if math.isnan(v) or math.isinf(v) else v
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return _jsonable(to_dict(obj))
    return obj


def format_figure(name: str, value, units: Optional[dict] = None) -> str:
    """One figure as text: percentages with 2 decimals, other units named."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    unit = (units or {}).get(name, "%")
    if unit == "%":
        return f"{value:.2f}%"
    return f"{value:.4g}" + (f" {unit}" if unit else "")


def format_results(metrics: dict) -> str:
    """The short ``results.md``: what was evaluated and one table of every figure."""
    enc = metrics.get("encoder", {})
    splits = metrics.get("splits", {})
    lines = [f"# pcm3 eval {metrics.get('task')}", "",
             f"- data: `{metrics.get('data')}`, benchmark `{metrics.get('benchmark')}`"
             + (" (" + ", ".join(f"{k} {v}" for k, v in splits.items()) + " samples)" if splits else ""),
             f"- encoder: {enc.get('kind')}" + (f" `{enc['path']}`" if enc.get("path") else "")
             + (f", pretraining config {enc['config_hash']}" if enc.get("config_hash") else ""),
             f"- seed {metrics.get('seed')}, {metrics.get('wall_seconds', 0):.1f} s", "",
             "| figure | value |", "|---|---|"]
    units = metrics.get("units", {})
    for name, value in metrics.get("figures", {}).items():
        lines.append(f"| {name} | {format_figure(name, value, units)} |")
    by_ratio = metrics.get("by_ratio")
    if isinstance(by_ratio, dict) and by_ratio:  # occlusion: top-1 per bin of the realised ratio
        lines += ["", "top-1 (%) by realised occlusion ratio", "", "| occlusion | ratio | clips | top-1 |",
                  "|---|---|---|---|"]
        for kind, bins in by_ratio.items():
            for b in bins if isinstance(bins, list) else []:
                top1 = "-" if b.get("top1") is None else f"{b['top1']:.1f}"
                lines.append(f"| {kind} | {b.get('low', 0):.2f}-{b.get('high', 0):.2f} | {b.get('samples')} | {top1} |")
    notes = metrics.get("notes")
    if notes:
        lines += [""] + [f"- {n}" for n in (notes if isinstance(notes, list) else [notes])]
    return "\n".join(lines) + "\n"


def write_results(out: str | os.PathLike, metrics: dict) -> None:
    """Write ``metrics.json`` (every fact, NaN as null) and ``results.md`` into ``out``."""
    from pcm3.io import write_json, write_text

    out = Path(out)
    clean = _jsonable(metrics)
    write_json(out / "metrics.json", clean)
    write_text(out / "results.md", format_results(clean))


def read_metrics(folder: str | os.PathLike) -> dict:
    """``metrics.json`` of an eval folder (one-line DataError when absent or malformed)."""
    path = Path(folder) / "metrics.json"
    if not path.exists():
        raise DataError(folder, "no metrics.json: not a pcm3 eval folder")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None


def _attribute_docs(cls) -> Dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` sections of ``cls``'s docstrings (its own
    first, then its bases'), continuation lines joined."""
    docs: Dict[str, str] = {}
    for klass in cls.__mro__:
        text = inspect.getdoc(klass) if klass.__doc__ else None
        if not text or "Attributes:" not in text:
            continue
        name = None
        for line in text.split("Attributes:", 1)[1].splitlines():
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            if indent == 0:
                break  # the section ended
            head = re.match(r"\s+(\w+(?:, \w+)*)(?: \([^)]*\))?: ?(.*)$", line)
            if head and indent <= 4:  # "name: text" or "a, b, c: text" (one text for several)
                names = [n for n in head.group(1).split(", ") if n not in docs]  # a subclass's first
                for n in names:
                    docs[n] = head.group(2).strip()
                name = names
            elif name:
                for n in name:
                    docs[n] += " " + line.strip()
    return docs


def protocol_keys(cls, config: Optional[str | os.PathLike] = None) -> List[Tuple[str, Any, str]]:
    """Every key of protocol dataclass ``cls`` as ``(dotted key, value, description)``: the values
    of ``config`` (a packaged name or file; None: the class defaults), nested protocols (the
    ``supervised`` baseline's) flattened as ``supervised.epochs``; descriptions from the classes'
    ``Attributes:`` docstrings ("" where there is none). What ``--set KEY=VALUE`` can change."""
    tree = read_yaml(config) if config else {}
    out: List[Tuple[str, Any, str]] = []

    def walk(klass, values: dict, prefix: str) -> None:  # not built: a required key (fusion's runs) may lack
        docs = _attribute_docs(klass)
        for f in dataclasses.fields(klass):
            if f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = None
            if dataclasses.is_dataclass(value):
                sub = values.get(f.name)
                walk(type(value), sub if isinstance(sub, dict) else {}, f"{prefix}{f.name}.")
            else:
                out.append((prefix + f.name, values.get(f.name, value), docs.get(f.name, "")))

    walk(cls, tree, "")
    return out
