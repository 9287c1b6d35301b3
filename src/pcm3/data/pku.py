"""PKU-MMD (Part I and Part II): raw skeleton and label text files -> prepared folders.

Raw files (Kinect v2, NTU joint order, metres):
    skeleton ``VVVV-V.txt``: one line per frame, 150 floats = person 1 (25 joints x xyz) then
        person 2 (zeros when absent);
    label ``VVVV-V.txt``: one line per action, ``label,start,end,confidence`` with label 1..51
        and 1-based frames, ``end`` inclusive.
The folders are found under ``--raw`` by name (a folder whose name contains ``skeleton``,
e.g. ``skeleton``, ``PKU_Skeleton_Renew``, ``Skeleton_v2``; one whose name contains ``label``,
e.g. ``label``, ``Train_Label_PKU_final``), or given with ``--skeleton`` / ``--labels``.

Outputs (``pcm3.data.prepared``):
    ``pcm3 prepare pku1``: ``kind="sequences"``, the untrimmed videos with their labelled
        intervals (0-based ``start`` inclusive, ``end`` exclusive), for action detection;
        ``--trimmed`` writes the labelled clips instead (``kind="clips"``).
    ``pcm3 prepare pku2``: ``kind="clips"`` (``--untrimmed`` for sequences).
Clips are ``(N, 3, T=300, 25, 2)``:
    * clips longer than T frames are resampled to T by linear interpolation in time
      (``--long crop`` takes the centre T frames instead); ``lengths.npy`` holds the number of
      valid frames in the stored array (``min(L, T)``) and ``samples.csv`` the original length in
      ``source_length``;
    * shorter clips are padded with zeros after the valid frames (``--pad repeat`` repeats the
      valid clip, as the NTU recipe does).
Centring (both kinds, ``--no-center`` to keep camera coordinates): in every frame, person 1's
spine-middle joint (joint 2, 1-based) is subtracted from every person present in that frame
(the method doc's NTU recipe, without its rotation). Frames where person 1 is missing use the
nearest frame where it is present; if person 1 is missing from the whole video but person 2
is not, the two are swapped first. Absent persons stay exactly zero.

Splits, benchmarks ``xsub`` and ``xview``, ``train`` / ``test``:
    * the official split files (``cross-subject.txt``, ``cross-view.txt``, ``cross_subject_v2.txt``
      ...): text with a ``Training videos:`` section and a ``Validataion videos:`` section (the
      official spelling; any heading starting with ``train`` / ``val`` / ``test`` is accepted),
      each followed by comma- or space-separated video ids. They are given with ``--xsub-split``
      / ``--xview-split`` / ``--split-file`` (the benchmark from the file name), or found under
      ``--raw`` by name. The release notes call the second part "validation"; the field uses it
      as the test set.
    * without a cross-view file, the default is the PKU-MMD paper's cross-view protocol (Liu et
      al. 2017, arXiv:1703.07475, "Evaluation protocols"): videos of the middle and right
      cameras (suffix ``-M``, ``-R``) train, the left camera (``-L``) tests. This is written from
      the paper's description (not checked against the split file here); the official file wins
      whenever it is given. For Part II the same rule is applied by default, which may differ
      from its official ``cross_view_v2.txt``.
    * cross-subject needs the split file (subjects are not in the file names); without it no
      ``xsub`` benchmark is written and a note is printed.

Bad input (missing path, empty file, a line without 150 values, a non-numeric value, NaN/inf,
a label outside 1..51, an interval outside the video, a malformed split file) raises
:class:`~pcm3.errors.DataError` naming the file and line, and nothing is written. With
``--skip-bad`` bad videos (or single bad label lines) are left out and listed in
``skipped.csv``; split-file problems always stop.

The helpers :func:`read_table`, :func:`center_frames` and :func:`fit_length` (in
:mod:`pcm3.data.common`) are shared with the
other raw readers (``nwucla``, ``msr3d``).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from pcm3.skeleton import NTU25, align_view
from pcm3.data.common import (align_note, DEFAULT_FRAMES, REPORT_NAME, BadFiles, add_clip_options, center_frames, fit_length, parallel_map,
                              print_prepared_summary, read_table, read_text, require_dir)
from pcm3.data.prepared import PreparedWriter
from pcm3.errors import DataError
from pcm3.outputs import check_output_dir, write_error

# The 51 PKU-MMD actions, labels 1..51 (the release's Actions.xlsx, alphabetical).
PKU_CLASSES: Tuple[str, ...] = (
    "bow", "brushing hair", "brushing teeth", "check time (from watch)", "cheer up", "clapping",
    "cross hands in front (say stop)", "drink water", "drop", "eat meal/snack", "falling",
    "giving something to other person", "hand waving", "handshaking", "hopping (one foot jumping)",
    "hugging other person", "jump up", "kicking other person", "kicking something",
    "make a phone call/answer phone", "pat on back of other person", "pickup",
    "playing with phone/tablet", "point finger at the other person",
    "pointing to something with finger", "punching/slapping other person", "pushing other person",
    "put on a hat/cap", "put something inside pocket", "reading", "rub two hands together",
    "salute", "sitting down", "standing up", "take off a hat/cap", "take off glasses",
    "take off jacket", "take out something from pocket", "taking a selfie", "tear up paper",
    "throw", "touch back (backache)", "touch chest (stomachache/heart pain)",
    "touch head (headache)", "touch neck (neckache)", "typing on a keyboard",
    "use a fan (with hand or paper)/feeling warm", "wear jacket", "wear on glasses", "wipe face",
    "writing",
)
assert len(PKU_CLASSES) == 51

NUM_JOINTS = 25
NUM_PERSONS = 2
CENTER_JOINT = 1  # spine_mid, 0-based
VALUES_PER_FRAME = 3 * NUM_JOINTS * NUM_PERSONS  # 150
# Cross-view default (no split file): PKU-MMD paper, middle and right cameras train.
DEFAULT_XVIEW_TRAIN = ("M", "R")
DEFAULT_XVIEW_TEST = ("L",)
SKELETON_SUFFIXES = (".txt", ".skeleton")
LABEL_SUFFIXES = (".txt", ".label")


# ----------------------------------------------------------------------------------------------
# Shared helpers (also used by the NW-UCLA and MSR Action3D readers)
# ----------------------------------------------------------------------------------------------

def read_skeleton(path) -> np.ndarray:
    """Read a PKU-MMD skeleton file into ``(C=3, T, V=25, M=2)`` float32 (camera coordinates)."""
    rows = read_table(path, VALUES_PER_FRAME, "values")
    t = rows.shape[0]
    x = rows.astype(np.float32).reshape(t, NUM_PERSONS, NUM_JOINTS, 3)
    return np.ascontiguousarray(x.transpose(3, 0, 2, 1))


def read_labels(path, num_frames: Optional[int] = None,
                num_classes: int = len(PKU_CLASSES)) -> Tuple[List[tuple], List[DataError]]:
    """Read a label file.

    Returns ``(intervals, errors)``: ``intervals`` are ``(line, label, start, end, confidence)``
    with 0-based ``label`` and ``start`` (inclusive), ``end`` exclusive (the file's 1-based
    inclusive end), ``line`` 1-based; ``errors`` are one :class:`DataError` per bad line (label
    outside 1..``num_classes``, interval reversed (start after end) or outside the
    ``num_frames``-frame video, malformed line).
    A missing, unreadable or empty file raises.
    """
    path = Path(path)
    text = read_text(path, "label file")
    intervals, errors = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        while fields and not fields[-1]:
            fields.pop()
        if len(fields) != 4:
            errors.append(DataError(path, f"{len(fields)} fields, expected label,start,end,confidence", i))
            continue
        try:
            label, start, end = (int(float(f)) for f in fields[:3])
            conf = float(fields[3])
            if not all(np.isfinite([float(f) for f in fields])):
                raise ValueError
        except ValueError:
            errors.append(DataError(path, f"non-numeric or non-finite field in {line.strip()[:40]!r}", i))
            continue
        if not 1 <= label <= num_classes:
            errors.append(DataError(path, f"label {label} outside 1..{num_classes}", i))
            continue
        if end < start:
            errors.append(DataError(path, f"interval {start}-{end} reversed (start after end)", i))
            continue
        if start < 1 or (num_frames is not None and end > num_frames):
            video = "" if num_frames is None else f" of {num_frames} frames"
            first = " (frames are numbered from 1)" if start < 1 else ""
            errors.append(DataError(path, f"interval {start}-{end} outside the video{video}{first}", i))
            continue
        intervals.append((i, label - 1, start - 1, end, conf))
    if not intervals and not errors:
        raise DataError(path, "empty label file")
    return intervals, errors


_HEADING = re.compile(r"^\s*([A-Za-z][A-Za-z _-]*?)\s*:\s*(.*)$")


def read_split_file(path) -> Dict[str, List[str]]:
    """Parse an official PKU-MMD split file into ``{"train": [ids], "test": [ids]}``.

    Headings start with ``train`` (training part) or ``val`` / ``test`` (test part; the
    official file spells it "Validataion videos:"); ids follow on the same or the next lines,
    separated by commas and/or whitespace (a ``.txt`` / ``.skeleton`` extension is dropped).
    """
    path = Path(path)
    text = read_text(path, "split file")
    parts: Dict[str, List[str]] = {}
    current = None
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _HEADING.match(line)
        rest = line
        if m:
            head = m.group(1).strip().lower()
            if head.startswith("train"):
                current = "train"
            elif head.startswith(("val", "test")):
                current = "test"
            else:
                raise DataError(path, f"unknown section {m.group(1)!r} (expected Training/Validation videos)", i)
            if current in parts:
                raise DataError(path, f"second '{m.group(1)}' section", i)
            parts[current] = []
            rest = m.group(2)
        elif current is None:
            raise DataError(path, "video ids before a 'Training videos:' heading", i)
        for tok in re.split(r"[,;\s]+", rest):
            tok = tok.strip().strip("'\"")
            for suffix in SKELETON_SUFFIXES:
                if tok.endswith(suffix):
                    tok = tok[: -len(suffix)]
            if tok:
                parts[current].append(tok)
    for part, heading in (("train", "Training videos:"), ("test", "Validation videos:")):
        if not parts.get(part):
            raise DataError(path, f"no '{heading}' section with video ids")
    both = set(parts["train"]) & set(parts["test"])
    if both:
        raise DataError(path, f"{len(both)} videos in both parts, e.g. {sorted(both)[0]}")
    return parts


def _benchmark_of(path: Path) -> str:
    name = path.name.lower()
    if "subject" in name or "sub" in name:
        return "xsub"
    if "view" in name:
        return "xview"
    raise DataError(path, "cannot tell the benchmark from the file name; use --xsub-split or --xview-split")


def find_folders(raw: Optional[Path], skeleton: Optional[Path] = None,
                 labels: Optional[Path] = None) -> Tuple[Path, Path]:
    """Locate the skeleton and label folders (given, or found by name under ``raw``)."""
    found = {}
    for key, given, word in (("skeleton", skeleton, "skeleton"), ("label", labels, "label")):
        if given is not None:
            found[key] = require_dir(given, f"{key} folder")
            continue
        if raw is None:
            raise DataError("--raw", f"give --raw or the {key} folder")
        cands = [p for p in _dirs_upto(raw, 2) if word in p.name.lower()]
        # keep folders that hold text files directly
        cands = [p for p in cands if any(q.suffix in SKELETON_SUFFIXES + LABEL_SUFFIXES
                                         for q in p.iterdir() if q.is_file())]
        if not cands:
            raise DataError(raw, f"no {key} folder found (a folder whose name contains '{word}'); "
                                 f"give it with --{'skeleton' if key == 'skeleton' else 'labels'}")
        if len(cands) > 1:
            names = ", ".join(str(p) for p in cands[:3])
            raise DataError(raw, f"several {key} folders ({names}); choose one with "
                                 f"--{'skeleton' if key == 'skeleton' else 'labels'}")
        found[key] = cands[0]
    return found["skeleton"], found["label"]


def _dirs_upto(root: Path, depth: int) -> List[Path]:
    """``root`` and its sub-folders down to ``depth`` levels (without listing deeper trees, which
    in a full PKU-MMD download hold millions of video frames)."""
    out, level = [root], [root]
    for _ in range(depth):
        nxt = []
        for d in level:
            try:
                nxt.extend(sorted(e for e in d.iterdir() if e.is_dir()))
            except OSError:
                continue
        out.extend(nxt)
        level = nxt
    return out


def find_split_files(raw: Optional[Path]) -> Dict[str, Path]:
    """Official split files found by name in ``raw`` or its sub-folders (``cross[-_]subject*.txt``,
    ``cross[-_]view*.txt``)."""
    out: Dict[str, Path] = {}
    if raw is None:
        return out
    files = [p for d in _dirs_upto(raw, 1) for p in sorted(d.glob("*.txt"))
             if p.name.lower().startswith("cross")]
    for p in files:
        name = p.name.lower().replace("-", "_")
        for key, bench in (("cross_subject", "xsub"), ("cross_view", "xview")):
            if name.startswith(key):
                if bench in out:
                    raise DataError(raw, f"several {key} split files ({out[bench].name}, {p.name}); "
                                         f"choose one with --{bench}-split")
                out[bench] = p
    return out


def _list_files(folder: Path, suffixes: Sequence[str]) -> Dict[str, Path]:
    out: Dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix in suffixes:
            if p.stem in out:
                raise DataError(p, f"two files for video {p.stem}")
            out[p.stem] = p
    return out


def _err(e: DataError) -> tuple:
    return (e.path, e.message, e.line)


def _load_video(job) -> dict:
    """Worker: read one video (and its labels); never raises DataError (returns it as a tuple)."""
    video, skel_path, label_path, kind, frames, long, pad, center, align = job
    res = {"video": video, "error": None, "label_errors": [], "frames": 0}
    try:
        x = read_skeleton(skel_path)
        if not np.any(x):
            raise DataError(skel_path, "no skeleton in any frame (all zeros)")
        res["frames"] = x.shape[1]
        if label_path is None:
            raise DataError(skel_path, "no label file for this video")
        intervals, errors = read_labels(label_path, num_frames=x.shape[1])
    except DataError as e:
        res["error"] = _err(e)
        return res
    res["label_errors"] = [_err(e) for e in errors]
    if center:
        x = center_frames(x, CENTER_JOINT)
    if align and align != "none":  # one rotation per video, from its first frame
        x = align_view(x, NTU25, align)
    if kind == "sequences":
        res["data"] = x
        res["intervals"] = [(lab, s, e, c) for _, lab, s, e, c in intervals]
        return res
    clips = []
    for line, lab, s, e, conf in intervals:
        clip = x[:, s:e]
        if not np.any(clip):
            res["label_errors"].append((str(label_path), "no skeleton in the labelled frames", line))
            continue
        data, n = fit_length(clip, frames, long, pad)
        clips.append({"k": line - 1, "line": line, "label": lab, "start": s, "end": e, "length": n,
                      "source_length": e - s, "confidence": conf, "data": data})
    res["clips"] = clips
    return res


def _view_of(video: str) -> str:
    suffix = video.rsplit("-", 1)[-1] if "-" in video else ""
    return suffix.upper() if suffix.upper() in ("L", "M", "R") else ""


def _make_splits(videos: Sequence[str], split_lists: Dict[str, Dict[str, List[str]]]) -> Dict[str, Dict[str, List[int]]]:
    """Benchmarks -> {"train": sample indices, "test": ...} from per-sample video ids."""
    out = {}
    for bench, parts in split_lists.items():
        train, test = set(parts["train"]), set(parts["test"])
        out[bench] = {"train": [i for i, v in enumerate(videos) if v in train],
                      "test": [i for i, v in enumerate(videos) if v in test]}
    if "xview" not in split_lists:
        out["xview"] = {"train": [i for i, v in enumerate(videos) if _view_of(v) in DEFAULT_XVIEW_TRAIN],
                        "test": [i for i, v in enumerate(videos) if _view_of(v) in DEFAULT_XVIEW_TEST]}
    return out


def prepare_pku(raw: Optional[str | os.PathLike], out: str | os.PathLike, *, part: int = 1,
                kind: Optional[str] = None, skeleton_dir=None, label_dir=None,
                split_files: Optional[Dict[str, str | os.PathLike]] = None, frames: int = DEFAULT_FRAMES,
                long: str = "resample", pad: str = "zero", center: bool = True, skip_bad: bool = False,
                workers: Optional[int] = None, progress: bool = True, log=print, overwrite: bool = False,
                align: Optional[str] = "z") -> Path:
    """Prepare PKU-MMD Part ``part`` (1 or 2) from its raw files into ``out``.

    Args:
        raw: the download folder (holding the skeleton and label folders, maybe split files).
        kind: ``"sequences"`` (untrimmed videos; Part I default) or ``"clips"`` (labelled
            actions, ``(N, 3, frames, 25, 2)``; Part II default).
        skeleton_dir, label_dir: the folders, when not found under ``raw``.
        split_files: ``{"xsub": path, "xview": path}``; missing ones are looked up under ``raw``.
        frames, long, pad: clip length and the policies of :func:`fit_length`.
        center: subtract person 1's spine-mid joint in every frame.
        align: ``"z"`` (default) or ``"y"``: rotate each video to a
            canonical view at its first frame, one rotation per video for both kinds (:func:`pcm3.skeleton.align_view`; PKU-MMD has a
            cross-view benchmark); None or ``"none"`` keeps the camera's orientation.
        skip_bad: leave bad videos / label lines out and list them in ``skipped.csv``.
        overwrite: ``out`` may be a prepared folder written by pcm3, replaced once the new one
            is complete (any other non-empty folder is refused, as is an ``out`` that is, lies
            in, or contains an input).

    Returns the output folder.
    """
    if part not in (1, 2):
        raise ValueError("part must be 1 or 2")
    kind = kind or ("sequences" if part == 1 else "clips")
    if kind not in ("sequences", "clips"):
        raise ValueError(f"unknown kind {kind!r}")
    raw = require_dir(raw) if raw is not None else None
    check_output_dir(out, "prepared", overwrite=overwrite,  # before reading anything
                     protect=[p for p in (raw, skeleton_dir, label_dir) if p is not None])
    skel_dir, lab_dir = find_folders(raw, Path(skeleton_dir) if skeleton_dir else None,
                                     Path(label_dir) if label_dir else None)
    given = {b: Path(p) for b, p in (split_files or {}).items() if p is not None}
    found = {b: p for b, p in find_split_files(raw).items() if b not in given}
    split_paths = {**found, **given}
    split_lists = {b: read_split_file(p) for b, p in sorted(split_paths.items())}
    protect = [p for p in (raw, skel_dir, lab_dir, *split_paths.values()) if p is not None]
    out = check_output_dir(out, "prepared", overwrite=overwrite, protect=protect)

    skels = _list_files(skel_dir, SKELETON_SUFFIXES)
    if not skels:
        raise DataError(skel_dir, "no skeleton files (*.txt)")
    labels = _list_files(lab_dir, LABEL_SUFFIXES)
    jobs = [(v, p, labels.get(v), kind, frames, long, pad, center, align) for v, p in skels.items()]
    bad = BadFiles(skip_bad)
    dataset = f"pku{part}"
    meta = {"units": "metres", "part": part,
            "centering": ("per frame: minus person 1 spine_mid (joint 2, 1-based), absent persons stay 0"
                          if center else "none (camera coordinates)"),
            "alignment": align_note(align),
            "split_files": {b: str(p) for b, p in split_paths.items()},
            "xview_default": None if "xview" in split_lists else
            "views M,R train / L test (PKU-MMD paper cross-view protocol)"}
    source = f"PKU-MMD Part {'I' * part} raw files: {skel_dir}, {lab_dir}"
    results = parallel_map(_load_video, jobs, workers=workers, desc=f"pku{part}", progress=progress)
    with contextlib.closing(results):  # closes the progress bar before an error is printed
        count = _write(out, kind, results, bad, jobs, frames, dataset, source, meta, split_lists, skel_dir,
                       dict(overwrite=overwrite, protect=protect))
    report = out / REPORT_NAME if bad.items else None
    _summary(log, out, count, bad, report, split_lists, skels, labels)
    return out


def _write(out, kind, results, bad, jobs, frames, dataset, source, meta, split_lists, skel_dir, opts) -> str:
    videos: List[str] = []
    if kind == "sequences":
        with PreparedWriter(out, kind="sequences", shape=(len(jobs), 3, NUM_JOINTS, NUM_PERSONS),
                            dataset=dataset, layout="ntu25", class_names=PKU_CLASSES, source=source,
                            extra_meta=meta, **opts) as w:
            for _, res in results:
                if not _accept(res, bad):
                    continue
                w.append(res["data"], name=res["video"], intervals=res["intervals"],
                         view=_view_of(res["video"]))
                videos.append(res["video"])
            if not videos:
                raise DataError(skel_dir, "no usable video")
            w.set_splits(_make_splits(videos, split_lists))
            bad.report(w.tmp)  # inside the folder as it is written: the marker records it as pcm3's
        return f"{len(videos)} videos"
    return _write_clips(out, results, bad, frames, dataset, source, meta, split_lists, skel_dir, opts)


def _accept(res: dict, bad: BadFiles) -> bool:
    """Pass a worker's errors to ``bad`` (raising in the default mode); False if the video is out."""
    if res["error"] is not None:
        bad.handle(DataError(*res["error"]))
        return False
    for e in res["label_errors"]:
        bad.handle(DataError(*e))
    return True


