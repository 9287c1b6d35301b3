"""``pcm3 demo``: the whole method on the built-in data, on a laptop CPU, in a few minutes.

Steps: prepare the built-in synthetic data set; pretrain a small PCM3 model; export its
encoder; probe it (linear classifier and 1-NN on frozen features, cross-subject) against the
same encoder randomly initialised. Prints a table and writes ``metrics.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

DEMO_CONFIG = "demo"


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="prepare built-in data, pretrain, and compare against random init",
                       description="Run PCM3 end to end on the built-in synthetic data set: prepare it, "
                                   "pretrain a small model, and report a linear probe and 1-NN accuracy "
                                   "of the pretrained encoder against the same encoder randomly "
                                   "initialised. Output: a printed table and OUT/metrics.json.")
    p.add_argument("--out", default="pcm3-demo", help="output folder (default ./pcm3-demo)")
    p.add_argument("--data", help="use this prepared folder instead of the built-in data (e.g. MSR Action3D "
                                  "with --config msr3d_xsub_joint)")
    p.add_argument("--config", default=DEMO_CONFIG, help="pretraining config (default: the packaged 'demo')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=5")
    p.add_argument("--prepare-only", action="store_true", help="only prepare the data and print its summary")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pcm3.data.prepared import Prepared, format_summary
    from pcm3.data.synthetic import prepare_synthetic

    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    t0 = time.perf_counter()
    if not args.data and not (data / "meta.json").exists():
        prepare_synthetic(data, seed=0, progress=not args.quiet)
    print(format_summary(Prepared(data).summary()))
    if args.prepare_only:
        return 0
    metrics = run_demo(out, data, args.config, args.overrides, progress=not args.quiet)
    metrics["total_seconds"] = time.perf_counter() - t0
    from pcm3.io import write_json

    write_json(out / "metrics.json", metrics)
    print(format_table(metrics))
    print(f"wrote {out / 'metrics.json'}")
    return 0


def run_demo(out: Path, data: Path, config: str, overrides, progress: bool = True) -> dict:
    """Pretrain, export and probe; return the metrics dict."""
    import torch

    from pcm3.config import load_config
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.evaluation.features import extract_features
    from pcm3.evaluation.probe import probe
    from pcm3.export import export_encoder, load_encoder
    from pcm3.models import Encoder
    from pcm3.pretrain import fit

    cfg = load_config(config, [*overrides, f"data.path={data}"])
    cfg.train.progress = progress
    run_dir = out / "run"
    resume = (run_dir / "checkpoint_last.pt").exists()
    t0 = time.perf_counter()
    last = fit(cfg, run_dir, resume=resume, progress=progress)
    pretrain_seconds = time.perf_counter() - t0
    export_encoder(run_dir, out / "encoder.pt")
    pretrained = load_encoder(out / "encoder.pt")
    torch.manual_seed(cfg.train.seed)
    random_init = Encoder(cfg.model.encoder).eval()

    bench = cfg.data.benchmark
    train = SkeletonDataset(data, bench, "train")
    test = SkeletonDataset(data, bench, "test")
    results = {}
    for name, enc in (("pretrained", pretrained), ("random_init", random_init)):
        kw = dict(stream=cfg.data.stream, layout=pretrained.layout, clip_len=pretrained.clip_len,
                  crop=pretrained.test_crop)
        trx, try_ = extract_features(enc, train, **kw)
        tex, tey = extract_features(enc, test, **kw)
        results[name] = probe(trx, try_, tex, tey, seed=cfg.train.seed)
    return {
        "data": str(data), "benchmark": bench, "train_samples": len(train), "test_samples": len(test),
        "epochs": last.get("epoch"), "final_loss": last.get("loss"), "pretrain_seconds": pretrain_seconds,
        "pretrained": results["pretrained"], "random_init": results["random_init"],
        "margin_linear": results["pretrained"]["linear"] - results["random_init"]["linear"],
        "margin_knn1": results["pretrained"]["knn1"] - results["random_init"]["knn1"],
    }


def format_table(m: dict) -> str:
    rows = [f"PCM3 demo on {m['data']}: {m['benchmark']} test accuracy, {m['train_samples']} train / {m['test_samples']} test "
            f"samples, {m['epochs']} epochs ({m['pretrain_seconds']:.0f}s pretraining)",
            f"  {'encoder':<14}{'linear':>10}{'1-NN':>10}"]
    for name in ("random_init", "pretrained"):
        rows.append(f"  {name:<14}{100 * m[name]['linear']:>9.1f}%{100 * m[name]['knn1']:>9.1f}%")
    rows.append(f"  {'margin':<14}{100 * m['margin_linear']:>+9.1f} {100 * m['margin_knn1']:>+9.1f}")
    return "\n".join(rows)
