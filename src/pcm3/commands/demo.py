"""``pcm3 demo``: the whole method and its evaluation on the built-in data, on a laptop CPU.

Steps (each resumable: a rerun with the same ``--out`` continues where it stopped):

1. prepare the built-in synthetic clips (and, for the dense tasks, its untrimmed videos);
2. pretrain a small PCM3 model (packaged ``demo`` config) and export its encoder;
3. probe four rows side by side with the same code (linear classifier and 1-NN on frozen
   features): the pretrained encoder, the same encoder randomly initialised, the raw input (no
   network) and the same encoder trained with labels (an upper bound, trained in a second
   process during step 2: on two cores it costs no wall time);
4. the recognition suite (``pcm3 eval`` linear, kNN, occlusion, 1%/10% semi-supervised) for
   every row, with small-data settings stated in the results;
5. the dense tasks (temporal action detection on the untrimmed videos, motion prediction) for
   the pretrained and the random-init encoder, in a second process during steps 3-4 (with
   ``probe`` or ``suite`` among the steps; the same folders as one process writes);
6. ``report.md`` / ``report.html`` with every table and picture, and ``metrics.json``.

``--data DIR --config NAME`` runs steps 2-6 on another prepared clip folder (e.g. MSR Action3D
with ``msr3d_xsub_joint``); detection then needs untrimmed videos and is skipped.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

DEMO_CONFIG = "demo"
STEPS = ("probe", "suite", "dense", "report")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="prepare built-in data, pretrain, evaluate every task against the baselines",
                       description="Run PCM3 end to end on the built-in synthetic data set: prepare it, "
                                   "pretrain a small model, compare it with random init, the raw input and a "
                                   "supervised bound (linear probe, 1-NN), run the recognition suite and the "
                                   "dense tasks, and write a report. Output: printed tables, OUT/metrics.json, "
                                   "OUT/report.md and OUT/report.html.")
    p.add_argument("--out", default="pcm3-demo", help="output folder (default ./pcm3-demo); a rerun continues it")
    p.add_argument("--data", help="use this prepared clip folder instead of the built-in data (e.g. MSR Action3D "
                                  "with --config msr3d_xsub_joint)")
    p.add_argument("--config", default=DEMO_CONFIG, help="pretraining config (default: the packaged 'demo')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pretraining config value, e.g. --set train.epochs=5")
    p.add_argument("--steps", default=",".join(STEPS),
                   help=f"what to run after pretraining, comma-separated among {', '.join(STEPS)} (default: all)")
    p.add_argument("--supervised-epochs", type=int, default=60,
                   help="epochs of the supervised upper bound (default 60; 0 leaves the row out)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: the config's train.threads rule)")
    p.add_argument("--prepare-only", action="store_true", help="only prepare the data and print its summary")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pcm3.data.prepared import Prepared, format_summary
    from pcm3.data.synthetic import prepare_synthetic
    from pcm3.errors import ConfigError
    from pcm3.io import write_json
    from pcm3.outputs import check_output_dir, folder_kind, write_marker

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise ConfigError(f"--steps: {bad[0]!r} is not one of {', '.join(STEPS)}")
    if not steps:
        raise ConfigError(f"--steps: empty; give one or more of {', '.join(STEPS)} (comma-separated)")
    if args.threads < 0:
        raise ConfigError(f"--threads: must be >= 0 (0: the config's train.threads rule), got {args.threads}")
    if args.supervised_epochs < 0:
        raise ConfigError(f"--supervised-epochs: must be >= 0 (0 leaves the row out), got {args.supervised_epochs}")
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    overrides = list(args.overrides) + ([f"train.threads={args.threads}"] if args.threads else [])
    # everything is validated before anything is written: the config, then the data
    from pcm3.checks import check_clips
    from pcm3.config import load_config

    cfg = load_config(args.config, [*overrides, f"data.path={data}"])
    if args.data:
        check_clips(Prepared(data), "pcm3 demo")
        if {"probe", "suite"} & set(steps):  # they test on the benchmark's test part: labelled clips in both parts
            from pcm3.evaluation.common import check_recognition_data

            check_recognition_data(data, cfg.data.benchmark)
    protect = [args.data] if args.data else []
    if folder_kind(out) != "demo":  # a new demo folder; an earlier demo folder is continued
        check_output_dir(out, "demo", protect=protect)
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "demo")
    check_same_settings(out, cfg, data, builtin=not args.data, supervised_epochs=args.supervised_epochs)
    t0 = time.perf_counter()
    if not args.data and not (data / "meta.json").exists():
        prepare_synthetic(data, seed=0, progress=not args.quiet)
    print(format_summary(Prepared(data).summary()))
    if args.prepare_only:
        return 0
    metrics = run_demo(out, data, args.config, overrides, progress=not args.quiet, steps=steps,
                       supervised_epochs=args.supervised_epochs, builtin=not args.data)  # (pcm3.cli: SIGTERM = Ctrl-C)
    metrics["total_seconds"] = time.perf_counter() - t0
    metrics = {**_earlier_metrics(out), **metrics}  # a rerun with fewer --steps keeps what it did not redo
    write_json(out / "metrics.json", metrics)
    if "pretrained" in metrics:
        print(format_table(metrics))
    if "suite" in metrics:
        print(format_suite(metrics["suite"]))
    if "dense" in metrics:
        print(format_dense(metrics["dense"]))
    print(f"wrote {out / 'metrics.json'}" + (f" and {metrics['report']}" if metrics.get("report") else "")
          + f" ({metrics['total_seconds']:.0f} s)")
    return 0


ROWS = ("pretrained", "random_init", "raw_input", "supervised")

SETTINGS = "settings.json"


def check_same_settings(out: Path, cfg, data: Path, *, builtin: bool, supervised_epochs: int) -> None:
    """A rerun continues the same demo: refuse other settings (another config, ``--set``,
    ``--data`` or ``--supervised-epochs``), whose results would be mixed with the finished
    folders of the earlier ones. The first run records them in ``OUT/settings.json``."""
    import json

    from pcm3.config import to_dict
    from pcm3.errors import ConfigError
    from pcm3.io import write_json
    from pcm3.pretrain import BOOKKEEPING  # data.path among them: recorded on its own ("data")

    now = {"data": "built-in" if builtin else str(Path(data).resolve()), "supervised_epochs": supervised_epochs,
           **{f"{section}.{key}": value for section, values in to_dict(cfg).items() for key, value in values.items()
              if (section, key) not in BOOKKEEPING}}
    now = json.loads(json.dumps(now, default=str))
    path = out / SETTINGS
    if not path.exists():
        write_json(path, now)
        return
    try:
        before = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path}: not valid JSON (the settings of this demo folder)") from None
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            option = {"data": "--data", "supervised_epochs": "--supervised-epochs"}.get(key, key)
            raise ConfigError(f"--out {out}: a rerun continues the same demo, but {option} differs "
                              f"({before.get(key)!r} there, {now.get(key)!r} now); give a new --out for other settings")


def _child_setup() -> None:
    """In a background process: SIGTERM (sent to daemonic children when the demo exits on an
    error or Ctrl-C) raises KeyboardInterrupt, so that the task's temporary folder is removed;
    and the process stops when the demo process is gone (killed), instead of running on alone."""
    import _thread
    import multiprocessing
    import signal
    import threading

    from pcm3.errors import raise_interrupt

    signal.signal(signal.SIGTERM, raise_interrupt)
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        parent.join()  # returns when the parent process has ended
        _thread.interrupt_main()
        time.sleep(60)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def probe_rows(data: Path, cfg, pretrained, rows=ROWS, supervised_epochs: int = 60, progress: bool = False,
               keep_supervised: bool = False, supervised=None):
    """Linear probe and 1-NN of each row on ``cfg.data.benchmark`` (train -> test).

    Rows (issue 6's baselines, the same probe for each): ``pretrained`` (the given encoder),
    ``random_init`` (its architecture, fresh weights from ``train.seed``), ``raw_input`` (no
    network: the valid joint coordinates centre-cropped, resized to 64, centred, flattened; as
    ``pcm3 eval --raw-input``) and ``supervised`` (the architecture trained with labels on the
    training part, Adam, crop-resize, ``supervised_epochs`` epochs: an upper bound;
    ``supervised``, when given, is that encoder already trained). When the encoders read another
    stream than ``joint`` (``data.stream``), ``raw_input_<stream>`` is that stream's raw input
    too; ``raw_input`` stays the joint coordinates, the stronger of the two on every data set
    measured. Returns ``{row: {"linear", "knn1", ...}}``, and with ``keep_supervised`` also the
    supervised encoder (or None).
    """
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.evaluation.baselines import random_init_encoder, raw_input_features, train_supervised
    from pcm3.evaluation.features import extract_features
    from pcm3.evaluation.probe import probe

    bench = cfg.data.benchmark
    train = SkeletonDataset(data, bench, "train")
    test = SkeletonDataset(data, bench, "test")
    kw = dict(stream=cfg.data.stream, layout=pretrained.layout, clip_len=pretrained.clip_len, crop=pretrained.test_crop)
    results = {}
    names = list(rows)
    if "raw_input" in names and cfg.data.stream != "joint":
        names.insert(names.index("raw_input") + 1, f"raw_input_{cfg.data.stream}")
    for name in names:
        t0 = time.perf_counter()
        if name.startswith("raw_input"):
            stream = "joint" if name == "raw_input" else cfg.data.stream
            trx, try_ = raw_input_features(train, clip_len=64, stream=stream, layout=pretrained.layout)
            tex, tey = raw_input_features(test, clip_len=64, stream=stream, layout=pretrained.layout)
        else:
            if name == "pretrained":
                enc = pretrained
            elif name == "random_init":
                enc = random_init_encoder(pretrained.config, cfg.train.seed, layout=pretrained.layout)
            elif supervised is not None:
                enc = supervised
            else:
                enc = supervised = train_supervised(pretrained.config, train, **supervised_kwargs(
                    cfg, pretrained.clip_len, pretrained.layout, supervised_epochs), progress=progress)
            trx, try_ = extract_features(enc, train, **kw)
            tex, tey = extract_features(enc, test, **kw)
        results[name] = {**probe(trx, try_, tex, tey, seed=cfg.train.seed), "seconds": time.perf_counter() - t0}
    return (results, supervised) if keep_supervised else results


def supervised_kwargs(cfg, clip_len: int, layout: str, epochs: int) -> dict:
    """Arguments of :func:`pcm3.evaluation.baselines.train_supervised` for the demo's bound."""
    return dict(epochs=epochs, clip_len=clip_len, min_len=min(cfg.views.min_len, clip_len), stream=cfg.data.stream,
                layout=layout, seed=cfg.train.seed)


def _train_supervised_to(path: str, encoder_config: dict, data: str, benchmark: str, kwargs: dict) -> None:
    """Child process: train the supervised bound with one thread and save it to ``path``. It
    fails quietly (exit 1, no traceback): the probe then trains the bound and reports."""
    import torch

    from pcm3.data.dataset import SkeletonDataset
    from pcm3.evaluation.baselines import train_supervised
    from pcm3.io import atomic_path

    torch.set_num_threads(1)
    try:
        _child_setup()
        encoder = train_supervised(encoder_config, SkeletonDataset(data, benchmark, "train"), **kwargs)
        with atomic_path(Path(path)) as tmp:
            torch.save({"encoder_config": encoder_config, "state_dict": encoder.state_dict(),
                        "settings": encoder.supervised_settings}, tmp)
    except (Exception, KeyboardInterrupt):
        raise SystemExit(1) from None


def _start_supervised(out: Path, data: Path, cfg, epochs: int):
    """Train the supervised bound in a second process while this one pretrains (the demo's two
    halves are independent; on a machine with two cores the bound then costs no wall time).
    Returns ``(process, path)``; the process trains exactly what :func:`probe_rows` would."""
    import copy
    import multiprocessing
    from dataclasses import asdict

    from pcm3.data.prepared import Prepared
    from pcm3.pretrain import data_shape_into_config

    prepared = Prepared(data)
    local = copy.deepcopy(cfg)
    data_shape_into_config(local, prepared)
    path = out / "supervised_encoder.pt"
    kwargs = supervised_kwargs(cfg, cfg.views.out_len, prepared.layout, epochs)
    proc = multiprocessing.get_context("spawn").Process(
        target=_train_supervised_to, args=(str(path), asdict(local.model.encoder), str(data), cfg.data.benchmark, kwargs),
        daemon=True)
    proc.start()
    return proc, path


def _collect_supervised(proc, path: Path, cfg, pretrained, epochs: Optional[int] = None, data=None):
    """The background bound as an encoder like ``train_supervised``'s, or None if it failed
    (the probe then trains it in this process)."""
    import torch

    from pcm3.evaluation.baselines import random_init_encoder

    if proc is not None:
        proc.join()
        if proc.exitcode != 0:
            return None
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=False)
    encoder = random_init_encoder(pretrained.config, cfg.train.seed, layout=pretrained.layout,
                                  stream=cfg.data.stream, clip_len=pretrained.clip_len, test_crop=0.95)
    try:
        encoder.load_state_dict(saved["state_dict"])
    except RuntimeError:  # not the pretrained architecture (cannot happen with one config): retrain here
        return None
    encoder.supervised_trained = True
    encoder.supervised_settings = saved.get("settings")
    if encoder.supervised_settings is None and epochs is not None and data is not None:
        # a bound saved by an older version: the settings this demo trains it with (settings.json
        # holds the same --supervised-epochs, or the rerun is refused)
        from pcm3.data.dataset import SkeletonDataset
        from pcm3.evaluation.baselines import supervised_settings

        train = SkeletonDataset(data, cfg.data.benchmark, "train")
        encoder.supervised_settings = supervised_settings(
            len(train), **supervised_kwargs(cfg, cfg.views.out_len, pretrained.layout, epochs))
    return encoder.eval()


