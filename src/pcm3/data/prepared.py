"""The prepared on-disk format: one folder per data set, memory-mappable, read lazily.

Layout of a prepared folder (``kind`` in ``meta.json`` says which of the two):

``kind = "clips"`` (trimmed samples, padded to a common length):
    ``data.npy``     ``(N, C, T, V, M)`` float32, padded (how is up to the preparer: the NTU
                     recipe repeats the valid clip, others pad with zeros).
``kind = "sequences"`` (untrimmed videos of any length, e.g. PKU-MMD Part I):
    ``data.npy``     ``(F, C, V, M)`` float32, all videos' frames concatenated;
    ``offsets.npy``  ``(N + 1,)`` int64, video ``i`` is frames ``offsets[i]:offsets[i+1]``
                     (starts at 0, never decreases, ends at F);
    ``intervals.csv`` ``index,label,start,end,confidence``: 0-based labelled actions,
                     frames ``start`` (inclusive) to ``end`` (exclusive) of video ``index``
                     (``0 <= start < end <=`` the video's length), ``label`` a class of meta.json.
                     Required: videos without labelled actions have a header and no rows
                     (a folder without the file fails ``pcm3 info`` and detection).
                     ``meta.json``'s ``num_intervals`` is its row count, so that a file cut at a
                     line end is refused too (optional: older folders lack it).
Both kinds:
    ``meta.json``    format, version, dataset, source, layout, kind, shape, class names;
    ``labels.npy``   ``(N,)`` int64, 0-based class, -1 where a sample has none;
    ``lengths.npy``  ``(N,)`` int64, true number of frames of each sample;
    ``samples.csv``  ``index,name,label,length`` then per-dataset columns (subject, camera...),
                     UTF-8, one row per sample in index order;
    ``splits.json``  ``{benchmark: {"train": [indices], "test": [indices]}}``.

``labels.npy``, ``lengths.npy`` and ``offsets.npy`` must hold an integer dtype: a float array
is refused when the folder is opened (a ``0.5`` label would be truncated, and even a float
array of whole numbers means the file was not written by pcm3: save it ``.astype(np.int64)``).

Coordinates are in the sensor's units (metres for Kinect). ``pcm3 info DIR`` prints and
validates a folder. :class:`PreparedWriter` writes one atomically: a temporary folder that
is renamed to the final name only when everything is in place.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from pcm3.errors import DataError
from pcm3.outputs import ensure_free_space, output_dir, reserve
from pcm3.skeleton import LAYOUTS

FORMAT = "pcm3-prepared"
VERSION = 1
KINDS = ("clips", "sequences")


VAL_SUFFIX = "-val"
_NTU_PERFORMER = re.compile(r"S\d{3}C\d{3}(P\d{3})R\d{3}A\d{3}")
_PKU_VIEW = re.compile(r"-[LMR]$")


def parse_validation_benchmark(name: Optional[str]) -> Optional[Tuple[str, int]]:
    """``"xsub-val"`` -> ``("xsub", 0)``, ``"xsub-val2"`` -> ``("xsub", 2)``; None for any other name.

    ``<benchmark>-val<K>`` holds out another draw of the training subjects (seed ``K``) than
    ``<benchmark>-val`` (seed 0), so a setting can be checked on several validation splits.
    """
    if not name or VAL_SUFFIX not in name:
        return None
    base, _, draw = name.rpartition(VAL_SUFFIX)
    if not base or (draw and not (draw.isdigit() and draw == str(int(draw)))):
        return None
    return base, int(draw or 0)


class PreparedWriter:
    """Write a prepared folder atomically.

    Usage::

        with PreparedWriter(out, kind="clips", shape=(N, 3, 300, 25, 2), ...) as w:
            for i, sample in enumerate(...):
                w.set(i, x, label=..., length=..., name=..., subject=...)
            w.set_splits({"xsub": {"train": [...], "test": [...]}})

    For ``kind="sequences"`` call :meth:`append` with ``(C, T_i, V, M)`` arrays instead
    (``shape`` is then ``(N, C, V, M)``). If the block raises, nothing is left under ``out``.
    """

    def __init__(self, out: str | os.PathLike, *, kind: str, shape: Sequence[int], dataset: str,
                 layout: str, class_names: Sequence[str], source: str = "", extra_meta: Optional[dict] = None,
                 overwrite: bool = False, protect: Sequence[str | os.PathLike] = ()):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.out = Path(out)
        self.overwrite = overwrite
        self.protect = [p for p in protect if p is not None]
        self.kind = kind
        self.shape = tuple(int(s) for s in shape)
        dims = 5 if kind == "clips" else 4
        if len(self.shape) != dims or min(self.shape[1:], default=1) < 1 or self.shape[0] < 0:
            want = "(N, C, T, V, M)" if kind == "clips" else "(N, C, V, M)"
            raise ValueError(f"shape must be {want} for kind {kind!r} with positive sizes, got {self.shape}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} is not registered ({', '.join(sorted(LAYOUTS))}; "
                             "pcm3.skeleton.register_layout first)")
        if LAYOUTS[layout].num_joints != self.shape[-2]:
            raise ValueError(f"layout {layout} has {LAYOUTS[layout].num_joints} joints, shape {self.shape} has "
                             f"{self.shape[-2]}")
        self.meta = {"format": FORMAT, "version": VERSION, "dataset": dataset, "source": source,
                     "layout": layout, "kind": kind, "class_names": list(class_names), **(extra_meta or {})}
        n = self.shape[0]
        self.labels = np.full(n, -1, dtype=np.int64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self.rows: List[Optional[dict]] = [None] * n
        self.splits: Dict[str, Dict[str, List[int]]] = {}
        self.intervals: List[tuple] = []
        self._ctx = None

    def __enter__(self) -> "PreparedWriter":
        self._ctx = output_dir(self.out, "prepared", overwrite=self.overwrite, protect=self.protect)
        self.tmp = self._ctx.__enter__()
        try:
            if self.kind == "clips":
                self.data = _open_array(self.tmp / "data.npy", self.shape, self.out)
            else:
                self._raw = open(self.tmp / "frames.raw", "wb")
                self._offsets = [0]
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def set(self, i: int, x: np.ndarray, *, label: int, length: int, name: str, **columns) -> None:
        """Store clip ``i``: ``x`` ``(C, T, V, M)`` float32, its class and true length."""
        if self.kind != "clips":
            raise TypeError("set() is for clips; use append() for sequences")
        if not 0 <= int(i) < self.shape[0]:
            raise IndexError(f"sample {i} ({name}): index outside 0..{self.shape[0] - 1}")
        if tuple(np.shape(x)) != self.shape[1:]:  # numpy would broadcast e.g. one person into both slots
            raise ValueError(f"sample {i} ({name}): shape {tuple(np.shape(x))}, the folder's clips are "
                             f"{self.shape[1:]} (C, T, V, M)")
        if not 0 <= int(length) <= self.shape[2]:
            raise ValueError(f"sample {i} ({name}): length {length} outside 0..{self.shape[2]} frames")
        self.data[i] = x
        self._record(i, label, length, name, columns)

    def append(self, x: np.ndarray, *, label: int = -1, name: str, intervals: Iterable[tuple] = (), **columns) -> int:
        """Append a whole sequence ``x`` ``(C, T, V, M)``; returns its index.

        ``intervals`` are ``(label, start, end, confidence)`` with 0-based ``start``
        (inclusive) and ``end`` (exclusive) frames.
        """
        if self.kind != "sequences":
            raise TypeError("append() is for sequences; use set() for clips")
        i = len(self._offsets) - 1
        if np.ndim(x) != 4 or (np.shape(x)[0],) + tuple(np.shape(x)[2:]) != self.shape[1:]:
            c, v, m = self.shape[1:]
            raise ValueError(f"sequence {i} ({name}): shape {tuple(np.shape(x))}, the folder's sequences are "
                             f"({c}, T, {v}, {m}) (C, T, V, M)")
        frames = np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float32), (1, 0, 2, 3)))
        self._raw.write(frames.tobytes())
        self._offsets.append(self._offsets[-1] + frames.shape[0])
        self._record(i, label, frames.shape[0], name, columns)
        for lab, start, end, conf in intervals:
            self.intervals.append((i, int(lab), int(start), int(end), float(conf)))
        return i

    def _record(self, i, label, length, name, columns):
        self.labels[i] = label
        self.lengths[i] = length
        self.rows[i] = {"index": i, "name": name, "label": int(label), "length": int(length), **columns}

    def set_splits(self, splits: Dict[str, Dict[str, Sequence[int]]]) -> None:
        """Benchmarks and their ``train``/``test`` index lists (more parts are allowed)."""
        self.splits = {b: {p: [int(i) for i in idx] for p, idx in parts.items()} for b, parts in splits.items()}

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self._finish()
            except BaseException as e:  # remove the temporary folder, then re-raise
                self._close()
                if self._ctx.__exit__(type(e), e, e.__traceback__):
                    return False  # pragma: no cover
                raise
        self._close()
        return self._ctx.__exit__(exc_type, exc, tb)

    def _close(self):
        if self.kind == "sequences" and not self._raw.closed:
            try:
                self._raw.close()
            except OSError:  # a failed flush (disk full): the folder is removed anyway
                pass
        self.data = None

    def _finish(self):
        tmp = self.tmp
        missing = [i for i, r in enumerate(self.rows) if r is None]
        n = len(self.rows)
        if self.kind == "clips":
            if missing:
                raise RuntimeError(f"prepared writer: {len(missing)} of {n} samples were never set")
            self.data.flush()
            shape = list(self.shape)
        else:
            n = len(self._offsets) - 1
            self.rows, self.labels, self.lengths = self.rows[:n], self.labels[:n], self.lengths[:n]
            self._raw.close()
            c, v, m = self.shape[1:]
            total = self._offsets[-1]
            data = _open_array(tmp / "data.npy", (total, c, v, m), self.out)
            raw = np.memmap(tmp / "frames.raw", dtype=np.float32, mode="r", shape=(total, c, v, m)) if total else None
            for s in range(0, total, 65536):
                data[s:s + 65536] = raw[s:s + 65536]
            data.flush()
            del data, raw
            (tmp / "frames.raw").unlink()
            np.save(tmp / "offsets.npy", np.asarray(self._offsets, dtype=np.int64))
            with open(tmp / "intervals.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["index", "label", "start", "end", "confidence"])
                w.writerows(self.intervals)
            shape = [n, c, v, m]
        np.save(tmp / "labels.npy", self.labels)
        np.save(tmp / "lengths.npy", self.lengths)
        # the format's columns always, so that a folder of no samples still has its header
        columns = list(dict.fromkeys(["index", "name", "label", "length", *(k for r in self.rows for k in r)]))
        with open(tmp / "samples.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(self.rows)
        (tmp / "splits.json").write_text(json.dumps(self.splits))
        meta = {**self.meta, "shape": shape, "num_samples": n, "benchmarks": sorted(self.splits)}
        if self.kind == "sequences":
            meta["num_intervals"] = len(self.intervals)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _open_array(path: Path, shape: Sequence[int], out: Path) -> np.ndarray:
    """A new ``.npy`` float32 memory map of ``shape`` at ``path``, its space checked and reserved.

    The free space is checked first and the file's blocks allocated at once: writing into a
    memory map on a full disk would otherwise end the process with SIGBUS.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    ensure_free_space(path.parent, nbytes, f"data.npy {tuple(int(s) for s in shape)}", report=out)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(shape))
    reserve(path, path.stat().st_size)
    return arr


