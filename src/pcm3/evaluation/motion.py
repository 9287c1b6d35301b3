"""Motion prediction (paper Table 6): the encoder reads the observed frames, a residual recurrent
decoder predicts the next ones; MPJPE in millimetres.

The paper says only that it uses "the decoder in [27]" (Martinez, Black, Romero 2017, *On human
motion prediction using recurrent neural networks*) after the encoder and "the short-term motion
prediction protocol [27]"; it gives no horizons. The defaults here follow Martinez et al.: 50
observed frames and 10 predicted ones (400 ms at their 25 fps; 333 ms at the 30 fps of NTU,
PKU-MMD and the built-in data). They are protocol values (``observed``, ``predicted``): for
MSR Action3D (15 fps, clips of 13-76 frames) use e.g. ``observed=20, predicted=6`` (400 ms).

- **Encoder**: reads the ``observed`` frames (in its stream) and gives a feature ``(N, D)``;
  frozen in eval mode by default (``finetune`` trains it too).
- **Decoder** (Martinez et al.'s residual architecture): ``h0 = tanh(Linear(feature))``, then a
  GRU cell that at each step reads the current pose (the last observed pose first, then its own
  prediction) and outputs a velocity that is added to it: ``pose_{t+1} = pose_t + Linear(h_t)``.
  The output layer starts at zero, so the untrained decoder is the zero-velocity baseline.
- **Training**: Adam (lr 1e-3, x0.1 at epoch 20 of 30), batch 64, the MPJPE of the predicted
  frames as the loss (squared errors let the sensor's glitches dominate), one random window of ``observed + predicted`` frames
  per training clip per epoch. These are this project's choices (the paper gives none).
- **Metric**: MPJPE, the mean Euclidean distance between predicted and true joints, in
  millimetres (coordinates in metres x 1000), per predicted frame and averaged over them, on one
  window per test clip (the middle ``observed + predicted`` frames of its valid part), over the
  joints present (non-zero) both in the last observed frame and in the predicted frame (absent
  persons and joints lost by the sensor are not scored).
  Coordinates are the prepared data's (centred per frame on the first person's centre joint for
  NTU-style data: root-relative motion). Beside the encoder: **zero-velocity** (the last
  observed pose repeated); random init is the ``--random-init`` row.

Outputs: ``mpjpe.csv`` (per horizon: the encoder's and zero-velocity's MPJPE), ``mpjpe.png``
and ``prediction.png`` (true vs predicted skeletons of a test clip at a few horizons), both titled
with the row, stream, data set, benchmark and the observed -> predicted frames.
"""

from __future__ import annotations

import copy
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pcm3.checks import refuse_non_finite
from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.common import (EvalContext, SupervisedConfig, check_compatible, check_parts, check_ranges,
                                    check_schedule_and_crops,
                                    dense_benchmark,
                                    smoke_test_notes)
from pcm3.evaluation.features import feature_dim
from pcm3.rng import preserved_rng
from pcm3.skeleton import to_stream

DEFAULT_CONFIG = "eval_motion"


