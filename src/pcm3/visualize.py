"""Pictures of skeletons: animated samples, masked input vs reconstruction, detections.

``pcm3 visualize DIR --sample NAME|INDEX --out anim.gif`` draws one sample of a prepared folder
as an animation (matplotlib, written by its Pillow writer): the bones of the folder's layout,
person 1 in blue, person 2 in orange, absent persons and lost joints left out (:func:`shown_joints`:
the readers write zeros for both; the centre joint of centred data is zero too, and drawn). The
GIF gets a record ``.NAME.gif.pcm3`` beside it: ``--overwrite`` replaces only a GIF it proves
``pcm3``'s. The view is the plane of
the body's two largest extents (its height and its width), so it works for any coordinate
convention (NTU-normalised z-up data, camera y-up data).

- ``--checkpoint RUN``: the PCM3 run's masked-prediction branch on the sample (its test-time
  crop, resized to the run's clip length, a mask drawn from the run's mask config): three
  panels, the masked input (masked joints hidden), the reconstruction and the original.
- ``--detections FILE`` (a ``detections.csv`` of ``pcm3 eval detection``) on an untrimmed
  video: the skeleton above a timeline of the true and detected intervals, coloured by class,
  with the current frame marked and the true / detected class named in the title.

Every picture of pcm3 (these, the evaluation's and the loss curves) is drawn on a figure of its
own (:func:`new_figure`), outside pyplot: the process's matplotlib backend and pyplot's figures
are never touched, so a notebook's inline plots keep working after a call.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from pcm3.errors import ConfigError, DataError
from pcm3.skeleton import get_layout

PERSON_COLOURS = ("tab:blue", "tab:orange")


# --------------------------------------------------------------------------- drawing

def view_axes(x: np.ndarray, layout) -> Tuple[int, int, float]:
    """``(horizontal axis, vertical axis, sign)`` for drawing ``x`` ``(C, T, V, M)``.

    The vertical axis is the coordinate along which person 1's joints spread most (the body's
    height), the horizontal one the next; ``sign`` puts the layout's head above its centre joint.
    """
    layout = get_layout(layout)
    p1 = np.asarray(x)[..., 0]                                  # C x T x V
    present = np.any(p1 != 0, axis=0)                           # T x V
    frames = np.nonzero(present.any(axis=1))[0]
    if frames.size == 0:
        return 0, 1, 1.0
    spread = np.zeros(p1.shape[0])
    for t in frames[:: max(1, len(frames) // 50)]:
        pts = p1[:, t, present[t]]
        spread += pts.max(axis=1) - pts.min(axis=1)
    order = np.argsort(-spread)
    vert, horiz = int(order[0]), int(order[1])
    head = layout.joint_names.index("head") if "head" in layout.joint_names else None
    sign = 1.0
    if head is not None:
        diff = p1[vert, frames, head] - p1[vert, frames, layout.center]
        sign = 1.0 if np.nanmean(diff) >= 0 else -1.0
    return horiz, vert, sign


def shown_joints(x: np.ndarray, layout) -> np.ndarray:
    """``(T, V, M)`` bool: the joints of ``x`` ``(C, T, V, M)`` to draw.

    The readers write zeros for a person absent from a frame (every joint) and keep a joint the
    sensor lost at zero (NTU: :func:`pcm3.data.ntu.center_on_spine` leaves exact zeros zero).
    Centring (NTU, MSR, ...) also makes person 1's centre joint exactly zero, in every frame
    where person 1 is there: that joint is the origin, not lost. So a person is drawn in a frame
    where any of its joints is non-zero, with its non-zero joints, and person 1's centre joint
    too when it is zero in all of person 1's frames (centred data; in world coordinates a zero
    there is a lost joint).
    """
    x = np.asarray(x)
    nonzero = np.any(x != 0, axis=0)               # T x V x M
    shown = nonzero.copy()
    c = get_layout(layout).center
    there = nonzero[..., 0].any(axis=1)            # T: person 1 present
    if there.any() and not nonzero[there, c, 0].any():
        shown[:, c, 0] = there
    return shown


def draw_pose(ax, pose: np.ndarray, layout, axes_: Tuple[int, int, float], colour: Optional[str] = None,
              alpha: float = 1.0, joints: Optional[np.ndarray] = None) -> list:
    """Draw the bones of ``pose`` ``(C, V, M)``; ``joints`` ``(V, M)`` bool: the joints to draw
    (default: :func:`shown_joints` of this pose alone). Returns the line artists."""
    layout = get_layout(layout)
    h, v, sign = axes_
    if joints is None:
        joints = shown_joints(np.asarray(pose)[:, None], layout)[0]
    artists = []
    for m in range(pose.shape[-1]):
        p = pose[..., m]
        shown = joints[:, m]
        if not shown.any():
            continue
        c = colour or PERSON_COLOURS[m % len(PERSON_COLOURS)]
        for a, b in layout.bones:
            if shown[a] and shown[b]:
                artists += ax.plot([p[h, a], p[h, b]], [sign * p[v, a], sign * p[v, b]], color=c, lw=2, alpha=alpha)
        artists += ax.plot(p[h, shown], sign * p[v, shown], "o", color=c, ms=2.5, alpha=alpha)
    return artists


def _limits(x: np.ndarray, axes_, pad: float = 0.1):
    h, v, sign = axes_
    pts = np.moveaxis(np.asarray(x), 0, -1).reshape(-1, x.shape[0])
    pts = pts[np.any(pts != 0, axis=1)]
    if len(pts) == 0:
        return (-1, 1), (-1, 1)
    xs, ys = pts[:, h], sign * pts[:, v]
    r = max(np.ptp(xs), np.ptp(ys)) / 2 + pad
    cx, cy = (xs.max() + xs.min()) / 2, (ys.max() + ys.min()) / 2
    return (cx - r, cx + r), (cy - r, cy + r)


def new_figure(**kwargs):
    """A :class:`matplotlib.figure.Figure` (``kwargs``: ``figsize``...) drawn by the Agg canvas.

    Not pyplot's: no backend is chosen (``matplotlib.use``) and the figure is in no list of
    pyplot's, so nothing global changes and nothing needs closing (freed with its last
    reference). Pixels as ``pyplot.subplots`` under the Agg backend draws them.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def class_colours(num_classes: int) -> list:
    """One colour per class number 1..K (index 0 unused)."""
    import matplotlib

    if num_classes <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [None] + [cmap(i / 20) for i in range(num_classes)]
    from matplotlib.colors import hsv_to_rgb

    # many classes: hues a golden-ratio step apart, so neighbouring class numbers differ clearly
    return [None] + [tuple(hsv_to_rgb(((0.618034 * i) % 1.0, 0.75 if i % 2 else 0.55, 0.95 if i % 3 else 0.75)))
                     for i in range(num_classes)]