def _read_json(path: Path):
    """The JSON value in ``path``, or a :class:`DataError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})") from None


def _read_csv_text(path: Path) -> str:
    """The text of a CSV file of the folder, or a :class:`DataError` naming it (not UTF-8, unreadable)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(path, f"unreadable ({e.strerror or e.__class__.__name__})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(path, f"line {line}: not UTF-8 text (byte {e.start}); a binary or damaged file") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_meta(path: Path, meta) -> dict:
    """``meta.json``'s object, its keys checked: format, version, kind, layout, shape, sample count."""
    if not isinstance(meta, dict):
        raise DataError(path, f"expected a JSON object {{\"format\": ..., \"kind\": ...}}, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise DataError(path, f"not a {FORMAT} folder")
    version = meta.get("version", 0)
    if not _is_int(version):
        raise DataError(path, f"'version' is {version!r}, expected an integer")
    if version > VERSION:
        raise DataError(path, f"format version {version} is newer than this pcm3 reads ({VERSION})")
    for key in ("kind", "layout", "num_samples", "shape"):
        if key not in meta:
            raise DataError(path, f"no {key!r}")
    if meta["kind"] not in KINDS:
        raise DataError(path, f"'kind' is {meta['kind']!r}, expected one of {', '.join(KINDS)}")
    if not isinstance(meta["layout"], str):
        raise DataError(path, f"'layout' is {meta['layout']!r}, expected a layout name")
    n, shape = meta["num_samples"], meta["shape"]
    if not _is_int(n) or n < 0:
        raise DataError(path, f"'num_samples' is {n!r}, expected a count")
    if not (isinstance(shape, list) and shape and all(_is_int(d) and d >= 0 for d in shape)):
        raise DataError(path, f"'shape' is {shape!r}, expected a list of sizes")
    if "num_intervals" in meta and not (_is_int(meta["num_intervals"]) and meta["num_intervals"] >= 0):
        raise DataError(path, f"'num_intervals' is {meta['num_intervals']!r}, expected a count")
    names = meta.get("class_names", [])
    if not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
        raise DataError(path, "'class_names' is not a list of names")
    return meta


def _parse_splits(path: Path, obj) -> Dict[str, Dict[str, np.ndarray]]:
    """``splits.json``'s ``{benchmark: {part: [indices]}}`` as int64 arrays; the indices must be
    whole numbers (a ``0.5`` is refused, not truncated). Their range is checked with the shapes."""
    if not isinstance(obj, dict):
        raise DataError(path, "malformed: expected {benchmark: {part: [indices]}}")
    splits = {}
    for b, parts in obj.items():
        if not isinstance(parts, dict):
            raise DataError(path, f"malformed: benchmark {b!r} is not a mapping {{part: [indices]}}")
        splits[b] = {}
        for p, idx in parts.items():
            if not isinstance(idx, list):
                raise DataError(path, f"malformed: {b}/{p} is not a list of indices")
            bad = [i for i in idx if type(i) is not int]  # noqa: E721 (a bool or 0.5 is not an index)
            if bad:
                raise DataError(path, f"{b}/{p}: index {bad[0]!r} is not a whole number")
            try:
                splits[b][p] = np.asarray(idx, dtype=np.int64)
            except OverflowError:
                raise DataError(path, f"{b}/{p} has an index too large for a sample number") from None
    return splits


class Prepared:
    """Read a prepared folder lazily; ``data`` is memory-mapped on first use in each process.

    Attributes:
        root, meta, kind, layout (name), class_names, num_classes, labels ``(N,)``,
        lengths ``(N,)``, names, splits ``{benchmark: {part: indices}}``.
    """

    REQUIRED = ("meta.json", "data.npy", "labels.npy", "lengths.npy", "samples.csv", "splits.json")
    #: the columns of ``intervals.csv`` (more are allowed)
    INTERVAL_COLUMNS = ("index", "label", "start", "end", "confidence")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.exists():
            raise DataError(self.root, "no such folder")
        if not self.root.is_dir():
            raise DataError(self.root, "not a folder (expected a prepared data folder)")
        for name in self.REQUIRED:
            if not (self.root / name).exists():
                raise DataError(self.root / name, "missing: not a complete prepared folder (run `pcm3 prepare`)")
        self.meta = _check_meta(self.root / "meta.json", _read_json(self.root / "meta.json"))
        self.kind = self.meta["kind"]
        self.layout = self.meta["layout"]
        self._check_layout()
        self.class_names = list(self.meta.get("class_names", []))
        self.labels = self._load_ints("labels.npy")
        self.lengths = self._load_ints("lengths.npy")
        self.splits = _parse_splits(self.root / "splits.json", _read_json(self.root / "splits.json"))
        if self.kind == "sequences" and not (self.root / "offsets.npy").exists():
            raise DataError(self.root / "offsets.npy", "missing: not a complete prepared folder of untrimmed videos "
                                                       "(run `pcm3 prepare`)")
        self.offsets = self._load_ints("offsets.npy") if self.kind == "sequences" else None
        self._data = None
        self._rows = None
        self._intervals = None
        self._check_shapes()

    def _check_layout(self) -> None:
        """``meta.json``'s layout must be registered (:func:`pcm3.skeleton.register_layout`, before
        the folder is opened, for sensors pcm3 does not ship) and have the data's joint count."""
        path = self.root / "meta.json"
        layout = LAYOUTS.get(self.layout)
        if layout is None:
            raise DataError(path, f"'layout' is {self.layout!r}, not a layout pcm3 knows ({', '.join(sorted(LAYOUTS))}; "
                                  "others: pcm3.skeleton.register_layout before opening the folder)")
        joints = self.meta["shape"][-2] if len(self.meta["shape"]) >= 2 else None
        if joints != layout.num_joints:
            raise DataError(path, f"'layout' {self.layout} has {layout.num_joints} joints, 'shape' "
                                  f"{tuple(self.meta['shape'])} has {joints}")

    def _load(self, name):
        try:
            return np.load(self.root / name)
        except Exception as e:  # noqa: BLE001 - numpy's many errors of a damaged file (tokenize errors of a header too)
            text = " ".join(str(e).split()) or type(e).__name__
            raise DataError(self.root / name, f"unreadable array ({text[:160]})") from None

    def _load_ints(self, name) -> np.ndarray:
        """An integer array (labels, lengths, offsets) as int64; any other dtype (strings, floats,
        even of whole numbers, bools) is refused naming the file. Shapes: :meth:`_check_shapes`."""
        arr = self._load(name)
        if arr.dtype.kind not in "iu":
            raise DataError(self.root / name, f"dtype {arr.dtype}, expected integers (int64); a hand-edited file? "
                                              "save it with .astype(np.int64)")
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise DataError(self.root / name, f"value {int(arr.max())} too large")
        return arr.astype(np.int64, copy=False)

    def _check_shapes(self):
        n = self.meta.get("num_samples")
        for name, arr in (("labels.npy", self.labels), ("lengths.npy", self.lengths)):
            if arr.shape != (n,):
                raise DataError(self.root / name, f"shape {arr.shape}, expected ({n},)")
        shape = tuple(self.data.shape)
        if self.data.dtype.kind not in "fiu":
            raise DataError(self.root / "data.npy", f"dtype {self.data.dtype}, expected float32 coordinates")
        if self.kind == "clips" and shape != tuple(self.meta["shape"]):
            raise DataError(self.root / "data.npy", f"shape {shape} disagrees with meta.json {tuple(self.meta['shape'])}")
        if self.kind == "sequences":
            self._check_offsets(n, shape)
        for b, parts in self.splits.items():
            for p, idx in parts.items():
                if idx.size and (idx.min() < 0 or idx.max() >= n):
                    raise DataError(self.root / "splits.json", f"{b}/{p} has indices outside 0..{n - 1}")

    def _check_offsets(self, n: int, shape: tuple) -> None:
        """``offsets.npy`` of a sequences folder: ``N + 1`` boundaries from 0, never decreasing,
        the last one the frames of ``data.npy`` (cheap: ``N`` numbers, no frame is read)."""
        path, off = self.root / "offsets.npy", self.offsets
        if len(shape) != 4:
            raise DataError(self.root / "data.npy", f"shape {shape}, expected (frames, C, V, M) for untrimmed videos")
        if off.shape != (n + 1,):
            raise DataError(path, f"shape {off.shape} for {n} videos, expected ({n + 1},) (a start per video and "
                                  "the end)")
        if off[0] != 0:
            raise DataError(path, f"the first offset is {int(off[0])}, expected 0")
        back = np.flatnonzero(np.diff(off) < 0)
        if back.size:
            i = int(back[0])
            raise DataError(path, f"offsets must not decrease: offsets[{i}] = {int(off[i])}, offsets[{i + 1}] = "
                                  f"{int(off[i + 1])} (video {i}); {back.size} such videos")
        if off[-1] != shape[0]:
            raise DataError(path, f"the last offset is {int(off[-1])}, data.npy holds {shape[0]} frames")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_data"] = None  # re-opened lazily in each DataLoader worker
        state["_rows"] = None  # samples.csv is read again where needed (a name in a message), not copied
        return state

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            try:
                self._data = np.load(self.root / "data.npy", mmap_mode="r")
            except (ValueError, OSError) as e:
                raise DataError(self.root / "data.npy", f"unreadable array ({e})") from None
        return self._data

    def __len__(self) -> int:
        return int(self.meta["num_samples"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self):
        return tuple(self.meta["shape"])

    @property
    def input_size(self) -> Tuple[int, int, int]:
        """``(C, V, M)``: coordinates, joints and persons of a clip or video (from :attr:`shape`,
        ``(N, C, T, V, M)`` for clips, ``(N, C, V, M)`` for sequences), what an encoder reads."""
        shape = self.shape
        return int(shape[1]), int(shape[-2]), int(shape[-1])

    @property
    def rows(self) -> List[dict]:
        """``samples.csv`` as a list of dicts (strings), loaded on first use.

        Raises a one-line :class:`DataError` naming ``samples.csv`` when it is not UTF-8 CSV,
        has no ``name`` column, does not hold one row per sample (a truncated file), a row
        with more or fewer fields than the header, or an ``index`` other than the row's."""
        if self._rows is None:
            self._rows = self._read_rows()
        return self._rows

    def _read_rows(self) -> List[dict]:
        path = self.root / "samples.csv"
        reader = csv.reader(io.StringIO(_read_csv_text(path), newline=""))
        lines: List[int] = []  # the line of each row, for a message (a quoted field may span lines)
        try:
            header = next(reader, [])
            records = []
            for r in reader:
                if r:
                    records.append(r)
                    lines.append(reader.line_num)
        except csv.Error as e:
            raise DataError(path, f"line {reader.line_num}: not valid CSV ({e})") from None
        n = len(self)
        if len(records) != n:
            raise DataError(path, f"{len(records)} rows, expected one per sample ({n})")
        if "name" not in header:
            raise DataError(path, "no 'name' column (header index,name,label,length,...)")
        width = len(header)
        k = next((k for k, r in enumerate(records) if len(r) != width), None)
        if k is not None:
            raise DataError(path, f"line {lines[k]}: {len(records[k])} fields, the header has {width}")
        if "index" in header:
            col = header.index("index")
            k = next((k for k, r in enumerate(records) if r[col] != str(k) and r[col].strip() != str(k)), None)
            if k is not None:
                raise DataError(path, f"line {lines[k]}: index {records[k][col]!r}, expected {k} (one row per "
                                      "sample, in index order)")
        return [dict(zip(header, r)) for r in records]

    @property
    def names(self) -> List[str]:
        return [r["name"] for r in self.rows]

    def fingerprint(self) -> str:
        """SHA-256 (hex) of ``meta.json`` and ``samples.csv``: the same for two folders holding the
        same clips (same data set, source, seed, names, labels, lengths), whatever their paths;
        different for another preparation under the same data-set name (another seed, a sample
        of the files). ``splits.json`` is left out: it says how the clips are used, not which."""
        import hashlib

        digest = hashlib.sha256()
        for name in ("meta.json", "samples.csv"):
            path = self.root / name
            digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
        return digest.hexdigest()

    def sample_name(self, j: int) -> str:
        """The name of sample ``j`` (``samples.csv``) for a message; ``?`` when it cannot be read."""
        try:
            return self.rows[j]["name"]
        except (OSError, IndexError, KeyError, DataError):
            return "?"

    @property
    def benchmarks(self) -> List[str]:
        return sorted(self.splits)

    def split(self, benchmark: Optional[str], part: str) -> np.ndarray:
        """Indices of ``part`` (``train``/``test``) of ``benchmark`` (None: all samples).

        ``<benchmark>-val`` (e.g. ``xsub-val``) is a validation benchmark carved from the
        training part of ``<benchmark>`` (:meth:`validation_split`): its ``train`` is the
        training part less the held-out subjects, its ``test`` the held-out subjects. The
        test part of ``<benchmark>`` is never touched: choose settings on ``-val``.
        ``<benchmark>-val<K>`` (``xsub-val1``, ``xsub-val2``, ...) holds out another draw of
        subjects (seed ``K``; ``-val`` is ``-val0``): with few subjects one validation split is
        a noisy guide (docs/learning-small-data.md, round 3), so check a choice on several.
        """
        if benchmark in (None, "all"):
            return np.arange(len(self), dtype=np.int64)
        val_of = parse_validation_benchmark(benchmark)
        if val_of is not None and benchmark not in self.splits:
            base, draw = val_of
            if base not in self.splits:
                raise DataError(self.root, f"no benchmark {base!r} to carve {benchmark!r} from; this folder has: "
                                           f"{', '.join(self.benchmarks) or 'none'}")
            train, val = self.validation_split(base, seed=draw)
            if part not in ("train", "test"):
                raise DataError(self.root, f"benchmark {benchmark!r} has no part {part!r} (has train, test)")
            return train if part == "train" else val
        if benchmark not in self.splits:
            raise DataError(self.root, f"no benchmark {benchmark!r}; this folder has: {', '.join(self.benchmarks) or 'none'}")
        if part not in self.splits[benchmark]:
            raise DataError(self.root, f"benchmark {benchmark!r} has no part {part!r} (has {', '.join(self.splits[benchmark])})")
        return self.splits[benchmark][part]

    def validation_split(self, benchmark: str, fraction: float = 0.3, seed: int = 0):
        """Carve a validation set from the training part of ``benchmark``, by subject.

        About ``fraction`` of the training subjects (at least one, at most all but one; see
        :meth:`groups`), drawn with ``seed``, are held out. Without any grouping, ``fraction`` of
        the training samples are held out at random.

        Returns:
            ``(train, val)`` index arrays, disjoint, both within the training part.
        """
        train = self.split(benchmark, "train")
        rng = np.random.default_rng(seed)
        subjects = self.groups(train)
        if subjects is not None:
            unique = sorted(set(subjects.tolist()), key=lambda s: (len(s), s))
            if len(unique) >= 2:
                k = min(max(1, int(round(fraction * len(unique)))), len(unique) - 1)
                held = set(rng.choice(unique, size=k, replace=False).tolist())
                is_val = np.array([s in held for s in subjects])
                return train[~is_val], train[is_val]
        perm = rng.permutation(train.size)
        k = min(max(1, int(round(fraction * train.size))), max(train.size - 1, 0))
        is_val = np.zeros(train.size, dtype=bool)
        is_val[perm[:k]] = True
        return train[~is_val], train[is_val]

    def groups(self, indices, by: str = "subject") -> Optional[np.ndarray]:
        """The group of each of ``indices`` for carving a validation part: column ``by`` of
        ``samples.csv`` when every row has it; for ``by="subject"`` without that column, the
        performer of an NTU-style name (``...P008...``: converted NTU data) or else the
        performance of a PKU-MMD clip (its ``video`` without the camera: ``0002-L`` and ``0002-R``
        are one recording seen twice), so that no recording is on both sides; None when there
        is no such grouping."""
        rows, idx = self.rows, np.asarray(indices, dtype=np.int64)
        if not rows or not idx.size:
            return None
        if all(rows[i].get(by) not in (None, "") for i in idx):
            return np.array([rows[i][by] for i in idx])
        if by != "subject":
            return None
        found = [_NTU_PERFORMER.search(rows[i].get("name") or "") for i in idx]
        if all(found):
            return np.array([m.group(1) for m in found])
        if all(rows[i].get("video") not in (None, "") for i in idx):
            return np.array([_PKU_VIEW.sub("", rows[i]["video"]) for i in idx])
        return None

    def sample(self, i: int) -> np.ndarray:
        """Sample ``i`` as ``(C, T, V, M)`` float32 (padded for clips, whole for sequences)."""
        if self.kind == "clips":
            return np.asarray(self.data[i], dtype=np.float32)
        s, e = self.offsets[i], self.offsets[i + 1]
        return np.ascontiguousarray(np.transpose(self.data[s:e], (1, 0, 2, 3)))

    def intervals(self) -> List[dict]:
        """Labelled action intervals of a ``sequences`` folder (0-based, end exclusive), read on
        first use; ``[]`` for a clips folder.

        Raises a one-line :class:`DataError` naming ``intervals.csv`` (and the line) when it is
        missing, not UTF-8 CSV, lacks a column of :attr:`INTERVAL_COLUMNS`, or a row is not
        whole numbers (a finite confidence), names no video, a class outside ``meta.json``'s,
        or frames outside its video (``0 <= start < end <= length``)."""
        if self.kind != "sequences":
            return []
        if self._intervals is None:
            self._intervals = self._read_intervals()
        return [dict(iv) for iv in self._intervals]

    def _read_intervals(self) -> List[dict]:
        path = self.root / "intervals.csv"
        if not path.exists():
            raise DataError(path, "missing: the labelled actions of the videos (header index,label,start,end,"
                                  "confidence; videos without labelled actions: the header alone)")
        text = _read_csv_text(path)
        reader = csv.reader(io.StringIO(text, newline=""))
        out: List[dict] = []
        n, k = len(self), self.num_classes
        frames = np.diff(self.offsets)
        try:
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in self.INTERVAL_COLUMNS if c not in header]
            if missing:
                raise DataError(path, f"line 1: no column {', '.join(missing)} (header "
                                      f"{','.join(self.INTERVAL_COLUMNS)})")
            col = {c: header.index(c) for c in self.INTERVAL_COLUMNS}
            for r in reader:
                if not r:
                    continue
                line = reader.line_num
                if len(r) != len(header):
                    raise DataError(path, f"line {line}: {len(r)} fields, the header has {len(header)} "
                                          "(a truncated file?)")
                iv = {}
                for c in self.INTERVAL_COLUMNS:
                    value = r[col[c]].strip()
                    try:
                        iv[c] = float(value) if c == "confidence" else int(value)
                    except ValueError:
                        kind = "a number" if c == "confidence" else "a whole number"
                        raise DataError(path, f"line {line}: {c} {value!r} is not {kind}") from None
                i, lab, s, e = iv["index"], iv["label"], iv["start"], iv["end"]
                if not np.isfinite(iv["confidence"]):
                    raise DataError(path, f"line {line}: confidence {iv['confidence']} is not finite")
                if not 0 <= i < n:
                    raise DataError(path, f"line {line}: video {i} outside 0..{n - 1}")
                if lab < 0 or (k and lab >= k):
                    classes = f"0..{k - 1} ({k} classes in meta.json)" if k else "0 or more"
                    raise DataError(path, f"line {line}: label {lab} outside {classes}")
                if not 0 <= s < e <= frames[i]:
                    raise DataError(path, f"line {line}: frames {s}..{e} of video {i}, expected 0 <= start < end <= "
                                          f"{int(frames[i])} (its length; end exclusive)")
                out.append(iv)
        except csv.Error as e:
            raise DataError(path, f"line {reader.line_num}: not valid CSV ({e})") from None
        expected = self.meta.get("num_intervals")
        if _is_int(expected) and expected != len(out):
            raise DataError(path, f"{len(out)} labelled actions, meta.json records {expected} (a truncated "
                                  "or edited file?)")
        return out

    def summary(self) -> dict:
        """Per split: samples, classes present, length statistics (frames).

        ``shape`` is ``meta.json``'s: ``(N, C, T, V, M)`` for clips; for sequences ``(N, C, V, M)``
        with ``frames`` (F, the rows of ``data.npy``) beside it, and a split's ``classes`` are
        those of its videos' labelled intervals (the videos themselves have no label)."""
        out = {"root": str(self.root), "dataset": self.meta.get("dataset"), "kind": self.kind,
               "layout": self.layout, "shape": list(self.shape), "num_samples": len(self),
               "num_classes": self.num_classes, "source": self.meta.get("source", ""), "splits": {}}
        intervals = None
        if self.kind == "sequences":
            out["frames"] = int(self.offsets[-1])
            try:
                intervals = self.intervals()
            except DataError:  # validate() / index_problems() name the problem
                intervals = []
                out["intervals"] = None
        groups = {"all": np.arange(len(self))}
        for b in self.benchmarks:
            for p, idx in self.splits[b].items():
                groups[f"{b}/{p}"] = idx
        for key, idx in groups.items():
            lab = self.labels[idx]
            if intervals is not None:
                videos = set(np.asarray(idx).tolist())
                lab = np.array([r["label"] for r in intervals if r["index"] in videos], dtype=np.int64)
            ln = self.lengths[idx]
            out["splits"][key] = {
                "samples": int(idx.size),
                "classes": int(np.unique(lab[lab >= 0]).size),
                "length_min": int(ln.min()) if ln.size else 0,
                "length_mean": float(ln.mean()) if ln.size else 0.0,
                "length_max": int(ln.max()) if ln.size else 0,
            }
        if self.kind == "sequences" and "intervals" not in out:
            out["intervals"] = len(intervals)
        return out

    def split_problems(self, benchmarks: Optional[Sequence[str]] = None) -> List[str]:
        """Samples in both the train and the test part of a benchmark, or listed twice in one
        part (of ``benchmarks``, default all; a validation benchmark ``<b>-val<K>`` is checked
        through ``<b>``), as problem lines naming ``splits.json``; cheap (no data is read)."""
        problems = []
        names = self.benchmarks if benchmarks is None else benchmarks
        for b in dict.fromkeys((parse_validation_benchmark(n) or (n,))[0] if n not in self.splits else n
                               for n in names):
            parts = self.splits.get(b, {})
            for part, idx in parts.items():
                values, counts = np.unique(np.asarray(idx), return_counts=True)
                if (counts > 1).any():
                    twice = values[counts > 1]
                    problems.append(f"splits.json: {b}: {twice.size} sample{'s' if twice.size > 1 else ''} listed "
                                    f"more than once in {part} (e.g. {int(twice[0])})")
            if "train" in parts and "test" in parts:
                both = np.intersect1d(parts["train"], parts["test"])
                if both.size:
                    problems.append(f"splits.json: {b}: {both.size} sample{'s' if both.size > 1 else ''} in both "
                                    f"train and test (e.g. {int(both[0])})")
        return problems

    def index_problems(self) -> List[str]:
        """What the loaders, detection and ``pcm3 visualize`` rely on besides the values (cheap:
        no data is read): one ``samples.csv`` row with a name per sample (:attr:`rows`), clip
        lengths no longer than the clips, and for untrimmed videos lengths matching
        ``offsets.npy`` and a readable ``intervals.csv`` (:meth:`intervals`)."""
        problems = []
        try:
            rows = self.rows
        except DataError as e:
            problems.append(f"samples.csv: {e.message}")
        else:
            if any(not r.get("name") for r in rows):
                problems.append("samples.csv: rows without a name (header index,name,label,length,...)")
        if self.kind == "clips" and len(self.shape) > 2:
            long = int((self.lengths > self.shape[2]).sum())
            if long:
                problems.append(f"lengths.npy: {long} samples longer than the clips' {self.shape[2]} frames")
        if self.kind == "sequences":
            off = int((self.lengths != np.diff(self.offsets)).sum())
            if off:
                problems.append(f"lengths.npy: {off} videos whose length differs from their frames in offsets.npy")
            try:
                self.intervals()
            except DataError as e:
                problems.append(f"intervals.csv: {e.message}")
        return problems

    def value_problems(self) -> List[str]:
        """Labels and lengths out of range (cheap: ``labels.npy`` and ``lengths.npy`` only)."""
        problems = []
        if self.labels.size and self.labels.max() >= max(self.num_classes, 1) and self.num_classes:
            problems.append(f"labels.npy: label {int(self.labels.max())} >= {self.num_classes} classes")
        if self.labels.size and self.labels.min() < -1:
            problems.append(f"labels.npy: label {int(self.labels.min())} < -1 (-1: no label)")
        if (self.lengths <= 0).any():
            problems.append(f"lengths.npy: {int((self.lengths <= 0).sum())} samples with no frames")
        return problems

    def validate(self, chunk: int = 1024, scan: bool = True) -> List[str]:
        """Check the folder; return a list of problems (empty when it is sound). With ``scan``
        every value of ``data.npy`` is read (NaN/inf); without, only the small files."""
        problems = self.value_problems()
        problems += self.split_problems()
        problems += self.index_problems()
        if not scan:
            return problems
        data = self.data
        for s in range(0, data.shape[0], chunk):
            block = np.asarray(data[s:s + chunk])
            if not np.isfinite(block).all():
                bad = np.where(~np.isfinite(block.reshape(block.shape[0], -1)).all(1))[0][:5] + s
                problems.append(f"data.npy: non-finite values in rows {bad.tolist()}")
                break
        return problems


def format_summary(summary: dict) -> str:
    """Render :meth:`Prepared.summary` as a human-readable table."""
    shape = tuple(summary["shape"])
    if "frames" in summary:  # sequences: (N, C, V, M) in meta.json, (F, C, V, M) in data.npy
        shape = f"{shape[0]} videos, {summary['frames']} frames of {shape[1:]}"
    lines = [f"{summary['root']}: {summary['dataset']} ({summary['kind']}, layout {summary['layout']}, "
             f"shape {shape}, {summary['num_classes']} classes)"]
    if summary.get("source"):
        lines.append(f"  source: {summary['source']}")
    unit = "videos" if "frames" in summary else "samples"
    lines.append(f"  {'split':<16}{unit:>9}{'classes':>9}{'len min':>9}{'len mean':>10}{'len max':>9}")
    for key, s in summary["splits"].items():
        lines.append(f"  {key:<16}{s['samples']:>9}{s['classes']:>9}{s['length_min']:>9}"
                     f"{s['length_mean']:>10.1f}{s['length_max']:>9}")
    if "intervals" in summary:
        count = summary["intervals"]
        lines.append(f"  labelled action intervals: {'unreadable (see validation)' if count is None else count}")
    return "\n".join(lines)