@dataclass
class MotionProtocol:
    """Motion-prediction settings (see the module docstring for where each default comes from).

    Attributes:
        observed: frames the encoder reads (50, Martinez et al.).
        predicted: frames predicted (10, Martinez et al.'s short term).
        decoder_hidden: GRU cell size of the decoder.
        epochs, batch_size, lr, weight_decay, milestones, gamma: Adam and its step schedule.
        finetune: train the encoder too (default frozen).
        stream: the encoder's input stream; None = the encoder's.
        fps: frames per second for the horizons in milliseconds; None = ``meta.json``'s ``fps``
            (30 when absent).
        max_train, max_test: use at most this many clips (0: all), for quick runs.
        render_sample: which eligible test clip ``prediction.png`` shows.
        supervised: how the ``--supervised`` row is trained (on the classification labels).
    """

    observed: int = 50
    predicted: int = 10
    decoder_hidden: int = 256
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    milestones: List[int] = field(default_factory=lambda: [20])
    gamma: float = 0.1
    finetune: bool = False
    stream: Optional[str] = None
    fps: Optional[float] = None
    max_train: int = 0
    max_test: int = 0
    render_sample: int = 0
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)

    def __post_init__(self):
        for name in ("observed", "predicted", "decoder_hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"motion.{name}: must be >= 1, got {getattr(self, name)}")
        check_schedule_and_crops(self.milestones, None, "motion.")
        check_ranges("motion", self, [("lr", lambda v: v > 0, "> 0"), ("weight_decay", lambda v: v >= 0, ">= 0")])
        if self.stream is not None and self.stream not in ("joint", "bone", "motion"):
            raise ConfigError(f"motion.stream: joint, bone or motion, got {self.stream!r}")


PROTOCOL = MotionProtocol


class ResidualGRUDecoder(nn.Module):
    """Martinez et al.'s residual recurrent decoder, started from an encoder feature.

    Args:
        feature_dim: D, the encoder's feature size.
        pose_dim: F = C * V * M values of one pose.
        hidden: GRU cell size.

    Shape:
        feature ``(N, D)``, last_pose ``(N, F)`` -> poses ``(N, steps, F)``.
    """

    def __init__(self, feature_dim: int, pose_dim: int, hidden: int = 256):
        super().__init__()
        self.init = nn.Linear(feature_dim, hidden)
        self.cell = nn.GRUCell(pose_dim, hidden)
        self.velocity = nn.Linear(hidden, pose_dim)
        nn.init.zeros_(self.velocity.weight)  # start as the zero-velocity baseline
        nn.init.zeros_(self.velocity.bias)

    def forward(self, feature: Tensor, last_pose: Tensor, steps: int) -> Tensor:
        h = torch.tanh(self.init(feature))  # N x hidden
        pose, out = last_pose, []
        for _ in range(steps):
            h = self.cell(pose, h)
            pose = pose + self.velocity(h)  # residual: a velocity added to the current pose
            out.append(pose)
        return torch.stack(out, dim=1)  # N x steps x F


def _poses(x: Tensor) -> Tensor:
    """``(N, C, T, V, M)`` -> ``(N, T, C * V * M)``."""
    n, c, t, v, m = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(n, t, c * v * m)


def _unposes(y: Tensor, c: int, v: int, m: int) -> Tensor:
    """``(N, T, C * V * M)`` -> ``(N, C, T, V, M)``."""
    n, t, _ = y.shape
    return y.reshape(n, t, c, v, m).permute(0, 2, 1, 3, 4)


def joint_mask(obs_last: Tensor, target: Tensor) -> Tensor:
    """``(N, T, V, M)`` float: joints present (non-zero) both in the last observed frame and in the
    target frame. Sensors lose joints (stored as zeros); a lost joint has no position to predict
    from or to score against. ``obs_last`` ``(N, C, V, M)``, ``target`` ``(N, C, T, V, M)``."""
    seen = (obs_last.abs().sum(dim=1) > 0)[:, None]                        # N x 1 x V x M
    joint = target.abs().sum(dim=1) > 0                                    # N x T x V x M
    return (seen & joint).float()


def mpjpe(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-sample, per-frame MPJPE in the data's units: ``(N, T)``; frames without a present
    joint give NaN. ``pred``/``target`` ``(N, C, T, V, M)``, ``mask`` ``(N, T, V, M)``."""
    dist = torch.linalg.vector_norm(pred - target, dim=1)                 # N x T x V x M
    count = mask.sum(dim=(2, 3))
    return (dist * mask).sum(dim=(2, 3)) / count.where(count > 0, torch.full_like(count, float("nan")))


class Windows:
    """Observed + predicted windows of the clips of a prepared folder.

    Only clips with at least ``observed + predicted`` valid frames are used.
    """

    def __init__(self, prepared, indices, observed: int, predicted: int, limit: int = 0):
        self.prepared, self.observed, self.predicted = prepared, observed, predicted
        span = observed + predicted
        idx = np.asarray(indices, dtype=np.int64)
        idx = idx[prepared.lengths[idx] >= span]
        self.indices = idx[:limit] if limit else idx
        self.span = span

    def __len__(self):
        return len(self.indices)

    def batch(self, rows: np.ndarray, starts: np.ndarray) -> Tensor:
        """Windows ``(B, C, span, V, M)`` of the clips ``self.indices[rows]`` from ``starts``."""
        order = np.argsort(self.indices[rows], kind="stable")
        data = np.empty((len(rows),) + tuple(self.prepared.shape[1:]), dtype=np.float32)
        data[order] = self.prepared.data[self.indices[rows][order]]
        refuse_non_finite(self.prepared, self.indices[rows], data)  # named, never a NaN MPJPE or loss
        t = starts[:, None] + np.arange(self.span)[None, :]
        win = data[np.arange(len(rows))[:, None], :, t]                 # B x span x C x V x M
        return torch.from_numpy(np.ascontiguousarray(win)).permute(0, 2, 1, 3, 4)

    def random_starts(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        room = self.prepared.lengths[self.indices[rows]] - self.span + 1
        return np.floor(rng.random(len(rows)) * room).astype(np.int64)

    def middle_starts(self, rows: np.ndarray) -> np.ndarray:
        return ((self.prepared.lengths[self.indices[rows]] - self.span) // 2).astype(np.int64)


def _forward(encoder, decoder, win: Tensor, observed: int, predicted: int, stream: str, layout: str,
             grad_encoder: bool) -> Tensor:
    obs = win[:, :, :observed]
    with torch.set_grad_enabled(grad_encoder and torch.is_grad_enabled()):
        feat = encoder(to_stream(obs, stream, layout))
    last = _poses(obs[:, :, -1:])[:, 0]
    c, _, v, m = obs.shape[1:]
    return _unposes(decoder(feat, last, predicted), c, v, m)


@torch.no_grad()
def evaluate_mpjpe(encoder, decoder, windows: Windows, *, stream: str, layout: str, device, batch_size: int = 256
                   ) -> Dict[str, np.ndarray]:
    """Per-horizon MPJPE in millimetres of the model and of zero-velocity on the middle windows."""
    o, p = windows.observed, windows.predicted
    sums = {"model": np.zeros(p), "zero_velocity": np.zeros(p)}
    counts = np.zeros(p)
    for s in range(0, len(windows), batch_size):
        rows = np.arange(s, min(s + batch_size, len(windows)))
        win = windows.batch(rows, windows.middle_starts(rows)).to(device)
        target = win[:, :, o:]
        mask = joint_mask(win[:, :, o - 1], target)
        zero = win[:, :, o - 1:o].expand_as(target)
        pred = _forward(encoder, decoder, win, o, p, stream, layout, False)
        for key, guess in (("model", pred), ("zero_velocity", zero)):
            e = mpjpe(guess, target, mask).cpu().numpy() * 1000.0   # metres -> mm
            sums[key] += np.nansum(e, axis=0)
        counts += np.sum(~np.isnan(mpjpe(zero, target, mask).cpu().numpy()), axis=0)
    return {k: v / np.maximum(counts, 1) for k, v in sums.items()}


def train_decoder(encoder, windows: Windows, protocol: MotionProtocol, *, stream: str, layout: str, device,
                  seed: int, progress: bool = False):
    """Train the decoder (and the encoder when fine-tuning); returns ``(decoder, history)``.

    The decoder's initial weights come from ``seed`` (the global torch generator, seeded here
    and put back on return: :func:`pcm3.rng.preserved_rng`); the feature size D
    from the encoder's ``feature_dim``, else from one forward pass on one observed window.
    """
    c, _, v, m = windows.prepared.shape[1:]

    def one_clip():  # the observed frames of the first window
        first = np.arange(1)
        win = windows.batch(first, windows.middle_starts(first))[:, :, :protocol.observed]
        return to_stream(win.to(device), stream, layout)

    dim = feature_dim(encoder, one_clip)
    with preserved_rng():
        torch.manual_seed(seed)
        return _train_decoder(encoder, dim, c * v * m, windows, protocol, stream=stream, layout=layout, device=device,
                              seed=seed, progress=progress)


def _train_decoder(encoder, dim: int, pose_dim: int, windows: Windows, protocol: MotionProtocol, *, stream: str,
                   layout: str, device, seed: int, progress: bool):
    from pcm3.progress import track

    decoder = ResidualGRUDecoder(dim, pose_dim, protocol.decoder_hidden).to(device)
    for q in encoder.parameters():
        q.requires_grad_(protocol.finetune)
    params = list(decoder.parameters()) + (list(encoder.parameters()) if protocol.finetune else [])
    opt = torch.optim.Adam(params, lr=protocol.lr, weight_decay=protocol.weight_decay)
    o, p = protocol.observed, protocol.predicted
    history = []
    for epoch in track(range(protocol.epochs), desc="motion decoder", unit="epoch", disable=not progress):
        rng = np.random.default_rng([seed, epoch])
        lr = protocol.lr * protocol.gamma ** sum(epoch >= mi for mi in protocol.milestones)
        for g in opt.param_groups:
            g["lr"] = lr
        encoder.train(protocol.finetune)
        decoder.train()
        order = rng.permutation(len(windows))
        total, n = 0.0, 0
        for s in range(0, len(order), protocol.batch_size):
            rows = order[s:s + protocol.batch_size]
            win = windows.batch(rows, windows.random_starts(rows, rng)).to(device)
            target = win[:, :, o:]
            mask = joint_mask(win[:, :, o - 1], target)                     # N x T x V x M
            pred = _forward(encoder, decoder, win, o, p, stream, layout, protocol.finetune)
            # the metric itself (mean joint distance): squared errors let the sensor's glitches dominate
            dist = torch.sqrt(((pred - target) ** 2).sum(dim=1) + 1e-8)     # N x T x V x M
            loss = (dist * mask).sum() / mask.sum().clamp_min(1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            n += len(rows)
        history.append({"epoch": epoch + 1, "lr": lr, "train_mpjpe_mm": 1000.0 * total / max(n, 1)})
    encoder.eval()
    decoder.eval()
    return decoder, history


# --------------------------------------------------------------------------- pictures

def plot_mpjpe(path: Path, rows: Dict[str, Sequence[float]], fps: float, title: str = "") -> None:
    """MPJPE (mm) per predicted frame, one line per row (model, zero-velocity, ...); ``title``
    above the axes (:func:`run` names the row, data, benchmark and horizon there)."""
    from pcm3.visualize import new_figure

    fig = new_figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, values in rows.items():
        h = np.arange(1, len(values) + 1)
        ax.plot(1000.0 * h / fps, values, marker="o", label=name)
    ax.set_xlabel(f"horizon (ms at {fps:g} fps)")
    ax.set_ylabel("MPJPE (mm)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def render_prediction(path: Path, observed_last: np.ndarray, target: np.ndarray, pred: np.ndarray, layout: str,
                      fps: float, title: str = "") -> None:
    """True (black) and predicted (red) skeletons at a few horizons; arrays ``(C, T, V, M)``
    (``observed_last`` ``(C, V, M)``)."""
    from pcm3.visualize import draw_pose, new_figure, view_axes

    T = target.shape[1]
    steps = sorted({0, T // 2 - 1, T - 1}) if T > 2 else list(range(T))
    axes_ = view_axes(np.concatenate([observed_last[:, None], target], axis=1), layout)
    fig = new_figure(figsize=(3 * (len(steps) + 1), 3.4))
    axes = fig.subplots(1, len(steps) + 1)
    draw_pose(axes[0], observed_last, layout, axes_, colour="0.2")
    axes[0].set_title("last observed", fontsize=9)
    for ax, t in zip(axes[1:], steps):
        draw_pose(ax, target[:, t], layout, axes_, colour="0.2")
        draw_pose(ax, pred[:, t], layout, axes_, colour="tab:red")
        ax.set_title(f"+{t + 1} ({1000 * (t + 1) / fps:.0f} ms)", fontsize=9)
    lim = _limits([observed_last] + [target[:, t] for t in steps] + [pred[:, t] for t in steps], axes_)
    for ax in axes:
        ax.set_xlim(*lim[0])
        ax.set_ylim(*lim[1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title + "  (black: true, red: predicted)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _limits(poses, axes_):
    pts = np.concatenate([q[:, :, 0].T for q in poses if np.any(q)], axis=0)  # person 1 joints
    pts = pts[np.any(pts != 0, axis=1)]
    h, vert, sign = axes_
    x, y = pts[:, h], sign * pts[:, vert]
    pad = 0.15
    cx, cy, r = (x.max() + x.min()) / 2, (y.max() + y.min()) / 2, max(np.ptp(x), np.ptp(y)) / 2 + pad
    return (cx - r, cx + r), (cy - r, cy + r)


# --------------------------------------------------------------------------- the task

RAW_INPUT_REFUSED = ("--raw-input: not defined for motion prediction (the decoder starts from an encoder feature); "
                     "zero-velocity is reported with every row, --random-init is the untrained row")


def _few_windows(prepared, indices, p: MotionProtocol, part: str) -> Optional[str]:
    """A warning when under a quarter (or fewer than 16) of the ``part`` clips are long enough for
    one ``observed + predicted`` window: the figures then rest on a handful of clips. A part
    whose every clip is long enough is never warned of, however small."""
    idx = np.asarray(indices, dtype=np.int64)
    span = p.observed + p.predicted
    usable = int((prepared.lengths[idx] >= span).sum())
    if usable == idx.size or (usable >= 16 and usable >= 0.25 * idx.size):  # every clip, or enough
        return None
    return (f"only {usable} of the {idx.size} {part} clips hold observed + predicted = {span} frames (the others "
            f"are shorter and are left out): lower --set observed=N --set predicted=N (MSR Action3D at 15 fps: "
            "observed=20 predicted=6)")


def check_inputs(data, benchmark, protocol: MotionProtocol, kind: str):
    """Before anything is written: an encoder row, clips, the benchmark (``xsub`` by default), and
    its training and test parts (present, not empty, labels, lengths, NaN/inf;
    :func:`pcm3.evaluation.common.check_parts`; labels 0..C-1 only for the ``--supervised`` row,
    which trains on them). Returns ``(prepared, benchmark, train indices, test indices)``."""
    from types import SimpleNamespace

    from pcm3.data.prepared import Prepared

    if kind == "raw_input":
        raise ConfigError(RAW_INPUT_REFUSED)
    prepared = Prepared(data)
    if prepared.kind != "clips":
        raise DataError(data, f"holds {prepared.kind}; motion prediction needs clips (e.g. `pcm3 prepare "
                              "synthetic`, msr3d, ntu60)")
    benchmark = dense_benchmark(SimpleNamespace(data=data, benchmark=benchmark), prepared, "clip")
    parts = check_parts(prepared, benchmark, ("train", "test"), labelled=kind == "supervised")
    return prepared, benchmark, parts["train"], parts["test"]


def run(ctx: EvalContext) -> dict:
    """Train the decoder on the training clips, report MPJPE on the test clips.

    Returns the task's result: ``figures`` (MPJPE in mm of the encoder row and of zero-velocity,
    averaged and per horizon), ``units``, ``mpjpe_per_horizon``, ``history``, ``splits``, ``notes``.
    """
    p: MotionProtocol = ctx.protocol
    if ctx.encoder is None:
        raise ConfigError(RAW_INPUT_REFUSED)
    prepared, benchmark, train_idx, test_idx = check_inputs(ctx.data, ctx.benchmark, p, ctx.encoder_kind)
    check_compatible(ctx.encoder, prepared)
    train = Windows(prepared, train_idx, p.observed, p.predicted, p.max_train)
    test = Windows(prepared, test_idx, p.observed, p.predicted, p.max_test)
    if len(train) == 0 or len(test) == 0:
        raise DataError(ctx.data, f"no {'training' if len(train) == 0 else 'test'} clip has observed + predicted = "
                                  f"{p.observed + p.predicted} frames; lower them with --set observed=N "
                                  "--set predicted=N")
    fps = float(p.fps or prepared.meta.get("fps") or 30.0)
    # a copy: training (fine-tuning, adapting input statistics, requires_grad) never touches the caller's encoder
    encoder = copy.deepcopy(ctx.encoder).to(ctx.device)
    stream = p.stream or getattr(encoder, "stream", "joint")
    layout = getattr(encoder, "layout", None) or prepared.layout
    t0 = time.perf_counter()
    decoder, history = train_decoder(encoder, train, p, stream=stream, layout=layout, device=ctx.device,
                                     seed=ctx.seed, progress=ctx.progress)
    train_s = time.perf_counter() - t0
    errors = evaluate_mpjpe(encoder, decoder, test, stream=stream, layout=layout, device=ctx.device)
    label = {"pretrained": "encoder", "random_init": "random init", "supervised": "supervised"}.get(
        ctx.encoder_kind, ctx.encoder_kind)
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "mpjpe.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "ms", f"{label}_mm", "zero_velocity_mm"])
        for t in range(p.predicted):
            w.writerow([t + 1, f"{1000 * (t + 1) / fps:.1f}", f"{errors['model'][t]:.2f}",
                        f"{errors['zero_velocity'][t]:.2f}"])
    # the figures' titles name the run: its row, data, benchmark and horizon (two runs that differ
    # only in observed / predicted frames are told apart)
    what = (f"{ctx.encoder_kind.replace('_', ' ')} ({stream}), {prepared.meta.get('dataset') or Path(ctx.data).name} "
            f"{benchmark}")
    horizon = (f"{p.observed} observed -> {p.predicted} predicted frames ({1000 * p.predicted / fps:.0f} ms at "
               f"{fps:g} fps)")
    plot_mpjpe(out / "mpjpe.png", {label: errors["model"], "zero-velocity": errors["zero_velocity"]}, fps,
               title=f"MPJPE per predicted frame, {what}\n{horizon}")
    _render(out / "prediction.png", encoder, decoder, test, p, stream, layout, ctx.device, fps,
            run_title=f"{what}, {horizon}")
    figures = {f"MPJPE ({label})": float(errors["model"].mean()),
               "MPJPE (zero-velocity)": float(errors["zero_velocity"].mean())}
    for t in sorted({0, p.predicted // 2 - 1, p.predicted - 1} - {-1}):
        figures[f"MPJPE@{t + 1} ({label})"] = float(errors["model"][t])
        figures[f"MPJPE@{t + 1} (zero-velocity)"] = float(errors["zero_velocity"][t])
    units = {k: "mm" for k in figures}
    defaults = (p.observed, p.predicted) == (MotionProtocol.observed, MotionProtocol.predicted)
    notes = [f"{p.observed} observed, {p.predicted} predicted frames ({1000 * p.predicted / fps:.0f} ms at {fps:g} "
             "fps); the paper gives no horizons, "
             + ("these defaults follow" if defaults else "set by the protocol (the defaults, 50 -> 10, follow")
             + " Martinez et al. 2017 (50 -> 10 at 25 fps)" + ("" if defaults else ")")]
    notes += smoke_test_notes(train_idx, test_idx, "clips")
    warnings = [w for w in (_few_windows(prepared, train_idx, p, "training"), _few_windows(prepared, test_idx, p, "test"))
                if w]
    return {"figures": figures, "units": units, "notes": [*notes, *warnings], "warnings": warnings, "history": history,
            "mpjpe_per_horizon": {label: errors["model"].tolist(), "zero_velocity": errors["zero_velocity"].tolist()},
            "splits": {"train": len(train), "test": len(test)}, "train_seconds": train_s, "fps": fps,
            "benchmark_used": benchmark,
            "stream": stream}


@torch.no_grad()
def _render(path, encoder, decoder, windows: Windows, p: MotionProtocol, stream, layout, device, fps,
            run_title: str = ""):
    row = np.asarray([min(max(p.render_sample, 0), len(windows) - 1)])
    win = windows.batch(row, windows.middle_starts(row)).to(device)
    pred = _forward(encoder, decoder, win, p.observed, p.predicted, stream, layout, False)[0].cpu().numpy()
    win = win[0].cpu().numpy()
    pred = pred * np.any(win[:, p.observed - 1] != 0, axis=0)[None, None]  # absent persons / lost joints: not drawn
    name = windows.prepared.names[int(windows.indices[row[0]])]
    render_prediction(path, win[:, p.observed - 1], win[:, p.observed:], pred, layout, fps,
                      title=f"{run_title}\n{name}" if run_title else name)


def evaluate_motion(encoder, data, out, *, protocol: Optional[MotionProtocol] = None, benchmark: Optional[str] = "xsub",
                    device: str | torch.device = "cpu", seed: int = 0, progress: bool = False,
                    kind: str = "pretrained") -> dict:
    """Plain-function entry (e.g. for ``pcm3 demo``): run motion prediction for ``encoder`` on the
    clips in ``data``, writing the task's files into the existing folder ``out``."""
    ctx = EvalContext(task="motion", data=Path(data), benchmark=benchmark, encoder=encoder, encoder_kind=kind,
                      encoder_info={}, protocol=protocol or MotionProtocol(), out=Path(out),
                      device=torch.device(device), seed=seed, progress=progress)
    return run(ctx)


def demo_protocol() -> MotionProtocol:
    """Small, fast settings for ``pcm3 demo`` on the built-in clips (CPU): 40 observed and 10
    predicted frames, 8 epochs (x0.1 at 6), at most 480 training and 480 test clips."""
    return MotionProtocol(observed=40, predicted=10, epochs=8, milestones=[6], max_train=480, max_test=480)
