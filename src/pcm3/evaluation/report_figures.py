"""``pcm3 report``'s pictures: PNG files drawn from the eval runs' saved test scores and features.

Each ``plot_*`` writes one PNG (110 dpi) at the path given and returns that path, or None when no
run has what it needs (saved scores, ``test_features.npy``, ``by_ratio``): the row-normalised
confusion matrix (% of row) of one linear run, the per-class test accuracy (%) of the linear rows
of one stream and one (data set, benchmark), their test features in 2-D coloured by class (exact
t-SNE or PCA of a class-stratified subsample of at most ``max_points``), and test top-1 (%)
against the realised occlusion ratio (binned; one colour per run, one line style per occlusion
kind). Where several runs of one row (task, encoder kind, stream, data set and benchmark) are
shown or could have been, a run is named by the part of its folder path that tells it apart
(:func:`pcm3.evaluation.report_tables._distinct_tags`, as the tables tag their rows). Legends
sit outside the plotted area and every PNG is saved with ``bbox_inches="tight"``: nothing is
cut off. A run whose saved scores or ``test_features.npy`` are damaged (truncated, unreadable,
NaN: :func:`pcm3.evaluation.common.load_scores`) is left out of the figure, and the ``skipped``
callback given to the ``plot_*`` function is told (the :class:`DataError` naming the file), so
that :func:`pcm3.evaluation.report.write_report` can warn and say which figure lacks it; a run
that saved no scores or features at all is left out silently. :func:`copy_dense_images` copies
the images the detection and motion runs drew (:data:`DENSE_IMAGES`) and captions them (the
motion runs' horizons included). Figures are made outside pyplot
(:func:`pcm3.visualize.new_figure`): the process's matplotlib backend is left alone.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pcm3.errors import DataError
from pcm3.evaluation.common import SCORE_INDEX_FILE, SCORE_LABELS_FILE, SCORES_FILE, load_array, load_scores
from pcm3.evaluation.report_tables import (KIND_LABEL, _clash_tags, _column, _dense_column, _dense_order,
                                           _dense_stream, _kind, _stream)


# --------------------------------------------------------------------------- figures

#: Told of each damaged file a figure had to leave out (the DataError naming the file and the problem).
Skipped = Optional[Callable[[DataError], None]]


def _saved_scores(m: dict, skipped: Skipped) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A run's saved test scores (:func:`pcm3.evaluation.common.load_scores`), or None: silently
    when the run saved none, after telling ``skipped`` when a file of them is damaged."""
    folder = Path(m["_dir"])
    if not all((folder / name).is_file() for name in (SCORES_FILE, SCORE_INDEX_FILE, SCORE_LABELS_FILE)):
        return None
    try:
        return load_scores(folder)
    except DataError as e:
        if skipped is not None:
            skipped(e)
        return None


def load_test_features(path: Path, samples: int) -> np.ndarray:
    """``test_features.npy`` of a run as float32 ``(samples, D)``: one-line DataError naming it when
    it is truncated or unreadable (:func:`pcm3.evaluation.common.load_array`), not one row per
    saved test score, or holds NaN or infinite values."""
    feats = load_array(path)
    if feats.ndim != 2 or len(feats) != samples:
        raise DataError(path, f"shape {feats.shape}, not one row per saved test score ({samples}): not the features "
                              "of this run's test scores")
    if not (np.issubdtype(feats.dtype, np.floating) or np.issubdtype(feats.dtype, np.integer)):
        raise DataError(path, f"holds {feats.dtype} values, not features")
    feats = feats.astype(np.float32)
    bad = ~np.isfinite(feats)
    if bad.any():
        raise DataError(path, f"{int(bad.sum())} non-finite value(s) (NaN or inf) in {int(bad.any(1).sum())} of its "
                              f"{len(feats)} rows: damaged features")
    return feats


