"""Does one CPU thread beat two for the small recurrent encoders of the small configs?

Times forward + backward of the GRU encoder (``pcm3.models.Encoder``, stepwise, 2 layers) on
one batch ``(N, 3, T, 25, 2)`` with ``torch.set_num_threads(1)`` and with 2 (or ``--threads``),
interleaved (1, 2, 1, 2, ...) so that other load on the machine hits both alike; reports the
median seconds per step and the ratio. The rule in :func:`pcm3.config.auto_threads` comes from
these figures (see ``benchmarks/RESULTS-threads.md``).

Usage:
    python benchmarks/bench_threads.py                 # about a minute on a 2-core CPU
    python benchmarks/bench_threads.py --hidden 64 128 256 --batch 32 64 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from pcm3.models import Encoder, EncoderConfig


def step_seconds(enc: Encoder, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    enc.zero_grad(set_to_none=True)
    enc(x).square().mean().backward()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args(argv)

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"# stepwise GRU encoder, {args.layers} layers, T={args.frames}, 25 joints x 2 persons; "
          f"forward+backward, median of {args.repeats} interleaved steps")
    head = " | ".join(f"{n} thread{'s' * (n > 1)} (s)" for n in args.threads)
    print(f"| hidden | batch | {head} | {args.threads[0]} vs {args.threads[-1]} |")
    print("|---|---|" + "---|" * len(args.threads) + "---|")
    for hidden in args.hidden:
        for batch in args.batch:
            torch.manual_seed(0)
            enc = Encoder(EncoderConfig(hidden=hidden, layers=args.layers))
            x = torch.randn(batch, 3, args.frames, 25, 2)
            times = {n: [] for n in args.threads}
            for n in args.threads:  # warm-up
                torch.set_num_threads(n)
                step_seconds(enc, x)
            for _ in range(args.repeats):
                for n in args.threads:
                    torch.set_num_threads(n)
                    times[n].append(step_seconds(enc, x))
            med = {n: statistics.median(v) for n, v in times.items()}
            cells = " | ".join(f"{med[n]:.3f}" for n in args.threads)
            ratio = med[args.threads[-1]] / med[args.threads[0]]
            print(f"| {hidden} | {batch} | {cells} | {ratio:.2f}x |", flush=True)
    print(f"# load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
