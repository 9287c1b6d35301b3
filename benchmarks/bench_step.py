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
``--amp``, bfloat16 autocast (``train.amp``); the project's throughput also gives an
estimate of a full NTU 60 xsub pretraining (40,091 training samples).

Usage (CPU, the issue's size: 3 x 256, batch 32, 64 frames, queue 4096, one thread):
    python benchmarks/bench_step.py
The same with four variants alternating in one process: project and frame loop, each in fp32
and under bfloat16 autocast (CPU: where torch has oneDNN bf16 kernels), with the ratios:
    python benchmarks/bench_step.py --amp-variants --rounds 4 --steps 1

``amp``: loss curves of ``--steps`` SGD steps in fp32 and under bfloat16 autocast, same weights
and batches, on ``--device`` (the check before recommending ``train.amp``), e.g. on the CPU:
    python benchmarks/bench_step.py amp --hidden 128 --layers 2 --batch 32 --queue 1024 --steps 40
On a CUDA machine, as one prepared script (bf16-vs-fp32 loss curves over 60 steps, then the
CPU size on the GPU and the paper size in fp32 and bf16):
    python benchmarks/bench_step.py --cuda-paper --json /tmp/step_cuda.json

``bn``: learning with ``model.encoder.bn_stats`` per_view vs joint: a short pretraining on
the built-in data set (validation benchmark ``xsub-val``, carved from the training subjects;
the test split is not used), then the linear and 1-NN probe of ``pcm3.evaluation.probe`` on
its held-out training subjects, and the epoch throughput:
    python benchmarks/bench_step.py bn --epochs 6

``amp-learn``: the same pretraining and probe with ``train.amp`` fp32 vs bf16 (loss curves per
epoch and the validation probe):
    python benchmarks/bench_step.py amp-learn --epochs 4

``gemm``: how close each variant's step is to its matrix-product floor: the FLOPs of its
matrix products (``mm``, ``addmm``, ``bmm``; counted by ``torch.profiler`` on one step) at the
rate of a large reference GEMM on the same thread, beside the ``speed`` timings. The frame
loop's step divided by the project's floor bounds the speed-up of any step that computes the
same products (the function fixes them), however little everything else costs:
    python benchmarks/bench_step.py gemm --rounds 3 --steps 2
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
from pcm3.pretrain import cpu_bf16_supported

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
    # prompts may not be wider than the encoder: the paper's 128, or the hidden size below it
    cfg = ModelConfig(encoder=EncoderConfig(hidden=hidden, layers=layers), queue_size=queue,
                      prompt_dim=min(ModelConfig().prompt_dim, hidden))
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


AMP_VARIANTS = ("project", "project-bf16", "frame-loop", "frame-loop-bf16")


def bench_speed(hidden: int, layers: int, batch: int, frames: int, queue: int, device: str, amp: bool,
                rounds: int, steps: int, prompts: bool, variants=("project", "frame-loop")) -> dict:
    """Seconds per step of each variant; a name ending in ``-bf16`` runs under bfloat16
    autocast whatever ``amp`` says (``--amp-variants``); ``frame-loop*`` is the release's way."""
    device = torch.device(device)
    inputs = make_inputs(batch, frames, device=device)
    models, opts = {}, {}
    use_amp = {name: amp or name.endswith("-bf16") for name in variants}
    base = build(hidden, layers, queue, prompts, device)
    for name in variants:
        m = copy.deepcopy(base)
        if name.startswith("frame-loop"):
            release_style(m)
        models[name] = m.train()
        opts[name] = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    first = {name: step(models[name], opts[name], inputs, use_amp[name], 0) for name in variants}  # warm-up
    times = {name: [] for name in variants}
    peak = {}
    for r in range(rounds):
        for name in variants:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            for s in range(steps):
                _sync(device)
                t0 = time.perf_counter()
                step(models[name], opts[name], inputs, use_amp[name], 1 + r * steps + s)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peak[name] = max(peak.get(name, 0), torch.cuda.max_memory_allocated(device))
    result = {"hidden": hidden, "layers": layers, "batch": batch, "frames": frames, "queue": queue,
              "device": str(device), "amp_bf16": amp, "prompts": prompts, "rounds": rounds, "steps": steps,
              "first_step_loss": first, "variants": {}}
    for name in variants:
        sec = statistics.median(times[name])
        result["variants"][name] = {"median_s": sec, "min_s": min(times[name]), "samples_per_s": batch / sec,
                                    "all_s": times[name], "amp_bf16": use_amp[name],
                                    "peak_mem_gib": peak.get(name, 0) / 2**30 if peak else None}
    if len(variants) == 2:
        result["speedup"] = result["variants"]["frame-loop"]["median_s"] / result["variants"]["project"]["median_s"]
    if set(variants) == set(AMP_VARIANTS):
        result["ratios"] = {f"{slow} / {fast}": ratios(times[slow], times[fast], steps)
                            for slow, fast in (("frame-loop", "project"), ("frame-loop", "project-bf16"),
                                               ("frame-loop-bf16", "project-bf16"), ("project", "project-bf16"),
                                               ("frame-loop", "frame-loop-bf16"))}
    sps = result["variants"]["project"]["samples_per_s"]
    result["ntu60_451_epochs_hours"] = 451 * NTU60_XSUB_TRAIN / sps / 3600
    return result


def ratios(slow: list, fast: list, steps: int) -> dict:
    """How many times faster ``fast`` is than ``slow``: ratio of the medians, of the minima, and
    the median of the per-round ratios (each round times both back to back, so a change of the
    machine's load between rounds cancels out)."""
    per_round = [statistics.median(slow[i:i + steps]) / statistics.median(fast[i:i + steps])
                 for i in range(0, len(slow), steps)]
    return {"median": statistics.median(slow) / statistics.median(fast), "min": min(slow) / min(fast),
            "per_round": per_round, "median_per_round": statistics.median(per_round)}


def amp_table(r: dict) -> str:
    """Markdown tables of an ``--amp-variants`` run: per variant, then the ratios."""
    rows = [f"size {r['layers']} x {r['hidden']}, batch {r['batch']}, T {r['frames']}, queue {r['queue']}, "
            f"{r['rounds']} rounds x {r['steps']} steps, device {r['device']}", "",
            "| variant | steps (s) | median s/step | min s/step |", "|---|---|---|---|"]
    for name, v in r["variants"].items():
        steps = ", ".join(f"{x:.2f}" for x in v["all_s"])
        rows.append(f"| {name} | {steps} | {v['median_s']:.2f} | {v['min_s']:.2f} |")
    rows += ["", "| comparison (times faster) | of the medians | of the minima | per round (median; all) |",
             "|---|---|---|---|"]
    for name, q in r["ratios"].items():
        rows.append(f"| {name} | {q['median']:.2f}x | {q['min']:.2f}x | {q['median_per_round']:.2f}x; "
                    f"{', '.join(f'{x:.2f}' for x in q['per_round'])} |")
    rows.append("")
    rows.append("first-step losses (same weights and batch): " +
                ", ".join(f"{k} {v:.6f}" for k, v in r["first_step_loss"].items()))
    return "\n".join(rows)


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


# --------------------------------------------------------------------------- GEMM floor

GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm")


def reference_gflops(device, n: int = 1024, repeats: int = 10) -> float:
    """GFLOP/s of an ``n x n x n`` float32 matrix product on ``device`` (this process's threads):
    about the best rate this machine's GEMM reaches."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def step_flops(model: PCM3, inputs: dict) -> dict:
    """FLOPs and calls of the matrix products (:data:`GEMM_OPS`) in one training step (forward,
    backward, SGD step), counted by ``torch.profiler`` (its timings are not used: the profiler's
    per-call cost would inflate the frame loop's many small products)."""
    from torch.profiler import ProfilerActivity, profile

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        step(model, opt, inputs, False, 0)
    events = [e for e in prof.key_averages() if e.key in GEMM_OPS]
    return {"gflop": sum(e.flops or 0 for e in events) / 1e9, "calls": sum(e.count for e in events)}


def bench_gemm(hidden: int, layers: int, batch: int, frames: int, queue: int, device: str, rounds: int, steps: int,
               prompts: bool) -> dict:
    """How far the CPU (or GPU) step is from its matrix-product floor, per variant.

    The floor of a variant is its matrix-product FLOPs per step (:func:`step_flops`) at the rate
    of a large reference GEMM on the same thread (:func:`reference_gflops`, measured before and
    after the timed steps; the higher is used). The step times are :func:`bench_speed`'s
    (alternating, no profiler). ``bound`` = frame-loop step / project floor: the most any
    rewrite of the project's step could gain over the frame loop while computing the same
    products, even if every other operation cost nothing."""
    device = torch.device(device)
    inputs = make_inputs(batch, frames, device=device)
    base = build(hidden, layers, queue, prompts, device)
    counts = {}
    for name in ("project", "frame-loop"):
        m = copy.deepcopy(base).train()
        if name == "frame-loop":
            release_style(m)
        counts[name] = step_flops(m, inputs)
    ref = reference_gflops(device)
    timed = bench_speed(hidden, layers, batch, frames, queue, str(device), False, rounds, steps, prompts)
    ref = max(ref, reference_gflops(device))
    out = {k: timed[k] for k in ("hidden", "layers", "batch", "frames", "queue", "device", "rounds", "steps")}
    out.update(reference_gflops_per_s=ref, variants={}, speedup=timed["speedup"])
    for name, c in counts.items():
        sec = timed["variants"][name]["median_s"]
        floor = c["gflop"] / ref
        out["variants"][name] = {"step_s": sec, "gemm_gflop": c["gflop"], "gemm_calls": c["calls"], "floor_s": floor,
                                 "floor_share": floor / sec, "all_s": timed["variants"][name]["all_s"]}
    out["bound"] = out["variants"]["frame-loop"]["step_s"] / out["variants"]["project"]["floor_s"]
    return out


def gemm_table(r: dict) -> str:
    rows = [f"size {r['layers']} x {r['hidden']}, batch {r['batch']}, T {r['frames']}, queue {r['queue']}, "
            f"{r['rounds']} rounds x {r['steps']} steps, device {r['device']}; reference GEMM "
            f"{r['reference_gflops_per_s']:.0f} GFLOP/s", "",
            "| variant | median s/step | matrix products per step | GFLOP per step | floor at the reference rate (s) | "
            "floor / step |", "|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        rows.append(f"| {name} | {v['step_s']:.2f} | {v['gemm_calls']} | {v['gemm_gflop']:.1f} | {v['floor_s']:.2f} | "
                    f"{100 * v['floor_share']:.0f}% |")
    rows += ["", f"speed-up (frame loop / project, medians): {r['speedup']:.2f}x; the most a step computing the same "
                 f"products could reach (frame-loop step / project floor): {r['bound']:.2f}x"]
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
    return pretrain_and_probe({bn: [f"model.encoder.bn_stats={bn}"] for bn in ("per_view", "joint")}, "bn_stats",
                              epochs, threads, seed)


def pretrain_and_probe(settings: dict, key: str, epochs: int, threads: int, seed: int) -> list:
    """The ``demo`` config pretrained on the built-in data (``xsub-val``) once per entry of
    ``settings`` (label -> overrides), then the linear and 1-NN probe on the held-out training
    subjects; rows with the final loss, the loss per epoch, throughput and the probe."""
    from pcm3.config import load_config
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.data.synthetic import prepare_synthetic
    from pcm3.evaluation.features import extract_features
    from pcm3.evaluation.probe import probe
    from pcm3.export import export_encoder, load_encoder
    from pcm3.pretrain import fit, load_checkpoint

    rows = []
    with tempfile.TemporaryDirectory(prefix="pcm3-bench-bn-") as tmp:
        data = Path(tmp) / "data"
        prepare_synthetic(data, seed=0, progress=False)
        for bn, overrides in settings.items():
            cfg = load_config("demo", [f"data.path={data}", "data.benchmark=xsub-val", f"train.epochs={epochs}",
                                       f"optim.milestones=[{10 * epochs}]", f"train.threads={threads}",
                                       f"train.seed={seed}", "train.save_every=0", *overrides])
            run = Path(tmp) / f"run-{bn}"
            t0 = time.perf_counter()
            last = fit(cfg, run, progress=False)
            seconds = time.perf_counter() - t0
            export_encoder(run, Path(tmp) / f"enc-{bn}.pt")
            enc = load_encoder(Path(tmp) / f"enc-{bn}.pt")
            tr = extract_features(enc, SkeletonDataset(data, "xsub-val", "train"))
            va = extract_features(enc, SkeletonDataset(data, "xsub-val", "test"))
            res = probe(tr[0], tr[1], va[0], va[1], seed=seed)
            history = load_checkpoint(run / "checkpoint_last.pt")["history"]
            rows.append({key: bn, "epochs": epochs, "seed": seed, "final_loss": last["loss"],
                         "loss_per_epoch": [h["loss"] for h in history],
                         "terms_per_epoch": [{k: v for k, v in h.items() if k.startswith(("con_", "kl_", "mask"))}
                                             for h in history],
                         "samples_per_s": last["samples_per_s"], "pretrain_seconds": seconds,
                         "val_linear": res["linear"], "val_knn1": res["knn1"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="speed", choices=("speed", "amp", "bn", "amp-learn", "gemm"))
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--queue", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast (train.amp) for both variants")
    ap.add_argument("--amp-variants", action="store_true",
                    help="four variants alternating: project and frame loop, each fp32 and bf16, with ratios")
    ap.add_argument("--prompts", action="store_true", help="with domain and task prompts (default: none)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cuda-paper", action="store_true",
                    help="CUDA: paper size (3 x 1024, batch 128, T 64, queue 16384), fp32 and bf16, "
                         "plus the CPU size on the GPU")
    ap.add_argument("--epochs", type=int, default=6, help="bn, amp-learn: pretraining epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if args.cuda_paper and args.mode != "speed":
        ap.error("--cuda-paper: only in the speed mode")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA device here")
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; threads {torch.get_num_threads()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    wants_bf16 = args.amp or args.amp_variants or args.mode in ("amp", "amp-learn")
    if wants_bf16 and args.mode != "bn" and torch.device(args.device).type == "cpu" and not cpu_bf16_supported():
        print("error: bfloat16 on this CPU: torch has no oneDNN bf16 kernels for it "
              "(torch.ops.mkldnn._is_mkldnn_bf16_supported() is false)", file=sys.stderr)
        return 2
    if args.mode == "bn":
        results = bench_bn(args.epochs, args.threads, args.seed)
    elif args.mode == "gemm":
        results = [bench_gemm(args.hidden, args.layers, args.batch, args.frames, args.queue, args.device,
                              args.rounds, args.steps, args.prompts)]
        print(gemm_table(results[0]))
    elif args.mode == "amp-learn":
        results = pretrain_and_probe({"fp32": ["train.amp=fp32"], "bf16": ["train.amp=bf16"]}, "amp",
                                     args.epochs, args.threads, args.seed)
        a, b = results[0]["loss_per_epoch"], results[1]["loss_per_epoch"]
        rel = [abs(x - y) / abs(x) for x, y in zip(a, b)]
        terms = [(k, abs(tb[k] - ta[k]) / abs(ta[k])) for ta, tb in zip(results[0]["terms_per_epoch"],
                                                                      results[1]["terms_per_epoch"]) for k in ta]
        worst = max(terms, key=lambda kv: kv[1])
        print(f"amp-learn: max relative difference of the per-epoch loss bf16 vs fp32 {max(rel):.4f} "
              f"(per epoch: {', '.join(f'{x:.4f}' for x in rel)}); of any loss term {worst[1]:.4f} ({worst[0]}); "
              f"val linear {results[0]['val_linear']:.3f} vs {results[1]['val_linear']:.3f}, "
              f"1-NN {results[0]['val_knn1']:.3f} vs {results[1]['val_knn1']:.3f}")
    elif args.mode == "amp":
        results = [bench_amp(args.hidden, args.layers, args.batch, args.frames, args.queue, args.device, args.steps)]
        r = results[0]
        print(f"amp check ({args.steps} steps): max relative loss difference bf16 vs fp32 {r['max_rel_diff']:.4f}, "
              f"mean of the last 10 {r['mean_rel_diff_last_10']:.4f}")
        print("fp32: " + ", ".join(f"{x:.3f}" for x in r["curves"]["fp32"]))
        print("bf16: " + ", ".join(f"{x:.3f}" for x in r["curves"]["bf16"]))
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
        elif args.amp_variants:
            results = [bench_speed(args.hidden, args.layers, args.batch, args.frames, args.queue, args.device,
                                   False, args.rounds, args.steps, args.prompts, variants=AMP_VARIANTS)]
        else:
            results = [bench_speed(args.hidden, args.layers, args.batch, args.frames, args.queue, args.device,
                                   args.amp, args.rounds, args.steps, args.prompts)]
        print(amp_table(results[0]) if args.amp_variants else table(results))
        if args.cuda_paper:
            results.append(amp)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