def _writer(fps: float):
    from matplotlib.animation import PillowWriter

    try:
        import PIL  # noqa: F401  (matplotlib depends on Pillow; checked for a clear message)
    except ImportError:  # pragma: no cover
        raise ConfigError("writing a GIF needs Pillow (pip install pillow)") from None
    return PillowWriter(fps=fps)


#: The kind in the record (``.NAME.gif.pcm3``) written beside each GIF.
GIF_KIND = "animation"


def check_out(out: Path, overwrite: bool = False, protect: Sequence = ()) -> Path:
    """A ``.gif`` path in an existing folder, outside the inputs ``protect`` and any pcm3 folder
    written whole; an existing file is replaced only with ``overwrite`` and only when its record
    proves it a GIF of ``pcm3 visualize`` (:func:`pcm3.outputs.check_recorded_output`)."""
    from pcm3.outputs import check_recorded_output

    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise ConfigError(f"--out {out}: the animation is written as a GIF (use a .gif name)")
    if not out.parent.is_dir():
        raise DataError(out.parent, "no such folder for --out")
    check_recorded_output([out], GIF_KIND, overwrite, what="pcm3 visualize", protect=protect)
    return out


def _save(anim, out: Path, fps: float) -> None:
    """Write the GIF under a temporary name, renamed into place with its record when complete."""
    from pcm3.outputs import recorded_output, write_error

    out = Path(out)
    try:
        with recorded_output([out], GIF_KIND) as (tmp,):
            anim.save(str(tmp), writer=_writer(fps))
    except OSError as e:
        raise write_error(out, e, "the GIF") from None


# --------------------------------------------------------------------------- samples

