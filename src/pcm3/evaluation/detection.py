"""Temporal action detection in untrimmed videos (paper Table 5, PKU-MMD Part I).

The protocol of the PCM3 authors' detection code (Simple-Skeleton-Detection), as defaults:

- **Data**: a prepared ``sequences`` folder (``pcm3 prepare pku1``, or the built-in
  ``pcm3 prepare synthetic --untrimmed``): frames, ``offsets.npy``, ``intervals.csv``.
  Per-frame targets: 0 = background, action ``c`` (0-based) -> ``c + 1``.
- **Windows**: the encoder reads ``window`` = 16 frames sampled every ``d``-th frame around a
  centre frame, ``t + d * (-8 .. 7)``, each index clamped to the video (edge frames repeat);
  the target is the centre frame's label. Training: 16 windows per video per epoch at random
  centres, ``d`` drawn from {3, 4, 5}. Test: one window per frame (``d = 4``), stride 1, in
  batches of ``test_batch_size`` windows -> per-frame class probabilities ``(T, K + 1)``.
- **Head**: a linear layer on the encoder's feature; the encoder frozen in eval mode (default;
  ``adapt_input_norm`` lets its input BatchNorm statistics follow the detection data, as the
  authors' code does) or fine-tuned (``finetune``). SGD, Nesterov momentum 0.9, lr 0.01, no
  weight decay, 60 epochs, x0.1 at epoch 40, batch 64. The last epoch is reported; the
  authors' code keeps the best epoch *on the test set*, which is not offered: with
  ``val_fraction > 0`` a validation part is carved from the training subjects and
  ``select: best_val`` keeps the epoch with the best validation mAP_a@0.5 (``authors`` where
  computed, else the first metric listed).
- **Post-processing**: per-frame probabilities smoothed by a mean filter over ``smooth_k`` = 10
  frames on each side (``[t - k, t + k]``, clamped at the ends; ``smoothing: release`` uses the
  authors' window ``[t - k, t + k)`` with the end clamped to the last frame, which leaves it
  out), a frame is active where ``1 - P(background) >= threshold`` (0.4), each run of active
  frames is a segment, its class the argmax of the mean non-background probability over the
  segment and its confidence that mean.
- **Metrics** (:mod:`pcm3.evaluation.detection_metrics`): mAP_a and mAP_v at IoU 0.1 / 0.3 /
  0.5, ``authors`` (the PCM3 authors' detection code: VOC devkit mAP_a, mAP_v with duplicates
  counted once; the headline, and where the report puts the paper's figures), ``official``
  (PKU-MMD's evaluate.py, quirks included) and ``voc`` (ActivityNet-style matching).

Outputs in the eval folder: ``detections.csv`` (``video,class,start,end,confidence``: the
video's name, the data set's own label number ``1..K`` (1..51 for PKU-MMD), 0-based frames
with ``end`` exclusive, as ``intervals.csv``), ``per_class_ap.csv``, ``history.csv`` and
``timeline.png`` (ground truth and detections of a few test videos, coloured by class).

Raw input (no network) is refused: a frame classifier on raw 16-frame windows is not a
representation baseline this protocol defines.
"""

from __future__ import annotations

import copy
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from pcm3.checks import SCAN_BYTES
from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.common import (EvalContext, SupervisedConfig, carve_validation, check_ranges,
                                    check_schedule_and_crops, dense_benchmark,
                                    smoke_test_notes)
from pcm3.evaluation.detection_metrics import METRICS, detection_metrics
from pcm3.evaluation.features import feature_dim
from pcm3.rng import preserved_rng
from pcm3.skeleton import to_stream

DEFAULT_CONFIG = "eval_detection"
SMOOTHING = ("centred", "release")
SELECT = ("last", "best_val")


