"""Shared pieces of the dataset readers: bad-file handling and parallel parsing."""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

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
        from pcm3.progress import plural

        parts = "; ".join(f"{r} ({n} {plural('file', n)})" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        return f"skipped {len(self.items)} bad {plural('file', len(self.items))}: {parts}"


def read_text(path, what: str = "file") -> str:
    """The text of ``path``, or a one-line :class:`DataError` naming it (missing, a folder,
    not text, unreadable); ``what`` names the kind of file in the message."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise DataError(path, f"no such {what}") from None
    except IsADirectoryError:
        raise DataError(path, f"is a folder, expected a {what}") from None
    except UnicodeDecodeError:
        raise DataError(path, "not a text file") from None
    except OSError as e:
        raise DataError(path, f"unreadable {what} ({e.strerror or e.__class__.__name__})") from None


def check_finite(x: np.ndarray, path, what: str = "coordinates") -> np.ndarray:
    """Raise :class:`DataError` naming ``path`` if ``x`` holds NaN or inf."""
    if not np.isfinite(x).all():
        raise DataError(path, f"non-finite {what} (NaN or inf)")
    return x


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: Optional[int] = None,
                 desc: str = "", progress: bool = True, chunksize: int = 16) -> Iterator[Tuple[int, R]]:
    """Yield ``(i, fn(items[i]))`` as they complete, using ``workers`` processes (1: in-process).

    ``fn`` must be picklable (a module-level function). Progress goes to stderr (:mod:`pcm3.progress`).
    """
    from pcm3.progress import progress_bar

    workers = workers if workers is not None else max(1, (os.cpu_count() or 1))
    bar = progress_bar(total=len(items), desc=desc, unit="file", disable=not progress, final_line=True)
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


# --------------------------------------------------------------------------- text tables, clips

def read_table(path, width: int, what: str = "values") -> np.ndarray:
    """Read a whitespace-separated numeric text file with ``width`` values on every line.

    Returns ``(lines, width)`` float64. Trailing blank lines are ignored. Raises
    :class:`DataError` naming the file (and 1-based line) for: a missing or unreadable file,
    an empty file, a blank line inside the file, a line with another number of values, a
    non-numeric value, NaN or inf.
    """
    path = Path(path)
    text = read_text(path, "text file")
    body = text.rstrip()
    if not body.strip():
        raise DataError(path, "empty file")
    num_lines = body.count("\n") + 1
    arr = None
    try:
        arr = np.loadtxt(io.StringIO(body), dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        pass
    if arr is None or arr.shape != (num_lines, width):
        _locate_bad_line(path, body.split("\n"), width, what)
        raise DataError(path, f"malformed: expected {width} {what} per line")  # pragma: no cover
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise DataError(path, "non-finite value (NaN or inf)", int(np.argmin(finite)) + 1)
    return arr


def _locate_bad_line(path: Path, lines: Sequence[str], width: int, what: str) -> None:
    """Raise a :class:`DataError` for the first line of ``lines`` that is not ``width`` numbers."""
    for i, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            raise DataError(path, "blank line inside the file (truncated or corrupt)", i)
        for tok in tokens:
            try:
                float(tok)
            except ValueError:
                raise DataError(path, f"non-numeric value {tok[:20]!r}", i) from None
        if len(tokens) != width:
            raise DataError(path, f"{len(tokens)} {what} on the line, expected {width} (truncated?)", i)


def center_frames(x: np.ndarray, center: int) -> np.ndarray:
    """Subtract person 1's ``center`` joint in every frame from every person present there.

    ``x`` is ``(C, T, V, M)``. A person is present in a frame when any of its values is
    non-zero; absent persons stay zero. Frames without person 1 use the nearest frame that has
    it. If person 1 is absent from every frame but person 2 is not, they are swapped first.
    """
    x = np.array(x, dtype=np.float32, copy=True)
    present = np.any(x != 0, axis=(0, 2))  # (T, M)
    if not present[:, 0].any():
        if x.shape[-1] > 1 and present[:, 1].any():
            x[..., [0, 1]] = x[..., [1, 0]]
            present[:, [0, 1]] = present[:, [1, 0]]
        else:
            return x
    t = x.shape[1]
    valid = np.flatnonzero(present[:, 0])
    pos = np.clip(np.searchsorted(valid, np.arange(t)), 1, max(len(valid) - 1, 1))
    if len(valid) == 1:
        nearest = np.full(t, valid[0])
    else:
        left, right = valid[pos - 1], valid[pos]
        nearest = np.where(np.abs(np.arange(t) - left) <= np.abs(right - np.arange(t)), left, right)
    origin = x[:, nearest, center, 0]  # (C, T)
    x -= origin[:, :, None, None]
    x *= present[None, :, None, :]
    return x


def align_note(align: Optional[str]) -> str:
    """The ``meta.json`` description of an ``--align`` choice."""
    if not align or align == "none":
        return "none (the camera's orientation)"
    return (f"per sample: rotated so that at person 1's first frame with hip, spine and shoulders, hip -> spine "
            f"points along +{align} and left -> right shoulder (less its {align} component) along +x")


def fit_length(x: np.ndarray, frames: int, long: str = "resample", pad: str = "zero") -> Tuple[np.ndarray, int]:
    """Fit a clip ``(C, L, V, M)`` to ``frames`` frames; return it and its number of valid frames.

    Longer clips: ``long="resample"`` interpolates linearly in time onto ``frames`` evenly
    spaced points from the first to the last frame (where a person is absent in one of the
    two neighbouring frames, the nearer frame is copied); ``long="crop"`` keeps the centre
    ``frames`` frames. Shorter clips: ``pad="zero"`` pads with zeros after the clip,
    ``pad="repeat"`` repeats the clip until ``frames`` frames are filled.
    """
    c, length, v, m = x.shape
    if length == 0:
        raise ValueError("fit_length: empty clip")
    if length > frames:
        if long == "crop":
            s = (length - frames) // 2
            return np.ascontiguousarray(x[:, s:s + frames], dtype=np.float32), frames
        if long != "resample":
            raise ValueError(f"unknown policy for long clips {long!r}")
        return _resample(x, frames), frames
    out = np.zeros((c, frames, v, m), dtype=np.float32)
    out[:, :length] = x
    if pad == "repeat":
        reps = -(-frames // length)
        out[:] = np.concatenate([x] * reps, axis=1)[:, :frames]
    elif pad != "zero":
        raise ValueError(f"unknown padding {pad!r}")
    return out, length


def _resample(x: np.ndarray, frames: int) -> np.ndarray:
    length = x.shape[1]
    pos = np.linspace(0.0, length - 1, frames)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, length - 1)
    w = (pos - i0).astype(np.float32)[None, :, None, None]
    out = (1 - w) * x[:, i0] + w * x[:, i1]
    present = np.any(x != 0, axis=(0, 2))  # (L, M)
    both = present[i0] & present[i1]  # (frames, M)
    if not both.all():
        nearest = np.where(pos - i0 < 0.5, i0, i1)
        out = np.where(both[None, :, None, :], out, x[:, nearest])
    return np.ascontiguousarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# PKU-MMD files
# ----------------------------------------------------------------------------------------------


DEFAULT_FRAMES = 300


def add_clip_options(p, *, workers_default: Optional[int] = None, center_help: str = "keep camera coordinates (no centring)",
                     align_default: str = "none") -> None:
    """The options every clip-writing ``prepare`` target shares (length, padding, centring,
    view alignment, bad files)."""
    p.add_argument("--frames", "--max-frames", dest="frames", type=int, default=DEFAULT_FRAMES,
                   help="clip length T (default 300)")
    p.add_argument("--long", choices=("resample", "crop"), default="resample",
                   help="clips longer than T: resample to T (default) or keep the centre T frames")
    p.add_argument("--pad", choices=("zero", "repeat"), default="zero",
                   help="clips shorter than T: pad with zeros (default) or repeat the clip")
    p.add_argument("--no-center", action="store_true", help=center_help)
    p.add_argument("--align", choices=("z", "y", "none"), default=align_default,
                   help="view normalisation: rotate each sample so that at person 1's first frame hip -> spine "
                        "points along +z (the NTU recipe's convention) or +y and the shoulders lie along +x; "
                        f"none keeps the camera's orientation (default: {align_default})")
    p.add_argument("--skip-bad", action="store_true", help="leave bad files out and list them in skipped.csv")
    p.add_argument("--workers", type=int, default=workers_default,
                   help="parallel processes (default: %s)" % ("all cores" if workers_default is None else workers_default))
    add_output_options(p)


def add_output_options(p, quiet: bool = True) -> None:
    """``--overwrite`` (and ``--quiet``), the same on every ``prepare`` target."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it is a prepared folder written by pcm3 (only once the new one is "
                        "complete); a folder pcm3 did not write is never replaced")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def print_prepared_summary(out) -> None:
    """The summary table of a prepared folder, on stdout (what every ``prepare`` target prints)."""
    from pcm3.data.prepared import Prepared, format_summary

    print(format_summary(Prepared(out).summary()), flush=True)
