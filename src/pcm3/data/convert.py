"""Import preprocessed copies that people already have on disk into the prepared format.

``pcm3 prepare convert --src PATH --out DIR [--format auto|cmd|ctrgcn|pyskl]``; three formats
(method doc, section 1), detected from ``--src`` when ``--format auto``:

``cmd`` (skeleton-contrast / CMD / PCM3 release): a folder with ``{train,val}_data_joint.npy``
    ``(N, 3, T, V, M)`` float32, ``{train,val}_label.pkl`` pickled ``(sample_names, labels)``
    and optionally ``{train,val}_num_frame.npy`` ``(N,)``. The arrays are opened with
    ``mmap_mode="r"`` and copied ``--chunk`` samples at a time, so memory stays small whatever
    N is. Without ``num_frame`` the true length is the last frame holding a non-zero value
    (a copy padded by repeating the clip then reports the full T: give ``num_frame`` there).
``ctrgcn`` (CTR-GCN / MAMP): one ``.npz`` (``NTU60_CS.npz``, ``NTU60_XSub.npz``,
    ``NTU120_CSet.npz``, ``PKUv2_XSub.npz`` ...) with ``x_train`` ``(N, T, M*V*C)`` person-major
    (feature ``(m*V + v)*C + c``), one-hot (or integer) ``y_train``, ``x_test``, ``y_test``.
    Members stored uncompressed (``np.savez``) are memory-mapped in place; compressed ones
    (``np.savez_compressed``) have to be loaded whole. Lengths from the non-zero frames.
``pyskl``: one pickle ``{"split": {name: [frame_dir, ...]}, "annotations": [{"frame_dir",
    "label", "total_frames", "keypoint" (M, T, V, C)}]}`` (``ntu60_3danno.pkl`` ...). Clips are
    fitted to ``--frames`` (300; longer ones resampled, see :func:`pcm3.data.common.fit_length`,
    the original length in ``samples.csv`` ``source_length``) and zero-padded; more than 2
    persons are reduced to the 2 with the largest motion energy, the most energetic first (the
    NTU recipe's rule, :func:`motion_energy`); samples of 1 or 2 persons keep their order.

Samples are otherwise kept as they are (no re-centring; ``--center`` subtracts the layout's
centre joint of person 1 in every frame, useful for pyskl's raw camera coordinates).

Benchmarks and parts: ``cmd`` and ``ctrgcn`` hold one benchmark, named by ``--benchmark`` or
guessed from the path (``xsub``: xsub/cs/csub/cross_subject; ``xview``: xview/cv; ``xset``:
xset/cset/csetup; else ``default``), ``train`` = the train arrays and ``test`` = val/test.
pyskl split names ``B_train`` / ``B_val`` / ``B_test`` become benchmark ``B`` parts
``train`` / ``test`` (when both ``B_val`` and ``B_test`` exist, ``B_val`` is part ``val``);
other names are kept as benchmark ``name`` part ``all``.

Class names come from ``--dataset`` (guessed from the path: ntu60, ntu120, pku1, pku2,
nwucla, msr3d): NTU names from :mod:`pcm3.data.ntu` when it is installed, the others from
their readers; otherwise (or when labels exceed the list) ``class_001``, ``class_002``, ...

Bad input (wrong shapes, a label count that differs from the sample count, negative labels,
non-finite values, all-zero samples, an unreadable pickle or npz, unknown ids in a split) raises
:class:`~pcm3.errors.DataError` naming the file; nothing is written. Only unpickle files you
trust: a pickle can run code when it is loaded.
"""

from __future__ import annotations

import importlib
import pickle
import re
import struct
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from pcm3.data.common import DEFAULT_FRAMES, add_output_options, center_frames, fit_length, print_prepared_summary
from pcm3.data.prepared import PreparedWriter
from pcm3.errors import ConfigError, DataError
from pcm3.outputs import check_output_dir
from pcm3.skeleton import get_layout