@dataclass
class DetectionProtocol:
    """Detection settings (defaults: the authors' detection code, see the module docstring).

    Attributes:
        window: frames per window (16).
        train_dilations: frame steps ``d`` drawn per training window ({3, 4, 5}).
        test_dilation: frame step at test time (4).
        windows_per_video: training windows per video per epoch (16).
        epochs, batch_size, lr, momentum, nesterov, weight_decay, milestones, gamma: SGD.
        finetune: train the encoder too (default: frozen).
        adapt_input_norm: with a frozen encoder, let its input BatchNorm statistics adapt.
        stream: ``joint``/``bone``/``motion``; None = the encoder's.
        smooth_k: mean-filter half width in frames (10); 0 = no smoothing.
        smoothing: ``centred`` (``[t-k, t+k]``) or ``release`` (the authors' ``[t-k, t+k)``).
        threshold: a frame is active where ``1 - P(background) >= threshold`` (0.4).
        iou_thresholds: IoU thresholds of the metrics (0.1, 0.3, 0.5).
        metrics: any of ``authors``, ``official``, ``voc``.
        val_fraction: share of the training subjects held out for validation (0: none).
        val_by: ``samples.csv`` column the validation part is carved by (``subject``).
        val_every: epochs between validation passes.
        select: ``last`` (report the last epoch) or ``best_val``.
        test_batch_size: windows per forward pass at test time.
        timeline_videos: test videos drawn in ``timeline.png``.
        max_videos: use at most this many videos of each split (0: all), for quick checks.
        supervised: unused by detection (the ``--supervised`` row needs clip data).
    """

    window: int = 16
    train_dilations: List[int] = field(default_factory=lambda: [3, 4, 5])
    test_dilation: int = 4
    windows_per_video: int = 16
    epochs: int = 60
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    milestones: List[int] = field(default_factory=lambda: [40])
    gamma: float = 0.1
    finetune: bool = False
    adapt_input_norm: bool = False
    stream: Optional[str] = None
    smooth_k: int = 10
    smoothing: str = "centred"
    threshold: float = 0.4
    iou_thresholds: List[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    metrics: List[str] = field(default_factory=lambda: list(METRICS))
    val_fraction: float = 0.0
    val_by: str = "subject"
    val_every: int = 10
    select: str = "last"
    test_batch_size: int = 1024
    timeline_videos: int = 4
    max_videos: int = 0
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)

    def __post_init__(self):
        if self.window < 1 or self.test_dilation < 1 or not self.train_dilations or min(self.train_dilations) < 1:
            raise ConfigError("detection: window, test_dilation and every train_dilations value must be >= 1")
        for name in ("windows_per_video", "epochs", "batch_size", "test_batch_size", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"detection.{name}: must be >= 1, got {getattr(self, name)}")
        check_schedule_and_crops(self.milestones, None, "detection.")
        check_ranges("detection", self, [
            ("lr", lambda v: v > 0, "> 0"), ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("weight_decay", lambda v: v >= 0, ">= 0"), ("smooth_k", lambda v: v >= 0, ">= 0"),
            ("smoothing", lambda v: v in SMOOTHING, f"one of {SMOOTHING}")])
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"detection.threshold: must be in (0, 1], got {self.threshold}")
        if not self.iou_thresholds or not all(0 < t <= 1 for t in self.iou_thresholds):
            raise ConfigError("detection.iou_thresholds: values in (0, 1] required")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad or not self.metrics:
            raise ConfigError(f"detection.metrics: choose from {', '.join(METRICS)} (got {self.metrics})")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"detection.val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.select not in SELECT:
            raise ConfigError(f"detection.select: one of {', '.join(SELECT)}, got {self.select!r}")
        if self.select == "best_val" and self.val_fraction == 0:
            raise ConfigError("detection.select best_val needs val_fraction > 0 (never select on the test set)")
        if self.stream is not None and self.stream not in ("joint", "bone", "motion"):
            raise ConfigError(f"detection.stream: joint, bone or motion, got {self.stream!r}")


PROTOCOL = DetectionProtocol


# --------------------------------------------------------------------------- data

_NOT_SEQUENCES = ("holds {kind}, detection needs untrimmed videos (sequences), e.g. `pcm3 prepare pku1` or "
                  "`pcm3 prepare synthetic --untrimmed`")


