"""One row of the small-data learning study (docs/learning-small-data.md).

Pretrains with a config and overrides on the VALIDATION benchmark ``<benchmark>-val`` (held-out
training subjects; the test split is never read), then probes the pretrained encoder against
random init and the raw input (and optionally the supervised bound) with the demo's probe.
Appends one JSON line to ``--results``.

    python tools/study_learning.py --data msr --config msr3d_xsub_joint --name base \\
        --set model.momentum_schedule=cosine --results study.jsonl
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _validation import run_main, require_validation


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--benchmark", default="xsub-val", help="a validation benchmark, <benchmark>-val or -val<K> (default xsub-val)")
    p.add_argument("--rows", default="pretrained,random_init,raw_input")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", default="study.jsonl")
    args = p.parse_args(argv)
    require_validation(p, args.benchmark)

    import torch

    from pcm3.commands.demo import run_demo

    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="study-"))
    t0 = time.perf_counter()
    try:
        m = run_demo(out, Path(args.data), args.config,
                     [*args.overrides, f"data.benchmark={args.benchmark}", f"train.threads={args.threads}"],
                     progress=False, rows=tuple(args.rows.split(",")))
        hist = (out / "run" / "metrics.csv").read_text().splitlines()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    row = {"name": args.name, "config": args.config, "set": args.overrides, "benchmark": args.benchmark,
           "seconds": round(time.perf_counter() - t0, 1), "pretrain_seconds": round(m["pretrain_seconds"], 1)}
    for r in args.rows.split(","):
        row[r] = {"linear": round(100 * m[r]["linear"], 1), "knn1": round(100 * m[r]["knn1"], 1)}
    header, last = hist[0].split(","), hist[-1].split(",")
    row["last_epoch"] = {k: round(float(v), 4) for k, v in zip(header, last)
                         if k in ("loss", "con_intra", "mask_mse", "emb_std", "inst_top1", "pos_cos", "queue_cos")}
    with open(args.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
