"""``pcm3 report``: eval folders collected into the paper's table shapes, with pictures.

:func:`write_report` reads the ``metrics.json`` of every eval folder given (or found below a
given folder, as ``pcm3 benchmark`` writes them), and writes

- ``report.md``: Table 1 (linear top-1 and 3-stream fusion), Table 2 (semi-supervised mean ±
  std), Table 3 (k-NN), Table 4 (occlusion: clean, occluded, drop), other tasks' figures, and
  the paper's PCM3 figures beside ours where the data set and benchmark match;
- ``report.html``: the same with the images inline;
- ``<name>_images/``: confusion matrix (row-normalised, linear, pretrained row), per-class
  accuracy of every linear row, a 2-D map of test features coloured by class for pretrained vs
  random init (exact t-SNE, :mod:`pcm3.evaluation.tsne`; PCA when asked, and labelled so), and
  accuracy against the realised occlusion ratio.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pcm3.errors import DataError
from pcm3.evaluation.common import load_scores, read_metrics

MARKER_LINE = "<!-- written by pcm3 report -->"
KIND_ORDER = ("raw_input", "random_init", "pretrained", "supervised", "none")
KIND_LABEL = {"raw_input": "raw input", "random_init": "random init", "pretrained": "pretrained",
              "supervised": "supervised", "none": "-"}

# The paper's PCM3 figures (top-1 %), by (dataset as in meta.json, benchmark).
PAPER = {
    "linear": {("ntu60", "xsub"): 83.9, ("ntu60", "xview"): 90.4, ("ntu120", "xsub"): 76.5,
               ("ntu120", "xset"): 77.5, ("pku2", "xsub"): 51.5},
    "fusion": {("ntu60", "xsub"): 87.4, ("ntu60", "xview"): 93.1, ("ntu120", "xsub"): 80.0,
               ("ntu120", "xset"): 81.2, ("pku2", "xsub"): 58.2},
    "semi": {("ntu60", "xview"): {"1%": 53.1, "10%": 82.8}, ("ntu60", "xsub"): {"1%": 53.8, "10%": 77.1}},
    "knn": {("ntu60", "xsub"): 73.7, ("ntu60", "xview"): 88.8, ("ntu120", "xsub"): 63.1, ("ntu120", "xset"): 66.8},
    "occlusion": {("ntu60", "xsub"): {"spatial": 80.8, "temporal": 77.6},
                  ("ntu60", "xview"): {"spatial": 87.0, "temporal": 86.1}},
}
PAPER_SOURCE = "PCM3 paper (Zhang, Lin, Liu, ACM MM 2023), Tables 1-4"


# --------------------------------------------------------------------------- collecting

def find_runs(paths: Sequence[str | os.PathLike], depth: int = 3) -> List[Path]:
    """Eval folders (holding ``metrics.json``) among ``paths`` and below them (``depth`` levels)."""
    found: List[Path] = []

    def walk(p: Path, level: int):
        if (p / "metrics.json").is_file():
            found.append(p)
            return
        if level < depth:
            for child in sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith(".")):
                walk(child, level + 1)

    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise DataError(path, "no such folder (give eval folders or a folder that holds them)")
        before = len(found)
        walk(path, 0)
        if len(found) == before:
            raise DataError(path, "holds no eval results (metrics.json)")
    return found


def load_runs(paths: Sequence[str | os.PathLike]) -> List[dict]:
    """Every eval folder's metrics, with ``_dir`` added."""
    runs = []
    for d in find_runs(paths):
        m = read_metrics(d)
        m["_dir"] = str(d)
        runs.append(m)
    return runs


def _kind(m: dict) -> str:
    kind = (m.get("encoder") or {}).get("kind") or "none"
    if m.get("task") == "fusion":
        kinds = {k for k in m.get("run_kinds") or [] if k}
        kind = kinds.pop() if len(kinds) == 1 else "none"
    return kind


def _stream(m: dict) -> str:
    if m.get("task") == "fusion":
        return f"{len(m.get('runs', []))}s fusion"
    return (m.get("input") or {}).get("stream") or (m.get("encoder") or {}).get("stream") or "?"


def _column(m: dict) -> Tuple[str, str]:
    """(data set name, benchmark) of a run."""
    dataset = m.get("dataset") or Path(str(m.get("data"))).name
    return str(dataset), str(m.get("benchmark"))


