"""The recognition suite (``pcm3 benchmark``): every task for given encoders and their baseline rows.

:func:`run_benchmark` evaluates each encoder (e.g. joint, bone and motion) and its random-init
twin (optionally the raw input and the supervised upper bound) with ``linear``, ``knn``,
``occlusion`` and ``semi``, fuses the linear scores of several encoders (equal weights), and
writes ``OUT/<stream>_<row>/<task>/`` eval folders plus ``OUT/benchmark.md`` (the paper's
Tables 1-4 shape, with the paper's PCM3 figures where the data set matches) and, unless
``report=False``, ``OUT/report.md``/``.html`` with the pictures.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from pcm3.errors import ConfigError
from pcm3.evaluation.common import load_protocol
from pcm3.evaluation.features import input_attribute
from pcm3.evaluation.runner import build_encoder, check_row, evaluate, load_encoder_with_info, task_module

SUITE_TASKS = ("linear", "knn", "occlusion", "semi")


def split_overrides(overrides: Sequence[str], tasks: Sequence[str]) -> Dict[str, List[str]]:
    """``task.key=value`` -> ``{task: ["key=value"]}``; a key without a task prefix is an error."""
    out: Dict[str, List[str]] = {t: [] for t in (*SUITE_TASKS, "fusion")}  # tasks not run: ignored
    for item in overrides:
        head, _, rest = item.partition(".")
        if head not in out or not rest:
            raise ConfigError(f"--set {item!r}: prefix the key with a task ({', '.join(out)}), e.g. linear.epochs=10")
        out[head].append(rest)
    return out


#: linear's keys that the supervised row's training also reads (the validation subjects it leaves
#: out, its stream and clip length: :func:`pcm3.evaluation.runner.build_encoder`)
SUPERVISED_READS = frozenset(("val_fraction", "val_by", "stream", "clip_len"))


def check_overrides_used(per_task: Dict[str, List[str]], tasks: Sequence[str], *, supervised: bool,
                         fusion: bool) -> None:
    """Refuse ``--set`` settings the benchmark would not use (a ConfigError naming the first):
    those of a task not run, and ``supervised.*`` settings other than ``linear``'s (the supervised
    row is trained once per encoder, with ``linear.supervised.*``), or without ``--supervised``.
    ``linear.supervised.*`` and the linear keys the supervised row reads (:data:`SUPERVISED_READS`)
    are used with ``--supervised`` without ``linear`` among the tasks."""
    for task, items in per_task.items():
        for item in items:
            key = item.split("=", 1)[0]
            sup = key.startswith("supervised.")
            if sup and not supervised:
                raise ConfigError(f"--set {task}.{item}: without --supervised there is no supervised row to train")
            if sup and task != "linear":
                raise ConfigError(f"--set {task}.{item}: the supervised row is trained once per encoder, with "
                                  f"linear's settings: give --set linear.{item}")
            if task == "fusion" and not fusion:
                raise ConfigError(f"--set fusion.{item}: no fusion is run (it needs linear among --tasks and more "
                                  "than one encoder)")
            if task != "fusion" and task not in tasks and not (task == "linear" and supervised
                                                                and (sup or key in SUPERVISED_READS)):
                raise ConfigError(f"--set {task}.{item}: {task} is not among --tasks ({', '.join(tasks)}); the "
                                  "setting would be ignored")


def _rename_runs(folder: Path, tmp: Path, final: Path) -> None:
    """A fusion folder's ``runs`` named where they will be once the temporary folder is renamed."""
    from pcm3.evaluation.common import read_metrics, write_results

    m = read_metrics(folder)

    def moved(r):
        rel = os.path.relpath(os.path.abspath(r), os.path.abspath(tmp))
        return r if rel.startswith("..") else str(final / rel)

    m["runs"] = [moved(r) for r in m.get("runs") or []]
    if isinstance(m.get("protocol"), dict) and isinstance(m["protocol"].get("runs"), list):
        m["protocol"]["runs"] = [moved(r) for r in m["protocol"]["runs"]]
    write_results(folder, m)
    from pcm3.outputs import list_entries, write_marker

    write_marker(folder, "eval", list_entries(folder))  # its record of the files as they now are


