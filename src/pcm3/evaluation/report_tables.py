"""``pcm3 report``'s tables: eval runs' metrics in the paper's table shapes, as markdown lines.

A run is its ``metrics.json`` as a dict (``_dir``: its folder; ``_stale``: set by
:func:`pcm3.evaluation.report.check_fusions`). :func:`recognition_tables` gives Tables 1-4 (linear
top-1 and 3-stream fusion, semi-supervised mean ± std over seeds, k-NN, occlusion: top-1 in %,
drops against clean in points), :func:`dense_tables` Tables 5 (temporal action detection: mAP_a /
mAP_v in % per IoU, frame accuracy) and 6 (motion prediction: MPJPE in mm per predicted frame and
the mean). Columns are (data set, benchmark) in the paper's order (:data:`PAPER_COLUMNS`); the
paper's figures (:data:`PAPER`, :data:`PAPER_DETECTION`, :data:`PAPER_MOTION`) stand beside
matching columns only. Under each table: warnings (stale fusions, smoke tests), the settings its
rows differ in, the caveat beside the paper's rows, a ``missing:`` line and its runs' notes.

Also the helpers that name a run's row and column (:func:`_kind`, :func:`_stream`,
:func:`_column`...), which the report's pictures (:mod:`pcm3.evaluation.report_figures`) and
writing (:mod:`pcm3.evaluation.report`) share.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

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
# The paper's column order (Tables 1-5): NTU 60 xsub, xview, NTU 120 xsub, xset, PKU-MMD Part I and
# Part II xsub; other (data set, benchmark) columns follow, sorted.
PAPER_COLUMNS = (("ntu60", "xsub"), ("ntu60", "xview"), ("ntu120", "xsub"), ("ntu120", "xset"), ("pku1", "xsub"),
                 ("pku2", "xsub"))
# Table 4's Δ: the mean drop against clean over xsub and xview (points)
PAPER_OCCLUSION_DELTA = {"ntu60": {"spatial": 3.3, "temporal": 5.4}}
PAPER_CITE = "PCM3 paper (Zhang, Lin, Liu, ACM MM 2023)"
PAPER_SOURCE = f"{PAPER_CITE}, Tables 1-4"

RECOGNITION_TASKS = ("linear", "fusion", "semi", "knn", "occlusion")
DENSE_TASKS = ("detection", "motion")
# Table 5: mAP_a / mAP_v (%) at IoU 0.5, PKU-MMD Part I xsub (encoders pretrained on NTU 60 xsub).
PAPER_DETECTION = {("pku1", "xsub"): {"random_init": (29.6, 28.2), "pretrained": (61.8, 61.3)}}
# Table 6: MPJPE (mm). The paper names neither the data set, the benchmark nor the horizon of this
# table ("short-term protocol" of Martinez et al. 2017); its transfer experiments start from NTU 60
# encoders, so the figures are shown beside NTU 60 runs only, as an indication.
PAPER_MOTION = {"ntu60": {"random_init": 108.5, "pretrained": 101.7}}


# --------------------------------------------------------------------------- a run's row and column

def _usable(m: dict) -> bool:
    """A run of a task the report has a table for, with its figures."""
    return m.get("task") in RECOGNITION_TASKS + DENSE_TASKS and isinstance(m.get("figures"), dict)


def _kind(m: dict) -> str:
    kind = (m.get("encoder") or {}).get("kind") or "none"
    if m.get("task") == "fusion":
        kinds = {k for k in m.get("run_kinds") or [] if k}
        kind = kinds.pop() if len(kinds) == 1 else "none"
    return kind


_SEMI_PREFIX = re.compile(r"^frac([0-9.eE+-]+)_seed(\d+)_$")


def _fusion_prefix(m: dict) -> str:
    p = m.get("protocol") if isinstance(m.get("protocol"), dict) else {}
    return str(p.get("prefix") or "")


def _fusion_streams(m: dict) -> Optional[List[str]]:
    """The streams a fusion run fused (from ``streams``, else its per-run figures); None if unknown."""
    if isinstance(m.get("streams"), list):
        return None if None in m["streams"] else [str(x) for x in m["streams"]]
    n = len(m.get("runs") or [])
    names = [k[:-len("_top1")] for k in (m.get("figures") or {}) if k.endswith("_top1") and k != "val_top1"]
    names = [re.sub(r"^run\d+_", "", k) for k in names]
    return names if len(names) == n and n else None


def _fusion_label(m: dict) -> str:
    n = len(m.get("runs") or [])
    streams = _fusion_streams(m)
    if streams is None or len(set(streams)) == len(streams):
        label = f"{n}s fusion"
    else:  # e.g. three joint encoders: not the paper's joint/bone/motion streams
        label = f"{n}-run fusion ({', '.join(streams)})"
    prefix = _fusion_prefix(m)
    g = _SEMI_PREFIX.match(prefix)
    if g:
        label += f", semi {float(g.group(1)) * 100:.10g}% seed {g.group(2)}"
    elif prefix:
        label += f", `{prefix}` scores"
    return label


def _is_3s_linear_fusion(m: dict) -> bool:
    """A fusion of the joint, bone and motion linear scores: the paper's 3s- rows compare with it."""
    streams = _fusion_streams(m)
    return (m.get("task") == "fusion" and not _fusion_prefix(m) and len(m.get("runs") or []) == 3
            and (streams is None or sorted(streams) == ["bone", "joint", "motion"]))