def find_sample(prepared, sample: str | int) -> int:
    """Index of ``sample`` (a name in ``samples.csv`` or an index) in ``prepared``, whose label
    and length are checked as the loaders check them (:func:`pcm3.checks.check_samples`: a
    length of 0 or beyond the clips, a label outside the classes is one line naming the file)."""
    from pcm3.checks import check_samples

    names = prepared.names  # a samples.csv that is not one row per sample: a DataError naming it
    s = str(sample)
    if s in names:
        i = names.index(s)
    else:
        try:
            i = int(s)
        except ValueError:
            raise DataError(prepared.root, f"no sample named {s!r} (give a name from samples.csv or an index)") from None
        if not 0 <= i < len(prepared):
            raise DataError(prepared.root, f"sample index {i} outside 0..{len(prepared) - 1}")
    check_samples(prepared, np.array([i], dtype=np.int64))
    return i


def _frames(prepared, i: int) -> np.ndarray:
    """The valid frames of sample ``i``: ``(C, T, V, M)``."""
    x = prepared.sample(i)
    return x[:, :int(prepared.lengths[i])] if prepared.kind == "clips" else x


def _subsample(T: int, max_frames: int) -> np.ndarray:
    step = max(1, -(-T // max_frames)) if max_frames > 0 else 1
    return np.arange(0, T, step)


def animate_sample(prepared, i: int, out: Path, *, fps: float = 15.0, max_frames: int = 300) -> Path:
    """Animated skeleton of sample ``i`` (every frame, or evenly thinned to ``max_frames``)."""
    from matplotlib.animation import FuncAnimation

    x = _frames(prepared, i)
    layout = prepared.layout
    shown = shown_joints(x, layout)
    axes_ = view_axes(x, layout)
    xlim, ylim = _limits(x, axes_)
    frames = _subsample(x.shape[1], max_frames)
    fig = new_figure(figsize=(4, 4))
    ax = fig.subplots()
    label = prepared.labels[i]
    title = prepared.names[i] + (f": {prepared.class_names[label]}" if 0 <= label < prepared.num_classes else "")

    def draw(k):
        ax.clear()
        draw_pose(ax, x[:, frames[k]], layout, axes_, joints=shown[frames[k]])
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}\nframe {frames[k]}", fontsize=8)
        return []

    anim = FuncAnimation(fig, draw, frames=len(frames), blit=False)
    _save(anim, out, fps)
    return Path(out)


def reconstruct(run, x: np.ndarray, length: int, seed: int = 0, layout: Optional[str] = None, data=None):
    """The masked-prediction branch of the run's model on one clip.

    Args:
        run: a PCM3 run folder or checkpoint file.
        x: the clip ``(C, T, V, M)`` (joints, metres); length: its valid frames.
        layout, data: the clip's layout and the folder it comes from (for the message): a run
            pretrained on another layout, or on another ``(C, V, M)``, is a one-line DataError.

    Returns:
        ``(view (C, L, V, M), mask (L, V, M) bool True = masked, reconstruction (C, L, V, M))``
        with ``L`` the run's clip length, all in the joint stream. A run pretrained on the motion
        stream predicts frame-to-frame differences: its reconstruction is the clip's first frame
        plus the running sum of the differences, predicted where masked and the clip's own
        elsewhere (:func:`pcm3.skeleton.from_motion`), so an error carries on to later frames.
    """
    import torch

    from pcm3.augment import center_crop_resize
    from pcm3.config import Config, from_dict
    from pcm3.export import _find_checkpoint
    from pcm3.masking import make_mask
    from pcm3.pretrain import build_model, load_checkpoint
    from pcm3.skeleton import from_motion, to_stream

    ckpt = load_checkpoint(_find_checkpoint(run))
    cfg = from_dict(Config, ckpt["config"], f"{run} (config)")
    if cfg.data.stream not in ("joint", "motion"):
        raise ConfigError(f"--checkpoint {run}: pretrained on the {cfg.data.stream} stream; only joint- and "
                          "motion-stream reconstructions can be drawn as skeletons")
    if not cfg.loss.masked_prediction:
        raise ConfigError(f"--checkpoint {run}: this run has no masked-prediction branch (loss.masked_prediction off)")
    run_layout = (ckpt.get("data") or {}).get("layout", "ntu25")
    where = data if data is not None else "the sample"
    if layout is not None and run_layout != layout:
        raise DataError(run, f"run of layout {run_layout!r} cannot read {where} (layout {layout!r}); give a run "
                             "pretrained on this layout")
    enc = cfg.model.encoder
    want = tuple(getattr(enc, k, None) for k in ("in_channels", "num_joints", "num_persons"))
    have = (int(x.shape[0]), int(x.shape[2]), int(x.shape[3]))
    if None not in want and want != have:
        raise DataError(run, f"run's encoder reads (C, V, M) = {want}, {where} holds {have}; give a run "
                             "pretrained on this data's shape")
    from pcm3.rng import preserved_rng

    with preserved_rng():  # build_model seeds the global generators; its weights are replaced below
        model = build_model(cfg)
    model.load_state_dict(ckpt["model"])
    model.eval()
    layout = run_layout
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x))[None]
        view = center_crop_resize(xt, torch.tensor([length]), ratio=cfg.views.test_crop_ratio, out_len=cfg.views.out_len)
        n, _, t, _, m = view.shape
        mask = make_mask(cfg.mask, n, t, layout, m, generator=g)
        inp = to_stream(view, cfg.data.stream, layout)  # as pretraining feeds the masked view
        masked = inp.masked_fill(mask.unsqueeze(1), 0.0)
        feat, seq = model.encoder_q(masked, domain_prompt=model._domain("mask"), return_sequence=True)
        recon = model.decoder(model._task(seq, "mp", g))
        if cfg.data.stream == "motion":  # the predicted differences where masked, the clip's elsewhere
            recon = from_motion(torch.where(mask.unsqueeze(1), recon, inp), view[:, :, :1])
    return view[0].numpy(), mask[0].numpy(), recon[0].numpy()