def _figure(**kwargs):
    """A figure of its own, outside pyplot (:func:`pcm3.visualize.new_figure`): the process's
    matplotlib backend and pyplot's figures are left alone."""
    from pcm3.visualize import new_figure

    return new_figure(**kwargs)


def _save(fig, path: Path) -> Path:
    """``fig`` as a 110 dpi PNG at ``path``, cropped to what is drawn (``bbox_inches="tight"``): a
    legend or title that reaches past the figure's edge is kept whole, not cut off."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _class_names(m: dict, k: int) -> List[str]:
    names = m.get("class_names") or []
    return [str(n) for n in names][:k] if len(names) >= k else [str(i) for i in range(k)]


def _row(m: dict) -> tuple:
    """A run's row and column as the tables have them: ``(task, encoder kind, stream, (data set,
    benchmark))``; runs that share it share a table cell."""
    return m.get("task"), _kind(m), _stream(m), _column(m)


def _tags(runs: Sequence[dict], key: Callable[[dict], object] = _row) -> List[str]:
    """For each run, the part of its folder path that tells it apart from the other runs of the
    same ``key(run)`` (:func:`pcm3.evaluation.report_tables._clash_tags`: the tables' row tags),
    ``""`` for a run alone of its key."""
    tags = _clash_tags(list(runs), key)
    return [tags.get(id(m), "") for m in runs]


def _run_tag(m: dict, among: Sequence[dict] = ()) -> str:
    """The part of ``m``'s folder path that tells it apart from the other runs of its row and
    column in ``among`` (``m`` counted once, whether in ``among`` or not), ``""`` when there are
    none."""
    group = [c for c in among if _row(c) == _row(m)]
    if not any(c is m for c in group):
        group = [m] + group
    if len(group) < 2:
        return ""
    return _tags(group)[next(i for i, c in enumerate(group) if c is m)]


def _row_label(m: dict, among: Sequence[dict] = ()) -> str:
    """``kind (stream)`` of a run, with its folder tag (:func:`_run_tag`) where ``among`` holds
    other runs of its row and column."""
    tag = _run_tag(m, among)
    return f"{KIND_LABEL.get(_kind(m), _kind(m))} ({_stream(m)})" + (f", {tag}" if tag else "")


def _legend_fitting(fig, make: Callable[[int], object], ncol: int, width_px: float):
    """The legend ``make(n)`` (``n`` columns) with the most columns, at most ``ncol``, whose width
    is at most ``width_px`` (display pixels); one column when none fits (the caller's
    ``bbox_inches="tight"`` then keeps it whole)."""
    renderer = fig.canvas.get_renderer()
    for n in range(max(1, ncol), 0, -1):
        leg = make(n)
        if n == 1 or leg.get_window_extent(renderer).width <= width_px:
            return leg
        leg.remove()


def plot_confusion(m: dict, path: Path, *, among: Sequence[dict] = (), skipped: Skipped = None) -> Optional[Path]:
    """Row-normalised confusion matrix of a run's saved test scores (None when it saved none or
    they are damaged: ``skipped`` is told). ``among``: the runs ``m`` was chosen from; where other
    runs of its row and column are there, the title names ``m``'s folder (:func:`_run_tag`)."""
    from pcm3.evaluation.common import confusion_matrix

    saved = _saved_scores(m, skipped)
    if saved is None:
        return None
    scores, _, labels = saved
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
    tag = _run_tag(m, among)
    ax.set_title(f"Confusion matrix (rows: true, % of row), {KIND_LABEL.get(_kind(m))} {_stream(m)}, "
                 f"linear, {d} {b}, top-1 {acc:.1f}%" + (f"\nrun {tag}" if tag else ""), fontsize=9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class(linear_runs: List[dict], path: Path, *, skipped: Skipped = None) -> Optional[Path]:
    """Per-class test accuracy of each linear row of one stream and column (grouped bars,
    :func:`_main_stream`); a row's legend entry names its folder where other runs of that row
    were there to choose from. A row whose scores are damaged is left out (``skipped`` is told)."""
    from pcm3.evaluation.common import per_class_accuracy

    rows = []
    picked = _main_stream(linear_runs)
    for m in picked:
        saved = _saved_scores(m, skipped)
        if saved is None:
            continue
        scores, _, labels = saved
        acc = per_class_accuracy(scores.argmax(1), labels, scores.shape[1])
        rows.append((_row_label(m, linear_runs), np.array([np.nan if a is None else a for a in acc])))
    if not rows:
        return None
    k = len(rows[0][1])
    width_in = max(7.0, 0.45 * k + 2)
    fig = _figure(figsize=(width_in, 4.2))
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for i, (label, acc) in enumerate(rows):
        ax.bar(np.arange(k) + (i - (len(rows) - 1) / 2) * width, acc, width, label=label)
    ax.set_xticks(range(k), _class_names(picked[0], k), rotation=90 if k > 8 else 0, fontsize=7)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    leg = _legend_fitting(fig, lambda n: ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=n,
                                                   frameon=False),
                          min(4, len(rows)), 0.95 * width_in * fig.dpi)
    d, b = _column(picked[0])
    # the title above the legend, however many lines the legend took
    pad = leg.get_window_extent(fig.canvas.get_renderer()).height * 72.0 / fig.dpi + 4
    ax.set_title(f"Per-class accuracy, linear evaluation, {d} {b}", fontsize=10, pad=pad)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _main_stream(runs: List[dict]) -> List[dict]:
    """The runs of one stream (joint when present, else that of the first pretrained run) and of
    one (data set, benchmark) (that of the first such run of the first kind below: the panels
    share its class names), ordered pretrained, random init, supervised, raw input; at most one
    per kind, the first in ``runs`` order."""
    streams = [_stream(m) for m in runs]
    pre = [_stream(m) for m in runs if _kind(m) == "pretrained"]
    stream = "joint" if "joint" in streams else (pre[0] if pre else streams[0])
    order = ("pretrained", "random_init", "supervised", "raw_input")
    picked: Dict[str, dict] = {}
    for m in runs:
        if _stream(m) == stream and _kind(m) not in picked:
            picked[_kind(m)] = m
    kinds = sorted(picked, key=lambda k: order.index(k) if k in order else 9)
    column = _column(picked[kinds[0]])
    picked = {}
    for m in runs:
        if _stream(m) == stream and _column(m) == column and _kind(m) not in picked:
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
                      seed: int = 0, skipped: Skipped = None) -> Optional[Path]:
    """Test features in 2-D coloured by class, one panel per linear row with saved features
    (pretrained and random init first; :func:`_main_stream`); a panel's title names its run's
    folder where other runs of that row were there to choose from. The class legend (at most 20
    classes) sits below the panels, in as many columns as fit the figure's width. A run whose
    features or scores are damaged (:func:`load_test_features`) is left out (``skipped`` is told)."""
    from pcm3.evaluation.tsne import pca_2d, tsne

    panels = []
    picked = []
    for m in _main_stream(linear_runs):
        f = Path(m["_dir"]) / "test_features.npy"
        if not f.exists():
            continue
        saved = _saved_scores(m, skipped)
        if saved is None:
            continue
        labels = saved[2]
        try:
            feats = load_test_features(f, len(labels))
        except DataError as e:
            if skipped is not None:
                skipped(e)
            continue
        keep = _subsample(labels, max_points, seed)
        x, y = feats[keep], labels[keep]
        xy = tsne(x, seed=seed) if method == "tsne" else pca_2d(x)
        tag = _run_tag(m, linear_runs)
        panels.append((f"{KIND_LABEL.get(_kind(m))} ({_stream(m)})" + (f"\n{tag}" if tag else ""), xy, y))
        picked.append(m)
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
    d, b = _column(picked[0])
    what = "exact t-SNE (perplexity 30)" if method == "tsne" else "PCA (first two components; not t-SNE)"
    fig.suptitle(f"Test features, {what}, {len(panels[0][2])} samples coloured by class, {d} {b}", fontsize=10)
    names = _class_names(picked[0], k)
    handles = [Line2D([], [], marker="o", ls="", color=cmap(i % cmap.N), label=names[i]) for i in range(k)]
    if k <= 20:
        # as many columns as fit the figure's width (long class names: fewer), and the panels
        # above the legend's measured height
        leg = _legend_fitting(fig, lambda n: fig.legend(handles=handles, loc="lower center", ncol=n, fontsize=7,
                                                        frameon=False, bbox_to_anchor=(0.5, 0.0)),
                              min(k, 4 * cols), 0.96 * fig.bbox.width)
        bottom = leg.get_window_extent(fig.canvas.get_renderer()).height / fig.bbox.height + 0.01
        fig.tight_layout(rect=(0, bottom, 1, 0.95))
    else:
        fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


