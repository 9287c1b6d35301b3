"""``pcm3 pretrain``: self-supervised PCM3 pretraining into a run folder."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain an encoder with PCM3",
        description="Pretrain PCM3 on a prepared data folder. The run folder gets the resolved "
                    "config, log.txt, metrics.csv, TensorBoard events (tb/), loss.png and "
                    "checkpoints; --resume continues an interrupted run exactly.")
    p.add_argument("--config", help="YAML config file or packaged config name (demo, msr3d_xsub_joint, "
                                     "ntu60_xsub_joint...); default: the paper's full-size model (pcm3)")
    p.add_argument("--data", help="prepared data folder (overrides data.path)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint_last.pt")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads (default: train.threads; 0 = 1 for small GRU encoders, else physical cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from pcm3.config import load_config
    from pcm3.errors import ConfigError
    from pcm3.pretrain import fit

    config = args.config
    if args.resume and config is None and (Path(args.out) / "config.yaml").exists():
        config = Path(args.out) / "config.yaml"
    elif args.resume and config is None and (Path(args.out) / "checkpoint_last.pt").exists():
        # not the paper's default config checked against the run's ("views.out_len differs")
        raise ConfigError(f"--resume: {Path(args.out) / 'config.yaml'} (the run's resolved config) is missing; give "
                          "the run's config with --config NAME|FILE")
    overrides = list(args.overrides)
    if args.threads is not None:
        if args.threads < 0:  # checked here: as an override the error would name a --set the user never typed
            raise ConfigError(f"--threads: must be 0 (automatic) or more, got {args.threads}")
        overrides.append(f"train.threads={args.threads}")
    import os

    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 prints
    if config is None:
        from pcm3.config import CONFIG_DIR

        if not args.quiet and main_rank:  # on stdout with the run's other lines: stderr is for the one-line errors
            print("note: no --config: using the paper's configuration 'pcm3' (3 x 1024 GRU, about 100M "
                  "parameters, 450 epochs); small ones: --config demo, msr3d_xsub_joint, nwucla_xview_joint "
                  f"(all packaged configs: {CONFIG_DIR})", flush=True)
        config = "pcm3"
    cfg = load_config(config, overrides)
    _resume_keeps_the_length(args, cfg, overrides)
    if args.data:  # as typed: as a --set value the path would be read as YAML (2024.10 -> 2024.1)
        cfg.data.path = str(args.data)
    if not cfg.data.path:
        raise ConfigError("no data: give --data DIR (a folder made by `pcm3 prepare`)")
    from pcm3 import distributed

    # --quiet is this command's, not the run's: in config.yaml it silenced every later --resume
    last = fit(cfg, args.out, resume=args.resume, progress=False if args.quiet else None)
    if distributed.launched():  # under torchrun: leave the process group together (NCCL warns otherwise)
        distributed.barrier()
        distributed.shutdown()
    if not args.quiet and last and main_rank:
        print(f"done: {args.out} (epoch {last['epoch']}, loss {last['loss']:.4f})")
    return 0


def _resume_keeps_the_length(args, cfg, overrides) -> None:
    """``--resume`` lengthens a run only when asked (``--set train.epochs=N``): a ``--config``
    whose epochs differ from the run's would otherwise change the length (and every schedule
    laid over it) without a word."""
    from pcm3.config import parse_override, read_yaml
    from pcm3.errors import ConfigError

    saved = Path(args.out) / "config.yaml"
    if not args.resume or args.config is None or not saved.is_file():
        return
    if any(parse_override(o)[0] == "train.epochs" for o in overrides):
        return
    try:
        before = int(read_yaml(saved)["train"]["epochs"])
    except Exception:  # noqa: BLE001 - an unreadable run config is fit()'s to report
        return
    if before != cfg.train.epochs:
        raise ConfigError(f"--resume: train.epochs differs from the run ({before} there, "
                          f"{cfg.train.epochs} in --config {args.config}); to lengthen the run give "
                          f"--set train.epochs={cfg.train.epochs}, to finish it leave --config out or give "
                          f"--set train.epochs={before}")
