"""Throughput of NTU preparation: ``read_skeleton`` alone, and ``prepare_ntu`` end to end.

The 5 real NTU files (``../shared/data/ntu_raw`` or ``$PCM3_SHARED_DATA/ntu_raw``, or
``--raw``) are copied ``--copies`` times into a temporary folder under distinct valid sample
names; then

* ``read_skeleton`` alone, in this process (files/s), next to a plain line-by-line reader of
  the kind the field's ``ntu_gendata.py`` uses (for scale);
* read + preprocess, in this process (files/s);
* ``prepare_ntu`` (read, preprocess, cache shards, write the prepared folder) with each
  ``--workers`` value, ``--repeats`` times: median sequences/s.

CPU time (this process and its workers) is reported beside wall-clock time: on a shared
machine it is the steadier figure.

The copies sit in the page cache, so this measures parsing and writing, not the disk.

    python benchmarks/bench_prepare.py [--copies 200] [--repeats 3] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from pcm3.data import ntu


def default_raw() -> Path:
    env = os.environ.get("PCM3_SHARED_DATA")
    shared = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return shared / "ntu_raw"


def make_copies(raw: Path, dest: Path, copies: int) -> list:
    """Copy every ``.skeleton`` under ``raw`` ``copies`` times under unique sample names."""
    files = sorted(raw.glob("*.skeleton"))
    if not files:
        raise SystemExit(f"no .skeleton files in {raw} (use --raw)")
    out = []
    for k in range(copies):
        for j, src in enumerate(files):
            u = k * len(files) + j
            action = ntu.parse_name(src.name).action
            name = (f"S{1 + u % 17:03d}C{1 + (u // 17) % 3:03d}P{1 + (u // 51) % 40:03d}"
                    f"R{1 + (u // 2040) % 2:03d}A{action:03d}.skeleton")
            shutil.copyfile(src, dest / name)
            out.append(dest / name)
    return out


def field_style_read(path: Path) -> list:
    """A plain reader: one line at a time, every value of every joint line converted."""
    with open(path) as f:
        frames = []
        for _ in range(int(f.readline())):
            bodies = []
            for _ in range(int(f.readline())):
                f.readline()
                bodies.append([[float(v) for v in f.readline().split()] for _ in range(int(f.readline()))])
            frames.append(bodies)
    return frames


def rate(fn, items) -> tuple:
    """Items per wall-clock second and per CPU second of this process."""
    t, c = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - t), len(items) / (time.process_time() - c)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raw", type=Path, default=default_raw(), help="folder with real .skeleton files")
    ap.add_argument("--copies", type=int, default=200, help="copies of each file (default 200)")
    ap.add_argument("--repeats", type=int, default=3, help="prepare_ntu runs per worker count (median)")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    args = ap.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; load average at start {load:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        tmp = Path(tmp)
        (tmp / "raw").mkdir()
        files = make_copies(args.raw, tmp / "raw", args.copies)
        mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"{len(files)} files, {mb:.0f} MB, {mb / len(files) * 1e3:.0f} kB each")
        subset = files[:100]
        r_read = rate(ntu.read_skeleton, files)
        r_field = rate(field_style_read, subset)
        r_prep = rate(lambda p: ntu.preprocess(ntu.read_skeleton(p)), files)
        print("\n| step (1 process) | files/s | ms/file | CPU ms/file |\n|---|---:|---:|---:|")
        for label, (r, rc) in (("read_skeleton", r_read), ("plain line-by-line reader (all 12 values)", r_field),
                               ("read_skeleton + preprocess", r_prep)):
            print(f"| {label} | {r:.0f} | {1e3 / r:.2f} | {1e3 / rc:.2f} |")

        print("\n| prepare_ntu | median s | sequences/s | CPU ms/sequence | runs (s) |\n|---|---:|---:|---:|---|")
        for workers in [int(w) for w in args.workers.split(",")]:
            times, cpu = [], []
            for _ in range(args.repeats):
                out = tmp / "out"
                t, c = time.perf_counter(), cpu_seconds()
                ntu.prepare_ntu(tmp / "raw", out, "ntu60", workers=workers, progress=False)
                times.append(time.perf_counter() - t)
                cpu.append(cpu_seconds() - c)
                shutil.rmtree(out)
            med = statistics.median(times)
            print(f"| workers={workers} | {med:.2f} | {len(files) / med:.0f} | "
                  f"{statistics.median(cpu) / len(files) * 1e3:.2f} | {', '.join(f'{t:.2f}' for t in times)} |")


if __name__ == "__main__":
    main()
