"""NTU RGB+D 60 / 120: read raw ``.skeleton`` files, preprocess them as the field does, prepare.

Reading (:func:`read_skeleton`) is one bulk read of the file: it is split into lines in C,
one ``bytes.translate`` pass checks that every value is made of number characters, a short
Python walk over the frame and body headers (3 lines per body per frame) checks the
structure, a few numpy passes count the values on every line, and the joint lines are only
split and their x, y, z converted. Every malformed file raises :class:`pcm3.errors.DataError`
naming the file and the 1-based line.

Preprocessing (:func:`preprocess`) follows the recipe of the skeleton-contrast / CMD / PCM3 /
2s-AGCN line of work (``ntu_gendata.py`` + ``preprocess.pre_normalization``; method doc,
section 1). Where this module deviates, it says so in the docstring of the step:

1. bodies: the two with the largest motion energy (:func:`motion_energy`) among the first
   four bodies listed in each frame ("slots", as the field does), or among tracking ids;
2. frames: leading and trailing frames where none of the kept bodies is present are dropped,
   the clip is cut to ``max_frames``; its frame count is the sample's true length;
3. centring on person 1's spine-middle joint, frame by frame (:func:`center_on_spine`);
4. rotation so person 1's hip -> spine points along +z, then left -> right shoulder along +x,
   both measured at person 1's first frame (:func:`align_to_axes`);
5. padding to ``max_frames`` by repeating the clip (:func:`pad_clip`).

Output per sample: ``(C, T, V, M) = (3, 300, 25, 2)`` float32, metres, camera axes rotated.
:func:`prepare_ntu` runs this over a whole download in worker processes, caching finished
work in ``<out>.work/`` so an interrupted run resumes, and writes a prepared folder
(:mod:`pcm3.data.prepared`) atomically.

Differences from the field's code, all deliberate and small:

* empty frames are handled for the sample as a whole, not per person (see :func:`trim_frames`);
  identical output whenever the kept persons start and end together (all 5 real test files);
* the true length is the valid clip's frame count; skeleton-contrast's ``num_frame`` is the
  file's frame count, empty frames included;
* a clip longer than ``max_frames`` is cut after dropping its leading empty frames (the field
  cuts the file's frames first; this matters only for files longer than ``max_frames``);
* a file is rejected when it is malformed (the field's reader crashes or silently misreads),
  and empty samples are reported, never written as zeros.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import numpy as np

from pcm3.data.common import (REPORT_NAME, BadFiles, add_output_options, iter_files, parallel_map,
                              print_prepared_summary, read_text, require_dir)
from pcm3.data.prepared import PreparedWriter
from pcm3.errors import ConfigError, DataError
from pcm3.outputs import MARKER, overlaps, check_output_dir, folder_kind, write_error, write_marker
from pcm3.io import atomic_path

NUM_JOINTS = 25
BODY_VALUES = 10        # values on a body-info line (tracking id first)
JOINT_VALUES = 12       # x y z depthX depthY colorX colorY orientW orientX orientY orientZ state
MAX_FRAMES = 300
NUM_PERSONS = 2
KINECT_SLOTS = 4        # the field reads at most the first 4 bodies listed in each frame
SHARD_SIZE = 512        # samples per cache shard in ``<out>.work/``
BODY_MODES = ("slot", "id")

# 0-based joints of the NTU25 layout used by the recipe.
SPINE_BASE, SPINE_MID, LEFT_SHOULDER, RIGHT_SHOULDER = 0, 1, 4, 8

# The official action names (github.com/shahroudy/NTURGB-D), A1..A120; label = action - 1.
NTU_ACTIONS: Tuple[str, ...] = (
    "drink water", "eat meal/snack", "brushing teeth", "brushing hair", "drop", "pickup",
    "throw", "sitting down", "standing up (from sitting position)", "clapping", "reading",
    "writing", "tear up paper", "wear jacket", "take off jacket", "wear a shoe",
    "take off a shoe", "wear on glasses", "take off glasses", "put on a hat/cap",
    "take off a hat/cap", "cheer up", "hand waving", "kicking something",
    "put something inside pocket / take out something from pocket",
    "hopping (one foot jumping)", "jump up", "make a phone call/answer phone",
    "playing with phone/tablet", "typing on a keyboard", "pointing to something with finger",
    "taking a selfie", "check time (from watch)", "rub two hands together", "nod head/bow",
    "shake head", "wipe face", "salute", "put the palms together",
    "cross hands in front (say stop)", "sneeze/cough", "staggering", "falling",
    "touch head (headache)", "touch chest (stomachache/heart pain)", "touch back (backache)",
    "touch neck (neckache)", "nausea or vomiting condition",
    "use a fan (with hand or paper)/feeling warm", "punching/slapping other person",
    "kicking other person", "pushing other person", "pat on back of other person",
    "point finger at the other person", "hugging other person",
    "giving something to other person", "touch other person's pocket", "handshaking",
    "walking towards each other", "walking apart from each other",
    # NTU RGB+D 120 only
    "put on headphone", "take off headphone", "shoot at the basket", "bounce ball",
    "tennis bat swing", "juggling table tennis balls", "hush (quite)", "flick hair",
    "thumb up", "thumb down", "make ok sign", "make victory sign", "staple book",
    "counting money", "cutting nails", "cutting paper (using scissors)", "snapping fingers",
    "open bottle", "sniff (smell)", "squat down", "toss a coin", "fold paper", "ball up paper",
    "play magic cube", "apply cream on face", "apply cream on hand back", "put on bag",
    "take off bag", "put something into a bag", "take something out of a bag", "open a box",
    "move heavy objects", "shake fist", "throw up cap/hat", "hands up (both hands)",
    "cross arms", "arm circles", "arm swings", "running on the spot",
    "butt kicks (kick backward)", "cross toe touch", "side kick", "yawn", "stretch oneself",
    "blow nose", "hit other person with something", "wield knife towards other person",
    "knock over other person (hit with body)", "grab other person's stuff",
    "shoot at other person with a gun", "step on foot", "high-five", "cheers and drink",
    "carry something with other person", "take a photo of other person",
    "follow other person", "whisper in other person's ear",
    "exchange things with other person",
    "support somebody with one's hand (someone is sick, help him to walk)",
    "finger-guessing game (playing rock-paper-scissors)",
)

# Benchmarks (method doc, section 1).
NTU60_XSUB_TRAIN_SUBJECTS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38))
NTU120_XSUB_TRAIN_SUBJECTS = NTU60_XSUB_TRAIN_SUBJECTS | frozenset(
    (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85,
     86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103))
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))


@dataclass(frozen=True)
class Variant:
    """One NTU data set: which files belong to it and its benchmarks."""

    name: str
    num_actions: int
    max_setup: int
    benchmarks: Tuple[str, ...]


VARIANTS: Dict[str, Variant] = {
    "ntu60": Variant("ntu60", num_actions=60, max_setup=17, benchmarks=("xsub", "xview")),
    "ntu120": Variant("ntu120", num_actions=120, max_setup=32, benchmarks=("xsub", "xset")),
}


# ----------------------------------------------------------------------------- file names

_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


class SampleName(NamedTuple):
    """The fields of an NTU sample name ``SsssCcccPpppRrrrAaaa`` (all 1-based)."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int