FORMATS = ("auto", "cmd", "ctrgcn", "pyskl")
DEFAULT_CHUNK = 256
CMD_PARTS = (("train", "train"), ("val", "test"))
NPZ_PARTS = (("train", "train"), ("test", "test"))

_BENCHMARK_TOKENS = (
    ("xsub", ("xsub", "cs", "csub", "cross_subject", "crosssubject", "xsub60", "xsub120")),
    ("xview", ("xview", "cv", "cross_view", "crossview")),
    ("xset", ("xset", "cset", "csetup", "cross_setup", "crosssetup")),
)


# ----------------------------------------------------------------------------------------------
# Names: data set, benchmark, classes, layout
# ----------------------------------------------------------------------------------------------

def guess_dataset(path: Path) -> Optional[str]:
    """The data set named in the last 3 components of ``path``, or None."""
    s = "/".join(Path(path).parts[-3:]).lower()
    if re.search(r"ntu[^/]*?120", s):
        return "ntu120"
    if "ntu" in s:
        return "ntu60"
    if "pku" in s:
        return "pku2" if re.search(r"pku[^/]*?(v2|2|ii)", s) or "part2" in s else "pku1"
    if "ucla" in s:
        return "nwucla"
    if "msr" in s:
        return "msr3d"
    return None


def guess_benchmark(path: Path) -> Optional[str]:
    """The benchmark named in ``path``'s components (``NTU60_CS.npz`` -> xsub), or None."""
    tokens = []
    for part in Path(path).parts[-3:]:
        stem = part.lower()
        for suffix in (".npz", ".pkl", ".npy"):
            stem = stem[: -len(suffix)] if stem.endswith(suffix) else stem
        tokens.append(stem)
        tokens.extend(t for t in re.split(r"[_\-. ]+", stem) if t)
    for bench, names in _BENCHMARK_TOKENS:
        if any(t in names for t in reversed(tokens)):
            return bench
    return None