def _named(encoder) -> str:
    """How the table names an encoder: its file, or a module's class."""
    return str(encoder) if not isinstance(encoder, torch.nn.Module) else f"{type(encoder).__name__} (module)"


def _load(encoder) -> Tuple[torch.nn.Module, Dict[str, object]]:
    """An encoder file (``pcm3 export``) or module, and the ``evaluate`` arguments that name it."""
    if isinstance(encoder, torch.nn.Module):
        return encoder, dict(encoder=encoder)
    enc, _ = load_encoder_with_info(encoder)
    return enc, dict(encoder_path=encoder)


def run_benchmark(encoders: Sequence[Union[str, os.PathLike, torch.nn.Module]], *, data, benchmark: Optional[str],
                  out, tasks: Sequence[str] = SUITE_TASKS, raw_input: bool = False, supervised: bool = False,
                  random_init: bool = True, overrides: Sequence[str] = (), device: str | torch.device = "cpu",
                  seed: int = 0, progress: bool = False, overwrite: bool = False, report: bool = True) -> dict:
    """Run the suite; returns ``{"runs": [folders], "table": markdown, "seconds": ..., "warnings":
    [lines]}`` (the report's: a damaged scores or features file whose figure it left out).

    Args:
        encoders: exported encoder files (``pcm3 export``) or modules, as ``encoder=`` of
            :func:`pcm3.evaluation.runner.evaluate` takes them (attribute ``stream``, else
            ``joint``), one per stream (e.g. joint, bone, motion). The random-init and
            supervised rows need pcm3 Encoders (they rebuild the architecture); a module's
            modes, device and the global random states are left as they were.
        tasks: subset of ``linear``, ``knn``, ``occlusion``, ``semi``.
        raw_input / supervised / random_init: which baseline rows to add (random-init twins by
            default).
        overrides: ``task.key=value`` protocol overrides (``supervised`` settings belong to each
            task; the supervised encoder is trained once per encoder with ``linear``'s settings).
    """
    from pcm3.evaluation.report import load_runs, write_report
    from pcm3.evaluation.report_tables import recognition_tables
    from pcm3.io import write_text
    from pcm3.outputs import output_dir

    bad = [t for t in tasks if t not in SUITE_TASKS]
    if bad:
        raise ConfigError(f"--tasks: {bad[0]!r} is not one of {', '.join(SUITE_TASKS)}")
    if not tasks:  # else an empty benchmark folder, refused later with the name of its temporary folder
        raise ConfigError(f"--tasks: empty; give one or more of {', '.join(SUITE_TASKS)} (comma-separated)")
    if not encoders:
        raise ConfigError("--encoders: give at least one encoder file")
    per_task = split_overrides(overrides, tasks)
    check_overrides_used(per_task, tasks, supervised=supervised, fusion="linear" in tasks and len(encoders) > 1)
    for t in tasks:  # every protocol checked before any work
        load_protocol(task_module(t).PROTOCOL, task_module(t).DEFAULT_CONFIG, per_task[t])
    for module in (e for e in encoders if isinstance(e, torch.nn.Module)):  # rows that rebuild it: pcm3 Encoders
        for kind in [k for k, wanted in (("random_init", random_init), ("supervised", supervised)) if wanted]:
            check_row("linear", kind, encoder=module)
    device = torch.device(device)
    t0 = time.perf_counter()
    folders: List[str] = []
    final = Path(os.path.abspath(out))
    files = [e for e in encoders if not isinstance(e, torch.nn.Module)]
    with output_dir(out, "benchmark", overwrite=overwrite, protect=[data, *files]) as tmp:
        loaded = [_load(e) for e in encoders]
        streams = [input_attribute(enc, "stream") for enc, _ in loaded]
        if len(set(streams)) != len(streams):
            raise ConfigError(f"--encoders: two encoders of the same stream ({', '.join(streams)}); give one per stream")
        linear_dirs: Dict[str, List[Path]] = {}
        warned: set = set()
        for stream, (enc, source) in zip(streams, loaded):
            rows = [("pretrained", source)]
            if random_init:
                rows.append(("random_init", source))
            if raw_input:
                rows.append(("raw_input", {}))
            if supervised:
                lin = load_protocol(task_module("linear").PROTOCOL, "eval_linear", per_task.get("linear", []))
                keep = tmp / f"{stream}_supervised"  # its supervised_encoder.pt, beside the task folders
                keep.mkdir(parents=True, exist_ok=True)
                sup, sup_info = build_encoder("supervised", data=data, benchmark=benchmark, protocol=lin,
                                              encoder=enc, device=device, seed=seed, progress=progress, out=keep)
                sup.supervised_info = {**sup_info, "path": str(Path(out) / keep.name / "supervised_encoder.pt")}
                rows.append(("supervised", dict(encoder=sup)))
            for kind, row_source in rows:
                for task in tasks:
                    folder = tmp / f"{stream}_{kind}" / task
                    clip_len = input_attribute(enc, "clip_len")
                    extra = [] if kind != "raw_input" else [f"stream={stream}", f"clip_len={clip_len}"]
                    m = evaluate(task, data=data, benchmark=benchmark, out=folder, kind=kind, config=None,
                                 overrides=[*extra, *per_task[task]], device=device, seed=seed, progress=progress,
                                 **row_source)
                    for w in m.get("warnings") or []:  # once per row (the same for every task of a row)
                        if (stream, kind, w) not in warned:
                            warned.add((stream, kind, w))
                            print(f"warning: {stream} {kind}: {w}", file=sys.stderr, flush=True)
                    folders.append(str(Path(out) / folder.relative_to(tmp)))
                    if task == "linear":
                        linear_dirs.setdefault(kind, []).append(folder)
        if "linear" in tasks and len(encoders) > 1:
            for kind, dirs in linear_dirs.items():
                if len(dirs) == len(encoders):
                    folder = tmp / f"fusion_{kind}"
                    evaluate("fusion", data=None, benchmark=None, out=folder,
                             overrides=[f"runs=[{', '.join(repr(str(d)) for d in dirs)}]",
                                        f"weights=[{', '.join('1' for _ in dirs)}]", *per_task["fusion"]])
                    _rename_runs(folder, tmp, final)
                    folders.append(str(Path(out) / folder.name))
        runs = load_runs([tmp])
        fusions = [m for m in runs if m.get("task") == "fusion"]
        weights = sorted({", ".join(f"{float(w):.2f}" for w in m.get("weights") or []) for m in fusions})
        footer = [] if not fusions else [  # what the fusion rows fused, with the weights they used
            "Fusion rows: the streams' linear test scores, weights " + "; ".join(f"[{w}]" for w in weights)
            + (" (equal)." if not per_task["fusion"] else " (--set fusion.*).")]
        named = ", ".join(f"`{_named(e)}`" for e in encoders)
        table = "\n".join(["# pcm3 benchmark", "", f"data `{data}`, benchmark `{benchmark}`, encoders: {named}", "",
                           *recognition_tables(runs), *footer]) + "\n"
        write_text(tmp / "benchmark.md", table)
        warnings = []
        if report:  # a damaged scores or features file: its figure left out, and said
            warnings = list(write_report([tmp], tmp / "report.md", shown_as=(tmp, final)).get("warnings") or ())
    return {"runs": folders, "table": table, "seconds": time.perf_counter() - t0, "warnings": warnings}