_OCCLUSION_STYLE = {"spatial": ("-", "o"), "temporal": ("--", "s")}   # other kinds: "-." and a marker of their own
_OTHER_MARKERS = "^vD<>P*"


def _run_colours(n: int) -> list:
    """``n`` distinct colours: tab10 up to 10, else :func:`pcm3.visualize.class_colours`."""
    import matplotlib

    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    from pcm3.visualize import class_colours

    return class_colours(n)[1:]


def occlusion_legend(occ_runs: List[dict]) -> Tuple[List[str], Dict[str, Tuple[str, str]], bool]:
    """What :func:`plot_occlusion` draws its lines by: ``(labels, styles, one column)``.

    ``labels``: one per run of ``occ_runs``, distinct: ``kind (stream)``, the (data set,
    benchmark) where the runs drawn span several, and the folder tag (:func:`_tags`) where other
    runs share the run's row and column. ``styles``: ``{occlusion kind: (line style, marker)}``
    of the kinds the runs hold, in order of appearance. ``one column``: all runs drawn share one
    (data set, benchmark) (the title names it).
    """
    drawn = [m for m in occ_runs if m.get("by_ratio")]
    one_column = len({_column(m) for m in drawn}) <= 1
    labels = []
    for m, tag in zip(occ_runs, _tags(occ_runs)):
        label = f"{KIND_LABEL.get(_kind(m), _kind(m))} ({_stream(m)})"
        if not one_column:
            label += ", {} {}".format(*_column(m))
        labels.append(label + (f", {tag}" if tag else ""))
    styles: Dict[str, Tuple[str, str]] = {}
    for m in drawn:
        for kind in m["by_ratio"]:
            if kind not in styles:
                others = len([s for s in styles if s not in _OCCLUSION_STYLE])
                styles[kind] = _OCCLUSION_STYLE.get(kind, ("-.", _OTHER_MARKERS[others % len(_OTHER_MARKERS)]))
    return labels, styles, one_column