def animate_reconstruction(prepared, i: int, run, out: Path, *, fps: float = 10.0, seed: int = 0) -> Path:
    """Masked input, reconstruction and original of sample ``i`` side by side (animated)."""
    from matplotlib.animation import FuncAnimation

    if prepared.kind != "clips":
        raise DataError(prepared.root, "--checkpoint needs a clip data set (the run's input), not untrimmed videos")
    x = _frames(prepared, i)
    layout = prepared.layout
    view, mask, recon = reconstruct(run, x, x.shape[1], seed, layout=layout, data=prepared.root)
    present = shown_joints(view, layout)                         # L x V x M
    recon = recon * present[None]                                # absent persons and lost joints stay absent
    axes_ = view_axes(view, layout)
    xlim, ylim = _limits(np.concatenate([view, recon], axis=1), axes_)
    fig = new_figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 3)
    titles = ("masked input", "reconstruction", "original")
    ratio = float(mask[present].mean()) if present.any() else 0.0

    def draw(t):
        for ax, title in zip(axes, titles):
            ax.clear()
            if title == "masked input":
                draw_pose(ax, view[:, t], layout, axes_, joints=~mask[t] & present[t])
            elif title == "reconstruction":
                draw_pose(ax, view[:, t], layout, axes_, colour="0.8", joints=~mask[t] & present[t])
                draw_pose(ax, recon[:, t], layout, axes_, colour="tab:red", joints=present[t])
            else:
                draw_pose(ax, view[:, t], layout, axes_, joints=present[t])
            ax.set_xlim(*xlim)
            ax.set_ylim(*ylim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
        fig.suptitle(f"{prepared.names[i]}  frame {t + 1}/{view.shape[1]}  ({100 * ratio:.0f}% of joints masked)",
                     fontsize=9)
        return []

    anim = FuncAnimation(fig, draw, frames=view.shape[1], blit=False)
    _save(anim, out, fps)
    return Path(out)


def read_detections(path) -> List[dict]:
    """Read a ``detections.csv`` (``video,class,start,end,confidence``); one-line DataError if malformed."""
    from pcm3.data.common import read_text

    lines = read_text(path, "detections file").splitlines()
    header = [h.strip() for h in lines[0].split(",")] if lines else []
    if header != ["video", "class", "start", "end", "confidence"]:
        raise DataError(path, "not a detections.csv (header video,class,start,end,confidence)")
    out = []
    for row in csv.DictReader(lines):
        try:
            out.append({"video": row["video"], "label": int(row["class"]), "start": int(row["start"]),
                        "end": int(row["end"]), "confidence": float(row["confidence"])})
        except (TypeError, ValueError):
            raise DataError(path, f"line {len(out) + 2}: expected video,class,start,end,confidence") from None
        if not 0 <= out[-1]["start"] < out[-1]["end"]:
            raise DataError(path, f"line {len(out) + 1}: expected 0 <= start < end (end exclusive), "
                                  f"got {out[-1]['start']}..{out[-1]['end']}")
    return out


def animate_detections(prepared, i: int, detections: Sequence[dict], out: Path, *, fps: float = 15.0,
                       max_frames: int = 300) -> Path:
    """An untrimmed video with its true and detected intervals below, the current frame marked."""
    from matplotlib.animation import FuncAnimation

    if prepared.kind != "sequences":
        raise DataError(prepared.root, "--detections needs untrimmed videos (a sequences folder)")
    x = _frames(prepared, i)
    name = prepared.names[i]
    truth = [(iv["label"] + 1, iv["start"], iv["end"]) for iv in prepared.intervals() if iv["index"] == i]
    found = [(d["label"], d["start"], d["end"]) for d in detections if d["video"] == name]
    K = prepared.num_classes
    if any(not 1 <= c <= K for c, _, _ in found):
        raise DataError(prepared.root, f"detections of {name} have classes outside 1..{K}: not this data set's")
    if any(e > x.shape[1] for _, _, e in found):
        raise DataError(prepared.root, f"detections of {name} end after its {x.shape[1]} frames: not this data set's")
    colours = class_colours(K)
    layout = prepared.layout
    shown = shown_joints(x, layout)
    axes_ = view_axes(x, layout)
    xlim, ylim = _limits(x, axes_)
    frames = _subsample(x.shape[1], max_frames)
    fig = new_figure(figsize=(6, 6))
    ax = fig.add_axes((0.1, 0.3, 0.8, 0.62))
    tl = fig.add_axes((0.15, 0.07, 0.8, 0.15))
    for row, items in ((1.1, truth), (0.1, found)):
        for c, s, e in items:
            tl.broken_barh([(s, e - s)], (row, 0.8), color=colours[c])
    tl.set_xlim(0, x.shape[1])
    tl.set_ylim(0, 2)
    tl.set_yticks([0.5, 1.5])
    tl.set_yticklabels(["detected", "truth"], fontsize=8)
    tl.set_xlabel("frame", fontsize=8)
    cursor = tl.axvline(0, color="k", lw=1)

    def at(items, t):
        return next((c for c, s, e in items if s <= t < e), 0)

    def label(c):
        return "background" if c == 0 else f"{c} {prepared.class_names[c - 1]}"

    def draw(k):
        t = int(frames[k])
        ax.clear()
        draw_pose(ax, x[:, t], layout, axes_, joints=shown[t])
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{name}  frame {t}\ntrue: {label(at(truth, t))}   detected: {label(at(found, t))}", fontsize=9)
        cursor.set_xdata([t, t])
        return []

    anim = FuncAnimation(fig, draw, frames=len(frames), blit=False)
    _save(anim, out, fps)
    return Path(out)


def visualize(data: str | os.PathLike, sample: str | int, out: str | os.PathLike, *, checkpoint=None,
              detections=None, fps: Optional[float] = None, max_frames: int = 300, seed: int = 0,
              overwrite: bool = False) -> Path:
    """Write the GIF of ``sample`` of the prepared folder ``data`` (see the module docstring)."""
    from pcm3.data.prepared import Prepared

    if checkpoint is not None and detections is not None:
        raise ConfigError("--checkpoint and --detections: give one of them")
    check_out(Path(out), overwrite, protect=[p for p in (data, detections) if p is not None])
    prepared = Prepared(data)
    i = find_sample(prepared, sample)
    if checkpoint is not None:
        return animate_reconstruction(prepared, i, checkpoint, Path(out), fps=fps or 10.0, seed=seed)
    if detections is not None:
        found = read_detections(detections)
        if found and not set(d["video"] for d in found) & set(prepared.names):
            raise DataError(detections, f"names no video of {prepared.root}: detections of another data set")
        return animate_detections(prepared, i, found, Path(out), fps=fps or 15.0, max_frames=max_frames)
    return animate_sample(prepared, i, Path(out), fps=fps or 15.0, max_frames=max_frames)