def _pct(v, std=None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" + (f" ± {std:.1f}" if std is not None else "")


# --------------------------------------------------------------------------- tables

def _table(title: str, header: List[str], rows: List[List[str]]) -> List[str]:
    if not rows:
        return []
    out = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _row_key(m: dict):
    k, stream = _kind(m), _stream(m)
    order = ("joint", "bone", "motion")
    return (KIND_ORDER.index(k) if k in KIND_ORDER else 99, order.index(stream) if stream in order else 9, stream, k)


def recognition_tables(runs: List[dict]) -> List[str]:
    """Markdown of Tables 1-4 (and other tasks) from the runs' metrics."""
    lines: List[str] = []
    paper_used = False

    def grid(task_names: Sequence[str], cell, paper_cell=None, paper_label: str = "paper: PCM3"):
        nonlocal paper_used
        sel = [m for m in runs if m.get("task") in task_names]
        cols = sorted({_column(m) for m in sel})
        rows: Dict[tuple, Dict[tuple, str]] = {}
        for m in sel:
            key = (_row_key(m), m.get("task"))
            rows.setdefault(key, {})[_column(m)] = cell(m)
        body = []
        for (rk, task), cells in sorted(rows.items()):
            _, _, stream, kind = rk
            body.append([KIND_LABEL.get(kind, kind), stream] + [cells.get(c, "-") for c in cols])
        if paper_cell is not None:
            paper = [paper_cell(c) for c in cols]
            if any(p != "-" for p in paper):
                body.append([paper_label, "joint"] + paper)
                paper_used = True
        return cols, body

    cols, body = grid(("linear", "fusion"), lambda m: _pct(m["figures"].get("top1")),
                      lambda c: _pct(PAPER["linear"].get(c)))
    if any(m.get("task") == "fusion" for m in runs):
        fused = [_pct(PAPER["fusion"].get(c)) for c in cols]
        if any(f != "-" for f in fused):
            body.append(["paper: 3s-PCM3", "3s fusion"] + fused)
    lines += _table("Table 1: linear evaluation, top-1 (%)", ["encoder", "stream"] + [f"{d} {b}" for d, b in cols], body)

    def semi_cells(m):
        f = m["figures"]
        fracs = [k[:-len("_top1_mean")] for k in f if k.endswith("_top1_mean")]
        return ", ".join(f"{fr}: {_pct(f[fr + '_top1_mean'], f.get(fr + '_top1_std'))}" for fr in fracs)

    def semi_paper(c):
        p = PAPER["semi"].get(c)
        return ", ".join(f"{k}: {v:.1f}" for k, v in p.items()) if p else "-"

    cols, body = grid(("semi",), semi_cells, semi_paper)
    lines += _table("Table 2: semi-supervised, top-1 (%) mean ± std over seeds, per labelled fraction",
                    ["encoder", "stream"] + [f"{d} {b}" for d, b in cols], body)

    def knn_cell(m):
        f = m["figures"]
        ks = sorted(int(k[3:]) for k in f if k.startswith("knn") and k[3:].isdigit())
        return " / ".join(_pct(f[f"knn{k}"]) for k in ks) + " (k = " + ", ".join(map(str, ks)) + ")"

    cols, body = grid(("knn",), knn_cell, lambda c: _pct(PAPER["knn"].get(c)) + " (k = 1)" if c in PAPER["knn"] else "-")
    lines += _table("Table 3: k-NN retrieval, top-1 (%)", ["encoder", "stream"] + [f"{d} {b}" for d, b in cols], body)

    def occ_cell(m):
        f = m["figures"]
        parts = [f"clean {_pct(f.get('clean_top1'))}"]
        for k in ("spatial", "temporal"):
            if f"{k}_top1" in f:
                parts.append(f"{k} {_pct(f[k + '_top1'])} (Δ {_pct(f[k + '_drop'])})")
        parts += [f"{k[:-5]} {_pct(v)}" for k, v in f.items() if k.startswith("part_") and k.endswith("_top1")]
        return "; ".join(parts)

    def occ_paper(c):
        p = PAPER["occlusion"].get(c)
        return "; ".join(f"{k} {v:.1f}" for k, v in p.items()) if p else "-"

    cols, body = grid(("occlusion",), occ_cell, occ_paper)
    lines += _table("Table 4: occlusion, linear top-1 (%) and drop against clean (points)",
                    ["encoder", "stream"] + [f"{d} {b}" for d, b in cols], body)

    from pcm3.evaluation.common import format_figure

    for m in runs:
        if m.get("task") in ("linear", "fusion", "semi", "knn", "occlusion"):
            continue
        units = m.get("units", {})
        body = [[k, format_figure(k, v, units)] for k, v in m.get("figures", {}).items()]
        d, b = _column(m)
        lines += _table(f"{m.get('task')}: {KIND_LABEL.get(_kind(m), _kind(m))}, {d} {b}", ["figure", "value"], body)
    if paper_used:
        lines += [f"Paper rows: {PAPER_SOURCE}; shown where the data set and benchmark match.", ""]
    return lines


# --------------------------------------------------------------------------- figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    plt = _plt()
    size = max(5.0, 0.32 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
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
    plt.close(fig)
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
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * k + 2), 4.2))
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
    plt.close(fig)
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
    plt = _plt()
    cols = 2 if len(panels) == 4 else len(panels)
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 4.4 * nrows + 0.8), squeeze=False)
    k = int(max(p[2].max() for p in panels)) + 1
    cmap = plt.get_cmap("tab20" if k > 10 else "tab10")
    for ax, (title, xy, y) in zip(axes.ravel(), panels):
        ax.scatter(xy[:, 0], xy[:, 1], c=[cmap(int(c) % cmap.N) for c in y], s=6, linewidths=0)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    d, b = _column(linear_runs[0])
    what = "exact t-SNE (perplexity 30)" if method == "tsne" else "PCA (first two components; not t-SNE)"
    fig.suptitle(f"Test features, {what}, {len(panels[0][2])} samples coloured by class, {d} {b}", fontsize=10)
    names = _class_names(linear_runs[0], k)
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i % cmap.N), label=names[i]) for i in range(k)]
    if k <= 20:
        fig.legend(handles=handles, loc="lower center", ncol=min(k, 4 * cols), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, (0.05 + 0.03 * ((k - 1) // (4 * cols))) * 2 / (nrows + 1), 1, 0.95))
    else:
        fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_occlusion(occ_runs: List[dict], path: Path) -> Optional[Path]:
    """Top-1 against the realised occlusion ratio (binned), one line per row and occlusion kind."""
    lines = [(m, kind, bins) for m in occ_runs for kind, bins in (m.get("by_ratio") or {}).items()]
    if not lines:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
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
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- writing

def _check_file(path: Path, overwrite: bool) -> None:
    if path.exists():
        ours = False
        try:
            with open(path, errors="replace") as f:
                ours = MARKER_LINE in (f.readline().strip(), f.readline().strip())
        except OSError:
            pass
        if not ours:
            raise DataError(path, "exists and was not written by pcm3 report; choose another --out")
        if not overwrite:
            raise DataError(path, "exists; pass --overwrite to replace it")


def write_report(dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False,
                 embedding: str = "tsne", max_points: int = 800, seed: int = 0) -> Dict[str, Path]:
    """Write ``out`` (markdown), the HTML beside it and the images folder.

    Args:
        dirs: eval folders, or folders holding them (a ``pcm3 benchmark`` output).
        out: the markdown file (``report.md``); ``report.html`` and ``report_images/`` go beside it.
        embedding: ``tsne`` (exact, in torch) or ``pca``.
        max_points: test samples per feature map (class-stratified subsample).

    Returns:
        ``{"markdown", "html", "images"}`` paths.
    """
    from pcm3.io import write_text
    from pcm3.outputs import output_dir

    out = Path(out)
    if out.suffix.lower() != ".md":
        raise DataError(out, "--out must name a .md file (the HTML and images go beside it)")
    html_path = out.with_suffix(".html")
    images = out.with_name(out.stem + "_images")
    for p in (out, html_path):
        _check_file(p, overwrite)
    runs = load_runs(dirs)
    lines = [MARKER_LINE, "# pcm3 evaluation report", "",
             f"{len(runs)} eval runs: " + ", ".join(sorted({str(m.get("task")) for m in runs})) + ".", ""]
    lines += recognition_tables(runs)
    linear = [m for m in runs if m.get("task") == "linear"]
    occ = [m for m in runs if m.get("task") == "occlusion"]
    pictures: List[Tuple[str, Path]] = []
    with output_dir(images, "report", overwrite=overwrite, protect=[Path(m["_dir"]) for m in runs]) as tmp:
        main = next((m for m in linear if _kind(m) == "pretrained"), linear[0] if linear else None)
        made = [("Confusion matrix", main and plot_confusion(main, tmp / "confusion.png")),
                ("Per-class accuracy", linear and plot_per_class(linear, tmp / "per_class.png")),
                ("Test features in 2-D", linear and plot_feature_maps(linear, tmp / "features_2d.png", method=embedding,
                                                                     max_points=max_points, seed=seed)),
                ("Accuracy against occlusion ratio", occ and plot_occlusion(occ, tmp / "occlusion.png"))]
        for title, p in made:
            if p:
                pictures.append((title, images / Path(p).name))
    if pictures:
        lines += ["## Figures", ""]
        for title, p in pictures:
            lines += [f"### {title}", "", f"![{title}]({images.name}/{p.name})", ""]
    lines += ["## Runs", ""] + [f"- `{m['_dir']}`: {m.get('task')}, {KIND_LABEL.get(_kind(m), _kind(m))}, "
                                f"{_stream(m)}, seed {m.get('seed')}, {m.get('wall_seconds', 0):.0f} s" for m in runs]
    md = "\n".join(lines) + "\n"
    write_text(out, md)
    write_text(html_path, to_html(md, images))
    return {"markdown": out, "html": html_path, "images": images}


def to_html(md: str, images: Path) -> str:
    """A plain HTML rendering of the report's markdown (tables, headings, lists) with images inline."""
    body = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("<!--"):
            body.append(line)
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, rest = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-")]
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</table>")
            continue
        elif line.startswith("!["):
            alt = line[2:line.index("]")]
            name = line[line.index("(") + 1:-1].split("/")[-1]
            data = base64.b64encode((images / name).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n{MARKER_LINE}\n<html><head><meta charset='utf-8'><title>pcm3 evaluation report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
