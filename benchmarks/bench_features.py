"""Feature extraction speed of the evaluation (``pcm3.evaluation.features.encode``), and what else costs.

Measures on the built-in data (prepared into a temporary folder, memory-mapped):

  features/s end to end  encode(): DataLoader over the memory-mapped clips, centre crop + resize
                         on the device, stream, encoder forward under torch.no_grad
  features/s encoder     the same encoder forward alone on a ready batch (the upper bound)
  linear 100 epochs      the linear protocol's SGD on precomputed features (the 100 epochs of Table 1)
  kNN (k = 1, 5, 20)     the blocked top-k search, gallery = train split, queries = test split

Usage:
    python benchmarks/bench_features.py                       # CPU, demo-size encoder (2 x 64, 32 frames)
    python benchmarks/bench_features.py --hidden 256 --layers 3 --clip-len 64
    python benchmarks/bench_features.py --device cuda --hidden 1024 --layers 3 --clip-len 64
Prints a Markdown table (``--json FILE`` also writes JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--clip-len", type=int, default=32)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--subjects", type=int, default=20, help="built-in data size (20: 1,920 clips)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device here")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    from pcm3.data.synthetic import prepare_synthetic
    from pcm3.evaluation.baselines import random_init_encoder
    from pcm3.evaluation.common import open_split
    from pcm3.evaluation.features import encode
    from pcm3.evaluation.knn import knn_accuracies
    from pcm3.evaluation.linear import LinearProtocol, fit_linear
    from pcm3.models import EncoderConfig

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare_synthetic(data, seed=0, num_subjects=args.subjects, progress=False)
        train, test = open_split(data, "xsub", "train"), open_split(data, "xsub", "test")
        enc = random_init_encoder(EncoderConfig(hidden=args.hidden, layers=args.layers), 0, clip_len=args.clip_len).to(device)
        kw = dict(clip_len=args.clip_len, stream="joint", layout="ntu25", batch_size=args.batch, device=device,
                  num_workers=args.workers)
        encode(enc, open_split(data, "xsub", "train", indices=train.indices[:64]), **kw)  # warm-up
        t0 = time.perf_counter()
        trx, try_, _ = encode(enc, train, **kw)
        tex, tey, _ = encode(enc, test, **kw)
        end_to_end = time.perf_counter() - t0
        n = len(train) + len(test)

        x = torch.randn(args.batch, 3, args.clip_len, 25, 2, device=device)
        with torch.no_grad():
            enc(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            reps = max(1, n // args.batch)
            for _ in range(reps):
                enc(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            encoder_only = (time.perf_counter() - t0) / (reps * args.batch)

        crops = 10
        t0 = time.perf_counter()
        pool, _, _ = encode(enc, train, crops=crops, crop_range=(0.5, 1.0), min_len=args.clip_len, **kw)
        crop_seconds = time.perf_counter() - t0
        pool_t = torch.from_numpy(pool)
        g = torch.Generator().manual_seed(0)

        def epoch_features(e):
            k = torch.randint(0, crops, (pool_t.shape[1],), generator=g)
            return pool_t[k, torch.arange(pool_t.shape[1])]

        t0 = time.perf_counter()
        fit_linear(epoch_features, try_, 16, LinearProtocol(), device=device, seed=0)
        linear_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        knn_accuracies(trx, try_, tex, tey, (1, 5, 20), device=device)
        knn_seconds = time.perf_counter() - t0

    result = {
        "device": str(device), "cpu": platform.processor() or platform.machine(), "threads": args.threads,
        "torch": torch.__version__, "encoder": f"{args.layers} x {args.hidden} stepwise GRU",
        "clip_len": args.clip_len, "batch": args.batch, "workers": args.workers, "samples": n,
        "features_per_s_end_to_end": n / end_to_end, "features_per_s_encoder_only": 1 / encoder_only,
        "encoder_share": (n * encoder_only) / end_to_end, "train_crops": crops, "train_crops_seconds": crop_seconds,
        "linear_100_epochs_seconds": linear_seconds, "knn_seconds": knn_seconds,
    }
    print(f"| encoder | device | samples | features/s end to end | features/s encoder alone | encoder share | "
          f"{crops} train crops | linear 100 epochs | kNN k=1,5,20 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {result['encoder']}, {args.clip_len} frames | {device} ({args.threads} thread) | {n} | "
          f"{result['features_per_s_end_to_end']:.0f} | {result['features_per_s_encoder_only']:.0f} | "
          f"{100 * result['encoder_share']:.0f}% | {crop_seconds:.1f} s | {linear_seconds:.1f} s | {knn_seconds:.2f} s |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