def _stream(m: dict) -> str:
    if m.get("task") == "fusion":
        return _fusion_label(m)
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


def _column_order(col: Tuple[str, str]):
    """Sort key of a (data set, benchmark) column: the paper's order first, then the rest sorted."""
    col = (str(col[0]), str(col[1]))
    return (PAPER_COLUMNS.index(col), "", "") if col in PAPER_COLUMNS else (len(PAPER_COLUMNS), *col)


def _col_name(col: Tuple[str, str]) -> str:
    return f"{col[0]} {col[1]}"


def _row_key(m: dict):
    k, stream = _kind(m), _stream(m)
    order = ("joint", "bone", "motion")
    return (KIND_ORDER.index(k) if k in KIND_ORDER else 99, order.index(stream) if stream in order else 9, stream, k)


def _clash_tags(runs: List[dict], cell) -> Dict[int, str]:
    """``{id(run): tag}`` for the runs that share a table cell (``cell(run)``, e.g. two seeds or
    two ablation variants): each gets a row of its own, labelled by its folder (the part of the
    path that tells them apart), instead of one overwriting the other."""
    groups: Dict[tuple, List[dict]] = {}
    for m in runs:
        groups.setdefault(cell(m), []).append(m)
    tags: Dict[int, str] = {}
    for group in groups.values():
        if len(group) > 1:
            for m, tag in zip(group, _distinct_tags([m.get("_dir", "") for m in group])):
                tags[id(m)] = tag
    return tags


def _distinct_tags(dirs: List[str]) -> List[str]:
    """Labels of folders that share a table cell: each path below the group's common folder
    (``b0/joint_pretrained/linear`` and ``b1/...`` of two benchmark outputs, not ``linear`` twice)."""
    full = [os.path.abspath(d) if d else "" for d in dirs]
    try:
        root = os.path.commonpath(full)
    except ValueError:
        root = ""
    tags = [os.path.relpath(d, root) if root and d != root else (Path(d).name or "?") for d in full]
    return [t if tags.count(t) == 1 else f"{t} #{tags[:i + 1].count(t)}" for i, t in enumerate(tags)]


# ---- what a table's rows are: settings, notes, warnings, what the paper's table has that it lacks

# Protocol keys left out of the "settings differ" footnote: shown elsewhere (the stream column,
# the fusion weights beside the fusion cells), folders (fused runs), or without effect on figures.
_NOT_SETTINGS = frozenset(("stream", "runs", "weights", "num_workers", "save_features", "feature_batch_size",
                           "test_batch_size", "timeline_videos", "linear_run"))
# words of a note that make a run a smoke test (pcm3.evaluation.common.smoke_test_notes)
_SMOKE = "smoke test"
STALE_MARK = "⚠ stale"


def _notes(m: dict) -> List[str]:
    """The run's ``notes`` (a list of strings; one string taken as one note), each once."""
    notes = m.get("notes")
    notes = [notes] if isinstance(notes, str) else notes if isinstance(notes, list) else []
    out: List[str] = []
    for n in notes:
        if isinstance(n, str) and n.strip() and n.strip() not in out:
            out.append(n.strip())
    return out


