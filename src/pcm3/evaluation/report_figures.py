"""``pcm3 report``'s pictures: PNG files drawn from the eval runs' saved test scores and features.

Each ``plot_*`` writes one PNG (110 dpi) at the path given and returns that path, or None when no
run has what it needs (saved scores, ``test_features.npy``, ``by_ratio``): the row-normalised
confusion matrix (% of row) of one linear run, the per-class test accuracy (%) of the linear rows
of one stream, their test features in 2-D coloured by class (exact t-SNE or PCA of a
class-stratified subsample of at most ``max_points``), and test top-1 (%) against the realised
occlusion ratio (binned). :func:`copy_dense_images` copies the images the detection and motion
runs drew (:data:`DENSE_IMAGES`). Figures are made outside pyplot
(:func:`pcm3.visualize.new_figure`): the process's matplotlib backend is left alone.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from pcm3.errors import DataError
from pcm3.evaluation.common import load_scores
from pcm3.evaluation.report_tables import (KIND_LABEL, _column, _dense_column, _dense_order, _dense_stream, _kind,
                                           _stream)


# --------------------------------------------------------------------------- figures

def _figure(**kwargs):
    """A figure of its own, outside pyplot (:func:`pcm3.visualize.new_figure`): the process's
    matplotlib backend and pyplot's figures are left alone."""
    from pcm3.visualize import new_figure

    return new_figure(**kwargs)


def _class_names(m: dict, k: int) -> List[str]:
    names = m.get("class_names") or []
    return [str(n) for n in names][:k] if len(names) >= k else [str(i) for i in range(k)]