def _earlier_metrics(out: Path) -> dict:
    """The figures an earlier run of this demo folder wrote (``metrics.json``), or nothing."""
    try:
        earlier = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return earlier if isinstance(earlier, dict) else {}


def run_demo(out: Path, data: Path, config: str, overrides, progress: bool = True, rows=ROWS,
             supervised_epochs: int = 60, steps=("probe",), builtin: bool = False) -> dict:
    """Pretrain, export, then the requested ``steps``; return the metrics dict.

    ``rows``: the probe rows (a subset of :data:`ROWS`); ``supervised_epochs`` 0 drops the
    supervised row everywhere.
    """
    import torch

    from pcm3.config import load_config, resolve_threads
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.export import export_encoder, load_encoder
    from pcm3.pretrain import fit, load_checkpoint

    cfg = load_config(config, [*overrides, f"data.path={data}"])
    cfg.train.progress = progress
    torch.set_num_threads(resolve_threads(cfg.train.threads, cfg.model.encoder.hidden))
    run_dir = out / "run"
    resume = (run_dir / "checkpoint_last.pt").exists()
    t0 = time.perf_counter()
    done = load_checkpoint(run_dir / "checkpoint_last.pt") if resume else None
    background = None
    finished = done is not None and int(done["epoch"]) >= cfg.train.epochs
    wants_supervised = ("probe" in steps or "suite" in steps) and "supervised" in rows and supervised_epochs
    trained = out / "supervised_encoder.pt"  # by an earlier run of this demo (same settings: settings.json)
    if "probe" in steps and wants_supervised and not finished and not trained.exists():
        background = _start_supervised(out, data, cfg, supervised_epochs)  # alongside pretraining
    if finished:  # a rerun: pretraining is finished
        last = done["history"][-1] if done["history"] else {}
        pretrain_seconds = sum(float(r.get("seconds", 0.0)) for r in done["history"])
    else:
        last = fit(cfg, run_dir, resume=resume, progress=progress)
        pretrain_seconds = time.perf_counter() - t0
    encoder_path = out / "encoder.pt"
    if encoder_path.exists():  # a rerun: export the (resumed) run again
        encoder_path.unlink()
    export_encoder(run_dir, encoder_path)
    pretrained = load_encoder(encoder_path)
    if not supervised_epochs:
        rows = tuple(r for r in rows if r != "supervised")
    bench = cfg.data.benchmark
    metrics = {
        "data": str(data), "benchmark": bench, "config": str(config), "overrides": list(overrides),
        "train_samples": len(SkeletonDataset(data, bench, "train")),
        "test_samples": len(SkeletonDataset(data, bench, "test")),
        "epochs": last.get("epoch"), "final_loss": last.get("loss"), "pretrain_seconds": pretrain_seconds,
        "threads": torch.get_num_threads(), "stream": cfg.data.stream,
    }
    supervised = None
    if background is not None:  # before the dense tasks start: one background process at a time
        supervised = _collect_supervised(*background, cfg, pretrained, supervised_epochs, data)
    elif wants_supervised and trained.exists():
        supervised = _collect_supervised(None, trained, cfg, pretrained, supervised_epochs, data)
    dense_proc = None
    if "dense" in steps and ("probe" in steps or "suite" in steps):  # something to overlap it with
        dense_proc = _start_dense(out, data, cfg, encoder_path, builtin)
    if "probe" in steps:
        results, supervised = probe_rows(data, cfg, pretrained, rows=rows, supervised_epochs=supervised_epochs,
                                         progress=progress, keep_supervised=True, supervised=supervised)
        metrics.update(results)
        for base in ("random_init", "raw_input"):
            if base in results and "pretrained" in results:
                metrics[f"margin_linear_vs_{base}"] = results["pretrained"]["linear"] - results[base]["linear"]
                metrics[f"margin_knn1_vs_{base}"] = results["pretrained"]["knn1"] - results[base]["knn1"]
    folders = []
    if "suite" in steps:
        metrics["suite"], suite_dirs = run_suite(out / "eval", data, bench, cfg, encoder_path, rows, supervised,
                                                 supervised_epochs, progress)
        folders += suite_dirs
    if "dense" in steps:
        if dense_proc is not None:
            dense_proc.join()
        metrics["dense"], dense_dirs = run_dense(out / "dense", data, bench, cfg.train.seed, encoder_path, builtin,
                                                 progress)
        folders += dense_dirs
    folders = [d for d in (out / "eval", out / "dense") if d.is_dir() and any(d.iterdir())]  # this run's and earlier
    if "report" in steps and folders:
        from pcm3.evaluation.report import write_report

        paths = write_report(folders, out / "report.md", overwrite=True)
        for warning in paths.get("warnings") or ():  # a damaged scores or features file, left out of a figure
            print(f"warning: {warning}", file=sys.stderr)
        metrics["report"] = str(paths.get("markdown", out / "report.md")) if isinstance(paths, dict) else str(out / "report.md")
    return metrics


