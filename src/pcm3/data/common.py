"""Shared pieces of the dataset readers: bad-file handling and parallel parsing."""

from __future__ import annotations

import csv
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from pcm3.errors import DataError

T = TypeVar("T")
R = TypeVar("R")

REPORT_NAME = "skipped.csv"


class BadFiles:
    """Collects bad input files when ``--skip-bad`` is on; raises at once when it is off.

    ``report(out)`` writes ``skipped.csv`` (``path,line,problem``) into the output folder.
    """

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.items: List[DataError] = []

    def handle(self, err: DataError) -> None:
        if not self.skip_bad:
            raise err
        self.items.append(err)

    def report(self, out: str | os.PathLike) -> Optional[Path]:
        if not self.items:
            return None
        path = Path(out) / REPORT_NAME
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "line", "problem"])
            for e in self.items:
                w.writerow([e.path, e.line if e.line is not None else "", e.message])
        return path

    def summary(self) -> str:
        if not self.items:
            return "no files skipped"
        reasons = {}
        for e in self.items:
            reasons[e.message.split(" (")[0]] = reasons.get(e.message.split(" (")[0], 0) + 1
        parts = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        return f"skipped {len(self.items)} bad files: {parts}"


def check_finite(x: np.ndarray, path, what: str = "coordinates") -> np.ndarray:
    """Raise :class:`DataError` naming ``path`` if ``x`` holds NaN or inf."""
    if not np.isfinite(x).all():
        raise DataError(path, f"non-finite {what} (NaN or inf)")
    return x


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: Optional[int] = None,
                 desc: str = "", progress: bool = True, chunksize: int = 16) -> Iterator[Tuple[int, R]]:
    """Yield ``(i, fn(items[i]))`` as they complete, using ``workers`` processes (1: in-process).

    ``fn`` must be picklable (a module-level function). A progress bar is shown on stderr.
    """
    from tqdm import tqdm

    workers = workers if workers is not None else max(1, (os.cpu_count() or 1))
    bar = tqdm(total=len(items), desc=desc, unit="file", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(items) < 2:
            for i, item in enumerate(items):
                yield i, fn(item)
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for i, r in enumerate(pool.map(fn, items, chunksize=chunksize)):
                    yield i, r
                    bar.update(1)
    finally:
        bar.close()


def require_dir(path, what: str = "raw data folder") -> Path:
    """Return ``path`` as a Path, or raise a one-line error if it is not an existing folder."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, f"no such {what}")
    if not p.is_dir():
        raise DataError(p, f"not a folder (expected the {what})")
    return p


def iter_files(root: Path, pattern: str) -> List[Path]:
    """Sorted files under ``root`` matching ``pattern`` (recursive)."""
    return sorted(p for p in root.rglob(pattern) if p.is_file())