def plot_confusion(m: dict, path: Path) -> Optional[Path]:
    """Row-normalised confusion matrix of a run's saved test scores."""
    from pcm3.evaluation.common import confusion_matrix

    try:
        scores, _, labels = load_scores(m["_dir"])
    except DataError:
        return None
    k = scores.shape[1]
    cm = confusion_matrix(scores.argmax(1), labels, k).astype(np.float64)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(5.0, 0.32 * k + 2)
    fig = _figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    names = _class_names(m, k)
    if k <= 60:
        ax.set_xticks(range(k), names, rotation=90, fontsize=7 if k > 20 else 8)
        ax.set_yticks(range(k), names, fontsize=7 if k > 20 else 8)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j] >= 0.01:
                    ax.text(j, i, f"{100 * cm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if cm[i, j] > 0.5 else "black")
    d, b = _column(m)
    acc = 100.0 * float((scores.argmax(1) == labels).mean())
    ax.set_title(f"Confusion matrix (rows: true, % of row), {KIND_LABEL.get(_kind(m))} {_stream(m)}, "
                 f"linear, {d} {b}, top-1 {acc:.1f}%", fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_per_class(linear_runs: List[dict], path: Path) -> Optional[Path]:
    """Per-class test accuracy of each linear row (grouped bars)."""
    from pcm3.evaluation.common import per_class_accuracy

    rows = []
    for m in _main_stream(linear_runs):
        try:
            scores, _, labels = load_scores(m["_dir"])
        except DataError:
            continue
        acc = per_class_accuracy(scores.argmax(1), labels, scores.shape[1])
        rows.append((f"{KIND_LABEL.get(_kind(m))} ({_stream(m)})", np.array([np.nan if a is None else a for a in acc])))
    if not rows:
        return None
    k = len(rows[0][1])
    fig = _figure(figsize=(max(7.0, 0.45 * k + 2), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for i, (label, acc) in enumerate(rows):
        ax.bar(np.arange(k) + (i - (len(rows) - 1) / 2) * width, acc, width, label=label)
    ax.set_xticks(range(k), _class_names(linear_runs[0], k), rotation=90 if k > 8 else 0, fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    d, b = _column(linear_runs[0])
    ax.set_title(f"Per-class accuracy, linear evaluation, {d} {b}", fontsize=10, pad=24)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(4, len(rows)), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _main_stream(runs: List[dict]) -> List[dict]:
    """The runs of one stream (joint when present, else that of the first pretrained run), ordered
    pretrained, random init, supervised, raw input; at most one per kind."""
    streams = [_stream(m) for m in runs]
    pre = [_stream(m) for m in runs if _kind(m) == "pretrained"]
    stream = "joint" if "joint" in streams else (pre[0] if pre else streams[0])
    order = ("pretrained", "random_init", "supervised", "raw_input")
    picked: Dict[str, dict] = {}
    for m in runs:
        if _stream(m) == stream and _kind(m) not in picked:
            picked[_kind(m)] = m
    return [picked[k] for k in sorted(picked, key=lambda k: order.index(k) if k in order else 9)]


def _subsample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` positions, the same share of every class, sorted."""
    if len(labels) <= n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        keep.append(rng.choice(pos, size=max(1, int(round(n * len(pos) / len(labels)))), replace=False))
    return np.sort(np.concatenate(keep))


def plot_feature_maps(linear_runs: List[dict], path: Path, *, method: str = "tsne", max_points: int = 800,
                      seed: int = 0) -> Optional[Path]:
    """Test features in 2-D coloured by class, one panel per linear row with saved features
    (pretrained and random init first)."""
    from pcm3.evaluation.tsne import pca_2d, tsne

    panels = []
    for m in _main_stream(linear_runs):
        f = Path(m["_dir"]) / "test_features.npy"
        if not f.exists():
            continue
        try:
            _, _, labels = load_scores(m["_dir"])
        except DataError:
            continue
        feats = np.load(f).astype(np.float32)
        keep = _subsample(labels, max_points, seed)
        x, y = feats[keep], labels[keep]
        xy = tsne(x, seed=seed) if method == "tsne" else pca_2d(x)
        panels.append((f"{KIND_LABEL.get(_kind(m))} ({_stream(m)})", xy, y))
    if not panels:
        return None
    import matplotlib
    from matplotlib.lines import Line2D

    cols = 2 if len(panels) == 4 else len(panels)
    nrows = (len(panels) + cols - 1) // cols
    fig = _figure(figsize=(4.6 * cols, 4.4 * nrows + 0.8))
    axes = fig.subplots(nrows, cols, squeeze=False)
    k = int(max(p[2].max() for p in panels)) + 1
    cmap = matplotlib.colormaps["tab20" if k > 10 else "tab10"]
    for ax, (title, xy, y) in zip(axes.ravel(), panels):
        ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(int(c) % cmap.N) for c in y], s=6, linewidths=0)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    d, b = _column(linear_runs[0])
    what = "exact t-SNE (perplexity 30)" if method == "tsne" else "PCA (first two components; not t-SNE)"
    fig.suptitle(f"Test features, {what}, {len(panels[0][2])} samples coloured by class, {d} {b}", fontsize=10)
    names = _class_names(linear_runs[0], k)
    handles = [Line2D([], [], marker="o", ls="", color=cmap(i % cmap.N), label=names[i]) for i in range(k)]
    if k <= 20:
        fig.legend(handles=handles, loc="lower center", ncol=min(k, 4 * cols), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, (0.05 + 0.03 * ((k - 1) // (4 * cols))) * 2 / (nrows + 1), 1, 0.95))
    else:
        fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    return path


def plot_occlusion(occ_runs: List[dict], path: Path) -> Optional[Path]:
    """Top-1 against the realised occlusion ratio (binned), one line per row and occlusion kind."""
    lines = [(m, kind, bins) for m in occ_runs for kind, bins in (m.get("by_ratio") or {}).items()]
    if not lines:
        return None
    fig = _figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    colors = {}
    for m, kind, bins in lines:
        label = f"{KIND_LABEL.get(_kind(m))} ({_stream(m)})"
        color = colors.setdefault(label, f"C{len(colors)}")
        xs = [100 * (b["low"] + b["high"]) / 2 for b in bins if b["top1"] is not None]
        ys = [b["top1"] for b in bins if b["top1"] is not None]
        ax.plot(xs, ys, marker="o" if kind == "spatial" else "s", ls="-" if kind == "spatial" else "--",
                color=color, label=f"{label}, {kind}")
        clean = m["figures"].get("clean_top1")
        if clean is not None and kind == (list(m["by_ratio"])[0]):
            ax.axhline(clean, color=color, ls=":", lw=1, label=f"{label}, clean")
    ax.set_xlabel("occluded share (%): joints for spatial, valid frames for temporal")
    ax.set_ylabel("test top-1 (%)")
    d, b = _column(occ_runs[0])
    ax.set_title(f"Accuracy against occlusion ratio (linear, {d} {b})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


DENSE_IMAGES = {"detection": (("timeline.png", "Detection timeline"),),
                "motion": (("mpjpe.png", "Motion prediction: MPJPE per predicted frame"),
                           ("prediction.png", "Motion prediction: true and predicted skeletons"))}


def copy_dense_images(runs: List[dict], folder: Path) -> List[Tuple[str, Path]]:
    """Copy the images the detection and motion runs wrote into ``folder`` (names made unique:
    ``<task>_<n>_<kind>_<file>``); returns ``[(title, copied path)]``, absent images skipped."""
    out: List[Tuple[str, Path]] = []
    dense = sorted((m for m in runs if m.get("task") in DENSE_IMAGES),
                   key=lambda m: (str(m.get("task")), _dense_order(m)))
    counts: Dict[str, int] = {}
    for m in dense:
        task = str(m["task"])
        counts[task] = counts.get(task, 0) + 1
        kind = re.sub(r"[^A-Za-z0-9]+", "_", _kind(m))
        d, b = _dense_column(m)
        for name, title in DENSE_IMAGES[task]:
            src = Path(m["_dir"]) / name
            if not src.is_file():
                continue
            dst = folder / f"{task}_{counts[task]}_{kind}_{name}"
            shutil.copyfile(src, dst)
            out.append((f"{title}, {KIND_LABEL.get(_kind(m), _kind(m))} ({_dense_stream(m)}), {d} {b}", dst))
    return out