# Small-data settings of the demo's suite (the field's protocols are the packaged eval configs;
# these are stated in the demo's results): the field's batch of 1,024 would leave one step per
# epoch on 960 clips, and three semi-supervised seeds of 80 epochs would not fit the time budget.
SUITE_OVERRIDES = {
    "linear": ["batch_size=64"],
    "knn": [],
    "occlusion": ["batch_size=64"],
    "semi": ["seeds=1", "epochs=30", "milestones=[20,25]"],
}


def run_suite(root: Path, data: Path, benchmark: str, cfg, encoder_path: Path, rows, supervised, supervised_epochs,
              progress: bool):
    """``pcm3 eval`` linear, knn, occlusion and semi for every row into ``root/<row>/<task>``.

    Returns ``({row: {task: figures}}, [folders])``. A finished task folder is reused (resume).
    """
    import json

    from pcm3.evaluation.runner import evaluate

    results, folders = {}, []
    min_len = [f"min_len={min(cfg.views.min_len, cfg.views.out_len)}"]
    for row in rows:
        results[row] = {}
        for task in ("linear", "knn", "occlusion", "semi"):
            folder = root / row / task
            if (folder / "metrics.json").exists():
                m = json.loads((folder / "metrics.json").read_text())
            else:
                extra = list(SUITE_OVERRIDES[task])
                if task in ("linear", "occlusion", "semi"):
                    extra += min_len
                if task == "knn":
                    extra += _ks_within(data, benchmark)
                if task == "occlusion" and (root / row / "linear" / "metrics.json").exists():
                    extra.append(f"linear_run={root / row / 'linear'}")
                if row == "supervised" and supervised is not None:
                    kw = dict(encoder=supervised)  # the probe's supervised encoder, not retrained
                elif row == "raw_input":
                    kw = {}
                else:  # pretrained; random_init and a supervised row without one take the architecture
                    kw = dict(encoder_path=encoder_path)
                    if row == "supervised":
                        extra.append(f"supervised.epochs={supervised_epochs}")
                folder.parent.mkdir(parents=True, exist_ok=True)
                m = evaluate(task, data=data, benchmark=benchmark, out=folder, kind=row, overrides=extra,
                             seed=cfg.train.seed, progress=progress, **kw)
            results[row][task] = _headline(task, m)
            folders.append(folder)
    return results, folders