def parse_name(name: str) -> Optional[SampleName]:
    """Fields of a sample name (``S001C002P003R002A013``, with or without ``.skeleton``).

    Returns None when ``name`` is not an NTU sample name.
    """
    stem = name[:-len(".skeleton")] if name.endswith(".skeleton") else name
    m = _NAME.fullmatch(stem)
    return SampleName(*(int(g) for g in m.groups())) if m else None


def in_variant(info: SampleName, variant: str) -> bool:
    """Whether a sample belongs to ``variant`` (ntu60: actions 1-60, setups 1-17)."""
    spec = get_variant(variant)
    return 1 <= info.action <= spec.num_actions and 1 <= info.setup <= spec.max_setup


def is_train(info: SampleName, benchmark: str) -> bool:
    """Whether a sample is in the training part of ``benchmark``.

    ``xsub``: training subjects of NTU 120 (its first 20 are NTU 60's, and NTU 60 has no
    subject above 40, so one list serves both); ``xview``: cameras 2 and 3; ``xset``: even
    setup numbers.
    """
    if benchmark == "xsub":
        return info.subject in NTU120_XSUB_TRAIN_SUBJECTS
    if benchmark == "xview":
        return info.camera in XVIEW_TRAIN_CAMERAS
    if benchmark == "xset":
        return info.setup % 2 == 0
    raise ConfigError(f"unknown NTU benchmark {benchmark!r}; known: xsub, xview, xset")


def make_splits(infos: Sequence[SampleName], variant: str) -> Dict[str, Dict[str, List[int]]]:
    """``{benchmark: {"train": [i...], "test": [i...]}}`` for samples ``infos`` of ``variant``."""
    splits = {}
    for bench in get_variant(variant).benchmarks:
        train = [i for i, s in enumerate(infos) if is_train(s, bench)]
        test = [i for i, s in enumerate(infos) if not is_train(s, bench)]
        splits[bench] = {"train": train, "test": test}
    return splits


def get_variant(variant: str) -> Variant:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise ConfigError(f"unknown NTU variant {variant!r}; choose one of {', '.join(VARIANTS)}") from None


#: The dataset authors' list of samples with missing or incomplete skeletons (NTU RGB+D 120's 535,
#: which include NTU RGB+D 60's 302), shipped with pcm3 and left out by default.
PUBLISHED_MISSING = Path(__file__).with_name("ntu_missing_skeletons.txt")