class Videos:
    """The untrimmed videos of a prepared ``sequences`` folder with per-frame targets.

    Attributes:
        prepared: the :class:`~pcm3.data.prepared.Prepared` folder.
        num_classes: K (actions); targets are ``0..K`` with 0 = background.
    """

    def __init__(self, prepared):
        if prepared.kind != "sequences":
            raise DataError(prepared.root, _NOT_SEQUENCES.format(kind=prepared.kind))
        self.prepared = prepared
        self.num_classes = prepared.num_classes
        self.names = prepared.names
        self.lengths = np.diff(prepared.offsets).astype(np.int64)
        self.intervals = prepared.intervals()
        self.targets: Dict[int, np.ndarray] = {}
        for iv in self.intervals:
            i = iv["index"]
            if i not in self.targets:
                self.targets[i] = np.zeros(int(self.lengths[i]), dtype=np.int64)
            self.targets[i][iv["start"]:iv["end"]] = iv["label"] + 1
        self._scan_finite()

    #: the most bytes of frames scanned for NaN/inf up front; larger folders are checked as read
    SCAN_BYTES = SCAN_BYTES

    def _scan_finite(self, chunk: int = 1 << 16) -> None:
        data = self.prepared.data
        if int(np.prod(data.shape, dtype=np.int64)) * 4 > self.SCAN_BYTES:
            return
        for s in range(0, data.shape[0], chunk):
            self.check_frames(np.arange(s, min(s + chunk, data.shape[0])), np.asarray(data[s:s + chunk]))

    def check_frames(self, positions: np.ndarray, frames: np.ndarray) -> None:
        """One-line :class:`DataError` naming the video and frame of the first NaN/inf among
        ``frames`` ``(F, ...)``, read at the global frame indices ``positions`` ``(F,)``."""
        ok = np.isfinite(frames.reshape(frames.shape[0], -1)).all(axis=1)
        if ok.all():
            return
        g = int(np.min(np.asarray(positions)[~ok]))
        i = int(np.searchsorted(self.prepared.offsets, g, side="right") - 1)
        raise DataError(self.prepared.root / "data.npy",
                        f"video {i} ({self.names[i]}) holds non-finite values (NaN or inf) at frame "
                        f"{g - int(self.prepared.offsets[i])}; `pcm3 info` lists such samples")

    def target(self, i: int) -> np.ndarray:
        """Per-frame targets of video ``i``, ``(T,)`` int64 (0 = background)."""
        return self.targets.get(int(i), np.zeros(int(self.lengths[i]), dtype=np.int64))

    def ground_truth(self, indices: Sequence[int]) -> List[dict]:
        """Labelled intervals of ``indices`` as metric inputs (label numbers 1..K)."""
        keep = {int(i) for i in indices}
        return [{"video": self.names[iv["index"]], "label": iv["label"] + 1, "start": iv["start"], "end": iv["end"]}
                for iv in self.intervals if iv["index"] in keep]

    def frames(self, global_index: np.ndarray) -> torch.Tensor:
        """Frames at global indices ``(B, W)`` -> windows ``(B, C, W, V, M)`` float32."""
        flat = np.asarray(global_index).reshape(-1)
        order = np.argsort(flat, kind="stable")  # sorted reads from the memory map
        data = np.empty((flat.size,) + self.prepared.data.shape[1:], dtype=np.float32)
        data[order] = self.prepared.data[flat[order]]
        self.check_frames(flat, data)  # a folder too large to scan up front
        x = torch.from_numpy(data).view(*global_index.shape, *data.shape[1:])  # B x W x C x V x M
        return x.permute(0, 2, 1, 3, 4)


def check_sequence_encoder(encoder, prepared, where: str = "--encoder") -> None:
    """Refuse an encoder whose layout or (C, V, M) differs from a ``sequences`` folder's."""
    layout = getattr(encoder, "layout", None)
    if layout is not None and layout != prepared.layout:
        raise DataError(where, f"encoder of layout {layout!r} cannot read {prepared.root} (layout {prepared.layout!r})")
    cfg = getattr(encoder, "config", None)
    c, v, m = prepared.input_size
    if cfg is not None and hasattr(cfg, "num_joints") and (cfg.in_channels, cfg.num_joints, cfg.num_persons) != (c, v, m):
        raise DataError(where, f"encoder reads (C, V, M) = {(cfg.in_channels, cfg.num_joints, cfg.num_persons)}, "
                               f"{prepared.root} holds {(c, v, m)}")


