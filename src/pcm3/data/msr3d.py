"""MSR Action3D: the ``aAA_sSS_eEE_skeleton3D.txt`` files -> a prepared folder.

Input: 20 lines per frame, ``x y z confidence`` (world coordinates). The file list
``files_used_in_cvpr12_paper.txt`` (557 of the 567 recordings; the others are broken), when
present under ``--raw``, selects the samples; ``--all`` (or its absence) takes every file, and
broken recordings (all zeros) are then reported as bad files.

Joint order (layout ``msr20``, registered in :mod:`pcm3.skeleton`). The files do not document
it; it was established from the 557 listed recordings (21,825 tracked frames) in
``shared/data/msr_action3d``:

* **Rigid pairs = bones.** For every pair of joints, the standard deviation over time of
  their distance (within a recording, averaged over recordings) is 45.7 mm at the median over
  all pairs. The pairs chosen as bones, with mean length and that std: neck-spine 0.276 m /
  0.1 mm, shoulders-neck 0.220 m / 0.7 and 1.7 mm, hips-hip_center 0.222 m / 0.7 mm,
  wrist-hand 0.070 m / 0.0 mm, knee-ankle 0.426 m / 0.2 mm, ankle-foot 0.169 m / 0.1 mm,
  shoulder-elbow 0.275 m / 4.9 mm, elbow-wrist 0.293 m / 5.2 mm, hip-knee 0.542 m / 7.3 and
  9.8 mm, hip_center-spine 0.219 m / 13.5 mm, head-neck 0.235 m / 17.7 mm (the head is the
  loosest joint of the tracker). Left and right limbs come in index pairs (1,2), (5,6),
  (8,9), (10,11), (12,13), (14,15), (16,17), (18,19) (1-based) with equal lengths.
* **Height.** Joint 20 is the highest joint in 86% of all frames (the others are the
  arm-raising actions, where a hand is higher), 1.58 m above the feet (median): the head.
  Below it, by mean height: neck (3), shoulders (1, 2), spine (4), elbows (8, 9), hips
  (5, 6, 7), wrists/hands, knees (14, 15), ankles (16, 17), feet (18, 19).
* **Left/right.** In a01 "high arm wave" the joints that move most (std of the position
  relative to joint 7, mean over the recordings) are 13 (782 mm), 11 (700 mm) and 9
  (370 mm), the next being 12 at 117 mm; in a02 "horizontal arm wave" the same three; in
  a14 "forward kick" 19, 17, 15 (571, 543, 331 mm). The dataset asked subjects to use the
  right arm or leg for one-limb actions, so the even-indexed limb joints are the right side.
  Right-side joints have the larger x in 98.6% of frames, i.e. x grows to the subject's right
  when facing the camera -- the Kinect camera-space handedness, as in NTU and PKU-MMD.

Resulting order (1-based): 1 left shoulder, 2 right shoulder, 3 neck (shoulder centre),
4 spine, 5 left hip, 6 right hip, 7 hip centre, 8 left elbow, 9 right elbow, 10 left wrist,
11 right wrist, 12 left hand, 13 right hand, 14 left knee, 15 right knee, 16 left ankle,
17 right ankle, 18 left foot, 19 right foot, 20 head. Body parts and parents follow the
Kinect v1 layout (``kinect_v1``); :data:`MSR20_TO_KINECT_V1` reorders joints into it.

Units and axes: metres already (median head-to-feet height 1.58 m, forearm 0.29 m); y is up
(the mean unit vector from the feet to the head is (0.005, 0.992, -0.039)); z is the depth
from the camera (subjects at 2.6 m, hands 0.2 m nearer than the spine). These are the NTU /
Kinect v2 conventions, so no axis change is made. The confidence column is dropped.

Frames where every joint is zero (tracking lost; 19 of the 567 recordings have some, in the
middle of the clip as well) are dropped; ``samples.csv`` ``untracked`` counts them. Then, as
the NTU recipe, the spine joint (joint 4, the layout's centre) is subtracted in every frame
(``--no-center`` keeps world coordinates). Output ``kind="clips"``, ``(N, 3, 300, 20, 1)``
zero-padded (the longest listed recording has 76 tracked frames; longer ones are resampled,
see :func:`pcm3.data.common.fit_length`). Benchmark ``xsub``: subjects 1,3,5,7,9 train, 2,4,6,8,10
test.

Bad input (missing path, empty file, a line without 4 values, a line count that is not a
multiple of 20, non-numeric, NaN/inf, an all-zero recording, a file name that is not
``aAA_sSS_eEE_skeleton3D.txt`` with action 1..20, a listed recording that is missing) raises
:class:`~pcm3.errors.DataError` naming the file and line; ``--skip-bad`` leaves such files out
and lists them in ``skipped.csv``.
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from pcm3.data.common import (align_note, DEFAULT_FRAMES, REPORT_NAME, BadFiles, add_clip_options, center_frames, fit_length, parallel_map,
                              print_prepared_summary, read_table, read_text, require_dir)
from pcm3.data.prepared import PreparedWriter
from pcm3.errors import DataError
from pcm3.outputs import check_output_dir
from pcm3.skeleton import KINECT_V1, MSR20, align_view

MSR_CLASSES: Tuple[str, ...] = (
    "high arm wave", "horizontal arm wave", "hammer", "hand catch", "forward punch", "high throw",
    "draw x", "draw tick", "draw circle", "hand clap", "two hand wave", "side boxing", "bend",
    "forward kick", "side kick", "jogging", "tennis swing", "tennis serve", "golf swing",
    "pick up and throw",
)
# kinect_v1 joint k is msr20 joint MSR20_TO_KINECT_V1[k]: x_kinect = x_msr[..., MSR20_TO_KINECT_V1, :]
MSR20_TO_KINECT_V1: Tuple[int, ...] = tuple(MSR20.joint_names.index(
    {"shoulder_center": "neck"}.get(n, n)) for n in KINECT_V1.joint_names)
TRAIN_SUBJECTS = (1, 3, 5, 7, 9)
TEST_SUBJECTS = (2, 4, 6, 8, 10)
NUM_JOINTS = 20
FILE_LIST = "files_used_in_cvpr12_paper.txt"
_NAME = re.compile(r"^a(\d+)_s(\d+)_e(\d+)_skeleton3D\.txt$")


def read_sequence(path) -> Tuple[np.ndarray, int]:
    """Read one recording: ``(C=3, T, V=20, M=1)`` float32 of its tracked frames, and the number
    of untracked (all-zero) frames dropped. Raises :class:`DataError` on any problem."""
    rows = read_table(path, 4, "values (x y z confidence)")
    if rows.shape[0] % NUM_JOINTS:
        raise DataError(path, f"{rows.shape[0]} lines, not a multiple of {NUM_JOINTS} (truncated frame?)",
                        rows.shape[0] - rows.shape[0] % NUM_JOINTS + 1)
    x = rows[:, :3].reshape(-1, NUM_JOINTS, 3)
    tracked = np.any(x != 0, axis=(1, 2))
    if not tracked.any():
        raise DataError(path, "all-zero recording (broken)")
    x = x[tracked].astype(np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[..., None]), int((~tracked).sum())


def parse_name(path) -> Tuple[int, int, int]:
    """``(action, subject, episode)`` from ``aAA_sSS_eEE_skeleton3D.txt``."""
    m = _NAME.match(Path(path).name)
    if not m:
        raise DataError(path, "file name is not aAA_sSS_eEE_skeleton3D.txt")
    action, subject, episode = (int(g) for g in m.groups())
    if not 1 <= action <= len(MSR_CLASSES):
        raise DataError(path, f"action a{action:02d} outside 1..{len(MSR_CLASSES)}")
    return action, subject, episode


def _load(job):
    path, frames, long, pad, center, align = job
    try:
        action, subject, episode = parse_name(path)
        x, untracked = read_sequence(path)
    except DataError as e:
        return {"error": (e.path, e.message, e.line)}
    if center:
        x = center_frames(x, MSR20.center)
    if align and align != "none":
        x = align_view(x, MSR20, align)
    source_length = x.shape[1]
    x, length = fit_length(x, frames, long, pad)
    return {"error": None, "name": Path(path).name[: -len("_skeleton3D.txt")], "x": x, "length": length,
            "source_length": source_length, "untracked": untracked, "action": action,
            "subject": subject, "episode": episode}


def _select(raw: Path, use_list: bool, bad: BadFiles) -> Tuple[List[Path], Optional[Path]]:
    files = sorted(p for p in raw.rglob("*_skeleton3D.txt") if p.is_file())
    lists = sorted(raw.rglob(FILE_LIST)) if use_list else []
    if not lists:
        return files, None
    listing = lists[0]
    wanted = [w.strip() for w in read_text(listing, "file list").split() if w.strip()]
    if not wanted:
        raise DataError(listing, "empty file list")
    by_name = {p.name[: -len("_skeleton3D.txt")]: p for p in files}
    chosen = []
    for i, w in enumerate(wanted):
        w = w[: -len("_skeleton3D.txt")] if w.endswith("_skeleton3D.txt") else w
        if w in by_name:
            chosen.append(by_name[w])
        else:
            bad.handle(DataError(listing, f"listed recording {w} not found", None))
    return chosen, listing


def prepare_msr3d(raw, out, *, use_list: bool = True, frames: int = DEFAULT_FRAMES, long: str = "resample",
                  pad: str = "zero", center: bool = True, skip_bad: bool = False, workers: Optional[int] = 1,
                  progress: bool = True, log=print, overwrite: bool = False, align: Optional[str] = None) -> Path:
    """Prepare MSR Action3D from ``raw`` into ``out`` (see the module doc).

    ``use_list``: keep only the recordings named in ``files_used_in_cvpr12_paper.txt`` when
    that file is under ``raw``. ``align``: ``"z"``/``"y"`` rotates every sample to a canonical
    view (:func:`pcm3.skeleton.align_view`); None (default: one camera, cross-subject only)
    keeps the recorded orientation. ``workers`` defaults to 1: the files are small and one process
    reads all 567 in about a second. ``out`` must be new or empty, or (``overwrite``) a prepared
    folder written by pcm3; it may not be, lie in, or contain ``raw``.
    """
    raw = require_dir(raw)
    out = check_output_dir(out, "prepared", overwrite=overwrite, protect=[raw])
    bad = BadFiles(skip_bad)
    files, listing = _select(raw, use_list, bad)
    if not files:
        raise DataError(raw, "no *_skeleton3D.txt files")
    samples = []
    jobs = [(p, frames, long, pad, center, align) for p in files]
    with contextlib.closing(parallel_map(_load, jobs, workers=workers, desc="msr3d", progress=progress)) as results:
        for _, s in results:
            if s["error"] is not None:
                bad.handle(DataError(*s["error"]))
                continue
            samples.append(s)
    if not samples:
        raise DataError(raw, "no usable recording")
    # fps: the recordings' rate (15 frames per second, Li, Zhang, Liu 2010)
    meta = {"units": "metres", "frames": frames, "fps": 15, "file_list": str(listing) if listing else None,
            "centering": "per frame: minus the spine joint (joint 4, 1-based)" if center else "none",
            "alignment": align_note(align),
            "axes": "x to the subject's right (facing the camera), y up, z depth (as recorded)"}
    with PreparedWriter(out, kind="clips", shape=(len(samples), 3, frames, NUM_JOINTS, 1), dataset="msr3d",
                        layout=MSR20.name, class_names=MSR_CLASSES, source=f"MSR Action3D skeleton3D files: {raw}",
                        extra_meta=meta, overwrite=overwrite, protect=[raw]) as w:
        for i, s in enumerate(samples):
            w.set(i, s["x"], label=s["action"] - 1, length=s["length"], name=s["name"], action=s["action"],
                  subject=s["subject"], episode=s["episode"], source_length=s["source_length"],
                  untracked=s["untracked"])
        w.set_splits({"xsub": {"train": [i for i, s in enumerate(samples) if s["subject"] in TRAIN_SUBJECTS],
                               "test": [i for i, s in enumerate(samples) if s["subject"] in TEST_SUBJECTS]}})
        bad.report(w.tmp)  # inside the folder as it is written: the marker records it as pcm3's
    report = out / REPORT_NAME if bad.items else None
    log(f"wrote {out}: {len(samples)} clips" + (f" (listed in {listing.name})" if listing else ""))
    if report:
        log(f"{bad.summary()}; see {report}")
    return out


def add_prepare_parsers(sub) -> None:
    p = sub.add_parser("msr3d", help="MSR Action3D from its *_skeleton3D.txt files",
                       description="Prepare MSR Action3D into clips (N, 3, 300, 20, 1) in the msr20 layout, "
                                   "centred per frame on the spine joint; benchmark xsub: subjects 1,3,5,7,9 "
                                   "train. Uses files_used_in_cvpr12_paper.txt when present.")
    p.add_argument("--raw", required=True, help="folder of the aAA_sSS_eEE_skeleton3D.txt files")
    p.add_argument("--out", required=True, help="output prepared folder")
    p.add_argument("--all", action="store_true", help=f"ignore {FILE_LIST}: take every file (broken ones are bad files)")
    add_clip_options(p, workers_default=1, center_help="keep world coordinates (no centring)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    if args.frames < 1:
        raise DataError("--frames", "must be at least 1")
    prepare_msr3d(args.raw, args.out, use_list=not args.all, frames=args.frames, long=args.long, pad=args.pad,
                  center=not args.no_center, skip_bad=args.skip_bad, workers=args.workers, align=args.align,
                  progress=not args.quiet, log=lambda s: print(s, file=sys.stderr), overwrite=args.overwrite)
    print_prepared_summary(args.out)
    return 0