def _ks_within(data: Path, benchmark: str) -> list:
    """``["ks=[...]"]``: the packaged k-NN protocol's k that the training part of ``benchmark``
    (the gallery) holds, when a small data set holds fewer clips than the largest (a user's data
    through ``--data``; the results record the ks used); else ``[]``."""
    from pcm3.data.prepared import Prepared
    from pcm3.evaluation.common import load_protocol
    from pcm3.evaluation.knn import DEFAULT_CONFIG, PROTOCOL

    ks = list(load_protocol(PROTOCOL, DEFAULT_CONFIG).ks)
    gallery = len(Prepared(data).split(benchmark, "train"))
    if max(ks) <= gallery:
        return []
    return [f"ks=[{', '.join(str(k) for k in ([k for k in ks if k <= gallery] or [1]))}]"]


def _headline(task: str, m: dict) -> dict:
    """The figures of one eval ``metrics.json`` that the demo prints (percentages, as written)."""
    f = m.get("figures", m)
    keys = {"linear": ("top1", "top5"), "knn": ("knn1", "knn5", "knn20"),
            "occlusion": ("clean_top1", "spatial_top1", "temporal_top1"),
            "semi": ()}[task]
    out = {k: f[k] for k in keys if k in f}
    if task == "semi":
        out = {k: v for k, v in f.items() if k.endswith("_top1_mean") or k.endswith("_top1_std")}
    return out