def _module_names(module: str, n: int) -> Optional[List[str]]:
    """A list of >= n class names found in ``module`` (any list/tuple/dict of 60 or 120 strings)."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    best = None
    preferred = getattr(mod, "NTU_ACTIONS", None)  # pcm3.data.ntu's 120 names
    for value in ([preferred] if preferred is not None else []) + list(vars(mod).values()):
        if isinstance(value, dict) and value and all(isinstance(k, int) for k in value):
            value = [value[k] for k in sorted(value)]
        if isinstance(value, (list, tuple)) and len(value) in (60, 120) and len(value) >= n \
                and all(isinstance(s, str) for s in value):
            if best is None or len(value) > len(best):
                best = list(value)
    return best[:n] if best else None


def class_names_for(dataset: Optional[str], num_classes: int) -> List[str]:
    """Class names of ``dataset`` for labels ``0..num_classes-1``; ``class_001``... as a fallback."""
    names: Optional[Sequence[str]] = None
    if dataset in ("ntu60", "ntu120"):
        names = _module_names("pcm3.data.ntu", 60 if dataset == "ntu60" else 120)
    elif dataset in ("pku1", "pku2"):
        from pcm3.data.pku import PKU_CLASSES as names
    elif dataset == "nwucla":
        from pcm3.data.nwucla import NWUCLA_CLASSES as names
    elif dataset == "msr3d":
        from pcm3.data.msr3d import MSR_CLASSES as names
    if names is not None and len(names) >= num_classes:
        return list(names)
    return [f"class_{i + 1:03d}" for i in range(num_classes)]


def _layout_for(num_joints: int, dataset: Optional[str], layout: Optional[str], path: Path) -> str:
    if layout is None:
        layout = {"nwucla": "kinect_v1", "msr3d": "msr20"}.get(dataset or "")
        if layout is None:
            if num_joints != 25:
                raise DataError(path, f"{num_joints} joints: give the skeleton layout with --layout")
            layout = "ntu25"
    lay = get_layout(layout)
    if lay.num_joints != num_joints:
        raise DataError(path, f"{num_joints} joints, but layout {lay.name} has {lay.num_joints}")
    return lay.name


# ----------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------

def load_pickle(path) -> object:
    """Unpickle ``path`` (Python 2 pickles too); a :class:`DataError` if it cannot be read."""
    path = Path(path)
    for kwargs in ({}, {"encoding": "latin1"}):
        try:
            with open(path, "rb") as f:
                return pickle.load(f, **kwargs)
        except FileNotFoundError:
            raise DataError(path, "no such file") from None
        except UnicodeDecodeError:
            continue
        except Exception as e:  # noqa: BLE001 - any failure to unpickle is a bad file
            raise DataError(path, f"unreadable pickle ({e.__class__.__name__}: {str(e)[:80]})") from None
    raise DataError(path, "unreadable pickle (text encoding)")


def open_npy(path) -> np.ndarray:
    """Memory-map an ``.npy`` file read-only."""
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except (ValueError, OSError, EOFError) as e:
        raise DataError(path, f"unreadable .npy ({str(e)[:80]})") from None


def open_npz_member(path, key: str):
    """Array ``key`` of an ``.npz``: memory-mapped when stored uncompressed, else loaded."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(key + ".npy")
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except KeyError:
        raise DataError(path, f"no array {key!r} in the npz") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(path, f"unreadable npz ({str(e)[:80]})") from None
    if info.compress_type == zipfile.ZIP_STORED:
        try:
            with open(path, "rb") as f:
                f.seek(info.header_offset)
                head = f.read(30)
                if head[:4] != b"PK\x03\x04":
                    raise ValueError("bad local header")
                name_len, extra_len = struct.unpack("<HH", head[26:30])
                f.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(f)
                offset = f.tell()
            if not dtype.hasobject:
                if int(np.prod(shape)) == 0:
                    return np.zeros(shape, dtype=dtype)
                return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                                 order="F" if fortran else "C")
        except (ValueError, OSError):
            pass  # fall back to reading it through numpy
    try:
        with np.load(path, allow_pickle=False) as z:
            return z[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(path, f"unreadable array {key!r} ({str(e)[:80]})") from None


def detect_format(src: Path) -> str:
    """``cmd`` for a folder with ``*_data_joint.npy``, ``ctrgcn`` for ``.npz``, ``pyskl`` for ``.pkl``."""
    if src.is_dir():
        if any(src.glob("*_data_joint.npy")) or any(src.glob("*_data.npy")):
            return "cmd"
        raise DataError(src, "no {train,val}_data_joint.npy here; give --format or the file to convert")
    name = src.name.lower()
    if name.endswith(".npz"):
        return "ctrgcn"
    if name.endswith(".pkl") or name.endswith(".pickle"):
        if re.search(r"_label\.pkl$", name):
            return "cmd"
        return "pyskl"
    if name.endswith("_data_joint.npy"):
        return "cmd"
    raise DataError(src, "cannot tell the format (a folder of *_data_joint.npy, an .npz or a pyskl .pkl); "
                         "give --format")


def _lengths_from_nonzero(block: np.ndarray) -> np.ndarray:
    """``(n, C, T, V, M)`` -> ``(n,)``: 1 + the last frame with a non-zero value (0 if none)."""
    nz = np.any(block != 0, axis=(1, 3, 4))  # (n, T)
    t = block.shape[2]
    last = t - 1 - np.argmax(nz[:, ::-1], axis=1)
    return np.where(nz.any(axis=1), last + 1, 0)


def _check_block(block: np.ndarray, start: int, path: Path, names: Sequence[str]) -> None:
    finite = np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
    if not finite.all():
        i = start + int(np.argmin(finite))
        raise DataError(path, f"non-finite values (NaN or inf) in sample {i} ({names[i]})")


def _labels_array(labels, path: Path, n: int) -> np.ndarray:
    try:
        arr = np.asarray(labels)
    except Exception:  # noqa: BLE001
        raise DataError(path, "labels are not an array") from None
    if arr.ndim == 2:  # one-hot
        if arr.shape[0] != n:
            raise DataError(path, f"{arr.shape[0]} labels for {n} samples")
        if not (np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()):
            raise DataError(path, "2-D labels that are not one-hot rows")
        return arr.argmax(axis=1).astype(np.int64)
    if arr.ndim != 1:
        raise DataError(path, f"labels have shape {arr.shape}, expected (N,) or one-hot (N, K)")
    if arr.shape[0] != n:
        raise DataError(path, f"{arr.shape[0]} labels for {n} samples")
    if n and not np.issubdtype(arr.dtype, np.integer):
        try:
            as_float = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(path, "non-numeric labels") from None
        if not (np.isfinite(as_float).all() and (as_float == np.round(as_float)).all()):
            raise DataError(path, "labels are not whole numbers")
        arr = as_float
    arr = arr.astype(np.int64)
    if n and arr.min() < 0:
        raise DataError(path, f"negative label {int(arr.min())}")
    return arr


class _Part:
    """One source part (arrays + labels) to copy: data ``(N, C, T, V, M)``-like, lazily."""

    def __init__(self, name, part, data, labels, names, path, lengths=None, to_nctvm=None):
        self.name, self.part, self.data, self.labels, self.names, self.path = name, part, data, labels, names, path
        self.lengths = lengths
        self.to_nctvm = to_nctvm or (lambda b: b)

    def __len__(self):
        return int(self.labels.shape[0])


def _write_parts(parts: List[_Part], out: Path, *, shape: Tuple[int, ...], dataset: Optional[str],
                 layout: str, benchmark: str, source: str, chunk: int, center: bool, fmt: str,
                 overwrite: bool = False) -> int:
    n = sum(len(p) for p in parts)
    num_classes = int(max(int(p.labels.max()) if len(p) else -1 for p in parts)) + 1
    lay = get_layout(layout)
    meta = {"converted_from": fmt, "centering": "per frame: minus person 1's centre joint" if center else "as in the source"}
    with PreparedWriter(out, kind="clips", shape=(n,) + shape, dataset=dataset or "unknown", layout=layout,
                        class_names=class_names_for(dataset, num_classes), source=source, extra_meta=meta,
                        overwrite=overwrite, protect=[p.path for p in parts]) as w:
        splits: Dict[str, List[int]] = {}
        i = 0
        for p in parts:
            idx = splits.setdefault(p.part, [])
            for s in range(0, len(p), chunk):
                e = min(s + chunk, len(p))
                block = np.ascontiguousarray(p.to_nctvm(np.asarray(p.data[s:e])), dtype=np.float32)
                _check_block(block, s, p.path, p.names)
                lengths = p.lengths[s:e] if p.lengths is not None else _lengths_from_nonzero(block)
                for j in range(e - s):
                    if lengths[j] <= 0:
                        raise DataError(p.path, f"sample {s + j} ({p.names[s + j]}) has no non-zero frame")
                    x = center_frames(block[j], lay.center) if center else block[j]
                    w.set(i, x, label=int(p.labels[s + j]), length=int(lengths[j]), name=p.names[s + j],
                          source_part=p.name)
                    idx.append(i)
                    i += 1
        w.set_splits({benchmark: splits})
    return n


def _names_list(names, path: Path, n: int, prefix: str) -> List[str]:
    if names is None:
        return [f"{prefix}_{i:06d}" for i in range(n)]
    try:
        out = [str(s) for s in names]
    except TypeError:
        raise DataError(path, "sample names are not a list") from None
    if len(out) != n:
        raise DataError(path, f"{len(out)} sample names for {n} samples")
    return [s[: -len(".skeleton")] if s.endswith(".skeleton") else s for s in out]


def convert_cmd(src: Path, out: Path, *, dataset=None, benchmark=None, layout=None, chunk=DEFAULT_CHUNK,
                center=False, log=print, overwrite: bool = False) -> int:
    """Convert a skeleton-contrast / CMD / PCM3 folder (see the module doc); returns N."""
    folder = src if src.is_dir() else src.parent
    parts: List[_Part] = []
    shape = None
    for stem, part in CMD_PARTS:
        data_path = next((folder / f"{stem}{s}" for s in ("_data_joint.npy", "_data.npy")
                          if (folder / f"{stem}{s}").exists()), None)
        if data_path is None:
            continue
        data = open_npy(data_path)
        if data.ndim != 5:
            raise DataError(data_path, f"shape {data.shape}, expected (N, C, T, V, M)")
        if data.shape[1] not in (2, 3):
            raise DataError(data_path, f"shape {data.shape}: {data.shape[1]} coordinates, expected 3 (or 2)")
        if shape is not None and tuple(data.shape[1:]) != shape:
            raise DataError(data_path, f"shape {data.shape} differs from the other part's {shape}")
        shape = tuple(data.shape[1:])
        n = data.shape[0]
        label_path = folder / f"{stem}_label.pkl"
        obj = load_pickle(label_path)
        if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
            raise DataError(label_path, "expected a pickled (sample_names, labels) pair")
        labels = _labels_array(obj[1], label_path, n)
        names = _names_list(obj[0], label_path, n, stem)
        lengths = None
        nf_path = folder / f"{stem}_num_frame.npy"
        if nf_path.exists():
            lengths = np.asarray(open_npy(nf_path))
            if lengths.shape != (n,):
                raise DataError(nf_path, f"shape {lengths.shape}, expected ({n},)")
            if not np.issubdtype(lengths.dtype, np.number) or np.issubdtype(lengths.dtype, np.complexfloating):
                raise DataError(nf_path, f"dtype {lengths.dtype}: expected whole-number frame counts")
            if not np.issubdtype(lengths.dtype, np.integer):
                whole = np.isfinite(lengths) & (lengths == np.round(lengths))
                if not whole.all():
                    i = int(np.argmin(whole))
                    raise DataError(nf_path, f"frame count {lengths[i]} of sample {i} is not a whole number")
            if (lengths < 1).any() or (lengths > shape[1]).any():
                raise DataError(nf_path, f"frame counts outside 1..{shape[1]}")
            lengths = lengths.astype(np.int64)
        parts.append(_Part(stem, part, data, labels, names, data_path, lengths))
    if not parts:
        raise DataError(folder, "no train_data_joint.npy or val_data_joint.npy")
    dataset = dataset or guess_dataset(folder)
    layout = _layout_for(shape[2], dataset, layout, parts[0].path)
    benchmark = benchmark or guess_benchmark(folder) or "default"
    return _write_parts(parts, out, shape=shape, dataset=dataset, layout=layout, benchmark=benchmark,
                        source=f"skeleton-contrast/CMD folder {folder}", chunk=chunk, center=center, fmt="cmd",
                        overwrite=overwrite)


def convert_ctrgcn(src: Path, out: Path, *, dataset=None, benchmark=None, layout=None, chunk=DEFAULT_CHUNK,
                   center=False, log=print, overwrite: bool = False) -> int:
    """Convert a CTR-GCN ``.npz`` (see the module doc); returns N."""
    if src.is_dir():
        raise DataError(src, "a folder: give the .npz file")
    dataset = dataset or guess_dataset(src)
    parts: List[_Part] = []
    v = None
    shape = None
    for stem, part in NPZ_PARTS:
        try:
            with zipfile.ZipFile(src) as zf:
                members = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
        except FileNotFoundError:
            raise DataError(src, "no such file") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(src, f"unreadable npz ({str(e)[:80]})") from None
        if f"x_{stem}" not in members:
            if f"y_{stem}" in members:
                raise DataError(src, f"y_{stem} without x_{stem}")
            continue
        if f"y_{stem}" not in members:
            raise DataError(src, f"x_{stem} without y_{stem}")
        x = open_npz_member(src, f"x_{stem}")
        if x.ndim != 3:
            raise DataError(src, f"x_{stem} has shape {x.shape}, expected (N, T, M*V*C)")
        if v is None:
            v = get_layout(layout).num_joints if layout else {"nwucla": 20, "msr3d": 20}.get(dataset or "", 25)
        if x.shape[2] % (v * 3):
            raise DataError(src, f"x_{stem} has {x.shape[2]} values per frame, not persons x {v} joints x 3")
        m = x.shape[2] // (v * 3)
        part_shape = (3, x.shape[1], v, m)
        if shape is not None and part_shape != shape:
            raise DataError(src, f"x_{stem} has shape {x.shape}, unlike the other part")
        shape = part_shape
        n = x.shape[0]
        labels = _labels_array(np.asarray(open_npz_member(src, f"y_{stem}")), src, n)

        def to_nctvm(b, m=m, v=v):  # (n, T, M*V*C), person-major -> (n, C, T, V, M)
            return b.reshape(b.shape[0], b.shape[1], m, v, 3).transpose(0, 4, 1, 3, 2)

        parts.append(_Part(f"x_{stem}", part, x, labels, [f"{stem}_{i:06d}" for i in range(n)], src,
                           to_nctvm=to_nctvm))
    if not parts:
        raise DataError(src, "no x_train / x_test arrays in the npz")
    layout = _layout_for(v, dataset, layout, src)
    benchmark = benchmark or guess_benchmark(src) or "default"
    return _write_parts(parts, out, shape=shape, dataset=dataset, layout=layout, benchmark=benchmark,
                        source=f"CTR-GCN npz {src}", chunk=chunk, center=center, fmt="ctrgcn",
                        overwrite=overwrite)


def motion_energy(person: np.ndarray) -> float:
    """The NTU recipe's body score, as :func:`pcm3.data.ntu.motion_energy`: over the frames
    where the person is present (any non-zero value), the standard deviation (population, as
    ``np.std``) of each coordinate over all joints of those frames, summed over the coordinates.

    Args:
        person: ``(T, V, C)`` keypoints, zeros where the person is absent. 0 if never present.
    """
    present = person.any(axis=(1, 2))
    if not present.any():
        return 0.0
    s = np.asarray(person[present], dtype=np.float64)
    return float(sum(s[..., c].std() for c in range(s.shape[-1])))


def _two_persons(kp: np.ndarray) -> np.ndarray:
    """``(M, T, V, C)`` with M > 2 -> the 2 persons of largest :func:`motion_energy`, the most
    energetic first (as the NTU recipe orders them); ties keep the file order."""
    energy = [motion_energy(person) for person in kp]
    keep = sorted(range(len(kp)), key=lambda i: -energy[i])[:2]
    return kp[keep]


def convert_pyskl(src: Path, out: Path, *, dataset=None, benchmark=None, layout=None, frames=DEFAULT_FRAMES,
                  long="resample", center=False, log=print, overwrite: bool = False) -> int:
    """Convert a pyskl annotation pickle (see the module doc); returns N."""
    if src.is_dir():
        raise DataError(src, "a folder: give the .pkl file")
    obj = load_pickle(src)
    if not (isinstance(obj, dict) and "annotations" in obj and "split" in obj):
        raise DataError(src, "expected a pyskl pickle {'split': ..., 'annotations': [...]}")
    annos, split = obj["annotations"], obj["split"]
    if not isinstance(annos, (list, tuple)) or not annos:
        raise DataError(src, "'annotations' is not a non-empty list")
    if not isinstance(split, dict):
        raise DataError(src, "'split' is not a dict {name: [frame_dir, ...]}")
    dataset = dataset or guess_dataset(src)
    v = c = None
    names: List[str] = []
    for i, a in enumerate(annos):
        if not isinstance(a, dict) or not {"frame_dir", "label", "keypoint"} <= set(a):
            raise DataError(src, f"annotation {i} lacks frame_dir / label / keypoint")
        kp = a["keypoint"]
        if not isinstance(kp, np.ndarray) or kp.ndim != 4:
            raise DataError(src, f"annotation {i} ({a['frame_dir']}): keypoint is not an (M, T, V, C) array")
        if v is None:
            v, c = kp.shape[2], kp.shape[3]
        if kp.shape[2:] != (v, c):
            raise DataError(src, f"annotation {i} ({a['frame_dir']}): keypoint shape {kp.shape}, others have V={v}, C={c}")
        if kp.shape[0] == 0 or kp.shape[1] == 0:
            raise DataError(src, f"annotation {i} ({a['frame_dir']}): no persons or no frames")
        if "total_frames" in a and int(a["total_frames"]) != kp.shape[1]:
            raise DataError(src, f"annotation {i} ({a['frame_dir']}): total_frames {a['total_frames']} "
                                 f"but keypoint has {kp.shape[1]} frames")
        if not np.isfinite(kp).all():
            raise DataError(src, f"annotation {i} ({a['frame_dir']}): non-finite keypoints (NaN or inf)")
        if not np.any(kp):
            raise DataError(src, f"annotation {i} ({a['frame_dir']}): all keypoints are zero")
        names.append(str(a["frame_dir"]))
    if c not in (2, 3):
        raise DataError(src, f"keypoints have {c} coordinates, expected 3 (or 2)")
    labels = _labels_array([a["label"] for a in annos], src, len(annos))
    index = {n: i for i, n in enumerate(names)}
    if len(index) != len(names):
        raise DataError(src, "two annotations with the same frame_dir")
    layout = _layout_for(v, dataset, layout, src)
    m_out = min(2, max(a["keypoint"].shape[0] for a in annos))
    splits: Dict[str, Dict[str, List[int]]] = {}
    named = []
    for sname in split:
        mm = re.match(r"^(.*?)_?(train|val|test)$", str(sname))
        if mm:
            named.append((sname, mm.group(1) or benchmark or guess_benchmark(src) or "default", mm.group(2)))
        else:
            named.append((sname, str(sname), "all"))
    with_test = {bench for _, bench, kind in named if kind == "test"}
    for sname, bench, kind in named:
        # B_val is B's test part, unless B_test exists: then it stays a part of its own, "val"
        part = "val" if kind == "val" and bench in with_test else "test" if kind in ("val", "test") else kind
        try:
            idx = [index[str(n)] for n in split[sname]]
        except KeyError as e:
            raise DataError(src, f"split {sname!r} names unknown sample {e.args[0]!r}") from None
        if part in splits.get(bench, {}):
            raise DataError(src, f"split {sname!r} is a second {bench}/{part} part")
        splits.setdefault(bench, {})[part] = idx
    lay = get_layout(layout)
    meta = {"converted_from": "pyskl", "frames": frames,
            "centering": "per frame: minus person 1's centre joint" if center else "as in the source"}
    with PreparedWriter(out, kind="clips", shape=(len(annos), c, frames, v, m_out), dataset=dataset or "unknown",
                        layout=layout, class_names=class_names_for(dataset, int(labels.max()) + 1),
                        source=f"pyskl pickle {src}", extra_meta=meta, overwrite=overwrite, protect=[src]) as w:
        for i, a in enumerate(annos):
            kp = np.asarray(a["keypoint"], dtype=np.float32)
            if kp.shape[0] > 2:
                kp = _two_persons(kp)
            x = np.zeros((c, kp.shape[1], v, m_out), dtype=np.float32)
            x[..., : kp.shape[0]] = kp.transpose(3, 1, 2, 0)
            if center:
                x = center_frames(x, lay.center)
            data, length = fit_length(x, frames, long, "zero")
            w.set(i, data, label=int(labels[i]), length=length, name=names[i], source_length=kp.shape[1])
        w.set_splits(splits)
    return len(annos)


def convert(src, out, *, fmt: str = "auto", dataset: Optional[str] = None, benchmark: Optional[str] = None,
            layout: Optional[str] = None, frames: int = DEFAULT_FRAMES, long: str = "resample",
            chunk: int = DEFAULT_CHUNK, center: bool = False, log=print, overwrite: bool = False) -> Path:
    """Convert ``src`` (format ``fmt``, see the module doc) into a prepared folder ``out``.

    ``out`` must be new or empty, or (``overwrite``) a prepared folder written by pcm3; it may
    not be, lie in, or contain ``src``.
    """
    src = Path(src)
    if not src.exists():
        raise DataError(src, "no such file or folder")
    out = check_output_dir(out, "prepared", overwrite=overwrite, protect=[src])
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    fmt = detect_format(src) if fmt == "auto" else fmt
    if fmt == "cmd":
        n = convert_cmd(src, out, dataset=dataset, benchmark=benchmark, layout=layout, chunk=chunk, center=center,
                        overwrite=overwrite)
    elif fmt == "ctrgcn":
        n = convert_ctrgcn(src, out, dataset=dataset, benchmark=benchmark, layout=layout, chunk=chunk, center=center,
                           overwrite=overwrite)
    else:
        n = convert_pyskl(src, out, dataset=dataset, benchmark=benchmark, layout=layout, frames=frames,
                          long=long, center=center, overwrite=overwrite)
    log(f"wrote {out}: {n} samples converted from {fmt} ({src})")
    return out


def add_prepare_parsers(sub) -> None:
    p = sub.add_parser("convert", help="import a preprocessed copy (CMD/skeleton-contrast, CTR-GCN npz, pyskl pkl)",
                       description="Convert data people already have: a skeleton-contrast/CMD/PCM3 folder "
                                   "({train,val}_data_joint.npy + _label.pkl [+ _num_frame.npy]), a CTR-GCN npz "
                                   "(x_train (N,T,150) person-major, one-hot y_train, x_test, y_test) or a pyskl "
                                   "pickle ({'split', 'annotations'}) into a prepared folder, without re-preprocessing.")
    p.add_argument("--src", "--raw", dest="src", required=True, help="the folder, .npz or .pkl to convert")
    p.add_argument("--out", required=True, help="output prepared folder")
    p.add_argument("--format", choices=FORMATS, default="auto", help="source format (default: detect)")
    p.add_argument("--dataset", help="ntu60, ntu120, pku1, pku2, nwucla, msr3d, ... (default: guess from the path); "
                                     "sets the class names")
    p.add_argument("--benchmark", help="benchmark name for cmd/ctrgcn sources (default: guess from the path, "
                                       "e.g. NTU60_CS.npz -> xsub)")
    p.add_argument("--layout", help="skeleton layout (default: ntu25 for 25 joints)")
    p.add_argument("--frames", "--max-frames", dest="frames", type=int, default=DEFAULT_FRAMES,
                   help="pyskl: clip length T (default 300)")
    p.add_argument("--long", choices=("resample", "crop"), default="resample",
                   help="pyskl clips longer than T: resample (default) or keep the centre T frames")
    p.add_argument("--center", action="store_true", help="subtract person 1's centre joint in every frame")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="samples copied at a time (default 256)")
    add_output_options(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    for option, value in (("--frames", args.frames), ("--chunk", args.chunk)):
        if value < 1:
            raise DataError(option, f"must be at least 1, got {value}")
    if args.layout is not None:
        from pcm3.errors import ConfigError
        from pcm3.skeleton import get_layout

        try:
            get_layout(args.layout)
        except ConfigError as e:
            raise ConfigError(f"--layout: {e}") from None
    convert(args.src, args.out, fmt=args.format, dataset=args.dataset, benchmark=args.benchmark,
            layout=args.layout, frames=args.frames, long=args.long, chunk=args.chunk, center=args.center,
            log=lambda s: print(s, file=sys.stderr), overwrite=args.overwrite)
    print_prepared_summary(args.out)
    return 0