def window_offsets(window: int) -> np.ndarray:
    """Frame offsets of a window in steps of ``d``: ``-window//2 .. window - window//2 - 1``."""
    return np.arange(window) - window // 2


def window_indices(centres: np.ndarray, lengths: np.ndarray, dilations: np.ndarray, window: int) -> np.ndarray:
    """Local frame indices ``(B, window)`` of windows around ``centres``, clamped to each video."""
    idx = centres[:, None] + dilations[:, None] * window_offsets(window)[None, :]
    return np.clip(idx, 0, lengths[:, None] - 1)


# --------------------------------------------------------------------------- post-processing

def smooth(probs: np.ndarray, k: int, mode: str = "centred") -> np.ndarray:
    """Mean filter over time of ``probs`` ``(T, K)``.

    ``centred``: the mean over frames ``[t - k, t + k]`` clamped to the video. ``release``: the
    authors' ``smoothing`` (``[t - k, t + k)`` with the end clamped to ``T - 1``, exclusive).
    """
    if k <= 0 or len(probs) == 0:
        return probs.copy()
    T = len(probs)
    csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    t = np.arange(T)
    s = np.clip(t - k, 0, None)
    e = np.minimum(t + k + 1, T) if mode == "centred" else np.minimum(t + k, T - 1)
    e = np.maximum(e, s + 1)  # at least one frame (the release divides by zero on 1-frame videos)
    return ((csum[e] - csum[s]) / (e - s)[:, None]).astype(np.float32)


def segments(probs: np.ndarray, threshold: float) -> List[tuple]:
    """Segments of ``probs`` ``(T, K + 1)`` (column 0 background): ``(class 1..K, start, end,
    confidence)``, ``end`` exclusive; active frames have ``1 - P(background) >= threshold``."""
    active = (1.0 - probs[:, 0]) >= threshold
    padded = np.concatenate([[False], active, [False]]).astype(np.int8)
    d = np.diff(padded)
    out = []
    for s, e in zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]):
        mean = probs[s:e, 1:].mean(axis=0)
        c = int(np.argmax(mean))
        out.append((c + 1, int(s), int(e), float(mean[c])))
    return out


# --------------------------------------------------------------------------- model

class _Mode:
    """Put the encoder into the protocol's mode (frozen eval, adapting input norm, fine-tuning)."""

    def __init__(self, encoder, finetune: bool, adapt_norm: bool):
        self.encoder, self.finetune, self.adapt = encoder, finetune, adapt_norm
        for p in encoder.parameters():
            p.requires_grad_(finetune)

    def train(self):
        if self.finetune:
            self.encoder.train()
        else:
            self.encoder.eval()
            if self.adapt and hasattr(self.encoder, "input_norm"):
                self.encoder.input_norm.train()

    def eval(self):
        self.encoder.eval()


def _features(encoder, x: torch.Tensor, stream: str, layout: str, grad: bool) -> torch.Tensor:
    with torch.set_grad_enabled(grad):
        return encoder(to_stream(x, stream, layout))


@torch.no_grad()
def predict_video(encoder, head, videos: Videos, i: int, *, window: int, dilation: int, stream: str, layout: str,
                  batch_size: int, device) -> np.ndarray:
    """Per-frame class probabilities ``(T, K + 1)`` of video ``i`` (one window per frame)."""
    T = int(videos.lengths[i])
    start = int(videos.prepared.offsets[i])
    frames = np.array(videos.prepared.data[start:start + T], dtype=np.float32)  # T x C x V x M
    videos.check_frames(np.arange(start, start + T), frames)  # a folder too large to scan up front
    clip = torch.from_numpy(frames).to(device)
    offs = torch.as_tensor(window_offsets(window) * dilation, device=device)
    out = []
    for s in range(0, T, batch_size):
        t = torch.arange(s, min(s + batch_size, T), device=device)
        idx = (t[:, None] + offs[None, :]).clamp(0, T - 1)  # B x W
        x = clip[idx].permute(0, 2, 1, 3, 4)                 # B x C x W x V x M
        out.append(F.softmax(head(encoder(to_stream(x, stream, layout))).float(), dim=1).cpu())
    return torch.cat(out).numpy()