def read_missing_list(path) -> Set[str]:
    """Sample names listed one a line (the published missing-skeleton lists).

    Blank lines and ``#`` comments are ignored; a ``.skeleton`` suffix is allowed.
    """
    path = Path(path)
    text = read_text(path, "missing-samples file")
    names = set()
    for n, line in enumerate(text.splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if parse_name(name) is None:
            raise DataError(path, f"not an NTU sample name ({name!r}; expected SsssCcccPpppRrrrAaaa)", n)
        names.add(name[:-len(".skeleton")] if name.endswith(".skeleton") else name)
    return names


# ----------------------------------------------------------------------------- reading

# Bytes a file may hold: number characters and whitespace. NaN / inf spellings are the only
# other tokens accepted (they are numbers to ``float``; as coordinates they are rejected).
_NUMBER_BYTES = b"0123456789.+-eE \t\r\n\v\f"


def _ends_early(path, last: int, expected: str) -> DataError:
    where = max(last, 0) + 1
    return DataError(path, f"file ends early (expected {expected}; the file stops at line {where})", where)


class _Walker:
    """Walks the frame / body headers line by line, checking them; records the joint blocks.

    Only header lines (about 3 per body per frame) are looked at in Python; the 25 joint
    lines of each body are skipped over and converted together afterwards.
    """

    def __init__(self, path, lines: List[bytes]):
        self.path, self.lines = path, lines
        last = len(lines) - 1
        while last >= 0 and not lines[last].strip():
            last -= 1
        self.last = last  # 0-based index of the last line with content
        self.i = 0

    def values(self, what: str, expected: int) -> List[bytes]:
        """The values on the current line, which must number ``expected``; advances."""
        i = self.i
        if i > self.last:
            raise _ends_early(self.path, self.last, what)
        parts = self.lines[i].split()
        if len(parts) != expected:
            raise DataError(self.path, f"wrong number of values on the {what} line "
                                       f"(expected {expected}, found {len(parts)})", i + 1)
        self.i += 1
        return parts

    def integer(self, what: str) -> int:
        """The single non-negative integer on the current line; advances."""
        text = self.values(what, 1)[0]
        try:
            value = int(text)
        except ValueError:
            raise DataError(self.path, f"non-numeric value ({what} {_show(text)}, expected an integer)",
                            self.i) from None
        if value < 0:
            raise DataError(self.path, f"negative {what} ({value})", self.i)
        return value

    def body(self, frame: int) -> Tuple[str, int]:
        """Body-info line, joint count, 25 joint lines; returns (tracking id, first joint line)."""
        body_id = _show(self.values(f"body-info (frame {frame + 1})", BODY_VALUES)[0])
        joints = self.integer("joint count")
        if joints != NUM_JOINTS:
            raise DataError(self.path, f"wrong joint count (expected {NUM_JOINTS}, found {joints})", self.i)
        start = self.i
        if start + NUM_JOINTS - 1 > self.last:
            raise _ends_early(self.path, self.last, f"{NUM_JOINTS} joint lines in frame {frame + 1}")
        self.i += NUM_JOINTS
        return body_id, start

    def finish(self) -> None:
        if self.last >= self.i:
            raise DataError(self.path, "unexpected content after the last frame (is the frame count on line 1 right?)",
                            self.i + 1)


def _show(token: bytes) -> str:
    return token.decode("latin-1")


def _check_number_bytes(path, raw: bytes, lines: List[bytes]) -> None:
    """Raise on the first value that is not a number; one C-speed pass when all are."""
    if not raw.translate(None, _NUMBER_BYTES):
        return
    for n, line in enumerate(lines):
        if line.translate(None, _NUMBER_BYTES):
            for token in line.split():
                if token.translate(None, _NUMBER_BYTES):
                    try:
                        float(token)  # accepts NaN / inf spellings
                    except ValueError:
                        raise DataError(path, f"non-numeric value ({_show(token)!r})", n + 1) from None


def _walk(path, lines: List[bytes]) -> Tuple[int, List[Tuple[int, int, str, int]], int]:
    """Frame count, joint blocks ``(frame, slot, tracking id, first line)``, last content line."""
    walker = _Walker(path, lines)
    num_frames = walker.integer("frame count")
    if num_frames == 0:
        raise DataError(path, "empty sample (0 frames)", 1)
    blocks = []
    for t in range(num_frames):
        for slot in range(walker.integer(f"body count (frame {t + 1})")):
            body_id, start = walker.body(t)
            blocks.append((t, slot, body_id, start))
    walker.finish()
    if not blocks:
        raise DataError(path, f"empty sample (no bodies in any of {num_frames} frames); --skip-bad leaves such files out")
    return num_frames, blocks, walker.last


def _joint_lines(lines: List[bytes], starts: Sequence[int]) -> Tuple[List[bytes], np.ndarray]:
    """The joint lines of all blocks, and their 0-based line numbers ``(B * 25,)``."""
    joint = []
    for s in starts:
        joint += lines[s:s + NUM_JOINTS]
    numbers = (np.asarray(starts, dtype=np.int64)[:, None] + np.arange(NUM_JOINTS)).ravel()
    return joint, numbers


def _values_per_line(raw: bytes) -> np.ndarray:
    """How many values each line of ``raw.split(b"\\n")`` holds, ``(L,)`` int64; a few numpy passes.

    Counts what ``len(line.split())`` would, once :func:`_check_number_bytes` has passed: every
    byte up to 32 (space) is then ASCII whitespace (``float`` rejects the other control
    characters), so a value starts at each such byte followed by another byte.
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    if not buf.size:
        return np.zeros(1, dtype=np.int64)
    blank = buf <= 32
    starts = np.empty(buf.size, dtype=bool)                      # where a value starts
    starts[0] = not blank[0]
    np.greater(blank[:-1], blank[1:], out=starts[1:])
    first = np.concatenate(([0], np.flatnonzero(buf == 10) + 1))  # where each line starts
    counts = np.zeros(first.size, dtype=np.int64)
    inside = first < buf.size                                    # a final "\n" ends with an empty line
    counts[inside] = np.add.reduceat(starts, first[inside], dtype=np.int64)
    return counts


def _check_value_counts(path, raw: bytes, numbers: np.ndarray, last: int) -> None:
    """Every joint line (0-based line ``numbers``) holds exactly 12 values; raises on the first
    that does not. Counted for each line (:func:`_values_per_line`), so a short line and a long
    one cannot cancel out."""
    found = _values_per_line(raw)[numbers]
    wrong = np.flatnonzero(found != JOINT_VALUES)
    if not wrong.size:
        return
    n, count = int(numbers[wrong[0]]), int(found[wrong[0]])
    if n == last and count < JOINT_VALUES:
        raise DataError(path, f"file ends early (last joint line has {count} of {JOINT_VALUES} values)", n + 1)
    raise DataError(path, f"wrong number of values on a joint line (expected {JOINT_VALUES}, found {count})", n + 1)


def _joint_xyz(path, joint: List[bytes], numbers: np.ndarray) -> np.ndarray:
    """x, y, z of each joint line: ``(N, 3)`` float64, metres; raises on non-finite values."""
    heads = [line.split(None, 3) for line in joint]
    try:
        xyz = np.array([float(v) for h in heads for v in h[:3]])
    except ValueError:  # a malformed number made of number characters, e.g. "1-2"
        for j, h in enumerate(heads):
            for v in h[:3]:
                try:
                    float(v)
                except ValueError:
                    raise DataError(path, f"non-numeric value ({_show(v)!r})", int(numbers[j]) + 1) from None
        raise
    bad = np.flatnonzero(~np.isfinite(xyz))
    if bad.size:
        j = int(bad[0]) // 3
        raise DataError(path, f"non-finite coordinate (NaN or inf: {_show(heads[j][bad[0] % 3])!r})",
                        int(numbers[j]) + 1)
    return xyz.reshape(-1, 3)


def read_skeleton(path) -> dict:
    """Read an NTU ``.skeleton`` file.

    Format: frame count; per frame a body count; per body a line of 10 values (tracking id
    first), a joint count (25), then 25 lines of 12 values of which x, y, z (metres, camera
    coordinates) are used. Every value must be a number and x, y, z finite; the other values
    are checked to be numbers, not converted. The file is read in one go; header lines are
    walked in Python, joint lines only split and converted.

    Returns:
        ``{"path": str, "num_frames": T,
        "bodies": {tracking id: (T, 25, 3) float64},
        "slots": (S, T, 25, 3) float64}``: the joints of each tracked body, by tracking id
        (in order of first appearance) and by position in the frame's body list (slot ``s``
        = the ``s``-th body listed in a frame; S = the most bodies in a frame); zeros where
        a body is absent.

    Raises:
        DataError: naming the file and the 1-based line: file ends early, a non-numeric
            value, a wrong joint count, a wrong number of values on a line, a NaN/inf
            coordinate, content after the last frame; or an empty sample (0 frames, or no
            body in any frame; no line).
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(path, f"unreadable ({e.strerror or e})") from None
    lines = raw.split(b"\n")
    _check_number_bytes(path, raw, lines)
    num_frames, blocks, last = _walk(path, lines)
    joint, numbers = _joint_lines(lines, [b[3] for b in blocks])
    _check_value_counts(path, raw, numbers, last)
    joints = _joint_xyz(path, joint, numbers).reshape(-1, NUM_JOINTS, 3)
    frame = np.array([b[0] for b in blocks], dtype=np.int64)
    slot = np.array([b[1] for b in blocks], dtype=np.int64)
    return {"path": str(path), "num_frames": num_frames,
            "bodies": _by_tracking_id(blocks, joints, num_frames),
            "slots": _by_slot(slot, frame, joints, num_frames)}