def _fmt(v) -> str:
    """A setting's value as the footnote shows it."""
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "none"}[v]
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def _settings(m: dict) -> Dict[str, str]:
    """``{setting: value}`` of a run that may change its figures: the protocol (nested keys as
    ``supervised.epochs``), the clip length and test crop actually used, the seed, and the
    pretraining epochs of a pretrained encoder."""
    out: Dict[str, str] = {}

    def flat(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if k == "supervised" and not prefix and _kind(m) != "supervised":
                continue  # how a supervised row is trained: a setting of supervised rows only
            if isinstance(v, dict):
                flat(v, f"{prefix}{k}.")
            elif k not in _NOT_SETTINGS:
                out[prefix + str(k)] = _fmt(v)

    if isinstance(m.get("protocol"), dict):
        flat(m["protocol"], "")
    inp = m.get("input") if isinstance(m.get("input"), dict) else {}
    for k in ("clip_len", "test_crop"):  # the values used (the protocol's null: the encoder's)
        if inp.get(k) is not None:
            out[k] = _fmt(inp[k])
    if m.get("seeds") is not None or m.get("seed") is not None:
        out["seed"] = _fmt(m["seeds"] if isinstance(m.get("seeds"), list) else m.get("seed"))
    enc = m.get("encoder") if isinstance(m.get("encoder"), dict) else {}
    if _kind(m) == "pretrained" and enc.get("pretrain_epochs") is not None:
        out["pretraining epochs"] = _fmt(enc["pretrain_epochs"])
    return out


def _train_size(m: dict) -> Optional[int]:
    n = (m.get("splits") or {}).get("train") if isinstance(m.get("splits"), dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) else None


def _by_value(values: Dict[int, str], refs: Dict[int, str], others: Optional[str] = "the other rows") -> str:
    """``3 (row a) vs 2 (row b, row c)``: the rows grouped by the value they have; the most common
    value, when it is the only one that common, stands for ``others`` ("the other rows"; None:
    every group is named, for a setting that only some of the rows have)."""
    groups: Dict[str, List[str]] = {}
    for i, v in values.items():
        if refs[i] not in groups.setdefault(v, []):
            groups[v].append(refs[i])
    order = sorted(groups, key=lambda v: -len(groups[v]))
    sizes = [len(groups[v]) for v in order]
    majority = others is not None and len(order) > 1 and sizes[0] > 1 and sizes[0] > sizes[1] and len(values) > 2
    parts = [f"{v} ({', '.join(groups[v])})" for v in (order[1:] if majority else order)]
    if majority:
        parts.append(f"{order[0]} ({others})")
    return " vs ".join(parts)


def _settings_footnote(sel: List[dict], refs: Dict[int, str], unit: str) -> Optional[str]:
    """One line naming the settings in which the runs of a table differ (task by task), and the
    training split sizes where runs of one column trained on different numbers of samples."""
    parts: List[str] = []
    tasks: Dict[str, List[dict]] = {}
    for m in sel:
        tasks.setdefault(str(m.get("task")), []).append(m)
    for task, ms in tasks.items():
        if len(ms) < 2:
            continue
        settings = {id(m): _settings(m) for m in ms}
        keys = sorted({k for s in settings.values() for k in s})
        others = f"the other {task} rows" if len(tasks) > 1 else "the other rows"
        for key in keys:  # runs without the key (another version's protocol) are left out of it
            values = {i: s[key] for i, s in settings.items() if key in s}
            if len(set(values.values())) > 1:  # "the other rows" only where every row has the setting
                parts.append(f"{key} {_by_value(values, refs, others if len(values) == len(ms) else None)}")
        columns: Dict[tuple, List[dict]] = {}
        for m in ms:
            columns.setdefault(_column(m), []).append(m)
        for col, cms in sorted(columns.items(), key=lambda kv: _column_order(kv[0])):
            sizes = {id(m): f"{_train_size(m):,} {unit}" for m in cms if _train_size(m) is not None}
            if len(set(sizes.values())) > 1:
                where = f", {_col_name(col)}" if len(columns) > 1 else ""
                fold = others if len(sizes) == len(cms) else None  # rows without a size are no "other rows"
                parts.append(f"training split{where} {_by_value(sizes, refs, fold)}")
    return ("Settings differ between rows: " + "; ".join(parts) + ".") if parts else None


def _notes_list(sel: List[dict], refs: Dict[int, str]) -> List[str]:
    """The notes of the table's runs, each once, with the rows it belongs to where not all."""
    order: List[str] = []
    rows: Dict[str, List[str]] = {}
    for m in sel:
        for n in _notes(m):
            if n not in rows:
                order.append(n)
                rows[n] = []
            rows[n].append(refs[id(m)])
    if not order:
        return []
    out = ["Notes of these runs:", ""]
    for n in order:
        who = list(dict.fromkeys(rows[n]))
        out.append(f"- {n}" + ("" if len(rows[n]) == len(sel) else f" ({'; '.join(who)})"))
    return out + [""]


def _paper_caveat(sel: List[dict], unit: str) -> str:
    """The line beside the paper's rows: its settings are not necessarily these runs'."""
    pre = sorted({str(_settings(m)["pretraining epochs"]) for m in sel if "pretraining epochs" in _settings(m)},
                 key=lambda v: (len(v), v))
    epochs = sorted({_fmt(m["protocol"]["epochs"]) for m in sel
                     if isinstance(m.get("protocol"), dict) and m["protocol"].get("epochs") is not None},
                    key=lambda v: (len(v), v))
    train = sorted({_train_size(m) for m in sel if _train_size(m) is not None})
    here = [f"pretraining epochs {', '.join(pre)}"] * bool(pre) + [f"epochs {', '.join(epochs)}"] * bool(epochs)
    here += [f"training split {', '.join(f'{n:,}' for n in train)} {unit}"] * bool(train)
    transfer = sorted({str(po["dataset"]) for m in sel if _kind(m) == "pretrained"
                       for po in [(m.get("encoder") or {}).get("pretrained_on") or {}]
                       if po.get("dataset") and po["dataset"] != m.get("dataset")})
    here += [f"encoders pretrained on {', '.join(transfer)} (transfer)"] * bool(transfer)
    return ("Caveat: the paper's rows come from the authors' settings (encoders pretrained 450 epochs on the whole "
            "data set, the protocols' full schedules); these runs' settings (epochs, data size) may differ"
            + (f" (here: {'; '.join(here)})" if here else "") + ": an indication, not a like-for-like comparison.")


def _after_table(sel: List[dict], refs: Dict[int, str], *, paper: bool, missing: Sequence[str] = (),
                 unit: str = "clips") -> List[str]:
    """The lines under a table of the runs ``sel`` (``refs``: how the lines name each one's row):
    stale fusions and smoke tests (prominent), the settings in which its rows differ, the caveat
    beside the paper's rows (``paper``: shown), what the paper's table has that it lacks
    (``missing``), and the notes of its runs. ``unit``: what the training split counts."""
    out: List[str] = []
    for m in sel:
        for name, why in m.get("_stale") or []:
            out += [f"> **{STALE_MARK}**: {refs[id(m)]}: `{name}`: {why}; rerun pcm3 eval fusion.", ""]
    for m in sel:
        for n in (n for n in _notes(m) if _SMOKE in n):
            out += [f"> **Warning: a smoke test, not an evaluation.** {refs[id(m)]}: {n}. Its figures do not measure "
                    "generalisation" + (", and are not comparable with the paper's rows" if paper else "") + ".", ""]
    footnote = _settings_footnote(sel, refs, unit)
    if footnote:
        out += [footnote, ""]
    if paper:
        out += [_paper_caveat(sel, unit), ""]
    if missing:
        out += ["missing: " + "; ".join(missing) + ".", ""]
    return out + _notes_list(sel, refs)


def _absent(expected: Sequence[str], present: Dict[str, set], cols: Sequence[tuple]) -> List[str]:
    """The ``expected`` items absent from the table's columns: by name where absent from all,
    with the columns where absent from some."""
    out = []
    for item in expected:
        lacking = [c for c in cols if c not in present.get(item, set())]
        if lacking and len(lacking) == len(cols):
            out.append(item)
        elif lacking:
            out.append(f"{item} ({', '.join(_col_name(c) for c in lacking)})")
    return out


def _missing(what: str, items: List[str]) -> List[str]:
    return [f"{what} {', '.join(items)}"] if items else []


def _paper_columns(cols: Sequence[tuple], table: dict) -> List[str]:
    """The paper's columns of ``table`` (``{(dataset, benchmark): ...}``) not among ``cols``; none
    when no column is of the paper's data sets (a report on the built-in data, MSR Action3D...
    lacks nothing of the paper's benchmarks)."""
    if not any(c[0] in {d for d, _ in table} for c in cols):
        return []
    return _missing("benchmarks", [_col_name(c) for c in sorted(table, key=_column_order) if c not in cols])


def _weights_text(m: dict) -> str:
    """`` (weights joint 0.50, bone 0.00, motion 0.50, searched; bone unused: 2 of 3 in effect)``
    for a fusion run that records its weights, else ``""``."""
    w = m.get("weights")
    if not isinstance(w, list) or not w or not all(isinstance(x, (int, float)) for x in w):
        return ""
    streams = _fusion_streams(m)
    names = streams if streams and len(streams) == len(w) and len(set(streams)) == len(streams) else \
        [f"run{i + 1}" for i in range(len(w))]
    text = ", ".join(f"{n} {float(x):.2f}" for n, x in zip(names, w))
    how = {True: "searched", False: "given"}.get(m.get("weights_searched"), "")
    zero = [n for n, x in zip(names, w) if round(float(x), 2) == 0]
    used = f"; {', '.join(zero)} unused: {len(w) - len(zero)} of {len(w)} in effect" if zero else ""
    return f" (weights {text}{', ' + how if how else ''}{used})"


def _stale_mark(m: dict) -> str:
    return f" {STALE_MARK}" if m.get("_stale") else ""


def recognition_tables(runs: List[dict]) -> List[str]:
    """Markdown of Tables 1-4 from the recognition runs' metrics (other tasks' runs are ignored).

    Columns in the paper's order (:data:`PAPER_COLUMNS`, then the rest sorted). Under each table:
    warnings (stale fusions, marked by :func:`check_fusions`; smoke tests), the settings in which
    its rows differ, the caveat beside the paper's rows, one ``missing:`` line naming what the
    paper's table (and the baselines) has that this one lacks, and the notes of its runs.
    """
    runs = [m for m in runs if _usable(m)]
    lines: List[str] = []
    paper_used = False

    def header(cols) -> List[str]:
        return ["encoder", "stream"] + [_col_name(c) for c in cols]

    def grid(task_names: Sequence[str], cell, paper_cell=None, paper_label: str = "paper: PCM3", extra=()):
        """``(columns, body, runs, {id(run): how the notes name its row}, paper row shown)``."""
        nonlocal paper_used
        sel = [m for m in runs if m.get("task") in task_names] + list(extra)
        cols = sorted({_column(m) for m in sel}, key=_column_order)
        # Runs that would fill the same cell (two seeds, two ablation variants...) each get a row
        # of their own, labelled by their folder (the part of the path that tells them apart),
        # instead of one overwriting the other.
        tags = _clash_tags(sel, lambda m: (_row_key(m), m.get("task"), _column(m)))
        rows: Dict[tuple, Dict[tuple, str]] = {}
        refs: Dict[int, str] = {}
        for m in sel:
            tag = tags.get(id(m), "")
            rows.setdefault((_row_key(m), m.get("task"), tag), {})[_column(m)] = cell(m) + _stale_mark(m)
            refs[id(m)] = (KIND_LABEL.get(_kind(m), _kind(m)) + (f" (`{tag}`)" if tag else "") + f" {_stream(m)}"
                           + (f", {_col_name(_column(m))}" if len(cols) > 1 else ""))
        body = []
        for (rk, task, tag), cells in sorted(rows.items()):
            _, _, stream, kind = rk
            label = KIND_LABEL.get(kind, kind) + (f" (`{tag}`)" if tag else "")
            body.append([label, stream] + [cells.get(c, "-") for c in cols])
        shown = False
        if paper_cell is not None:
            paper = [paper_cell(c) for c in cols]
            if any(p != "-" for p in paper):
                body.append([paper_label, "joint"] + paper)
                paper_used = shown = True
        return cols, body, sel, refs, shown

    def present(sel, item) -> Dict[str, set]:
        """``{name: columns}`` of the items ``item(run)`` names (a name, a list of them, or None)."""
        out: Dict[str, set] = {}
        for m in sel:
            names = item(m)
            for name in [names] if isinstance(names, str) else names or []:
                out.setdefault(name, set()).add(_column(m))
        return out

    baselines = [KIND_LABEL[k] for k in ("pretrained", "random_init", "raw_input", "supervised")]

    semi_fusions = [m for m in runs if m.get("task") == "fusion" and _SEMI_PREFIX.match(_fusion_prefix(m))]
    fusions = [m for m in runs if m.get("task") == "fusion" and not any(m is f for f in semi_fusions)]

    def linear_cell(m):
        return _pct(m["figures"].get("top1")) + (_weights_text(m) if m.get("task") == "fusion" else "")

    cols, body, sel, refs, shown = grid(("linear",), linear_cell, lambda c: _pct(PAPER["linear"].get(c)),
                                        extra=fusions)
    # the paper's 3s- figures only beside a fusion of the joint, bone and motion linear scores
    fused3 = {_column(m) for m in runs if _is_3s_linear_fusion(m)}
    fused = [_pct(PAPER["fusion"].get(c)) if c in fused3 else "-" for c in cols]
    if any(f != "-" for f in fused):
        body.append(["paper: 3s-PCM3", "3s fusion"] + fused)
        paper_used = shown = True
    table = _table("Table 1: linear evaluation, top-1 (%)", header(cols), body)
    if table:
        linear = [m for m in sel if m.get("task") == "linear"]
        pre = [m for m in linear if _kind(m) == "pretrained"]
        missing = _missing("rows", _absent(baselines, present(linear, lambda m: KIND_LABEL.get(_kind(m))), cols))
        pre_cols = sorted({_column(m) for m in pre}, key=_column_order)
        missing += _missing("streams", _absent(("joint", "bone", "motion"), present(pre, _stream), pre_cols))
        missing += _absent(["3-stream fusion"], {"3-stream fusion": fused3}, cols)
        missing += _paper_columns(cols, PAPER["linear"])
        lines += table + _after_table(sel, refs, paper=shown, missing=missing)

    def semi_cells(m):
        f = m["figures"]
        if m.get("task") == "fusion":  # fused scores of one labelled fraction and seed
            g = _SEMI_PREFIX.match(_fusion_prefix(m))
            return f"{float(g.group(1)) * 100:.10g}%: {_pct(f.get('top1'))}{_weights_text(m)}"
        fracs = [k[:-len("_top1_mean")] for k in f if k.endswith("_top1_mean")]
        return ", ".join(f"{fr}: {_pct(f[fr + '_top1_mean'], f.get(fr + '_top1_std'))}" for fr in fracs)

    def semi_paper(c):
        p = PAPER["semi"].get(c)
        return ", ".join(f"{k}: {v:.1f}" for k, v in p.items()) if p else "-"

    cols, body, sel, refs, shown = grid(("semi",), semi_cells, semi_paper, extra=semi_fusions)
    table = _table("Table 2: semi-supervised, top-1 (%) mean ± std over seeds, per labelled fraction",
                   header(cols), body)
    if table:
        semi = [m for m in sel if m.get("task") == "semi"]
        missing = _missing("rows", _absent(baselines[:1], present(semi, lambda m: KIND_LABEL.get(_kind(m))), cols))
        fracs = present([m for m in semi if _kind(m) == "pretrained"],
                        lambda m: [k[:-len("_top1_mean")] for k in m["figures"] if k.endswith("_top1_mean")])
        missing += _missing("labelled fractions", _absent(("1%", "10%"), fracs, cols))
        missing += _paper_columns(cols, PAPER["semi"])
        lines += table + _after_table(sel, refs, paper=shown, missing=missing)

    def knn_cell(m):
        f = m["figures"]
        ks = sorted(int(k[3:]) for k in f if k.startswith("knn") and k[3:].isdigit())
        return " / ".join(_pct(f[f"knn{k}"]) for k in ks) + " (k = " + ", ".join(map(str, ks)) + ")"

    cols, body, sel, refs, shown = grid(("knn",), knn_cell,
                                        lambda c: _pct(PAPER["knn"].get(c)) + " (k = 1)" if c in PAPER["knn"] else "-")
    table = _table("Table 3: k-NN retrieval, top-1 (%)", header(cols), body)
    if table:
        missing = _missing("rows", _absent(baselines[:1], present(sel, lambda m: KIND_LABEL.get(_kind(m))), cols))
        missing += _absent(["k = 1"], present(sel, lambda m: "k = 1" if "knn1" in m["figures"] else None), cols)
        missing += _paper_columns(cols, PAPER["knn"])
        lines += table + _after_table(sel, refs, paper=shown, missing=missing)

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

    cols, body, sel, refs, shown = grid(("occlusion",), occ_cell, occ_paper)
    table = _table("Table 4: occlusion, linear top-1 (%) and drop against clean (points)", header(cols), body)
    if table:
        missing = _missing("rows", _absent(baselines[:1], present(sel, lambda m: KIND_LABEL.get(_kind(m))), cols))
        missing += _missing("occlusion kinds", _absent(
            ("spatial", "temporal"), present(sel, lambda m: [k for k in ("spatial", "temporal")
                                                             if f"{k}_top1" in m["figures"]]), cols))
        missing += _paper_columns(cols, PAPER["occlusion"])
        lines += table + _after_table(sel, refs, paper=shown, missing=missing)
    occ_runs = [m for m in runs if m.get("task") == "occlusion"]
    for dataset, (head, rows_, used, note) in _occlusion_paper_shape(occ_runs).items():
        lines += _table(f"Table 4 in the paper's shape, {dataset}: occluded top-1 (%) per benchmark; Δ = the "
                        "drop against clean, averaged over the benchmarks (points)", head, rows_)
        lines += [note, ""] if note else []
        paper_used = paper_used or used

    # detection and motion: dense_tables; other tasks: listed as skipped by write_report
    if paper_used:
        lines += [f"Paper rows: {PAPER_SOURCE}; shown where the data set and benchmark match.", ""]
    return lines


def _occlusion_paper_shape(occ: List[dict]) -> Dict[str, Tuple[List[str], List[List[str]], bool, Optional[str]]]:
    """Per data set: the paper's Table 4 layout (spatial per benchmark, spatial Δ, temporal per
    benchmark, temporal Δ; Δ the mean drop over the benchmarks), rows as in the other tables,
    the paper's row where its data set and both its benchmarks are there. Returns
    ``{dataset: (header, rows, paper row shown, note)}``, the note (else None) saying when the
    rows' Δ average over different sets of benchmarks (a row that lacks one)."""
    out = {}
    datasets = {_column(m)[0] for m in occ}
    for dataset in sorted(datasets, key=lambda d: min(_column_order((d, b)) for dd, b in map(_column, occ) if dd == d)):
        ms = [m for m in occ if _column(m)[0] == dataset]
        benches = sorted({_column(m)[1] for m in ms}, key=lambda b: _column_order((dataset, b)))
        tags = _clash_tags(ms, lambda m: (_row_key(m), _column(m)[1]))
        rows: Dict[tuple, Dict[str, dict]] = {}
        for m in ms:
            rows.setdefault((_row_key(m), tags.get(id(m), "")), {})[_column(m)[1]] = m["figures"]
        kinds = ("spatial", "temporal")
        head = ["encoder", "stream"] + [c for k in kinds for c in [f"{k} {b}" for b in benches] + [f"{k} Δ"]]
        body = []
        over: Dict[str, Dict[str, str]] = {k: {} for k in kinds}  # {kind: {row: benchmarks its Δ averages}}
        for (rk, tag), by_bench in sorted(rows.items()):
            cells = []
            label = KIND_LABEL.get(rk[3], rk[3]) + (f" (`{tag}`)" if tag else "")
            for k in kinds:
                cells += [_pct(by_bench.get(b, {}).get(f"{k}_top1")) for b in benches]
                with_drop = [b for b in benches if by_bench.get(b, {}).get(f"{k}_drop") is not None]
                drops = [by_bench[b][f"{k}_drop"] for b in with_drop]
                cells.append(_pct(float(np.mean(drops))) if drops else "-")
                if with_drop:
                    over[k][f"{label} {rk[2]}"] = ", ".join(with_drop)
            body.append([label, rk[2]] + cells)
        paper = [PAPER["occlusion"].get((dataset, b)) for b in benches]
        whole = set(benches) == {b for d, b in PAPER["occlusion"] if d == dataset}
        used = any(paper)
        if used:
            cells = []
            for k in kinds:
                cells += [_pct(p.get(k)) if p else "-" for p in paper]
                cells.append(_pct(PAPER_OCCLUSION_DELTA.get(dataset, {}).get(k)) if whole else "-")
                if whole and k in PAPER_OCCLUSION_DELTA.get(dataset, {}):
                    over[k]["paper: PCM3"] = ", ".join(benches)
            body.append(["paper: PCM3", "joint"] + cells)
        differ = []
        for k in kinds:
            groups: Dict[str, List[str]] = {}
            for row, where in over[k].items():
                groups.setdefault(where, []).append(row)
            if len(groups) > 1:
                differ.append(f"{k} Δ over "
                              + " vs ".join(f"{where} ({', '.join(rs)})" for where, rs in groups.items()))
        note = ("The Δ of these rows average over different benchmarks (a row lacks one), so they do not compare: "
                + "; ".join(differ) + ".") if differ else None
        out[dataset] = (head, body, used, note)
    return out


# --------------------------------------------------------------------------- dense tasks (Tables 5 and 6)

def _dense_column(m: dict) -> Tuple[str, str]:
    """(data set name, benchmark actually used) of a detection or motion run."""
    dataset, benchmark = _column(m)
    return dataset, str(m.get("benchmark_used") or benchmark)


def _dense_stream(m: dict) -> str:
    return str(m.get("stream") or _stream(m))


def _figures_of(m: dict) -> Dict[str, float]:
    f = m.get("figures")
    return {k: v for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} \
        if isinstance(f, dict) else {}


def _labels(runs: List[dict]) -> List[str]:
    """Row labels of ``runs``: the encoder kind, with the seed where two runs share kind and stream."""
    keys = [(_kind(m), _dense_stream(m)) for m in runs]
    labels = [KIND_LABEL.get(k, k) + (f", seed {m.get('seed')}" if keys.count((k, s)) > 1 else "")
              for m, (k, s) in zip(runs, keys)]
    for label in set(labels):  # same kind, stream and seed (two encoders): told apart by folder
        same = [i for i, lab in enumerate(labels) if lab == label and keys.count(keys[i]) > 1]
        same = [i for i in same if [labels[j] for j in same].count(label) > 1]
        for i, tag in zip(same, _distinct_tags([runs[i].get("_dir", "") for i in same])):
            labels[i] = f"{labels[i]} (`{tag}`)"
    return labels


def _dense_order(m: dict):
    k = _kind(m)
    return (KIND_ORDER.index(k) if k in KIND_ORDER else 99, k, _dense_stream(m), str(m.get("seed")), m.get("_dir", ""))


_DET_KEY = re.compile(r"^mAP_([av])@([0-9.]+) \((\w+)\)$")


def detection_tables(runs: List[dict]) -> List[str]:
    """Markdown of Table 5 from the detection runs, one table per (data set, benchmark).

    Columns: mAP_a and mAP_v (%) of the headline metric at every IoU threshold found (0.1/0.3/0.5
    by default): ``authors`` (the PCM3 authors' detection code, where the paper's rows stand), or
    ``official`` for result folders written before ``authors`` existed; then mAP_a / mAP_v@0.5
    of each other metric found (``official``: PKU-MMD ``evaluate.py``; ``voc``), and frame
    accuracy (%) when any run has it. The paper's rows (IoU 0.5) are added for PKU-MMD Part I
    xsub only.
    """
    det = [m for m in runs if m.get("task") == "detection"]
    lines: List[str] = []
    det_cols = {_dense_column(m) for m in det}
    for col in sorted(det_cols, key=_column_order):
        sel = sorted((m for m in det if _dense_column(m) == col), key=_dense_order)
        found = set()   # (metric, IoU threshold) present in any run
        for m in sel:
            found |= {(g.group(3), g.group(2)) for g in map(_DET_KEY.match, _figures_of(m)) if g}
        paper = PAPER_DETECTION.get(col)
        head = "authors" if any(metric == "authors" for metric, _ in found) else "official"
        ious = sorted({t for metric, t in found if metric == head} | ({"0.5"} if paper else set()), key=float)
        others = [metric for metric in ("official", "voc") if metric != head and (metric, "0.5") in found]
        frame = any("frame accuracy" in _figures_of(m) for m in sel)
        header = ["encoder", "stream"] + [f"{a}@{t}" for t in ious for a in ("mAP_a", "mAP_v")]
        header += [f"{metric} {a}@0.5" for metric in others for a in ("mAP_a", "mAP_v")] + ["frame accuracy"] * frame
        body = []
        labels = _labels(sel)
        for m, label in zip(sel, labels):
            f = _figures_of(m)
            row = [label, _dense_stream(m)]
            row += [_pct(f.get(f"{a}@{t} ({head})")) for t in ious for a in ("mAP_a", "mAP_v")]
            row += [_pct(f.get(f"{a}@0.5 ({metric})")) for metric in others for a in ("mAP_a", "mAP_v")]
            row += [_pct(f.get("frame accuracy"))] * frame
            body.append(row)
        if paper:
            for kind, name in (("random_init", "paper: random init"), ("pretrained", "paper: PCM3")):
                a, v = paper[kind]
                cells = {"mAP_a@0.5": _pct(a), "mAP_v@0.5": _pct(v)}
                body.append([name, "joint"] + [cells.get(h, "-") for h in header[2:]])
        lines += _table(f"Temporal action detection (Table 5): mAP (%), {col[0]} {col[1]}", header, body)
        described = {"authors": "the PCM3 authors' detection code (VOC devkit mAP_a over the classes present; "
                                "mAP_v with duplicates counted once)",
                     "official": "PKU-MMD evaluate.py (best overlap with any ground truth, duplicates count, "
                                 "AP by removal, mAP_a over K + 1 label slots)",
                     "voc": "one-to-one matching with the best unmatched ground truth, all-point AP"}
        notes = [f"mAP_a@t / mAP_v@t: the {head} metric at IoU t, {described[head]}."]
        notes += [f"{metric}: {described[metric]}." for metric in others]
        if paper:
            notes.append(f"Paper rows: {PAPER_CITE}, Table 5 (PKU-MMD Part I xsub, IoU 0.5, encoders "
                         "pretrained on NTU 60 xsub); the paper does not name its AP definition, its figures "
                         f"stand under the {head} columns"
                         + (" (its authors' code computes these)." if head == "authors" else "."))
        lines += [" ".join(notes), ""]
        kinds = {KIND_LABEL.get(_kind(m)): {col} for m in sel}
        missing = _missing("rows", _absent([KIND_LABEL[k] for k in ("random_init", "pretrained")], kinds, [col]))
        if any(c[0] in {d for d, _ in PAPER_DETECTION} for c in det_cols):  # only beside the paper's data
            missing += _missing("benchmark", [_col_name(c) for c in PAPER_DETECTION if c not in det_cols])
        lines += _after_table(sel, {id(m): f"{label} {_dense_stream(m)}" for m, label in zip(sel, labels)},
                              paper=bool(paper), missing=missing, unit="videos")
    return lines


_MOT_KEY = re.compile(r"^MPJPE@(\d+) \((.+)\)$")


def _motion_rows(m: dict) -> Dict[str, Tuple[Dict[int, float], Optional[float]]]:
    """``{label: ({frame (1-based): mm}, mean mm)}`` of a motion run, the encoder row and zero-velocity."""
    f = _figures_of(m)
    per = m.get("mpjpe_per_horizon") if isinstance(m.get("mpjpe_per_horizon"), dict) else {}
    labels = [k for k in per if k != "zero_velocity"]
    labels += [g.group(2) for k in f for g in [_MOT_KEY.match(k)] if g and g.group(2) != "zero-velocity"]
    labels += [k[len("MPJPE ("):-1] for k in f if k.startswith("MPJPE (") and k != "MPJPE (zero-velocity)"]
    out = {}
    for label, key in ([(labels[0], labels[0])] if labels else []) + [("zero-velocity", "zero_velocity")]:
        frames = {i + 1: float(v) for i, v in enumerate(per.get(key) or []) if v is not None}
        for k, v in f.items():
            g = _MOT_KEY.match(k)
            if g and g.group(2) == label:
                frames.setdefault(int(g.group(1)), float(v))
        mean = f.get(f"MPJPE ({label})")
        if mean is None and frames and len(frames) == max(frames):
            mean = float(np.mean(list(frames.values())))
        if frames or mean is not None:
            out["zero-velocity" if key == "zero_velocity" else "model"] = (frames, mean)
    return out


def motion_tables(runs: List[dict]) -> List[str]:
    """Markdown of Table 6 from the motion runs: MPJPE (mm) per predicted frame and the mean.

    One table per (data set, benchmark, observed and predicted frames, fps): a zero-velocity row
    (one per distinct set of values), then each run's row by encoder kind. The paper's means
    (random init 108.5, PCM3 101.7 mm) are added beside NTU 60 runs only (see ``PAPER_MOTION``).
    """
    mot = [m for m in runs if m.get("task") == "motion"]

    def setting(m):
        p = m.get("protocol") if isinstance(m.get("protocol"), dict) else {}
        return _dense_column(m) + (p.get("observed"), p.get("predicted"), m.get("fps") or p.get("fps"))

    lines: List[str] = []
    for key in sorted({setting(m) for m in mot}, key=lambda k: (_column_order(k[:2]), tuple(str(x) for x in k[2:]))):
        dataset, benchmark, observed, predicted, fps = key
        sel = sorted((m for m in mot if setting(m) == key), key=_dense_order)
        rows = [(m, _motion_rows(m)) for m in sel]
        n = predicted or max([max(fr, default=0) for _, r in rows for fr, _ in r.values()], default=0)
        frames = list(range(1, int(n) + 1))
        header = ["method", "stream"] + [f"+{t}" + (f" ({1000 * t / fps:.0f} ms)" if fps else "") for t in frames]
        header += ["mean"]

        def cells(fr, mean):
            return [f"{fr[t]:.1f}" if t in fr else "-" for t in frames] + [f"{mean:.1f}" if mean is not None else "-"]

        # zero-velocity: once per distinct set of values (a run with fewer frames that agrees is the same row)
        body, zeros = [], []
        for m, c in sorted(((m, cells(*r["zero-velocity"])) for m, r in rows if "zero-velocity" in r),
                           key=lambda mc: mc[1].count("-")):
            if not any(all(x == "-" or x == y for x, y in zip(c, z)) for z in zeros):
                zeros.append(c)
                body.append(["zero-velocity", _dense_stream(m)] + c)
        labels = _labels(sel)
        for (m, r), label in zip(rows, labels):
            if "model" in r:
                body.append([label, _dense_stream(m)] + cells(*r["model"]))
        paper = PAPER_MOTION.get(dataset)
        if paper:
            body += [["paper: random init", "joint"] + ["-"] * len(frames) + [f"{paper['random_init']:.1f}"],
                     ["paper: PCM3", "joint"] + ["-"] * len(frames) + [f"{paper['pretrained']:.1f}"]]
        what = f"{observed} observed -> {predicted} predicted frames" if observed and predicted else "predicted frames"
        lines += _table(f"Motion prediction (Table 6): MPJPE (mm), {dataset} {benchmark}, {what}"
                        + (f" at {fps:g} fps" if fps else ""), header, body)
        if paper:
            lines += [f"Paper rows: {PAPER_CITE}, Table 6, one MPJPE per method; the paper names "
                      "neither the data set, the benchmark nor the horizon of that table (short-term protocol of "
                      "Martinez et al. 2017; its transfer experiments start from NTU 60 encoders): an indication "
                      "beside NTU 60 runs, not a like-for-like comparison.", ""]
        kinds = {KIND_LABEL.get(_kind(m)): {key[:2]} for m, r in rows if "model" in r}
        missing = _missing("rows", _absent([KIND_LABEL[k] for k in ("random_init", "pretrained")], kinds, [key[:2]]))
        lines += _after_table(sel, {id(m): f"{label} {_dense_stream(m)}" for m, label in zip(sel, labels)},
                              paper=bool(paper), missing=missing)
    return lines


def dense_tables(runs: List[dict]) -> List[str]:
    """Markdown of Tables 5 (detection) and 6 (motion prediction) from the runs' metrics."""
    return detection_tables(runs) + motion_tables(runs)


def unknown_runs(runs: List[dict]) -> List[dict]:
    """Runs of tasks this report has no table for (skipped, listed with a note)."""
    return [m for m in runs if not _usable(m)]
