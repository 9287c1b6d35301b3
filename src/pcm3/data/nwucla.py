"""Northwestern-UCLA Multiview Action3D (NW-UCLA): the CTR-GCN json release -> a prepared folder.

Input: a folder (searched recursively; CTR-GCN calls it ``all_sqe``) of json files, one per
sample, as the CTR-GCN release ships them::

    {"file_name": "a01_s01_e00_v01", "skeletons": [T][20][3], "label": 1}

``aAA_sSS_eEE_vVV`` = action, subject, episode, view; ``label`` is 1..10, the actions
a01..a06, a08, a09, a11, a12 in that order (checked against the file name). Joints are in
the Kinect v1 SDK order (layout ``kinect_v1``); coordinates are kept in the file's units
(metres, Kinect v1 camera space).

Output: ``kind="clips"``, ``(N, 3, T=300, 20, 1)``. NW-UCLA clips are short (mostly well under
300 frames), so T=300 keeps every frame and matches the other data sets; longer clips are
resampled to T (``--long crop`` keeps the centre T frames) with the original length in
``samples.csv`` ``source_length``; shorter ones are zero-padded (``--pad repeat`` repeats them).
``lengths.npy`` holds the valid frames stored. Centring as the NTU recipe: the spine joint
(joint 2, 1-based) is subtracted in every frame (``--no-center`` keeps camera coordinates).

Benchmark ``xview`` (the usual NW-UCLA protocol): views 1 and 2 train, view 3 tests.

Bad input (missing path, unreadable or invalid json, a missing key, ``skeletons`` not
``[T][20][3]``, no frames, NaN/inf, a label outside 1..10 or disagreeing with the file name, a
file name that is not ``aAA_sSS_eEE_vVV``) raises :class:`~pcm3.errors.DataError` naming the
file (and the json line where there is one); ``--skip-bad`` leaves such files out and lists them
in ``skipped.csv``.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from pcm3.data.common import (align_note, DEFAULT_FRAMES, REPORT_NAME, BadFiles, add_clip_options, center_frames, fit_length, iter_files,
                              parallel_map, print_prepared_summary, read_text, require_dir)
from pcm3.data.prepared import PreparedWriter
from pcm3.errors import DataError
from pcm3.outputs import check_output_dir
from pcm3.skeleton import KINECT_V1, align_view

NWUCLA_CLASSES: Tuple[str, ...] = (
    "pick up with one hand", "pick up with two hands", "drop trash", "walk around", "sit down",
    "stand up", "donning", "doffing", "throw", "carry",
)
# The action ids of the file names, in label order (label = index + 1).
NWUCLA_ACTION_IDS: Tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
TRAIN_VIEWS = (1, 2)
TEST_VIEWS = (3,)
NUM_JOINTS = 20
_NAME = re.compile(r"^a(\d+)_s(\d+)_e(\d+)_v(\d+)$")


def read_sample(path) -> dict:
    """Read one json sample: ``{"name", "x" (C=3, T, V=20, M=1) float32, "label" (0-based), "action",
    "subject", "episode", "view"}``; raises :class:`DataError` on any problem."""
    path = Path(path)
    text = read_text(path, "file")
    if not text.strip():
        raise DataError(path, "empty file")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid json ({e.msg})", e.lineno) from None
    if not isinstance(obj, dict):
        raise DataError(path, "expected a json object with file_name, skeletons, label")
    for key in ("skeletons", "label"):
        if key not in obj:
            raise DataError(path, f"missing key {key!r}")
    name = str(obj.get("file_name", path.stem))
    m = _NAME.match(name)
    if not m:
        raise DataError(path, f"file_name {name!r} is not aAA_sSS_eEE_vVV")
    action, subject, episode, view = (int(g) for g in m.groups())
    try:
        x = np.asarray(obj["skeletons"], dtype=np.float64)
    except (ValueError, TypeError):
        raise DataError(path, "skeletons is not a numeric [T][20][3] array (ragged or non-numeric)") from None
    if x.ndim != 3 or x.shape[1:] != (NUM_JOINTS, 3):
        raise DataError(path, f"skeletons has shape {list(x.shape)}, expected [T][{NUM_JOINTS}][3]")
    if x.shape[0] == 0:
        raise DataError(path, "no frames")
    if not np.isfinite(x).all():
        frame = int(np.argmin(np.isfinite(x).all(axis=(1, 2))))
        raise DataError(path, f"non-finite coordinates (NaN or inf) in frame {frame + 1}")
    if not np.any(x):
        raise DataError(path, "all coordinates are zero")
    label = obj["label"]
    if isinstance(label, bool) or not isinstance(label, (int, float)) or label != int(label) \
            or not 1 <= int(label) <= len(NWUCLA_CLASSES):
        raise DataError(path, f"label {label!r} outside 1..{len(NWUCLA_CLASSES)}")
    label = int(label)
    if action in NWUCLA_ACTION_IDS and NWUCLA_ACTION_IDS.index(action) + 1 != label:
        raise DataError(path, f"label {label} disagrees with action a{action:02d} of {name} "
                              f"(expected {NWUCLA_ACTION_IDS.index(action) + 1})")
    if action not in NWUCLA_ACTION_IDS:
        raise DataError(path, f"unknown action a{action:02d} in {name}")
    if view not in TRAIN_VIEWS + TEST_VIEWS:
        raise DataError(path, f"view v{view:02d} is not 1..3")
    data = np.ascontiguousarray(x.astype(np.float32).transpose(2, 0, 1)[..., None])  # (C, T, V, 1)
    return {"name": name, "x": data, "label": label - 1, "action": action, "subject": subject,
            "episode": episode, "view": view}


def _load(job):
    path, frames, long, pad, center, align = job
    try:
        s = read_sample(path)
    except DataError as e:
        return {"error": (e.path, e.message, e.line)}
    x = center_frames(s["x"], KINECT_V1.center) if center else s["x"]
    if align and align != "none":
        x = align_view(x, KINECT_V1, align)
    s["source_length"] = x.shape[1]
    s["x"], s["length"] = fit_length(x, frames, long, pad)
    s["error"] = None
    return s


def prepare_nwucla(raw, out, *, frames: int = DEFAULT_FRAMES, long: str = "resample", pad: str = "zero",
                   center: bool = True, skip_bad: bool = False, workers: Optional[int] = None,
                   progress: bool = True, log=print, overwrite: bool = False, align: Optional[str] = "z") -> Path:
    """Prepare NW-UCLA from the CTR-GCN json files under ``raw`` into ``out`` (see module doc).

    ``out`` must be new or empty, or (``overwrite``) a prepared folder written by pcm3; it may
    not be, lie in, or contain ``raw``.
    """
    raw = require_dir(raw)
    out = check_output_dir(out, "prepared", overwrite=overwrite, protect=[raw])
    files = iter_files(raw, "*.json")
    if not files:
        raise DataError(raw, "no .json files (expected the CTR-GCN NW-UCLA release, e.g. all_sqe/)")
    bad = BadFiles(skip_bad)
    samples: List[dict] = []
    jobs = [(p, frames, long, pad, center, align) for p in files]
    with contextlib.closing(parallel_map(_load, jobs, workers=workers, desc="nwucla", progress=progress)) as results:
        for _, s in results:
            if s["error"] is not None:
                bad.handle(DataError(*s["error"]))
                continue
            samples.append(s)
    if not samples:
        raise DataError(raw, "no usable sample")
    names = [s["name"] for s in samples]
    dup = {n for n, k in Counter(names).items() if k > 1}
    if dup:
        raise DataError(raw, f"sample {sorted(dup)[0]} appears in more than one file")
    meta = {"units": "metres (as in the files)", "frames": frames,
            "centering": "per frame: minus the spine joint (joint 2, 1-based)" if center else "none",
            "alignment": align_note(align)}
    with PreparedWriter(out, kind="clips", shape=(len(samples), 3, frames, NUM_JOINTS, 1), dataset="nwucla",
                        layout=KINECT_V1.name, class_names=NWUCLA_CLASSES,
                        source=f"NW-UCLA json files (CTR-GCN release): {raw}", extra_meta=meta,
                        overwrite=overwrite, protect=[raw]) as w:
        for i, s in enumerate(samples):
            w.set(i, s["x"], label=s["label"], length=s["length"], name=s["name"], action=s["action"],
                  subject=s["subject"], episode=s["episode"], view=s["view"], source_length=s["source_length"])
        w.set_splits({"xview": {"train": [i for i, s in enumerate(samples) if s["view"] in TRAIN_VIEWS],
                                "test": [i for i, s in enumerate(samples) if s["view"] in TEST_VIEWS]}})
        bad.report(w.tmp)  # inside the folder as it is written: the marker records it as pcm3's
    report = out / REPORT_NAME if bad.items else None
    log(f"wrote {out}: {len(samples)} clips")
    if report:
        log(f"{bad.summary()}; see {report}")
    return out


def add_prepare_parsers(sub) -> None:
    p = sub.add_parser("nwucla", help="NW-UCLA from the CTR-GCN json release",
                       description="Prepare NW-UCLA (json files {file_name, skeletons [T][20][3], label}) into "
                                   "clips (N, 3, 300, 20, 1), centred per frame on the spine joint; benchmark "
                                   "xview: views 1,2 train, view 3 test.")
    p.add_argument("--raw", required=True, help="folder of the json files (e.g. all_sqe)")
    p.add_argument("--out", required=True, help="output prepared folder")
    add_clip_options(p, workers_default=None, center_help="keep camera coordinates (no centring)", align_default="z")
    p.set_defaults(func=_run)


def _run(args) -> int:
    if args.frames < 1:
        raise DataError("--frames", "must be at least 1")
    prepare_nwucla(args.raw, args.out, frames=args.frames, long=args.long, pad=args.pad,
                   center=not args.no_center, skip_bad=args.skip_bad, workers=args.workers, align=args.align,
                   progress=not args.quiet, log=lambda s: print(s, file=sys.stderr), overwrite=args.overwrite)
    print_prepared_summary(args.out)
    return 0