def _run_dense_child(root: str, data: str, benchmark: Optional[str], seed: int, encoder_path: str,
                     builtin: bool, overrides: dict) -> None:
    """Child process: :func:`run_dense` with one thread and no progress output. It fails
    quietly (exit 1, no traceback): the parent's own call then computes and reports."""
    import torch

    torch.set_num_threads(1)
    try:
        _child_setup()
        run_dense(Path(root), Path(data), benchmark, seed, Path(encoder_path), builtin, progress=False,
                  overrides=overrides)
    except (Exception, KeyboardInterrupt):
        raise SystemExit(1) from None


def _start_dense(out: Path, data: Path, cfg, encoder_path: Path, builtin: bool):
    """Run the dense tasks in a second process while this one runs the probe and the suite (they
    read the exported encoder only; on two cores they overlap: 382 s -> 338 s for the whole demo,
    README, Results). The later
    :func:`run_dense` call in this process reads the folders it finished and computes any it did
    not (a failed child costs time, not results). Returns the process."""
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(
        target=_run_dense_child, args=(str(out / "dense"), str(data), cfg.data.benchmark, cfg.train.seed,
                                       str(encoder_path), builtin, dict(DENSE_OVERRIDES)), daemon=True)
    proc.start()
    return proc


# The dense tasks' demo settings (``detection.demo_protocol()``, ``motion.demo_protocol()``) as
# protocol overrides, so that the demo's folders are the same as ``pcm3 eval`` writes.
DENSE_OVERRIDES = {
    "detection": ["epochs=30", "milestones=[20]", "timeline_videos=3"],
    "motion": ["observed=40", "predicted=10", "epochs=8", "milestones=[6]", "max_train=480", "max_test=480"],
}