def _by_tracking_id(blocks, joints: np.ndarray, num_frames: int) -> Dict[str, np.ndarray]:
    """``{id: (T, 25, 3)}``; an id listed twice in one frame gets a ``#2``, ``#3``... suffix."""
    bodies: Dict[str, np.ndarray] = {}
    filled = set()
    for b, (t, _, body_id, _) in enumerate(blocks):
        key, n = body_id, 1
        while (key, t) in filled:
            n += 1
            key = f"{body_id}#{n}"
        filled.add((key, t))
        if key not in bodies:
            bodies[key] = np.zeros((num_frames, NUM_JOINTS, 3))
        bodies[key][t] = joints[b]
    return bodies


def _by_slot(slot, frame, joints, num_frames) -> np.ndarray:
    out = np.zeros((int(slot.max()) + 1, num_frames, NUM_JOINTS, 3))
    out[slot, frame] = joints
    return out


# ----------------------------------------------------------------------------- preprocessing

def motion_energy(body: np.ndarray) -> float:
    """The field's body score: sum over x, y, z of the standard deviation of that coordinate.

    Args:
        body: ``(T, V, 3)`` joints in metres, zeros where the body is absent.

    The standard deviation is taken over all joints of the frames where the body is present
    (population std, as ``np.std``), so it measures both spread and motion. 0 if absent.
    """
    present = body.any(axis=(1, 2))
    if not present.any():
        return 0.0
    s = body[present]
    return float(sum(s[..., c].std() for c in range(3)))


def select_bodies(sample: dict, num: int = NUM_PERSONS, by: str = "slot") -> np.ndarray:
    """The ``num`` bodies of largest :func:`motion_energy`, most energetic first.

    Args:
        sample: as returned by :func:`read_skeleton`.
        by: ``"slot"`` (default, as the field's ``read_xyz``): a body is a position in the
            frames' body lists, of which the first 4 are read. It is robust to the tracker
            giving one person a new id, but a body that disappears lets the next one move up a
            slot. ``"id"``: a body is a tracking id, any number of them.

    Returns:
        ``(num, T, 25, 3)`` float64; zeros for persons beyond those present. Ties keep the
        file order.
    """
    if by == "slot":
        cands = list(sample["slots"][:KINECT_SLOTS])
    elif by == "id":
        cands = list(sample["bodies"].values())
    else:
        raise ConfigError(f"unknown body selection {by!r}; choose one of {', '.join(BODY_MODES)}")
    energy = [motion_energy(b) for b in cands]
    keep = sorted(range(len(cands)), key=lambda i: -energy[i])[:num]
    out = np.zeros((num, sample["num_frames"], NUM_JOINTS, 3))
    for m, i in enumerate(keep):
        out[m] = cands[i]
    return out


