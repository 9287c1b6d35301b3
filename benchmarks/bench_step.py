"""Speed of the full PCM3 training step, and the input-BatchNorm statistics choice.

``speed`` (default): samples/s of one optimisation step (forward of every term, backward, SGD
step, enqueue) on pre-made random views, for

  project      our step: one query-encoder call on the concatenated intra/inter/masked views,
               one for the predicted view, whole-sequence GRU calls;
  frame-loop   the same step computed the release's way: one query-encoder call per view and
               the bidirectional GRU called on one frame at a time (``release_style``), same
               weights (checked: same loss on the first step);

in the same process, alternating (``--rounds`` rounds of ``--steps`` timed steps each, after
one warm-up step per variant), median seconds per step. On CUDA also peak memory and, with
``--amp``, bfloat16 autocast; ``--ntu-epochs`` turns the project's throughput into an
estimate of a full NTU 60 xsub pretraining (40,091 training samples).

Usage (CPU, the issue's size: 3 x 256, batch 32, 64 frames, queue 4096, one thread):
    python benchmarks/bench_step.py
On a CUDA machine, as one prepared script (bf16-vs-fp32 loss curves over 60 steps, then the
CPU size on the GPU and the paper size in fp32 and bf16):
    python benchmarks/bench_step.py --cuda-paper --json /tmp/step_cuda.json

``bn``: learning with ``model.encoder.bn_stats`` per_view vs joint: a short pretraining on
the built-in data set (validation benchmark ``xsub-val``, carved from the training subjects;
the test split is not used), then the linear and 1-NN probe of ``pcm3.evaluation.probe`` on
its held-out training subjects, and the epoch throughput:
    python benchmarks/bench_step.py bn --epochs 6
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from pcm3.models import PCM3, EncoderConfig, LossConfig, ModelConfig
from pcm3.models.release import release_style

NTU60_XSUB_TRAIN = 40091


def make_inputs(n: int, t: int, v: int = 25, m: int = 2, device="cpu", seed: int = 0) -> dict:
    """Pre-made views ``(N, 3, T, V, M)``, a mask ``(N, T, V, M)`` (about half masked), mixing."""
    g = torch.Generator().manual_seed(seed)
    views = {k: torch.randn(n, 3, t, v, m, generator=g) for k in ("view1", "view2", "view3", "mixed")}
    out = {**views, "mask": torch.rand(n, t, v, m, generator=g) < 0.5, "lam": torch.rand(n, generator=g),
           "partner": torch.randperm(n, generator=g), "index": torch.arange(n)}
    return {k: x.to(device) for k, x in out.items()}


def build(hidden: int, layers: int, queue: int, prompts: bool, device, seed: int = 0) -> PCM3:
    torch.manual_seed(seed)
    cfg = ModelConfig(encoder=EncoderConfig(hidden=hidden, layers=layers), queue_size=queue)
    loss = LossConfig(domain_prompts=prompts, task_prompts=prompts)
    return PCM3(cfg, loss).to(device)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def step(model: PCM3, opt, inputs: dict, amp: bool, generator_seed: int) -> float:
    device = inputs["view1"].device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        out = model({**inputs, "generator": torch.Generator().manual_seed(generator_seed)})
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    return float(out["loss"].detach())


def bench_speed(hidden: int, layers: int, batch: int, frames: int, queue: int, device: str, amp: bool,
                rounds: int, steps: int, prompts: bool, variants=("project", "frame-loop")) -> dict:
    device = torch.device(device)
    inputs = make_inputs(batch, frames, device=device)
    models, opts = {}, {}
    base = build(hidden, layers, queue, prompts, device)
    for name in variants:
        m = copy.deepcopy(base)
        if name == "frame-loop":
            release_style(m)
        models[name] = m.train()
        opts[name] = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    first = {name: step(models[name], opts[name], inputs, amp, 0) for name in variants}  # warm-up, same step
    times = {name: [] for name in variants}
    peak = {}
    for r in range(rounds):
        for name in variants:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for s in range(steps):
                _sync(device)
                t0 = time.perf_counter()
                step(models[name], opts[name], inputs, amp, 1 + r * steps + s)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated(device))
    result = {"hidden": hidden, "layers": layers, "batch": batch, "frames": frames, "queue": queue,
              "device": str(device), "amp_bf16": amp, "prompts": prompts, "rounds": rounds, "steps": steps,
              "first_step_loss": first, "variants": {}}
    for name in variants:
        sec = statistics.median(times[name])
        result["variants"][name] = {"median_s": sec, "samples_per_s": batch / sec, "all_s": times[name],
                                    "peak_mem_gib": peak.get(name, 0) / 2**30 if peak else None}
    if len(variants) == 2:
        result["speedup"] = result["variants"]["frame-loop"]["median_s"] / result["variants"]["project"]["median_s"]
    sps = result["variants"]["project"]["samples_per_s"]
    result["ntu60_451_epochs_hours"] = 451 * NTU60_XSUB_TRAIN / sps / 3600
    return result


def machine() -> str:
    s = f"{platform.platform()}, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        s += f", {torch.cuda.get_device_name(0)}"
    return s


def table(results) -> str:
    rows = ["| device | size (layers x hidden, batch, T, queue) | amp | project s/step | frame loop s/step | "
            "project samples/s | frame loop samples/s | speedup | peak GiB (project / loop) | 451-ep NTU60 est. (h) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r.get('device')} | {r.get('label')} | | error: {r['error']} |||||||")
            continue
        p, f = r["variants"]["project"], r["variants"].get("frame-loop")
        mem = f"{p['peak_mem_gib']:.1f} / {f['peak_mem_gib']:.1f}" if p["peak_mem_gib"] and f else "-"
        rows.append(f"| {r['device']} | {r['layers']} x {r['hidden']}, {r['batch']}, {r['frames']}, {r['queue']} | "
                    f"{'bf16' if r['amp_bf16'] else 'fp32'} | {p['median_s']:.3f} | "
                    f"{f['median_s'] if f else float('nan'):.3f} | {p['samples_per_s']:.1f} | "
                    f"{f['samples_per_s'] if f else float('nan'):.1f} | {r.get('speedup', float('nan')):.2f}x | {mem} | "
                    f"{r['ntu60_451_epochs_hours']:.1f} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- amp check

def bench_amp(hidden: int, layers: int, batch: int, frames: int, queue: int, device: str, steps: int) -> dict:
    """Loss curves of ``steps`` training steps in float32 and under bfloat16 autocast, same
    weights and batches (a new random batch per step), SGD lr 0.02: the check the issue asks
    for before ``train.amp`` could become a default."""
    device = torch.device(device)
    base = build(hidden, layers, queue, True, device)
    curves = {}
    for amp in (False, True):
        m = copy.deepcopy(base).train()
        opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
        curves["bf16" if amp else "fp32"] = [step(m, opt, make_inputs(batch, frames, device=device, seed=s), amp, s)
                                            for s in range(steps)]
    a, b = curves["fp32"], curves["bf16"]
    rel = [abs(x - y) / abs(x) for x, y in zip(a, b)]
    return {"mode": "amp", "hidden": hidden, "layers": layers, "batch": batch, "frames": frames, "queue": queue,
            "device": str(device), "steps": steps, "curves": curves, "max_rel_diff": max(rel),
            "mean_rel_diff_last_10": sum(rel[-10:]) / len(rel[-10:])}


# --------------------------------------------------------------------------- bn_stats

def bench_bn(epochs: int, threads: int, seed: int) -> list:
    """Pretrain on the built-in data (xsub-val) with each bn_stats; probe on held-out subjects."""
    from pcm3.config import load_config
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.data.synthetic import prepare_synthetic
    from pcm3.evaluation.features import extract_features
    from pcm3.evaluation.probe import probe
    from pcm3.export import export_encoder, load_encoder
    from pcm3.pretrain import fit

    rows = []
    with tempfile.TemporaryDirectory(prefix="pcm3-bench-bn-") as tmp:
        data = Path(tmp) / "data"
        prepare_synthetic(data, seed=0, progress=False)
        for bn in ("per_view", "joint"):
            cfg = load_config("demo", [f"data.path={data}", "data.benchmark=xsub-val", f"train.epochs={epochs}",
                                       f"optim.milestones=[{10 * epochs}]", f"train.threads={threads}",
                                       f"train.seed={seed}", f"model.encoder.bn_stats={bn}", "train.save_every=0"])
            run = Path(tmp) / f"run-{bn}"
            t0 = time.perf_counter()
            last = fit(cfg, run, progress=False)
            seconds = time.perf_counter() - t0
            export_encoder(run, Path(tmp) / f"enc-{bn}.pt")
            enc = load_encoder(Path(tmp) / f"enc-{bn}.pt")
            tr = extract_features(enc, SkeletonDataset(data, "xsub-val", "train"))
            va = extract_features(enc, SkeletonDataset(data, "xsub-val", "test"))
            res = probe(tr[0], tr[1], va[0], va[1], seed=seed)
            rows.append({"bn_stats": bn, "epochs": epochs, "seed": seed, "final_loss": last["loss"],
                         "samples_per_s": last["samples_per_s"], "pretrain_seconds": seconds,
                         "val_linear": res["linear"], "val_knn1": res["knn1"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="speed", choices=("speed", "bn"))
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--queue", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast (CUDA)")
    ap.add_argument("--prompts", action="store_true", help="with domain and task prompts (default: none)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cuda-paper", action="store_true",
                    help="CUDA: paper size (3 x 1024, batch 128, T 64, queue 16384), fp32 and bf16, "
                         "plus the CPU size on the GPU")
    ap.add_argument("--epochs", type=int, default=6, help="bn mode: pretraining epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.mode == "bn":
        results = bench_bn(args.epochs, args.threads, args.seed)
    else:
        if args.cuda_paper:
            if not torch.cuda.is_available():
                print("error: --cuda-paper needs a CUDA device", file=sys.stderr)
                return 2
            torch.backends.cudnn.benchmark = True
            plans = [dict(hidden=256, layers=3, batch=32, queue=4096, amp=False),
                     dict(hidden=1024, layers=3, batch=128, queue=16384, amp=False),
                     dict(hidden=1024, layers=3, batch=128, queue=16384, amp=True)]
            results = []
            try:  # bf16 vs fp32 loss curves first (paper width, batch 64, 60 steps)
                amp = bench_amp(1024, 3, 64, args.frames, 16384, "cuda", 60)
                print(f"amp check: max relative loss difference bf16 vs fp32 over 60 steps "
                      f"{amp['max_rel_diff']:.4f}, mean of the last 10 {amp['mean_rel_diff_last_10']:.4f}", flush=True)
            except Exception as e:
                amp = {"mode": "amp", "error": f"{type(e).__name__}: {e}"}
                print(f"amp check failed: {amp['error']}", flush=True)
            for plan in plans:
                try:
                    results.append(bench_speed(plan["hidden"], plan["layers"], plan["batch"], args.frames,
                                               plan["queue"], "cuda", plan["amp"], max(args.rounds, 3),
                                               max(args.steps, 5), args.prompts))
                except Exception as e:  # report and go on with the next size
                    results.append({"device": "cuda", "label": str(plan), "error": f"{type(e).__name__}: {e}"})
                print(table(results[-1:]), flush=True)
        else:
            results = [bench_speed(args.hidden, args.layers, args.batch, args.frames, args.queue, args.device,
                                   args.amp, args.rounds, args.steps, args.prompts)]
        print(table(results))
        if args.cuda_paper:
            results.append(amp)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