def run_dense(root: Path, data: Path, benchmark: Optional[str], seed: int, encoder_path: Path, builtin: bool,
              progress: bool, overrides: Optional[dict] = None):
    """Detection (built-in untrimmed videos only) and motion prediction, pretrained and random init,
    through ``pcm3 eval`` (:func:`pcm3.evaluation.runner.evaluate`) into ``root/<row>/<task>``.

    Returns ``({task: {row: figures}}, [folders])``; a finished folder is reused (resume), so a
    call after :func:`_start_dense`'s process has finished only reads its folders.
    ``overrides``: ``{task: [protocol overrides]}`` (default :data:`DENSE_OVERRIDES`).
    """
    import json

    from pcm3.evaluation.runner import evaluate

    overrides = DENSE_OVERRIDES if overrides is None else overrides
    tasks = {"motion": (data, "xsub" if benchmark is None else benchmark)}
    if builtin:
        from pcm3.data.synthetic import prepare_synthetic_untrimmed

        videos = root.parent / "untrimmed"
        if not (videos / "meta.json").exists():
            prepare_synthetic_untrimmed(videos, seed=0, progress=progress)
        tasks = {"detection": (videos, "xsub"), **tasks}
    results, folders = {}, []
    for task, (task_data, bench) in tasks.items():
        results[task] = {}
        for row in ("pretrained", "random_init"):
            folder = root / row / task
            if not (folder / "metrics.json").exists():
                folder.parent.mkdir(parents=True, exist_ok=True)
                evaluate(task, data=task_data, benchmark=bench, out=folder, kind=row, encoder_path=encoder_path,
                         overrides=overrides[task], seed=seed, progress=progress)
            m = json.loads((folder / "metrics.json").read_text())
            results[task][row] = m.get("figures", m)
            folders.append(folder)
    return results, folders


