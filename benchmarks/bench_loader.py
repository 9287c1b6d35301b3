"""Throughput of the pretraining input pipeline: loading, views + mixing + mask, and both.

Builds a prepared folder of random clips (``--n`` samples of ``(3, 300, 25, 2)`` with random
true lengths) in a temporary directory, then measures, as batches/s and samples/s (median of
``--repeats``):

(a) loading only: a DataLoader over :class:`SkeletonDataset` (shuffled, drop_last), per
    ``--workers`` setting;
(b) augmentation only, on one in-memory batch: ``make_views`` + ``random_mix`` of view 1 +
    a topology mask applied to view 3 (``pcm3.augment``, ``pcm3.masking``);
(c) both: the loader with (b) on every batch, as the training loop sees it.

Usage::

    python benchmarks/bench_loader.py                     # CPU, workers 0 and 2
    python benchmarks/bench_loader.py --device cuda       # augment on the GPU
    python benchmarks/bench_loader.py --json out.json

Results are recorded in ``benchmarks/RESULTS-loader.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcm3.augment import ViewConfig, make_views, random_mix
from pcm3.data.dataset import SkeletonDataset
from pcm3.data.prepared import PreparedWriter
from pcm3.masking import MaskConfig, apply_mask, make_mask


def build_prepared(root: Path, n: int, t: int = 300, seed: int = 0) -> Path:
    """A prepared folder of ``n`` random clips ``(3, t, 25, 2)``, zero-padded after their length."""
    rng = np.random.default_rng(seed)
    out = root / "random-clips"
    with PreparedWriter(out, kind="clips", shape=(n, 3, t, 25, 2), dataset="random", layout="ntu25",
                        class_names=[f"c{i}" for i in range(60)]) as w:
        for i in range(n):
            length = int(rng.integers(32, t + 1))
            x = np.zeros((3, t, 25, 2), dtype=np.float32)
            x[:, :length] = rng.standard_normal((3, length, 25, 2), dtype=np.float32)
            w.set(i, x, label=int(rng.integers(0, 60)), length=length, name=f"s{i:05d}")
        w.set_splits({"all": {"train": list(range(n)), "test": []}})
    return out


def augment_batch(x, lengths, view_cfg, mask_cfg, generator):
    """The per-batch work of pretraining before the model: three views, mixing, mask."""
    v1, v2, v3 = make_views(x, lengths, view_cfg, generator)
    mixed, lam, partner, kind = random_mix(v1, "ntu25", view_cfg.mix_probs, view_cfg.mix_parts,
                                           view_cfg.mix_window, view_cfg.mix_step, view_cfg.mix_per_sample,
                                           generator)
    mask = make_mask(mask_cfg, x.shape[0], view_cfg.out_len, "ntu25", x.shape[-1], generator, x.device)
    return v1, v2, apply_mask(v3, mask), mixed, lam, partner, mask


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epochs(loader, repeats, step=None):
    """Batches/s of ``repeats`` full epochs (after one warm-up epoch)."""
    rates = []
    for r in range(repeats + 1):
        count, t0 = 0, time.perf_counter()
        for batch in loader:
            if step is not None:
                step(batch)
            count += 1
        dt = time.perf_counter() - t0
        if r > 0:
            rates.append(count / dt)
    return rates


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="samples in the random prepared folder")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=5, help="timed epochs (or blocks of batches for (b))")
    ap.add_argument("--device", default="cpu", help="where views, mixing and masks are made")
    ap.add_argument("--threads", type=int, help="torch intra-op threads of the main process (default: torch's)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    view_cfg, mask_cfg = ViewConfig(), MaskConfig("topology", 0.6, 8)
    generator = torch.Generator().manual_seed(0)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
               "n": args.n, "batch": args.batch, "python": platform.python_version()}
    try:
        results["cpu"] = next(line.split(":", 1)[1].strip() for line in
                              subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                              if line.startswith("Model name"))
    except (StopIteration, OSError):
        results["cpu"] = platform.processor()
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = SkeletonDataset(build_prepared(Path(tmp), args.n))
        results["build_s"] = round(time.perf_counter() - t0, 1)

        def step(batch):
            x, lengths = batch[0].to(device, non_blocking=True), batch[1].to(device)
            augment_batch(x, lengths, view_cfg, mask_cfg, generator)
            sync(device)

        # (b) augmentation only, on one in-memory batch.
        x, lengths, _, _ = next(iter(DataLoader(ds, batch_size=args.batch, shuffle=True)))
        x, lengths = x.to(device), lengths.to(device)
        for _ in range(3):
            augment_batch(x, lengths, view_cfg, mask_cfg, generator)
        sync(device)
        per_block = max(1, len(ds) // args.batch)
        rates = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(per_block):
                augment_batch(x, lengths, view_cfg, mask_cfg, generator)
            sync(device)
            rates.append(per_block / (time.perf_counter() - t0))
        rows.append(("(b) views+mix+mask, in-memory batch", "-", rates))

        for workers in args.workers:
            loader = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=workers,
                                persistent_workers=workers > 0, pin_memory=device.type == "cuda")
            rows.append(("(a) loading only", workers, time_epochs(loader, args.repeats)))
            rows.append(("(c) loading + views+mix+mask", workers, time_epochs(loader, args.repeats, step)))
            del loader

    results["rows"] = [{"what": w, "workers": k, "batches_per_s": round(statistics.median(r), 2),
                        "samples_per_s": round(statistics.median(r) * args.batch),
                        "batches_per_s_min_max": [round(min(r), 2), round(max(r), 2)]} for w, k, r in rows]
    print(f"torch {results['torch']} ({results['threads']} threads), {results['cpu']}, device {device}, "
          f"N={args.n}, batch {args.batch}, median of {args.repeats}")
    print("| what | workers | batches/s (median) | samples/s (median) | batches/s min-max |")
    print("|---|---|---|---|---|")
    for r in sorted(results["rows"], key=lambda r: r["what"]):
        lo, hi = r["batches_per_s_min_max"]
        print(f"| {r['what']} | {r['workers']} | {r['batches_per_s']:.2f} | {r['samples_per_s']} | {lo:.2f}-{hi:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
