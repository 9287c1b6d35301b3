"""``pcm3 report``: eval folders collected into the paper's table shapes, with pictures.

:func:`write_report` reads the ``metrics.json`` of every eval folder given (or found below a
given folder, as ``pcm3 benchmark`` writes them), and writes

- ``report.md``: Table 1 (linear top-1 and 3-stream fusion), Table 2 (semi-supervised mean ±
  std), Table 3 (k-NN), Table 4 (occlusion: clean, occluded, drop), Table 5 (temporal action
  detection: mAP_a / mAP_v per IoU, frame accuracy), Table 6 (motion prediction: MPJPE in mm per
  predicted frame and mean, zero-velocity row), and the paper's figures beside ours where the data
  set (and benchmark) match; folders of tasks the report does not know are listed as skipped.
  Columns stand in the paper's order. Under each table: stale fusions (a fused run's scores
  recomputed or gone since, by the ``scores_sha256`` the fusion recorded) and smoke tests, marked
  prominently; the settings in which its rows differ (protocol keys, training split size); the
  fusion weights beside each fusion cell; a caveat beside the paper's rows; one ``missing:`` line
  (rows, streams, benchmarks the paper's table has and this one lacks); the notes of its runs;
- ``report.html``: the same with the images inline;
- ``.report.md.pcm3``: the record (SHA-256) of the markdown and HTML; the HTML holds every image, so
  ``--overwrite`` replaces a report only while none of its files was changed since;
- ``<name>_images/``: confusion matrix (row-normalised, linear, pretrained row, joint stream first), per-class
  accuracy of every linear row, a 2-D map of test features coloured by class for pretrained vs
  random init (exact t-SNE, :mod:`pcm3.evaluation.tsne`; PCA when asked, and labelled so),
  accuracy against the realised occlusion ratio, and copies of the dense tasks' own images
  (detection ``timeline.png``, motion ``mpjpe.png`` and ``prediction.png``).
"""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pcm3.errors import DataError
from pcm3.evaluation.common import load_scores, read_metrics
from pcm3.io import file_sha256

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
# The paper's tables by the tasks that fill them, as the report names one it lacks.
TASK_TABLES = ((("linear", "fusion"), "linear evaluation and 3-stream fusion (pcm3 eval linear, pcm3 eval fusion)"),
               (("semi",), "semi-supervised (pcm3 eval semi)"), (("knn",), "k-NN retrieval (pcm3 eval knn)"),
               (("occlusion",), "occlusion (pcm3 eval occlusion)"),
               (("detection",), "temporal action detection (pcm3 eval detection)"),
               (("motion",), "motion prediction (pcm3 eval motion)"))
# Table 5: mAP_a / mAP_v (%) at IoU 0.5, PKU-MMD Part I xsub (encoders pretrained on NTU 60 xsub).
PAPER_DETECTION = {("pku1", "xsub"): {"random_init": (29.6, 28.2), "pretrained": (61.8, 61.3)}}
# Table 6: MPJPE (mm). The paper names neither the data set, the benchmark nor the horizon of this
# table ("short-term protocol" of Martinez et al. 2017); its transfer experiments start from NTU 60
# encoders, so the figures are shown beside NTU 60 runs only, as an indication.
PAPER_MOTION = {"ntu60": {"random_init": 108.5, "pretrained": 101.7}}


# --------------------------------------------------------------------------- collecting

def _is_eval_result(folder: Path) -> bool:
    """A folder holding ``metrics.json`` is an eval folder, except a demo folder: its
    ``metrics.json`` is the demo's summary, its eval folders lie below it."""
    from pcm3.outputs import folder_kind

    return folder_kind(folder) != "demo"


def find_runs(paths: Sequence[str | os.PathLike], depth: int = 3) -> List[Path]:
    """Eval folders (holding ``metrics.json``) among ``paths`` and below them (``depth`` levels);
    a folder reached twice (given, and below another given folder) counts once."""
    found: List[Path] = []
    seen = set()

    def walk(p: Path, level: int) -> int:
        if (p / "metrics.json").is_file() and _is_eval_result(p):
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append(p)
            return 1
        n = 0
        if level < depth:
            for child in sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith(".")):
                n += walk(child, level + 1)
        return n

    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise DataError(path, "no such folder (give eval folders or a folder that holds them)")
        if not walk(path, 0):
            raise DataError(path, "holds no eval results (metrics.json)")
    return found