def format_table(m: dict) -> str:
    stream = m.get("stream", "joint")
    rows = [f"PCM3 demo on {m['data']}: {m['benchmark']} test accuracy, {m['train_samples']} train / {m['test_samples']} test "
            f"samples, {m['epochs']} epochs ({m['pretrain_seconds']:.0f}s pretraining), encoders on the {stream} stream",
            f"  {'encoder':<32}{'linear':>6}{'1-NN':>10}"]
    for name in ("raw_input", f"raw_input_{stream}", "random_init", "pretrained", "supervised"):
        if name in m:  # raw_input_<stream> exists for another stream than joint only
            label = {"supervised": "supervised (upper bound)",
                     "raw_input": "raw_input (joint)" if stream != "joint" else "raw_input",
                     f"raw_input_{stream}": f"raw_input ({stream})"}.get(name, name)
            rows.append(f"  {label:<32}{100 * m[name]['linear']:>5.1f}%{100 * m[name]['knn1']:>9.1f}%")
    for base in ("random_init", "raw_input"):
        if f"margin_linear_vs_{base}" in m:
            what = "raw_input (joint)" if base == "raw_input" and stream != "joint" else base
            rows.append(f"  {'pretrained - ' + what:<32}{100 * m[f'margin_linear_vs_{base}']:>+5.1f} "
                        f"{100 * m[f'margin_knn1_vs_{base}']:>+9.1f}")
    return "\n".join(rows)


def _pct(v) -> str:
    """A percentage as written by ``pcm3 eval`` (already x100)."""
    return f"{v:.1f}" if isinstance(v, (int, float)) else "-"


def format_suite(suite: dict) -> str:
    rows = ["recognition suite (pcm3 eval; demo settings: linear/occlusion batch 64, semi 1 seed x 30 epochs)",
            f"  {'encoder':<14}{'linear':>8}{'kNN-1':>8}{'occl. s/t':>12}{'semi 1%':>9}{'semi 10%':>9}"]
    for row, tasks in suite.items():
        occ = tasks.get("occlusion", {})
        semi = tasks.get("semi", {})
        s1, s10 = semi.get("1%_top1_mean"), semi.get("10%_top1_mean")
        rows.append(f"  {row:<14}{_pct(tasks.get('linear', {}).get('top1')):>8}{_pct(tasks.get('knn', {}).get('knn1')):>8}"
                    f"{_pct(occ.get('spatial_top1')) + '/' + _pct(occ.get('temporal_top1')):>12}{_pct(s1):>9}{_pct(s10):>9}")
    return "\n".join(rows)


def format_dense(dense: dict) -> str:
    rows = []
    for task, by_row in dense.items():
        for row, f in by_row.items():
            if task == "detection":
                rows.append(f"  detection {row:<12} mAP_a / mAP_v @0.5 {_pct(f.get('mAP_a@0.5 (authors)'))} / "
                            f"{_pct(f.get('mAP_v@0.5 (authors)'))} (official {_pct(f.get('mAP_a@0.5 (official)'))} / "
                            f"{_pct(f.get('mAP_v@0.5 (official)'))})")
            else:
                mine = next((v for k, v in f.items() if k.startswith("MPJPE (") and "zero" not in k), None)
                rows.append(f"  motion    {row:<12} MPJPE {_pct(mine)} mm (zero-velocity {_pct(f.get('MPJPE (zero-velocity)'))} mm)")
    return "dense tasks (demo settings)\n" + "\n".join(rows)