def detect(probs: np.ndarray, protocol: DetectionProtocol) -> List[tuple]:
    """Smoothing, threshold and segments of one video's probabilities (see :func:`segments`)."""
    return segments(smooth(probs, protocol.smooth_k, protocol.smoothing), protocol.threshold)


def _evaluate_split(encoder, head, videos: Videos, indices, protocol, stream, layout, device, progress=False,
                    desc="test"):
    from pcm3.progress import track

    dets, probs = [], {}
    for i in track(indices, desc=desc, unit="video", disable=not progress):
        p = predict_video(encoder, head, videos, int(i), window=protocol.window, dilation=protocol.test_dilation,
                          stream=stream, layout=layout, batch_size=protocol.test_batch_size, device=device)
        probs[int(i)] = p
        for c, s, e, conf in detect(p, protocol):
            dets.append({"video": videos.names[int(i)], "label": c, "start": s, "end": e, "confidence": conf})
    names = [videos.names[int(i)] for i in indices]
    metrics = detection_metrics(videos.ground_truth(indices), dets, names, videos.num_classes,
                                protocol.iou_thresholds, protocol.metrics)
    return dets, probs, metrics


def _lr(protocol: DetectionProtocol, epoch: int) -> float:
    return protocol.lr * protocol.gamma ** sum(epoch >= m for m in protocol.milestones)


def train_head(encoder, videos: Videos, train_idx: np.ndarray, protocol: DetectionProtocol, *, stream: str,
               layout: str, device, seed: int, progress: bool = False, validate=None) -> tuple:
    """Train the linear head (and the encoder when fine-tuning) on random windows.

    Returns ``(head, history)``; ``validate(head) -> float`` (if given) is called every
    ``val_every`` epochs and with ``select: best_val`` the best head (and encoder) is kept.

    The head's initial weights come from ``seed`` (the global torch generator, seeded here and
    put back on return: :func:`pcm3.rng.preserved_rng`); the feature size D
    from the encoder's ``feature_dim``, else from one forward pass on one window.
    """
    def one_window():  # the window centred on the first frame of the first training video
        local = window_indices(np.zeros(1, dtype=np.int64), videos.lengths[train_idx[:1]],
                               np.asarray(protocol.train_dilations[:1]), protocol.window)
        x = videos.frames(videos.prepared.offsets[train_idx[:1]][:, None] + local)
        return to_stream(x.to(device), stream, layout)

    dim = feature_dim(encoder, one_window)
    with preserved_rng():
        torch.manual_seed(seed)
        return _train_head(encoder, dim, videos, train_idx, protocol, stream=stream, layout=layout, device=device,
                           seed=seed, progress=progress, validate=validate)


