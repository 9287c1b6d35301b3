"""Speed of the encoder cores: forward + backward of one batch.

Compares, on the same weights:
  stepwise     our release-equivalent encoder (two causal GRUs per layer, one whole-sequence
               call per direction per layer);
  frame-loop   the release's way of computing the same function: the bidirectional nn.GRU
               called on one frame at a time with the state carried over;
  bigru        a true bidirectional GRU, one call (a different function).

Usage:
    python benchmarks/bench_encoder.py                      # CPU size: batch 32, T 64, hidden 256
    python benchmarks/bench_encoder.py --batch 128 --hidden 1024 --device cuda
With a CUDA device present, the paper size (batch 128, T 64, hidden 1024, 3 layers) is also
timed on it unless ``--no-paper``. Prints a Markdown table (``--json FILE`` also writes JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from pcm3.models import Encoder, EncoderConfig, flatten_frames


def frame_loop(enc: Encoder, x: torch.Tensor) -> torch.Tensor:
    """The release's computation: BN, then the bidirectional GRU fed one frame at a time."""
    seq = flatten_frames(x)
    seq = enc.input_norm(seq.transpose(1, 2)).transpose(1, 2)
    outs, hidden = [], None
    for t in range(seq.shape[1]):
        out, hidden = enc.gru(seq[:, t:t + 1]) if hidden is None else enc.gru(seq[:, t:t + 1], hidden)
        outs.append(out)
    return torch.cat(outs, dim=1)[:, -1]  # N x 2H, the last frame


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, x: torch.Tensor, params, repeat: int, warmup: int) -> float:
    """Median seconds of forward + backward."""
    times = []
    for i in range(warmup + repeat):
        for p in params:
            p.grad = None
        _sync(x.device)
        start = time.perf_counter()
        fn(x).pow(2).mean().backward()
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_size(batch: int, frames: int, hidden: int, layers: int, device: torch.device, repeat: int,
             warmup: int, skip_loop: bool = False) -> dict:
    torch.manual_seed(0)
    step = Encoder(EncoderConfig(hidden=hidden, layers=layers)).to(device).train()
    bi = Encoder(EncoderConfig(hidden=hidden, layers=layers, variant="bigru")).to(device).train()
    bi.load_state_dict(step.state_dict())
    x = torch.randn(batch, 3, frames, 25, 2, device=device)
    with torch.no_grad():
        diff = (step(x) - frame_loop(step, x)).abs().max().item()
    params = list(step.parameters())
    row = {"device": str(device), "batch": batch, "frames": frames, "hidden": hidden, "layers": layers,
           "max_abs_diff_stepwise_vs_loop": diff}
    row["stepwise_s"] = time_fn(step, x, params, repeat, warmup)
    row["frame_loop_s"] = None if skip_loop else time_fn(lambda v: frame_loop(step, v), x, params, repeat, warmup)
    row["bigru_s"] = time_fn(bi, x, list(bi.parameters()), repeat, warmup)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--no-paper", action="store_true", help="skip the paper size on CUDA")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device here")
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [run_size(args.batch, args.frames, args.hidden, args.layers, torch.device(args.device),
                     args.repeat, args.warmup)]
    if torch.cuda.is_available() and not args.no_paper:
        rows.append(run_size(128, 64, 1024, 3, torch.device("cuda"), args.repeat, args.warmup))

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, cpu {cpu}, gpu {gpu}, "
          f"{time.strftime('%Y-%m-%d')}")
    print("| device | N | T | hidden | layers | stepwise (s) | frame loop (s) | bigru (s) | loop / stepwise | stepwise vs loop max diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        loop = "-" if r["frame_loop_s"] is None else f"{r['frame_loop_s']:.3f}"
        ratio = "-" if r["frame_loop_s"] is None else f"{r['frame_loop_s'] / r['stepwise_s']:.1f}x"
        print(f"| {r['device']} | {r['batch']} | {r['frames']} | {r['hidden']} | {r['layers']} | "
              f"{r['stepwise_s']:.3f} | {loop} | {r['bigru_s']:.3f} | {ratio} | {r['max_abs_diff_stepwise_vs_loop']:.1e} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "gpu": gpu, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