def load_runs(paths: Sequence[str | os.PathLike]) -> List[dict]:
    """Every eval folder's metrics, with ``_dir`` added."""
    runs = []
    for d in find_runs(paths):
        m = read_metrics(d)
        if not isinstance(m, dict):
            m = {"task": None}
        m["_dir"] = str(d)
        runs.append(m)
    return runs


def _fused_folders(name: str, fusion_dir: str, locate=None) -> List[Path]:
    """Where a fused run folder named ``name`` in a fusion's ``runs`` may be now: the path itself
    (``locate`` maps it first, e.g. to the temporary folder a benchmark reports from); a relative
    one (as given to ``pcm3 eval fusion`` in the folder it ran in) below the current folder, else
    below a folder holding the fusion folder; an absolute one that is gone (a moved or copied
    benchmark folder), its last parts below a folder holding the fusion folder."""
    path = Path(locate(name) if locate is not None else name)
    bases = [Path.cwd(), *Path(os.path.abspath(fusion_dir)).parents]
    if path.is_absolute():
        if path.exists():
            return [path]
        # a moved or copied folder (a benchmark's fusions record absolute paths): the path's last
        # parts below a folder holding the fusion folder (the checksum then tells the right one)
        tails = [Path(*path.parts[-k:]) for k in range(1, len(path.parts))]
        return [path] + list(dict.fromkeys(Path(os.path.normpath(b / t)) for t in tails for b in bases[1:]))
    return list(dict.fromkeys(Path(os.path.normpath(b / path)) for b in bases))


def check_fusions(runs: List[dict], locate=None) -> None:
    """Mark the fusion runs whose fused scores changed since they were fused: ``run["_stale"] =
    [(run folder, why)]``, why being that its ``{prefix}scores.npy`` was recomputed after the
    fusion (its SHA-256 is not the one the fusion recorded in ``scores_sha256``) or is gone.
    Fusion folders that recorded no ``scores_sha256`` (older ones) are not checked.

    ``locate``: maps a recorded run folder to where it is now (``write_report``'s ``shown_as``
    in reverse), or None.
    """
    for m in runs:
        if m.get("task") != "fusion" or "scores_sha256" not in m:
            continue
        names, sums = m.get("runs"), m.get("scores_sha256")
        prefix = m["prefix"] if isinstance(m.get("prefix"), str) else _fusion_prefix(m)
        if not (isinstance(names, list) and isinstance(sums, list) and len(names) == len(sums)
                and all(isinstance(x, str) for x in sums)):
            m["_stale"] = [(m.get("_dir", "?"), "its scores_sha256 does not name one checksum per fused run, "
                                                "so its scores cannot be checked")]
            continue
        stale = []
        for name, want in zip(names, sums):
            files = [f / f"{prefix}scores.npy" for f in _fused_folders(str(name), m.get("_dir", "."), locate)]
            files = [f for f in files if f.is_file()]
            if not files:
                stale.append((str(name), f"{prefix}scores.npy is gone (or the folder), so the fused scores "
                                         "cannot be checked"))
            elif not any(file_sha256(f) == want.lower() for f in files):
                stale.append((str(name), f"{prefix}scores.npy recomputed after this fusion"))
        if stale:
            m["_stale"] = stale


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


def _by_value(values: Dict[int, str], refs: Dict[int, str], others: str = "the other rows") -> str:
    """``3 (row a) vs 2 (row b, row c)``: the rows grouped by the value they have; the most common
    value, when it is the only one that common, stands for "the other rows"."""
    groups: Dict[str, List[str]] = {}
    for i, v in values.items():
        if refs[i] not in groups.setdefault(v, []):
            groups[v].append(refs[i])
    order = sorted(groups, key=lambda v: -len(groups[v]))
    sizes = [len(groups[v]) for v in order]
    majority = len(order) > 1 and sizes[0] > 1 and sizes[0] > sizes[1] and len(values) > 2
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
            if len(set(values.values())) > 1:
                parts.append(f"{key} {_by_value(values, refs, others)}")
        columns: Dict[tuple, List[dict]] = {}
        for m in ms:
            columns.setdefault(_column(m), []).append(m)
        for col, cms in sorted(columns.items(), key=lambda kv: _column_order(kv[0])):
            sizes = {id(m): f"{_train_size(m):,} {unit}" for m in cms if _train_size(m) is not None}
            if len(set(sizes.values())) > 1:
                where = f", {_col_name(col)}" if len(columns) > 1 else ""
                parts.append(f"training split{where} {_by_value(sizes, refs, others)}")
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