def plot_occlusion(occ_runs: List[dict], path: Path) -> Optional[Path]:
    """Top-1 against the realised occlusion ratio (binned): one colour per run, one line style per
    occlusion kind (:func:`occlusion_legend`), the clean top-1 dotted. The legend (the runs, then
    the line styles) sits to the right of the axes; the figure is widened by its measured width."""
    from matplotlib.lines import Line2D

    labels, styles, one_column = occlusion_legend(occ_runs)
    drawn = [(m, label) for m, label in zip(occ_runs, labels) if m.get("by_ratio")]
    if not drawn:
        return None
    fig = _figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    handles, clean_drawn = [], False
    for (m, label), color in zip(drawn, _run_colours(len(drawn))):
        for kind, bins in m["by_ratio"].items():
            xs = [100 * (b["low"] + b["high"]) / 2 for b in bins if b["top1"] is not None]
            ys = [b["top1"] for b in bins if b["top1"] is not None]
            ls, marker = styles[kind]
            ax.plot(xs, ys, marker=marker, ls=ls, color=color, ms=4)
        clean = (m.get("figures") or {}).get("clean_top1")
        if clean is not None:
            ax.axhline(clean, color=color, ls=":", lw=1)
            clean_drawn = True
        handles.append(Line2D([], [], color=color, lw=2, label=label))
    handles += [Line2D([], [], color="0.35", ls=ls, marker=marker, ms=4, label=f"{kind} occlusion")
                for kind, (ls, marker) in styles.items()]
    if clean_drawn:
        handles.append(Line2D([], [], color="0.35", ls=":", lw=1, label="clean (no occlusion)"))
    ax.set_xlabel("occluded share (%): joints for spatial, valid frames for temporal")
    ax.set_ylabel("test top-1 (%)")
    d, b = _column(drawn[0][0])
    ax.set_title(f"Accuracy against occlusion ratio (linear{f', {d} {b}' if one_column else ''})", fontsize=10)
    ax.grid(alpha=0.3)
    leg = ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                    frameon=False)
    box = leg.get_window_extent(fig.canvas.get_renderer())
    fig.set_size_inches(6.4 + box.width / fig.dpi + 0.3, max(4.2, box.height / fig.dpi + 0.8))  # inches
    fig.tight_layout()
    return _save(fig, path)