def _write_clips(out: Path, results: Iterable, bad: BadFiles, frames: int, dataset: str, source: str,
                 meta: dict, split_lists, skel_dir: Path, opts: dict) -> str:
    """Spool clips to a temporary file as they arrive, then write the prepared folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: List[dict] = []
    clip_shape = (3, frames, NUM_JOINTS, NUM_PERSONS)
    try:
        spool_file = tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}.spool.")
    except OSError as e:
        raise write_error(out, e, "a temporary file beside the output") from None
    with spool_file as spool:
        for _, res in results:
            if not _accept(res, bad):
                continue
            for c in res["clips"]:
                try:
                    spool.write(np.ascontiguousarray(c.pop("data"), dtype=np.float32).tobytes())
                except OSError as e:
                    raise write_error(out, e, "the clips' temporary file") from None
                rows.append({"video": res["video"], **c})
        if not rows:
            raise DataError(skel_dir, "no usable clip")
        spool.flush()
        data = np.memmap(spool, dtype=np.float32, mode="r", shape=(len(rows),) + clip_shape)
        with PreparedWriter(out, kind="clips", shape=(len(rows),) + clip_shape, dataset=dataset,
                            layout="ntu25", class_names=PKU_CLASSES, source=source,
                            extra_meta={**meta, "frames": frames}, **opts) as w:
            for i, r in enumerate(rows):
                w.set(i, data[i], label=r["label"], length=r["length"], name=f"{r['video']}_{r['k']:02d}",
                      video=r["video"], view=_view_of(r["video"]), start=r["start"], end=r["end"],
                      source_length=r["source_length"], confidence=r["confidence"])
            w.set_splits(_make_splits([r["video"] for r in rows], split_lists))
            bad.report(w.tmp)
        del data
    return f"{len(rows)} clips"


def _summary(log, out, count, bad, report, split_lists, skels, labels) -> None:
    log(f"wrote {out}: {count}")
    if "xsub" not in split_lists:
        log("note: no cross-subject split file given or found (--xsub-split FILE): no 'xsub' benchmark written")
    if "xview" not in split_lists:
        log("note: no cross-view split file: 'xview' uses views M,R for training and L for testing")
    for bench, parts in split_lists.items():
        listed = set(parts["train"]) | set(parts["test"])
        missing = len(listed - set(skels))
        unlisted = len(set(skels) - listed)
        if missing or unlisted:
            log(f"note: {bench} split: {missing} listed videos not found, {unlisted} videos in neither part")
    extra = len(set(labels) - set(skels))
    if extra:
        log(f"note: {extra} label files without a skeleton file were ignored")
    if report:
        log(f"{bad.summary()}; see {report}")


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def add_prepare_parsers(sub) -> None:
    for part in (1, 2):
        default_kind = "sequences" if part == 1 else "clips"
        p = sub.add_parser(
            f"pku{part}", help=f"PKU-MMD Part {'I' * part} from its raw skeleton and label files",
            description=f"Prepare PKU-MMD Part {'I' * part}: {'untrimmed videos with action intervals (sequences)' if part == 1 else 'labelled action clips'} "
                        "by default. Clips are (N, 3, 300, 25, 2), centred per frame on person 1's spine-mid joint. "
                        "Benchmarks xsub / xview from the official split files (found under --raw or given); "
                        "without a cross-view file xview trains on views M,R and tests on L.")
        p.add_argument("--raw", help="the PKU-MMD download folder (holding the skeleton and label folders)")
        p.add_argument("--out", required=True, help="output prepared folder")
        p.add_argument("--skeleton", help="the skeleton folder, if not found under --raw")
        p.add_argument("--labels", help="the label folder, if not found under --raw")
        p.add_argument("--kind", choices=("sequences", "clips"), default=None,
                       help=f"untrimmed videos or labelled clips (default {default_kind})")
        if part == 1:
            p.add_argument("--trimmed", action="store_true", help="write the labelled clips (same as --kind clips)")
        else:
            p.add_argument("--untrimmed", action="store_true", help="write whole videos (same as --kind sequences)")
        p.add_argument("--split-file", action="append", default=[], metavar="FILE",
                       help="an official split file; the benchmark comes from its name (subject -> xsub, view -> xview)")
        p.add_argument("--xsub-split", metavar="FILE", help="the official cross-subject split file")
        p.add_argument("--xview-split", metavar="FILE", help="the official cross-view split file")
        add_clip_options(p, align_default="z")
        p.set_defaults(func=_run, part=part)


def _run(args) -> int:
    kind = args.kind
    if getattr(args, "trimmed", False):
        kind = "clips"
    if getattr(args, "untrimmed", False):
        kind = "sequences"
    splits: Dict[str, Path] = {}
    for f in args.split_file:
        path = Path(f)
        if not path.is_file():  # named before its benchmark is guessed from the name
            raise DataError(path, "is a folder, expected a split file (--split-file)" if path.is_dir()
                            else "no such split file (--split-file)")
        splits[_benchmark_of(path)] = path
    if args.xsub_split:
        splits["xsub"] = Path(args.xsub_split)
    if args.xview_split:
        splits["xview"] = Path(args.xview_split)
    if args.raw is None and not (args.skeleton and args.labels):
        raise DataError("--raw", "give --raw, or both --skeleton and --labels")
    if args.frames < 1:
        raise DataError("--frames", "must be at least 1")
    prepare_pku(args.raw, args.out, part=args.part, kind=kind, skeleton_dir=args.skeleton,
                label_dir=args.labels, split_files=splits, frames=args.frames, long=args.long,
                pad=args.pad, center=not args.no_center, skip_bad=args.skip_bad, workers=args.workers,
                align=args.align, progress=not args.quiet, log=lambda s: print(s, file=sys.stderr), overwrite=args.overwrite)
    print_prepared_summary(args.out)
    return 0