def trim_frames(bodies: np.ndarray, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Drop leading and trailing frames where no person is present; cut to ``max_frames``.

    Args:
        bodies: ``(M, T, V, 3)``.

    Returns:
        ``(M, L, V, 3)``, ``1 <= L <= max_frames``: the valid clip; ``L`` is the sample's true
        length. Frames in between where nobody is present stay zero.

    The field (``pre_normalization``) does this per person: a person absent in frame 0 has
    all its empty frames removed (shifting it in time against the other person) and each
    person is repeated on its own period. Here frames are dropped and repeated for the whole
    sample, which keeps the two persons in step; both agree whenever the kept persons start
    and end together, as they do in nearly all NTU samples.
    """
    present = np.flatnonzero(bodies.any(axis=(0, 2, 3)))
    if not present.size:
        raise ValueError("no person present in any frame")
    start, stop = int(present[0]), int(present[-1]) + 1
    return bodies[:, start:min(stop, start + max_frames)]


def center_on_spine(clip: np.ndarray) -> np.ndarray:
    """Subtract person 1's spine-middle joint (joint 2, 1-based) in every frame.

    Args:
        clip: ``(M, L, V, 3)``.

    As the field does: both persons are shifted by person 1's joint of the same frame (by
    zero where person 1 is absent), and joints that are exactly zero (absent) stay zero.
    """
    center = clip[0, :, SPINE_MID]                    # (L, 3)
    present = clip.any(axis=-1, keepdims=True)        # (M, L, V, 1)
    return (clip - center[None, :, None, :]) * present


def rotation_to(v: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation about ``v x target`` taking the direction of ``v`` onto ``target``.

    As the field's ``rotation_matrix(cross(v, t), angle_between(v, t))``: the identity when
    the cross product is tiny (L1 norm < 1e-6, also when ``v`` points opposite to ``target``)
    or the angle is below 1e-6 rad, and also when ``v`` is zero.
    """
    v = np.asarray(v, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    axis = np.cross(v, target)
    norm_v = np.linalg.norm(v)
    if norm_v == 0 or np.abs(axis).sum() < 1e-6:
        return np.eye(3)
    angle = np.arccos(np.clip(v @ target / (norm_v * np.linalg.norm(target)), -1.0, 1.0))
    if abs(angle) < 1e-6:
        return np.eye(3)
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def align_to_axes(clip: np.ndarray) -> np.ndarray:
    """Rotate the whole clip so person 1 faces a canonical direction.

    Args:
        clip: ``(M, L, V, 3)``, centred.

    At person 1's first present frame: first rotate so the hip -> spine vector (joint 1 ->
    joint 2, 1-based) points along +z, then so the shoulder vector points along +x. The
    shoulder vector is left -> right shoulder (joint 5 -> joint 9; the field's
    ``xaxis=[8, 4]``, right minus left; the method doc names the pair "9 -> 5"). As in the
    field, the second rotation turns about ``shoulder x (+x)``, so afterwards hip -> spine
    is only approximately along +z (off by the shoulders' tilt, a few degrees). Zeros
    (absent joints) stay zero.
    """
    person = clip[0]
    present = np.flatnonzero(person.any(axis=(1, 2)))
    if not present.size:
        return clip
    t0 = int(present[0])
    r1 = rotation_to(person[t0, SPINE_MID] - person[t0, SPINE_BASE], [0.0, 0.0, 1.0])
    clip = clip @ r1.T
    r2 = rotation_to(clip[0, t0, RIGHT_SHOULDER] - clip[0, t0, LEFT_SHOULDER], [1.0, 0.0, 0.0])
    return clip @ r2.T


def preprocess_clip(sample: dict, max_frames: int = MAX_FRAMES, bodies: str = "slot") -> np.ndarray:
    """Steps 1-4 of the recipe (select, trim, centre, rotate), without the padding.

    Returns:
        ``(M, L, V, C) = (2, L, 25, 3)`` float32, metres; ``L`` is the true length.
    """
    kept = select_bodies(sample, NUM_PERSONS, by=bodies)
    try:
        clip = trim_frames(kept, max_frames)
    except ValueError:
        raise DataError(sample["path"], "empty sample (every joint of every body is at 0, 0, 0)") from None
    return align_to_axes(center_on_spine(clip)).astype(np.float32)


def pad_clip(clip: np.ndarray, max_frames: int = MAX_FRAMES) -> np.ndarray:
    """Repeat a clip ``(M, L, V, C)`` to ``max_frames`` frames; returns ``(C, T, V, M)`` float32.

    Frame ``t`` of the result is frame ``t mod L`` of the clip (the field's padding).
    """
    idx = np.arange(max_frames) % clip.shape[1]
    return np.ascontiguousarray(np.transpose(clip[:, idx], (3, 1, 2, 0)), dtype=np.float32)


def preprocess(sample: dict, max_frames: int = MAX_FRAMES, bodies: str = "slot") -> Tuple[np.ndarray, int]:
    """The field's NTU preprocessing of one sample read by :func:`read_skeleton`.

    Returns:
        ``x`` ``(C, T, V, M) = (3, max_frames, 25, 2)`` float32 in metres, and the true
        length (valid frames, at most ``max_frames``). See the module docstring.
    """
    clip = preprocess_clip(sample, max_frames, bodies)
    return pad_clip(clip, max_frames), clip.shape[1]


# ----------------------------------------------------------------------------- preparing

CACHE_VERSION = 1


@dataclass
class _Shard:
    """A block of consecutive samples whose results are cached together in one file."""

    index: int
    path: Path
    names: List[str]
    files: List[Path]
    done: bool = False


def _process_file(task) -> tuple:
    """Worker: read + preprocess one file. ``("ok", clip (L, M, V, C))`` or ``("bad", line, msg)``."""
    path, max_frames, bodies = task
    try:
        clip = preprocess_clip(read_skeleton(path), max_frames, bodies)
    except DataError as e:
        return ("bad", e.line, e.message)
    except Exception as e:  # a bug: report which file triggered it
        raise RuntimeError(f"{path}: {type(e).__name__}: {e}") from e
    return ("ok", np.ascontiguousarray(np.transpose(clip, (1, 0, 2, 3))))


def _select_samples(files: Sequence[Path], variant: str, missing: Set[str], bad: BadFiles):
    """Sorted ``[(name, path, SampleName)]`` of ``variant``, and counts of what was left out."""
    chosen: Dict[str, Tuple[Path, SampleName]] = {}
    excluded = ignored = 0
    for path in files:
        name = path.name[:-len(".skeleton")]
        info = parse_name(name)
        if info is None:
            bad.handle(DataError(path, "not an NTU sample name (expected SsssCcccPpppRrrrAaaa.skeleton)"))
            continue
        if not in_variant(info, variant):
            ignored += 1
        elif name in missing:
            excluded += 1
        elif name in chosen:
            bad.handle(DataError(path, f"duplicate sample (also at {chosen[name][0]})"))
        else:
            chosen[name] = (path, info)
    samples = [(name, p, info) for name, (p, info) in sorted(chosen.items())]
    return samples, excluded, ignored


def work_dir(out) -> Path:
    """The cache folder of a run writing ``out``: ``<out>.work`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".work")


def _shard_key(files: Sequence[Path], max_frames: int, bodies: str) -> str:
    """Changes whenever the files (path, size, time) or the settings of a shard change."""
    stats = []
    for p in files:
        try:
            st = p.stat()
        except OSError as e:
            raise DataError(p, f"unreadable ({e.strerror or e})") from None
        stats.append((str(p), st.st_size, st.st_mtime_ns))
    blob = json.dumps([CACHE_VERSION, max_frames, bodies, stats]).encode()
    return hashlib.sha1(blob).hexdigest()[:16]


def _check_work_dir(work: Path, protect) -> Path:
    """``<out>.work`` is pcm3's cache: refuse a folder of that name without the cache's marker
    (pcm3 did not make it, or an older pcm3 did: it is neither used nor removed), and make and
    mark a new one."""
    for p in protect:
        if p is not None and overlaps(work, Path(p)):
            raise DataError(work, f"the cache folder beside --out is, lies inside, or contains the input {p}; "
                                  "choose another --out")
    if work.exists():
        if not work.is_dir() or folder_kind(work) != CACHE_KIND:
            raise DataError(work, "exists and was not made by pcm3 (no pcm3 cache marker; this run would keep its "
                                  "cache there); move it or choose another --out")
        return work
    try:
        work.mkdir(parents=True)
    except OSError as e:
        raise write_error(work, e, "the cache folder") from None
    try:
        write_marker(work, CACHE_KIND)
    except OSError as e:
        shutil.rmtree(work, ignore_errors=True)  # just made, holds nothing else
        raise write_error(work / MARKER, e, "the cache folder's marker") from None
    return work


CACHE_KIND = "ntu-cache"
# The files pcm3 writes in ``<out>.work``: shards, and (after a crash) the temporary files of
# :func:`pcm3.io.atomic_path`. Only these, the marker and the folder itself are ever removed.
_SHARD_FILE = re.compile(r"shard-(\d{5})-[0-9a-f]{16}\.npz")
_SHARD_TEMP = re.compile(r"\.shard-\d{5}-[0-9a-f]{16}\.npz\.[A-Za-z0-9_]+\.tmp")


def _cached_shards(work: Path) -> List[Path]:
    """The shard files in the cache folder ``work`` (none if it is absent)."""
    try:
        return sorted(p for p in work.iterdir() if _SHARD_FILE.fullmatch(p.name) and p.is_file())
    except OSError:
        return []


def _remove_cache(work: Path, keep_shards: bool = False) -> None:
    """Remove what pcm3 wrote in its cache folder ``work`` (shards unless ``keep_shards``,
    temporary files), then, when no shard is left, its marker and the folder if it is then
    empty. Anything else in it is left alone, and so is the folder holding it."""
    if folder_kind(work) != CACHE_KIND:
        return
    try:
        names = list(work.iterdir())
    except OSError:  # cannot look: leave it
        return
    for p in names:
        if _SHARD_TEMP.fullmatch(p.name) or (not keep_shards and _SHARD_FILE.fullmatch(p.name)):
            with contextlib.suppress(OSError):
                p.unlink()
    if not _cached_shards(work):
        with contextlib.suppress(OSError):
            (work / MARKER).unlink()
            work.rmdir()


def _plan_shards(samples, work: Path, max_frames: int, bodies: str, size: int) -> List[_Shard]:
    shards = []
    for n, s in enumerate(range(0, len(samples), size)):
        block = samples[s:s + size]
        files = [p for _, p, _ in block]
        path = work / f"shard-{n:05d}-{_shard_key(files, max_frames, bodies)}.npz"
        shard = _Shard(n, path, [name for name, _, _ in block], files)
        shard.done = _shard_matches(shard)
        shards.append(shard)
    return shards


def _shard_matches(shard: _Shard) -> bool:
    if not shard.path.is_file():
        return False
    try:
        with np.load(shard.path) as z:
            return z["names"].tolist() == shard.names
    except Exception:  # a damaged cache file is simply recomputed
        return False


def _write_shard(shard: _Shard, results: Sequence[tuple]) -> None:
    """Atomically save one shard: clips concatenated over frames, and bad-file records.

    Raises :class:`DataError` naming the shard file when it cannot be written (disk full...).
    """
    ok = np.array([r[0] == "ok" for r in results], dtype=bool)
    clips = [r[1] for r in results if r[0] == "ok"]
    frames = (np.concatenate(clips) if clips
              else np.zeros((0, NUM_PERSONS, NUM_JOINTS, 3), dtype=np.float32))
    lengths = np.array([r[1].shape[0] if r[0] == "ok" else 0 for r in results], dtype=np.int64)
    err_line = np.array([(r[1] or 0) if r[0] == "bad" else 0 for r in results], dtype=np.int64)
    err_msg = np.array([r[2] if r[0] == "bad" else "" for r in results], dtype=str)
    try:
        with atomic_path(shard.path) as tmp, open(tmp, "wb") as f:
            np.savez(f, names=np.array(shard.names, dtype=str), ok=ok, lengths=lengths,
                     frames=frames, err_line=err_line, err_msg=err_msg)
        for old in shard.path.parent.iterdir():  # this shard's results for other files / settings
            m = _SHARD_FILE.fullmatch(old.name)
            if m and int(m.group(1)) == shard.index and old != shard.path:
                old.unlink()
    except OSError as e:
        raise write_error(shard.path, e, "the cache of finished samples") from None
    shard.done = True


def _compute_shards(shards: List[_Shard], max_frames: int, bodies: str, workers, progress: bool,
                    skip_bad: bool, desc: str) -> int:
    """Read and preprocess the samples of unfinished shards in parallel; save each shard.

    With ``skip_bad=False`` the first bad file raises (shards finished before it are kept).
    Returns the number of files read.
    """
    todo = [s for s in shards if not s.done]
    tasks = [(str(p), max_frames, bodies) for s in todo for p in s.files]
    if not tasks:
        return 0
    results: List[tuple] = []
    current = iter(todo)
    shard = next(current)
    stream = parallel_map(_process_file, tasks, workers=workers, desc=desc, progress=progress)
    try:
        for _, r in stream:
            if r[0] == "bad" and not skip_bad:
                raise DataError(shard.files[len(results)], r[2], r[1])
            results.append(r)
            if len(results) == len(shard.files):
                _write_shard(shard, results)
                results = []
                shard = next(current, None)
    finally:
        stream.close()
    return len(tasks)


def _collect(shards: List[_Shard], bad: BadFiles) -> List[Tuple[_Shard, int]]:
    """``(shard, row)`` of every good sample, in order; bad records go to ``bad``."""
    good = []
    for shard in shards:
        with np.load(shard.path) as z:
            ok, err_line, err_msg = z["ok"], z["err_line"].tolist(), z["err_msg"].tolist()
        for row, fine in enumerate(ok.tolist()):
            if fine:
                good.append((shard, row))
            else:
                bad.handle(DataError(shard.files[row], err_msg[row], err_line[row] or None))
    return good


def _write_output(out: Path, good, infos: Dict[str, SampleName], variant: str, raw: Path,
                  max_frames: int, bodies: str, bad: BadFiles, progress: bool, extra: dict,
                  overwrite: bool = False, protect=()) -> None:
    from pcm3.progress import progress_bar

    spec = get_variant(variant)
    meta = {"preprocessing": {
        "bodies": f"{NUM_PERSONS} of largest motion energy, by {bodies}",
        "frames": "leading/trailing empty frames dropped, cut to max_frames, padded by repeating the clip",
        "center": "person 1 spine_mid (joint 2) subtracted in every frame",
        "rotation": "person 1 hip->spine along +z, then left->right shoulder along +x, at its first frame",
        "max_frames": max_frames}, **extra}
    shape = (len(good), 3, max_frames, NUM_JOINTS, NUM_PERSONS)
    names = [shard.names[row] for shard, row in good]
    with PreparedWriter(out, kind="clips", shape=shape, dataset=variant, layout="ntu25",
                        class_names=NTU_ACTIONS[:spec.num_actions], source=str(raw), extra_meta=meta,
                        overwrite=overwrite, protect=protect) as w:
        bar = progress_bar(total=len(good), desc=f"{variant}: write", unit="sample", disable=not progress,
                           final_line=True)
        i, loaded = 0, None
        for shard, row in good:
            if loaded is None or loaded[0] is not shard:
                with np.load(shard.path) as z:
                    lengths = z["lengths"]
                    loaded = (shard, z["frames"], np.concatenate([[0], np.cumsum(lengths)]), lengths)
            _, frames, offsets, lengths = loaded
            clip = frames[offsets[row]:offsets[row + 1]].transpose(1, 0, 2, 3)
            info = infos[names[i]]
            w.set(i, pad_clip(clip, max_frames), label=info.action - 1, length=int(lengths[row]), name=names[i],
                  setup=info.setup, camera=info.camera, subject=info.subject, replication=info.replication)
            i += 1
            bar.update(1)
        bar.close()
        w.set_splits(make_splits([infos[n] for n in names], variant))
        bad.report(w.tmp)


def prepare_ntu(raw, out, variant: str = "ntu60", workers: Optional[int] = None, skip_bad: bool = False,
                missing="published", max_frames: int = MAX_FRAMES, progress: bool = True, bodies: str = "slot",
                shard_size: int = SHARD_SIZE, overwrite: bool = False) -> dict:
    """Prepare NTU RGB+D 60 or 120 from its raw ``.skeleton`` files.

    Args:
        raw: folder searched recursively for ``*.skeleton``; files of other variants (NTU 120
            setups or actions in an NTU 60 run) are ignored.
        out: the prepared folder to write (atomically). It must be new or empty, or, with
            ``overwrite``, a prepared folder written by pcm3 (replaced once the new one is
            complete); it may not be, lie in, or contain ``raw``.
        variant: ``"ntu60"`` (actions 1-60, setups 1-17; benchmarks xsub, xview) or
            ``"ntu120"`` (actions 1-120, setups 1-32; benchmarks xsub, xset).
        workers: processes reading files (default: all cores; 1: in this process).
        skip_bad: leave bad or empty files out and list them in ``out/skipped.csv``; otherwise
            the first one raises :class:`DataError` and nothing is written at ``out``.
        missing: sample names to leave out: ``"published"`` (default) the dataset authors' list
            of samples with missing or incomplete skeletons (:data:`PUBLISHED_MISSING`: 535 names,
            302 of them in NTU 60, which the field drops), a file of names (one a line), or
            None / ``"none"`` to keep every file.
        max_frames: T, frames per sample after padding / cutting.
        bodies: ``"slot"`` or ``"id"``, see :func:`select_bodies`.
        shard_size: samples per cache shard.

    Finished work is cached in ``<out>.work/`` (shards of ``shard_size`` samples, keyed by
    the files and settings, beside pcm3's marker), so a rerun after an interruption or a bad
    file only reads what is left; the error then says where the cache is. The folder is
    removed after a successful run, and after a failed one that cached nothing; only the
    files pcm3 wrote there are removed, and a folder of that name without the marker is
    refused.

    Returns:
        ``{"out", "variant", "samples", "files", "read", "reused", "skipped",
        "skipped_summary", "report", "excluded_missing", "ignored_other"}``.
    """
    get_variant(variant)
    if bodies not in BODY_MODES:
        raise ConfigError(f"unknown body selection {bodies!r}; choose one of {', '.join(BODY_MODES)}")
    if max_frames < 1 or shard_size < 1:
        raise ConfigError("max_frames and shard_size must be at least 1")
    raw = require_dir(raw, "NTU raw skeleton folder")
    if missing is not None and str(missing).lower() == "none":
        missing = None
    published = missing is not None and str(missing) == "published"
    if published:
        missing = PUBLISHED_MISSING
    protect = [raw] + ([missing] if missing and not published else [])
    out = check_output_dir(out, "prepared", overwrite=overwrite, protect=protect)
    files = iter_files(raw, "*.skeleton")
    if not files:
        raise DataError(raw, "no .skeleton files found (expected the NTU nturgb+d_skeletons folder)")
    names_to_skip = read_missing_list(missing) if missing else set()
    bad = BadFiles(skip_bad)
    samples, excluded, ignored = _select_samples(files, variant, names_to_skip, bad)
    if not samples:
        raise DataError(raw, f"none of the {len(files)} .skeleton files is a {variant} sample")
    work = _check_work_dir(work_dir(out), protect)
    try:
        shards = _plan_shards(samples, work, max_frames, bodies, shard_size)
        reused = sum(len(s.names) for s in shards if s.done)
        if reused and progress:
            print(f"reusing {reused} samples cached in {work}", file=sys.stderr)
        read = _compute_shards(shards, max_frames, bodies, workers, progress, skip_bad, f"{variant}: read")
        good = _collect(shards, bad)
        if not good:
            raise DataError(raw, f"no usable {variant} samples ({bad.summary()})")
        infos = {name: info for name, _, info in samples}
        _write_output(out, good, infos, variant, raw, max_frames, bodies, bad, progress,
                      {"missing_list": ("published (shahroudy/NTURGB-D, 535 samples)" if published
                                        else str(missing) if missing else None), "skipped_files": len(bad.items)},
                      overwrite=overwrite, protect=protect)
    except BaseException as e:
        _remove_cache(work, keep_shards=True)  # a cache with no finished shard is of no use
        if isinstance(e, DataError) and e.path and _cached_shards(work):
            raise DataError(e.path, f"{e.message} (the samples read so far stay cached in {work}; "
                                    "a rerun continues from there)", e.line) from None
        raise
    _remove_cache(work)
    return {"out": str(out), "variant": variant, "samples": len(good), "files": len(files), "read": read,
            "reused": reused, "skipped": len(bad.items), "skipped_summary": bad.summary(),
            "report": str(out / REPORT_NAME) if bad.items else None,
            "excluded_missing": excluded, "ignored_other": ignored}


# ----------------------------------------------------------------------------- command line

def add_prepare_parsers(subparsers) -> None:
    """``pcm3 prepare ntu60`` and ``pcm3 prepare ntu120``."""
    for name, spec in VARIANTS.items():
        p = subparsers.add_parser(
            name, help=f"NTU RGB+D {name[3:]} from its raw .skeleton files",
            description=f"Read the raw NTU RGB+D {name[3:]} .skeleton files (actions 1-{spec.num_actions}, "
                        f"setups 1-{spec.max_setup}; others in the folder are ignored), keep the 2 most "
                        "active bodies, centre on person 1's spine, rotate to face a canonical direction, "
                        f"pad to --max-frames by repeating, and write a prepared folder with the "
                        f"{' and '.join(spec.benchmarks)} benchmarks. An interrupted run resumes from "
                        "<out>.work/.")
        p.add_argument("--raw", required=True, metavar="DIR",
                       help="folder holding the .skeleton files (searched recursively)")
        p.add_argument("--out", required=True, metavar="DIR", help="prepared folder to write")
        p.add_argument("--workers", type=int, default=None, metavar="N",
                       help="parallel reader processes (default: all cores)")
        p.add_argument("--skip-bad", action="store_true",
                       help="leave bad or empty files out and list them in OUT/skipped.csv "
                            "(default: stop at the first one, writing nothing)")
        p.add_argument("--missing", metavar="FILE", default="published",
                       help="sample names to leave out, one a line (default 'published': the dataset "
                            "authors' list of samples with missing skeletons, 302 in NTU 60, 535 in NTU "
                            "120, as the field does; 'none': keep every file)")
        p.add_argument("--max-frames", "--frames", dest="max_frames", type=int, default=MAX_FRAMES, metavar="T",
                       help=f"frames per sample after cutting / repeat-padding (default {MAX_FRAMES})")
        p.add_argument("--bodies", choices=BODY_MODES, default="slot",
                       help="what counts as one body when picking the 2 most active: position in the "
                            "frame's body list, as the field does (slot, default), or tracking id")
        add_output_options(p)
        p.set_defaults(func=_run, variant=name)


def _run(args) -> int:
    res = prepare_ntu(args.raw, args.out, variant=args.variant, workers=args.workers, skip_bad=args.skip_bad,
                      missing=args.missing, max_frames=args.max_frames, progress=not args.quiet,
                      bodies=args.bodies, overwrite=args.overwrite)
    if res["excluded_missing"]:
        where = "the published missing-skeleton list" if args.missing == "published" else args.missing
        print(f"left out {res['excluded_missing']} samples named in {where}")
    if res["skipped"] or args.skip_bad:
        print(res["skipped_summary"] + (f" (listed in {res['report']})" if res["report"] else ""))
    print_prepared_summary(res["out"])
    return 0
