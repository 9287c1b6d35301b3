"""``pcm3 eval TASK``: downstream evaluation of an encoder (or a baseline row) on a prepared split.

Tasks are modules ``pcm3.evaluation.<task>`` (see :data:`TASK_MODULES`); the work is done by
:func:`pcm3.evaluation.runner.evaluate`, which writes ``OUT/metrics.json`` and ``OUT/results.md``.

``torchrun --nproc_per_node=G -m pcm3 eval linear|semi ...`` runs the evaluation on ``G``
processes (see :mod:`pcm3.evaluation.runner`); rank 0 alone writes and prints.
"""

from __future__ import annotations

import argparse
import sys

from pcm3.args import seed_arg, set_threads

from pcm3.evaluation.runner import TASK_MODULES  # noqa: F401  (the registry, imported lazily per task)

ROWS = ("--random-init", "--raw-input", "--supervised")


class _TaskHelp(argparse.Action):
    """``-h``/``--help``: the command's help, and after ``pcm3 eval TASK --help`` the task's
    packaged protocol (``configs/eval_<task>.yaml``: every key ``--set`` can change, its default
    and what it means)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        task = getattr(namespace, "task", None)
        if task in TASK_MODULES:
            print("\n" + protocol_help(task))
        else:
            print("\n`pcm3 eval TASK --help` also lists the task's protocol keys and their defaults.")
        parser.exit()


def _value(v) -> str:
    """A protocol value as YAML writes it (``null``, ``true``, ``[0.5, 1.0]``)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def protocol_help(task: str, width: int = 100) -> str:
    """The keys of ``task``'s protocol with their packaged values and descriptions (``pcm3 eval
    TASK --help``)."""
    import importlib
    import textwrap

    from pcm3.evaluation.common import protocol_keys

    module = importlib.import_module(TASK_MODULES[task])
    keys = protocol_keys(module.PROTOCOL, module.DEFAULT_CONFIG)
    lines = [f"protocol of {task} (the packaged {module.DEFAULT_CONFIG}.yaml; change a value with --set KEY=VALUE "
             f"or give --config FILE):"]
    pad = max(len(f"{k} = {_value(v)}") for k, v, _ in keys) + 2
    pad = min(pad, 36)
    for key, value, doc in keys:
        head = f"  {key} = {_value(value)}"
        text = " ".join(doc.replace("``", "").split())
        if not text:
            lines.append(head)
            continue
        wrapped = textwrap.wrap(text, width=max(40, width - pad - 2))
        if len(head) > pad:
            lines.append(head)
            lines.extend(" " * (pad + 2) + w for w in wrapped)
        else:
            lines.append(head.ljust(pad + 2) + wrapped[0])
            lines.extend(" " * (pad + 2) + w for w in wrapped[1:])
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", add_help=False, help="evaluate an encoder: linear, semi, knn, occlusion, fusion, ...",
        description="Evaluate an encoder (or a baseline row) with one downstream protocol and write "
                    "OUT/metrics.json and OUT/results.md. Protocols are YAML configs (packaged defaults "
                    "eval_<task>; --config NAME|FILE, --set key=value).")
    p.add_argument("-h", "--help", action=_TaskHelp, help="show this help (after TASK: with the task's protocol keys)")
    p.add_argument("task", metavar="TASK", help="linear, semi, knn, occlusion, fusion, detection, motion")
    src = p.add_argument_group(
        "encoder", "--encoder or --run, optionally with --random-init or --supervised (which take its architecture); "
                   "--raw-input alone; or --pretrain-config with --random-init or --supervised instead of an encoder. "
                   "Options a row would ignore are refused.")
    src.add_argument("--encoder", help="encoder file written by `pcm3 export`")
    src.add_argument("--run", "--run-dir", dest="run",
                     help="pretraining run folder (its last checkpoint); under torchrun write --run-dir "
                          "(torchrun takes --run for its own --run-path)")
    src.add_argument("--pretrain-config", help="pretraining config NAME|FILE giving the architecture "
                                               "for --random-init/--supervised without an encoder")
    rows = src.add_mutually_exclusive_group()
    rows.add_argument("--random-init", action="store_true", help="the same architecture, fresh weights (seeded)")
    rows.add_argument("--raw-input", action="store_true", help="no network (no --encoder/--run/--pretrain-config): the "
                      "valid frames centre-cropped (95%%, as the encoders), resized, centred, flattened")
    rows.add_argument("--supervised", action="store_true", help="the same architecture trained with labels (upper bound)")
    p.add_argument("--data", help="prepared data folder")
    p.add_argument("--benchmark", default=None, help="split of the data (xsub, xview, xset, ...)")
    p.add_argument("--scores", nargs="+", metavar="DIR", help="fusion: the eval folders whose test scores are fused")
    p.add_argument("--config", default=None, help="protocol config NAME|FILE (default: the packaged eval_<task>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a protocol value, e.g. --set epochs=10")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing pcm3 eval folder")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (default auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: 1 for encoders up to 256 wide, else the physical cores, shared "
                        "among torchrun's processes on this machine)")
    p.add_argument("--seed", type=seed_arg, default=0, help="base seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def encoder_kind(args) -> str:
    if args.random_init:
        return "random_init"
    if args.raw_input:
        return "raw_input"
    if args.supervised:
        return "supervised"
    return "pretrained"


def _auto_threads(args) -> int:
    """:func:`pcm3.config.auto_threads` of the encoder named by ``--encoder`` or of the run
    ``--run`` (its ``config.yaml``), else the cores of this process
    (:func:`pcm3.config.cores_per_process`: shared among torchrun's processes)."""
    from pathlib import Path

    from pcm3.config import auto_threads, cores_per_process, read_yaml
    from pcm3.errors import Pcm3Error

    try:
        if getattr(args, "encoder", None):
            from pcm3.export import load_encoder

            return auto_threads(load_encoder(args.encoder).config.hidden)
        if getattr(args, "run", None):
            return auto_threads(int(read_yaml(Path(args.run) / "config.yaml")["model"]["encoder"]["hidden"]))
    except (Pcm3Error, OSError, ValueError, TypeError, KeyError):
        pass  # unreadable here: the evaluation reports it properly
    return cores_per_process()


def run(args) -> int:
    import torch

    from pcm3.errors import ConfigError
    from pcm3.evaluation.common import format_figure
    from pcm3.evaluation.runner import NO_ENCODER_TASKS, evaluate, resolve_device

    if args.threads is not None:
        set_threads(args.threads)
    else:  # the measured rule of train.threads: 0 (one thread for small GRUs), from the encoder's width
        torch.set_num_threads(_auto_threads(args))
    if args.encoder and args.run:
        raise ConfigError("--encoder and --run: give one of them")
    kind = encoder_kind(args)
    overrides = list(args.overrides)
    if args.task in NO_ENCODER_TASKS:
        if args.scores:
            overrides.append("runs=[" + ", ".join(repr(str(s)) for s in args.scores) + "]")
    elif args.scores:
        raise ConfigError("--scores: only for the fusion task")
    from pcm3 import distributed

    try:
        metrics = evaluate(args.task, data=args.data, benchmark=args.benchmark, out=args.out, kind=kind,
                           encoder_path=args.encoder, run=args.run, pretrain_config=args.pretrain_config,
                           config=args.config, overrides=overrides, device=resolve_device(args.device),
                           seed=args.seed, progress=not args.quiet, overwrite=args.overwrite)
        main = distributed.is_main()
        if distributed.launched():  # every rank done with its collectives before any leaves (gloo aborted otherwise)
            distributed.barrier()
    finally:
        if distributed.launched():  # under torchrun: leave the process group
            distributed.shutdown()
    if not main:  # rank 0 alone prints
        return 0
    units = metrics.get("units", {})
    figures = ", ".join(f"{k} {format_figure(k, v, units)}" for k, v in metrics["figures"].items())
    print(f"{args.task} ({metrics['encoder']['kind']}): {figures}")
    print(f"wrote {args.out}/metrics.json and results.md ({metrics['wall_seconds']:.1f} s)")
    for warning in metrics.get("warnings") or []:  # also among results.md's notes
        print(f"warning: {warning}", file=sys.stderr)
    return 0
