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

Memory (``--memory-gb G``): a prepared folder whose ``data.npy`` holds about G GB is generated
in a temporary directory (in ``/tmp`` by default, ``--tmp``; deleted afterwards), then a fresh
process iterates one whole shuffled epoch through the DataLoader (batch ``--batch``, per
``--workers`` setting) and reports, against the array's size, its peak resident memory summed
over the main process and its workers: anonymous memory (``RssAnon``, what the loader really
allocates) and file-backed pages of the memory map (``RssFile``, page cache the kernel can drop
at any time), sampled after every batch::

    python benchmarks/bench_loader.py --memory-gb 4 --workers 0 2

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


def build_big(root: Path, gb: float, t: int = 300) -> Path:
    """A prepared folder of about ``gb`` GB: clips ``(3, t, 25, 2)`` float32, cheap patterned values
    (a random block shifted per sample: generating random numbers for GBs would dominate)."""
    per = 3 * t * 25 * 2 * 4
    n = max(1, int(gb * 1e9 // per))
    rng = np.random.default_rng(0)
    block = rng.standard_normal((3, t, 25, 2), dtype=np.float32)
    out = root / "big-clips"
    with PreparedWriter(out, kind="clips", shape=(n, 3, t, 25, 2), dataset="random", layout="ntu25",
                        class_names=[f"c{i}" for i in range(60)]) as w:
        for i in range(n):
            w.set(i, block + np.float32(i % 97) * 0.01, label=i % 60, length=t, name=f"s{i:06d}")
        w.set_splits({"all": {"train": list(range(n)), "test": []}})
    return out


def _status(pid: int) -> dict:
    """``VmRSS``, ``RssAnon``, ``RssFile``, ``RssShmem`` of a process, in bytes."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def _family(pid: int) -> list:
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
    except OSError:
        pass
    return [pid] + [p for k in kids for p in _family(k)]


def measure_memory(root: str, batch: int, workers: int) -> dict:
    """One shuffled epoch through the DataLoader; peak memory of this process and its workers."""
    import os

    torch.set_num_threads(1)
    ds = SkeletonDataset(root)
    size = ds.prepared.data.nbytes
    loader = DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers)
    peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "RssShmem": 0}
    start = {k: v for k, v in _status(os.getpid()).items()}
    t0 = time.perf_counter()
    count = 0
    for x, *_ in loader:
        count += x.shape[0]
        total = {k: 0 for k in peak}
        for pid in _family(os.getpid()):
            for k, v in _status(pid).items():
                total[k] += v
        for k in peak:
            peak[k] = max(peak[k], total[k])
        del x
    return {"workers": workers, "array_bytes": size, "samples": count, "seconds": time.perf_counter() - t0,
            "start": start, "peak": peak}


def run_memory(gb: float, batch: int, workers_list, tmp_root) -> list:
    import shutil
    import sys

    tmp = Path(tempfile.mkdtemp(prefix="pcm3-loader-mem-", dir=tmp_root))
    try:
        t0 = time.perf_counter()
        root = build_big(tmp, gb)
        print(f"generated {root} ({(root / 'data.npy').stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s",
              flush=True)
        rows = []
        for workers in workers_list:  # a fresh process each: nothing mapped or cached in it yet
            code = ("import json, sys; sys.path.insert(0, %r); import bench_loader as b; "
                    "print(json.dumps(b.measure_memory(%r, %d, %d)))" % (str(Path(__file__).parent), str(root), batch,
                                                                          workers))
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            gib = 2**30
            print(f"| {r['array_bytes'] / gib:.2f} GiB | {workers} | {r['samples']} | {r['seconds']:.0f} | "
                  f"{r['peak']['RssAnon'] / gib:.3f} | {r['peak']['RssFile'] / gib:.2f} | {r['peak']['RssShmem'] / gib:.3f} | "
                  f"{r['peak']['VmRSS'] / gib:.2f} |", flush=True)
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    ap.add_argument("--memory-gb", type=float, help="memory mode: generate an array of this many GB and "
                                                       "report peak resident memory over one epoch")
    ap.add_argument("--tmp", default="/tmp", help="memory mode: where the array is generated (deleted after)")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device here")
    if args.memory_gb:
        print("| array | workers | samples read | seconds | peak RssAnon GiB | peak RssFile GiB | peak RssShmem GiB "
              "| peak VmRSS GiB |\n|---|---|---|---|---|---|---|---|", flush=True)
        rows = run_memory(args.memory_gb, args.batch, args.workers, args.tmp)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
        return rows
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