DENSE_IMAGES = {"detection": (("timeline.png", "Detection timeline"),),
                "motion": (("mpjpe.png", "Motion prediction: MPJPE per predicted frame"),
                           ("prediction.png", "Motion prediction: true and predicted skeletons"))}


def _dense_caption(m: dict) -> str:
    """What a dense run's image captions say after the image's title: ``kind (stream), data set
    benchmark``, and for a motion run its horizon (``20 observed -> 6 predicted frames at 15 fps``,
    as Table 6's titles)."""
    d, b = _dense_column(m)
    caption = f"{KIND_LABEL.get(_kind(m), _kind(m))} ({_dense_stream(m)}), {d} {b}"
    if m.get("task") == "motion":
        p = m.get("protocol") if isinstance(m.get("protocol"), dict) else {}
        observed, predicted, fps = p.get("observed"), p.get("predicted"), m.get("fps") or p.get("fps")
        if observed and predicted:
            caption += f", {observed} observed -> {predicted} predicted frames" + (f" at {fps:g} fps" if isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps > 0 else "")
    return caption


def copy_dense_images(runs: List[dict], folder: Path) -> List[Tuple[str, Path]]:
    """Copy the images the detection and motion runs wrote into ``folder`` (names made unique:
    ``<task>_<n>_<kind>_<file>``); returns ``[(caption, copied path)]``, absent images skipped.

    A caption is the image's title (:data:`DENSE_IMAGES`) and :func:`_dense_caption` (kind,
    stream, data set, benchmark, a motion run's horizon); where two runs of one task would get the
    same caption, each also names the part of its folder path that tells it apart (in backticks).
    """
    out: List[Tuple[str, Path]] = []
    dense = sorted((m for m in runs if m.get("task") in DENSE_IMAGES),
                   key=lambda m: (str(m.get("task")), _dense_order(m)))
    tags = _tags(dense, key=lambda m: (m.get("task"), _dense_caption(m)))
    counts: Dict[str, int] = {}
    for m, tag in zip(dense, tags):
        task = str(m["task"])
        counts[task] = counts.get(task, 0) + 1
        kind = re.sub(r"[^A-Za-z0-9]+", "_", _kind(m))
        caption = _dense_caption(m) + (f", `{tag}`" if tag else "")
        for name, title in DENSE_IMAGES[task]:
            src = Path(m["_dir"]) / name
            if not src.is_file():
                continue
            dst = folder / f"{task}_{counts[task]}_{kind}_{name}"
            shutil.copyfile(src, dst)
            out.append((f"{title}, {caption}", dst))
    return out
