"""``pcm3 pretrain``: self-supervised PCM3 pretraining into a run folder."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain an encoder with PCM3",
        description="Pretrain PCM3 on a prepared data folder. The run folder gets the resolved "
                    "config, log.txt, metrics.csv, TensorBoard events (tb/), loss.png and "
                    "checkpoints; --resume continues an interrupted run exactly.")
    p.add_argument("--config", help="YAML config (see configs/); defaults are the paper's values")
    p.add_argument("--data", help="prepared data folder (overrides data.path)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from checkpoint_last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from pcm3.config import load_config
    from pcm3.errors import ConfigError
    from pcm3.pretrain import fit

    config = args.config
    if args.resume and config is None and (Path(args.out) / "config.yaml").exists():
        config = Path(args.out) / "config.yaml"
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    cfg = load_config(config, overrides)
    if not cfg.data.path:
        raise ConfigError("no data: give --data DIR (a folder made by `pcm3 prepare`)")
    if args.quiet:
        cfg.train.progress = False
    last = fit(cfg, args.out, resume=args.resume)
    if not args.quiet and last:
        print(f"done: {args.out} (epoch {last['epoch']}, loss {last['loss']:.4f})")
    return 0
