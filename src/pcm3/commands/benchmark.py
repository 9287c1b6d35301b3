"""``pcm3 benchmark``: the whole recognition suite for given encoders and their baseline rows."""

from __future__ import annotations

import sys

from pcm3.args import seed_arg, set_threads


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="run linear, knn, occlusion and semi for encoders and baselines",
                       description="Evaluate each encoder (e.g. joint, bone, motion) and its random-init twin "
                                   "(optionally raw input and supervised) with linear, k-NN, occlusion and "
                                   "semi-supervised protocols, fuse the streams, and write OUT/benchmark.md "
                                   "(the paper's Tables 1-4 shape, the paper's figures beside ours where the "
                                   "data set matches) and OUT/report.md/.html.")
    p.add_argument("--encoders", nargs="+", required=True, metavar="FILE", help="encoder files from `pcm3 export`")
    p.add_argument("--data", required=True, help="prepared data folder")
    p.add_argument("--benchmark", required=True, help="split of the data (xsub, xview, ...; `pcm3 info DATA` lists them)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tasks", default="linear,knn,occlusion,semi", help="comma-separated subset of the suite")
    p.add_argument("--raw-input", action="store_true", help="add the raw-input row")
    p.add_argument("--supervised", action="store_true", help="add the supervised row (trains each encoder's architecture)")
    p.add_argument("--no-random-init", action="store_true", help="leave out the random-init twins")
    p.add_argument("--no-report", action="store_true", help="do not write report.md/.html (no t-SNE)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TASK.KEY=VALUE",
                   help="protocol override for one task, e.g. linear.epochs=10")
    p.add_argument("--overwrite", action="store_true", help="replace an existing pcm3 benchmark folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pcm3.evaluation.runner import resolve_device
    from pcm3.evaluation.suite import run_benchmark

    set_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    check_inputs(tasks, data=args.data, benchmark=args.benchmark, overrides=args.overrides,
                 supervised=args.supervised)
    result = run_benchmark(args.encoders, data=args.data, benchmark=args.benchmark, out=args.out, tasks=tasks,
                           raw_input=args.raw_input, supervised=args.supervised,
                           random_init=not args.no_random_init, overrides=args.overrides,
                           device=resolve_device(args.device), seed=args.seed, progress=not args.quiet,
                           overwrite=args.overwrite, report=not args.no_report)
    print(result["table"])
    for warning in result.get("warnings") or ():  # the report's: a figure left out of a damaged file
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {args.out}/benchmark.md ({len(result['runs'])} eval runs, {result['seconds']:.0f} s)")
    return 0


def check_inputs(tasks, *, data, benchmark, overrides, supervised: bool) -> None:
    """The data every task of the suite reads, checked before the output folder is touched
    (each task's ``check_inputs``: parts present and not empty, labels 0..C-1, lengths, NaN/inf,
    k-NN's k within the gallery); the same checks run again inside each evaluation. Unknown
    tasks and malformed ``--set`` are left to :func:`pcm3.evaluation.suite.run_benchmark`,
    which names them."""
    from pathlib import Path

    from pcm3.evaluation.common import load_protocol
    from pcm3.evaluation.runner import check_inputs as check_task_inputs, task_module
    from pcm3.evaluation.suite import SUITE_TASKS, split_overrides

    if not tasks or any(t not in SUITE_TASKS for t in tasks):
        return
    per_task = split_overrides(overrides, tasks)
    for task in tasks:
        module = task_module(task)
        protocol = load_protocol(module.PROTOCOL, module.DEFAULT_CONFIG, per_task[task])
        check_task_inputs(task, module, data=Path(data), benchmark=benchmark, protocol=protocol,
                          kind="supervised" if supervised else "pretrained")