# --------------------------------------------------------------------------- writing

#: The kind in the record ``.report.md.pcm3`` (:func:`pcm3.outputs.recorded_output`) that proves
#: ``report.md`` and ``report.html`` written by ``pcm3 report`` and unchanged since.
REPORT_KIND = "report"

# An image inline in the HTML (:func:`to_html`), in the order of the markdown's image lines.
_INLINE_IMAGE = re.compile(r'<p><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]*)"></p>')


def _has_marker(path: Path) -> bool:
    """Whether ``path`` carries :data:`MARKER_LINE` on one of its first two lines."""
    try:
        with open(path, errors="replace") as f:
            return MARKER_LINE in (f.readline().strip(), f.readline().strip())
    except OSError:
        return False


def _image_names(md: str) -> List[str]:
    """The image files the markdown shows, in order (as :func:`to_html` reads them)."""
    return [line[line.index("](") + 2:-1].split("/")[-1] for line in md.splitlines()
            if line.startswith("![") and "](" in line]


def _unchanged_report(out: Path, html_path: Path, images: Path, *, legacy: bool) -> Optional[str]:
    """None when the report's images (and, with ``legacy``, a report of an older pcm3 that kept no
    record, its markdown and HTML too) are as ``pcm3 report`` wrote them; else why not, as a
    clause. The HTML holds every image inline as drawn: an image that differs from its inline
    copy was changed, and (``legacy``) an HTML that is not :func:`to_html` of the markdown and
    images means one of them was."""
    try:
        md, page = out.read_text(), html_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        return f"it cannot be read ({getattr(e, 'strerror', None) or e})"
    names, inline = _image_names(md), _INLINE_IMAGE.findall(page)
    if len(names) != len(inline):
        return f"{out.name} shows {len(names)} images and {html_path.name} holds {len(inline)} (edited since?)"
    for name, data in zip(names, inline):
        f = images / name
        if f.is_symlink() or not f.is_file():
            return f"{images.name}/{name} is missing or not a plain file"
        if base64.b64encode(f.read_bytes()).decode() != data:
            return f"{images.name}/{name} was changed since pcm3 wrote it"
    if legacy:
        try:
            same = to_html(md, images) == page
        except (OSError, ValueError):
            same = False
        if not same:
            return f"{out.name} and {html_path.name} no longer match as pcm3 wrote them (edited since?)"
    return None


def _check_outputs(out: Path, html_path: Path, images: Path, overwrite: bool, protect: Sequence[Path]) -> Optional[str]:
    """Refuse (one-line :class:`DataError`, nothing changed) a report that would replace anything
    ``pcm3 report`` did not write, or a report it wrote that was changed since: the markdown and
    HTML proven by their record (``.report.md.pcm3``: SHA-256 of each), the images by their
    copies inline in the proven HTML, the images folder holding nothing else
    (:func:`pcm3.outputs.check_output_dir`). A report of an older pcm3 (no record) is replaced
    only with ``overwrite``, when it carries the marker and its markdown, HTML and images still
    match one another as pcm3 wrote them; returns then a notice saying so, else None."""
    from pcm3.outputs import check_out_file, check_output_dir, check_recorded_output, record_path

    files = [out, html_path]
    legacy = not os.path.lexists(record_path(out)) and any(os.path.lexists(f) for f in files)
    if not legacy:
        check_recorded_output(files, REPORT_KIND, overwrite, what="pcm3 report", protect=protect)
    else:  # no record: an older pcm3's report, recognised by its marker line alone
        for f in files:
            check_out_file(f, overwrite, protect=protect, ours=_has_marker, what="pcm3 report")
    check_output_dir(images, "report", overwrite=overwrite, protect=protect)
    present = [f for f in files if os.path.lexists(f)]
    if not present:
        return None
    advice = (f"move {out.name}, {html_path.name} and {images.name}/ away or remove them yourself, or choose "
              "another --out (nothing was changed)")
    if legacy and len(present) < len(files):
        gone = next(f for f in files if f not in present)
        raise DataError(present[0], f"--overwrite refused: an older pcm3 wrote this report without a record of its "
                                    f"files, and {gone.name} is gone, so whether {present[0].name} was edited "
                                    f"cannot be told; {advice}")
    why = _unchanged_report(out, html_path, images, legacy=legacy)
    if why is not None:
        older = "; an older pcm3 wrote this report and kept no record of its files" if legacy else ""
        raise DataError(out, f"--overwrite refused: {why}{older}; replacing it could lose those changes: {advice}")
    if legacy:
        return (f"{out} was written by an older pcm3 that kept no record of its files; its markdown, HTML and "
                f"images still matched one another as written (no edits), so it was replaced; the new report keeps "
                f"its record in {record_path(out).name}")
    return None