def _train_head(encoder, dim: int, videos: Videos, train_idx: np.ndarray, protocol: DetectionProtocol, *,
                stream: str, layout: str, device, seed: int, progress: bool, validate) -> tuple:
    from pcm3.progress import track

    head = torch.nn.Linear(dim, videos.num_classes + 1).to(device)
    mode = _Mode(encoder, protocol.finetune, protocol.adapt_input_norm)
    params = list(head.parameters()) + (list(encoder.parameters()) if protocol.finetune else [])
    opt = torch.optim.SGD(params, lr=protocol.lr, momentum=protocol.momentum, nesterov=protocol.nesterov,
                          weight_decay=protocol.weight_decay)
    lengths = videos.lengths[train_idx]
    offsets = videos.prepared.offsets[train_idx]
    targets = [videos.target(i) for i in train_idx]
    history, best, best_state = [], -1.0, None
    dil = np.asarray(protocol.train_dilations)
    for epoch in track(range(protocol.epochs), desc="detection head", unit="epoch", disable=not progress):
        rng = np.random.default_rng([seed, epoch])
        lr = _lr(protocol, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        vid = np.repeat(np.arange(len(train_idx)), protocol.windows_per_video)
        rng.shuffle(vid)
        centres = np.floor(rng.random(len(vid)) * lengths[vid]).astype(np.int64)
        d = dil[rng.integers(0, len(dil), len(vid))]
        local = window_indices(centres, lengths[vid], d, protocol.window)
        y_all = np.asarray([targets[v][c] for v, c in zip(vid, centres)], dtype=np.int64)
        mode.train()
        head.train()
        total, correct, n = 0.0, 0, 0
        for s in range(0, len(vid), protocol.batch_size):
            b = slice(s, s + protocol.batch_size)
            x = videos.frames(offsets[vid[b]][:, None] + local[b]).to(device)
            y = torch.as_tensor(y_all[b], device=device)
            logits = head(_features(encoder, x, stream, layout, protocol.finetune))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        row = {"epoch": epoch + 1, "lr": lr, "loss": total / n, "window_acc": 100.0 * correct / n}
        if validate is not None and ((epoch + 1) % protocol.val_every == 0 or epoch + 1 == protocol.epochs):
            mode.eval()
            head.eval()
            row["val_mAP_a@0.5"] = score = validate(head)
            if protocol.select == "best_val" and score > best:
                best = score
                # the encoder too where training changes it: fine-tuned weights, or the adapted input
                # BatchNorm statistics the selected head was trained and validated with
                keep_encoder = protocol.finetune or protocol.adapt_input_norm
                best_state = ({k: v.detach().clone() for k, v in head.state_dict().items()},
                              {k: v.detach().clone() for k, v in encoder.state_dict().items()} if keep_encoder
                              else None, epoch + 1)
        history.append(row)
    mode.eval()
    head.eval()
    if best_state is not None:
        head.load_state_dict(best_state[0])
        if best_state[1] is not None:
            encoder.load_state_dict(best_state[1])
        history.append({"selected_epoch": best_state[2]})
    return head, history


# --------------------------------------------------------------------------- outputs

def write_detections(path: Path, dets: Sequence[dict]) -> None:
    """``detections.csv``: ``video,class,start,end,confidence`` (class 1..K, 0-based, end exclusive)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "class", "start", "end", "confidence"])
        for d in dets:
            w.writerow([d["video"], d["label"], d["start"], d["end"], f"{d['confidence']:.6f}"])


def write_per_class(path: Path, metrics: dict, class_names: Sequence[str]) -> None:
    """``per_class_ap.csv``: AP per class (percent) for each metric and IoU threshold."""
    cols = [(m, t) for m, by_t in metrics.items() for t in by_t]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "name"] + [f"{m}_AP@{t}" for m, t in cols])
        for c, name in enumerate(class_names, start=1):
            row = [c, name]
            for m, t in cols:
                ap = metrics[m][t]["per_class"].get(c)
                row.append("" if ap is None else f"{100 * ap:.2f}")
            w.writerow(row)


def plot_timeline(path: Path, videos: Videos, indices: Sequence[int], dets: Sequence[dict],
                  probs: Optional[Dict[int, np.ndarray]] = None) -> None:
    """Ground truth and detections of ``indices`` as coloured bars per class, one panel per video,
    with ``1 - P(background)`` (smoothed input to the threshold) as a grey curve when given."""
    from matplotlib.patches import Patch

    from pcm3.visualize import class_colours, new_figure

    colours = class_colours(videos.num_classes)
    fig = new_figure(figsize=(12, 1.7 * len(indices) + 0.8))
    axes = fig.subplots(len(indices), 1, squeeze=False)
    used = set()
    for ax, i in zip(axes[:, 0], indices):
        name = videos.names[int(i)]
        for iv in videos.intervals:
            if iv["index"] == int(i):
                c = iv["label"] + 1
                ax.broken_barh([(iv["start"], iv["end"] - iv["start"])], (1.1, 0.8), color=colours[c])
                used.add(c)
        for d in dets:
            if d["video"] == name:
                ax.broken_barh([(d["start"], d["end"] - d["start"])], (0.1, 0.8), color=colours[d["label"]])
                ax.text(d["start"], 0.5, f"{d['confidence']:.2f}", fontsize=6, va="center")
                used.add(d["label"])
        if probs is not None and int(i) in probs:
            p = probs[int(i)]
            ax.plot(np.arange(len(p)), 2 * (1 - p[:, 0]), color="0.4", lw=0.6)
        ax.set_xlim(0, int(videos.lengths[int(i)]))
        ax.set_ylim(0, 2)
        ax.set_yticks([0.5, 1.5])
        ax.set_yticklabels(["detected", "truth"])
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("frame")
    names = videos.prepared.class_names
    ncol = min(4, max(1, len(used)))
    rows = -(-len(used) // ncol)
    fig.legend(handles=[Patch(color=colours[c], label=f"{c} {names[c - 1]}"[:40]) for c in sorted(used)],
               loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, min(0.5, (0.25 * rows + 0.2) / fig.get_figheight()), 1, 1))
    fig.savefig(path, dpi=110)


# --------------------------------------------------------------------------- the task

def _figures(metrics: dict) -> Dict[str, float]:
    out = {}
    for m, by_t in metrics.items():
        for t, r in by_t.items():
            out[f"mAP_a@{t} ({m})"] = 100.0 * r["mAP_a"]
            out[f"mAP_v@{t} ({m})"] = 100.0 * r["mAP_v"]
    return out


RAW_INPUT_REFUSED = ("--raw-input: not defined for detection (a frame classifier needs an encoder); use "
                     "--random-init for the untrained baseline")


def _parts(data, prepared, benchmark: Optional[str], p: DetectionProtocol):
    """``(benchmark, train videos, test videos)`` the task uses (:func:`dense_benchmark`, then
    ``max_videos``); a one-line DataError when either part is empty."""
    benchmark = dense_benchmark(SimpleNamespace(data=data, benchmark=benchmark), prepared, "video")
    train_idx = np.asarray(prepared.split(benchmark, "train"), dtype=np.int64)
    test_idx = np.asarray(prepared.split(benchmark, "test"), dtype=np.int64)
    if p.max_videos:
        train_idx, test_idx = train_idx[:p.max_videos], test_idx[:p.max_videos]
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(data, f"benchmark {benchmark!r} has no training or no test videos "
                              "(--benchmark all trains and tests on every video: a smoke test only)")
    return benchmark, train_idx, test_idx


def check_inputs(data, benchmark, protocol: DetectionProtocol, kind: str):
    """Before anything is written: an encoder row, untrimmed videos (``sequences``), a readable
    ``intervals.csv`` (:meth:`Prepared.intervals`), the benchmark (``xsub`` by default) and its
    training and test videos, not empty. Returns ``(prepared, benchmark)``."""
    from pcm3.data.prepared import Prepared

    if kind == "raw_input":
        raise ConfigError(RAW_INPUT_REFUSED)
    prepared = Prepared(data)
    if prepared.kind != "sequences":
        raise DataError(data, _NOT_SEQUENCES.format(kind=prepared.kind))
    prepared.intervals()
    benchmark, _, _ = _parts(data, prepared, benchmark, protocol)
    return prepared, benchmark


def run(ctx: EvalContext) -> dict:
    """Train the frame classifier on the training videos, detect in the test videos, score.

    Returns the task's result (``figures`` in percent: mAP_a/mAP_v per metric and IoU, frame
    accuracy; ``per_class_ap``, ``history``, ``splits``, ``notes``).
    """
    from pcm3.data.prepared import Prepared

    p: DetectionProtocol = ctx.protocol
    if ctx.encoder is None:
        raise ConfigError(RAW_INPUT_REFUSED)
    prepared = Prepared(ctx.data)
    videos = Videos(prepared)
    check_sequence_encoder(ctx.encoder, prepared)
    benchmark, train_idx, test_idx = _parts(ctx.data, prepared, ctx.benchmark, p)
    notes = []
    notes += smoke_test_notes(train_idx, test_idx, "videos")
    val_idx = np.zeros(0, dtype=np.int64)
    if p.val_fraction > 0:
        train_idx, val_idx = carve_validation(SimpleNamespace(prepared=prepared, indices=train_idx), p.val_fraction,
                                              ctx.seed, by=p.val_by)
    # a copy: training (fine-tuning, adapting input statistics, requires_grad) never touches the caller's encoder
    encoder = copy.deepcopy(ctx.encoder).to(ctx.device)
    stream = p.stream or getattr(encoder, "stream", "joint")
    layout = getattr(encoder, "layout", None) or prepared.layout

    validate = None
    if len(val_idx):
        def validate(head):
            _, _, m = _evaluate_split(encoder, head, videos, val_idx, p, stream, layout, ctx.device)
            key = "authors" if "authors" in m else next(iter(m))
            return 100.0 * m[key][f"{max(p.iou_thresholds):g}" if 0.5 not in p.iou_thresholds else "0.5"]["mAP_a"]

    t0 = time.perf_counter()
    head, history = train_head(encoder, videos, train_idx, p, stream=stream, layout=layout, device=ctx.device,
                               seed=ctx.seed, progress=ctx.progress, validate=validate)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    dets, probs, metrics = _evaluate_split(encoder, head, videos, test_idx, p, stream, layout, ctx.device,
                                           ctx.progress)
    test_s = time.perf_counter() - t0
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    write_detections(out / "detections.csv", dets)
    write_per_class(out / "per_class_ap.csv", metrics, prepared.class_names)
    with open(out / "history.csv", "w", newline="") as f:
        keys = list(dict.fromkeys(k for r in history for k in r))
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    shown = [int(i) for i in test_idx[:max(0, p.timeline_videos)]]
    if shown:
        plot_timeline(out / "timeline.png", videos, shown, dets,
                      {i: smooth(probs[i], p.smooth_k, p.smoothing) for i in shown})
    frame_hits = sum(int((np.argmax(smooth(probs[int(i)], p.smooth_k, p.smoothing), 1) == videos.target(i)).sum())
                     for i in test_idx)
    figures = _figures(metrics)
    figures["frame accuracy"] = 100.0 * frame_hits / float(videos.lengths[test_idx].sum())
    per_class = {m: {t: {str(c): 100.0 * ap for c, ap in r["per_class"].items()} for t, r in by_t.items()}
                 for m, by_t in metrics.items()}
    notes.append("encoder fine-tuned with the head (the paper's text)" if p.finetune else
                 "encoder frozen, linear head only (the authors' detection code; the paper's text fine-tunes the "
                 "whole model: --set finetune=true)")
    notes.append("authors = the PCM3 authors' detection code (Simple-Skeleton-Detection: VOC devkit mAP_a over the "
                 "classes present; mAP_v by removal with duplicates of a ground truth counted once); official = "
                 "PKU-MMD evaluate.py (best overlap with any ground truth, duplicates count, AP by removal from the "
                 f"lowest confidence, mAP_a over {videos.num_classes + 1} label slots); voc = one-to-one matching "
                 "with the best unmatched ground truth, all-point AP over the classes present")
    return {"figures": figures, "per_class_ap": per_class, "history": history, "notes": notes,
            "splits": {"train": int(len(train_idx)), "val": int(len(val_idx)), "test": int(len(test_idx))},
            "detections": len(dets), "train_seconds": train_s, "test_seconds": test_s,
            "benchmark_used": benchmark, "stream": stream}


def evaluate_detection(encoder, data, out, *, protocol: Optional[DetectionProtocol] = None, benchmark: str = "xsub",
                       device: str | torch.device = "cpu", seed: int = 0, progress: bool = False,
                       kind: str = "pretrained") -> dict:
    """Plain-function entry (e.g. for ``pcm3 demo``): run detection for ``encoder`` on ``data``
    and write the task's files into the existing folder ``out``; returns :func:`run`'s result."""
    ctx = EvalContext(task="detection", data=Path(data), benchmark=benchmark, encoder=encoder, encoder_kind=kind,
                      encoder_info={}, protocol=protocol or DetectionProtocol(), out=Path(out),
                      device=torch.device(device), seed=seed, progress=progress)
    return run(ctx)


def demo_protocol() -> DetectionProtocol:
    """Small, fast settings for ``pcm3 demo`` on the built-in untrimmed videos (CPU, about a
    minute with the demo encoder): 30 epochs (x0.1 at 20), everything else the protocol's."""
    return DetectionProtocol(epochs=30, milestones=[20], timeline_videos=3)