def write_report(dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False,
                 embedding: str = "tsne", max_points: int = 800, seed: int = 0,
                 shown_as: Optional[Tuple[str | os.PathLike, str | os.PathLike]] = None) -> Dict[str, Path | str]:
    """Write ``out`` (markdown), the HTML beside it and the images folder.

    Args:
        dirs: eval folders, or folders holding them (a ``pcm3 benchmark`` output).
        out: the markdown file (``report.md``); ``report.html``, ``report_images/`` and the
            record ``.report.md.pcm3`` (SHA-256 of the markdown and HTML, which holds every image)
            go beside it. An existing report is replaced only with ``overwrite``, and only while
            it is as pcm3 wrote it (:func:`_check_outputs`).
        embedding: ``tsne`` (exact, in torch) or ``pca``.
        max_points: test samples per feature map (class-stratified subsample).
        shown_as: ``(folder, name)``: folders below ``folder`` are named below ``name`` in the text
            (``pcm3 benchmark`` reports from its temporary folder before renaming it), and fused
            run folders recorded below ``name`` are looked for below ``folder``.

    Returns:
        ``{"markdown", "html", "images"}`` paths, and ``"notice"`` (a line for the user) when an
        older report without a record was replaced.
    """
    from pcm3.outputs import output_dir, recorded_output, write_error

    out = Path(out)
    if out.suffix.lower() != ".md":
        raise DataError(out, "--out must name a .md file (the HTML and images go beside it)")
    html_path = out.with_suffix(".html")
    images = out.with_name(out.stem + "_images")
    all_runs = load_runs(dirs)
    protect = [Path(m["_dir"]) for m in all_runs]
    notice = _check_outputs(out, html_path, images, overwrite, protect)
    runs = [m for m in all_runs if _usable(m)]
    skipped = [m for m in all_runs if not _usable(m)]
    if not runs:
        where = ", ".join(str(d) for d in dirs)
        raise DataError(where, f"no usable eval results ({len(skipped)} folder(s) of tasks without a table or "
                               f"without figures; tables need {', '.join(RECOGNITION_TASKS + DENSE_TASKS)})")

    def show(d) -> str:
        if shown_as is not None:
            rel = os.path.relpath(os.path.abspath(d), os.path.abspath(shown_as[0]))
            if not rel.startswith(".."):
                return os.path.normpath(os.path.join(str(shown_as[1]), rel))
        return str(d)

    def locate(d) -> str:  # show() in reverse: where a folder named below shown_as[1] is now
        if shown_as is not None:
            rel = os.path.relpath(os.path.abspath(d), os.path.abspath(shown_as[1]))
            if not rel.startswith(".."):
                return os.path.normpath(os.path.join(os.path.abspath(shown_as[0]), rel))
        return str(d)

    check_fusions(runs, locate)
    lines = [MARKER_LINE, "# pcm3 evaluation report", "",
             f"{len(runs)} eval runs: " + ", ".join(sorted({str(m.get("task")) for m in runs})) + ".", ""]
    absent = [what for tasks, what in TASK_TABLES if not any(m.get("task") in tasks for m in runs)]
    if absent:
        lines += ["Not in this report (no eval folders of these tasks): " + "; ".join(absent) + ".", ""]
    stale = [m for m in runs if m.get("_stale")]
    if stale:
        lines += [f"> **{STALE_MARK}**: {len(stale)} fusion folder(s) fused scores that were recomputed or removed "
                  "since (marked in the tables, named below them); rerun pcm3 eval fusion.", ""]
    lines += recognition_tables(runs)
    lines += dense_tables(runs)
    if skipped:
        lines += [f"Skipped {len(skipped)} folder(s) of tasks this report has no table for (or without figures): "
                  + ", ".join(f"`{show(m['_dir'])}` (task {m.get('task')!r})" for m in skipped) + ".", ""]
    linear = [m for m in runs if m.get("task") == "linear"]
    occ = [m for m in runs if m.get("task") == "occlusion"]
    pictures: List[Tuple[str, Path]] = []
    legacy = {f: file_sha256(f) for f in (out, html_path) if notice and os.path.lexists(f)}
    aside: List[Tuple[Path, Path]] = []
    # Every byte of the three outputs is written under temporary names first; only then are they
    # put in place (images, then HTML, markdown and their record), so an error leaves none of them
    # half-made and an old report as it was.
    try:
        with recorded_output([out, html_path], REPORT_KIND) as (md_tmp, html_tmp):
            with output_dir(images, "report", overwrite=overwrite, protect=protect) as tmp:
                order = {"joint": 0, "bone": 1, "motion": 2}  # the joint stream's run first, as the paper shows
                pretrained = sorted((m for m in linear if _kind(m) == "pretrained"),
                                    key=lambda m: order.get(_stream(m), 3))
                main = pretrained[0] if pretrained else (linear[0] if linear else None)
                made = [("Confusion matrix", main and plot_confusion(main, tmp / "confusion.png")),
                        ("Per-class accuracy", linear and plot_per_class(linear, tmp / "per_class.png")),
                        ("Test features in 2-D", linear and plot_feature_maps(
                            linear, tmp / "features_2d.png", method=embedding, max_points=max_points, seed=seed)),
                        ("Accuracy against occlusion ratio", occ and plot_occlusion(occ, tmp / "occlusion.png"))]
                made += copy_dense_images(runs, tmp)
                for title, p in made:
                    if p:
                        pictures.append((title, images / Path(p).name))
                if pictures:
                    lines += ["## Figures", ""]
                    for title, p in pictures:
                        lines += [f"### {title}", "", f"![{title}]({images.name}/{p.name})", ""]
                lines += ["## Runs", ""] + [f"- `{show(m['_dir'])}`: {_run_line(m)}" for m in runs]
                md = "\n".join(lines) + "\n"
                md_tmp.write_text(md)
                html_tmp.write_text(to_html(md, tmp))  # the images as drawn, before they move into place
                if any(os.path.lexists(f) for f in (out, html_path)):  # the old report, checked again now
                    why = _unchanged_report(out, html_path, images, legacy=bool(legacy))
                    if why is not None:
                        raise DataError(out, f"--out changed while pcm3 worked ({why}); nothing was written")
            # An older report without a record: recorded_output replaces only files its record
            # proves pcm3's, so these (checked above) go aside first, and come back on a failure.
            for f, digest in legacy.items():
                if file_sha256(f) != digest:
                    raise DataError(f, "--out changed while pcm3 worked; nothing was written")
                hidden = f.with_name(f".{f.name}.old-{os.getpid()}")
                aside.append((f, hidden))
                os.replace(f, hidden)
    except BaseException as e:
        for f, hidden in aside:
            if os.path.lexists(hidden) and not os.path.lexists(f):
                os.replace(hidden, f)
        if isinstance(e, OSError):
            raise write_error(out, e, "the report") from None
        raise
    for _, hidden in aside:
        hidden.unlink(missing_ok=True)
    paths: Dict[str, Path | str] = {"markdown": out, "html": html_path, "images": images}
    if notice:
        paths["notice"] = notice
    return paths


def _run_line(m: dict) -> str:
    """How the Runs list describes a run: task, row, stream, seed (the seeds of a semi run), time."""
    seeds = m.get("seeds")
    seed = (f"seeds {', '.join(map(str, seeds))}, " if isinstance(seeds, list) and seeds
            else f"seed {m['seed']}, " if m.get("seed") is not None else "")  # a fusion has none
    return (f"{m.get('task')}, {KIND_LABEL.get(_kind(m), _kind(m))}, {_stream(m)}, {seed}"
            f"{m.get('wall_seconds') or 0:.0f} s" + (f", {STALE_MARK}" if m.get("_stale") else ""))


_WARNING_STYLE = "border-left:4px solid #c60;background:#fff4e5;margin:1em 0;padding:6px 12px"


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
            name = line[line.index("](") + 2:-1].split("/")[-1]
            data = base64.b64encode((images / name).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("> "):  # a warning: **bold** kept bold
            text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(line[2:]))
            # styled inline: the page's style sheet stays as older reports have it (see _unchanged_report)
            body.append(f'<blockquote style="{_WARNING_STYLE}">{text}</blockquote>')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n{MARKER_LINE}\n<html><head><meta charset='utf-8'><title>pcm3 evaluation report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
