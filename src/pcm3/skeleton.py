"""Skeleton layouts (joints, bones, body parts, centre joint) and input streams.

Layouts are data: a :class:`Layout` per sensor, registered by name in ``LAYOUTS``.
Every index here is 0-based. Arrays follow the field's layout ``(..., C, T, V, M)``:
coordinates, frames, joints, persons (any leading batch axes).

Streams (method doc, section 1):
    bone   ``b[v] = x[v] - x[parent(v)]`` (the root joint, its own parent, has a zero bone:
           spine_shoulder in NTU, as 2s-AGCN's pairs);
    motion ``m[t] = x[t+1] - x[t]``, the last frame 0.
Both work on NumPy arrays and on torch tensors, batched or not.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

import numpy as np

from pcm3.errors import ConfigError

STREAMS = ("joint", "bone", "motion")


@dataclass(frozen=True)
class Layout:
    """A skeleton layout.

    Attributes:
        name: registry key, e.g. ``"ntu25"``.
        joint_names: one name per joint, in file order.
        parents: 0-based parent of each joint; the root is its own parent.
        parts: the five body parts ``trunk, left_arm, right_arm, left_leg, right_leg``,
            each a tuple of 0-based joints; together they cover every joint once.
        center: the 0-based joint used as the origin when centring.
    """

    name: str
    joint_names: Tuple[str, ...]
    parents: Tuple[int, ...]
    parts: Dict[str, Tuple[int, ...]] = field(hash=False)
    center: int

    def __post_init__(self):
        v = len(self.joint_names)
        if len(self.parents) != v:
            raise ValueError(f"layout {self.name}: {len(self.parents)} parents for {v} joints")
        for what, joints in (("parent", self.parents), ("center", (self.center,))):
            bad = [j for j in joints if isinstance(j, bool) or not isinstance(j, numbers.Integral) or not 0 <= j < v]
            if bad:
                raise ValueError(f"layout {self.name}: {what} {bad[0]!r} is not a joint (0..{v - 1})")
        for j in range(v):  # every chain of parents must end at a root (a joint that is its own parent)
            seen, k = set(), j
            while self.parents[k] != k:
                if k in seen:
                    raise ValueError(f"layout {self.name}: the parents of joint {j} form a cycle without a root")
                seen.add(k)
                k = self.parents[k]
        covered = sorted(j for p in self.parts.values() for j in p)
        if covered != list(range(v)):
            raise ValueError(f"layout {self.name}: body parts must cover each joint exactly once")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def part_names(self) -> Tuple[str, ...]:
        return tuple(self.parts)

    @property
    def bones(self) -> Tuple[Tuple[int, int], ...]:
        """``(child, parent)`` pairs, 0-based, without the root's self-loop."""
        return tuple((c, p) for c, p in enumerate(self.parents) if c != p)


def _from_one_based(pairs: Sequence[Tuple[int, int]]) -> Tuple[int, ...]:
    parents = [0] * len(pairs)
    for child, parent in pairs:
        parents[child - 1] = parent - 1
    return tuple(parents)


# Kinect v2, NTU RGB+D 60/120 and PKU-MMD: 25 joints.
NTU25 = Layout(
    name="ntu25",
    joint_names=(
        "spine_base", "spine_mid", "neck", "head",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
        "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
    ),
    # (child, parent), 1-based, as in the method doc.
    parents=_from_one_based([
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21),
        (10, 9), (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1),
        (18, 17), (19, 18), (20, 19), (21, 21), (22, 23), (23, 8), (24, 25), (25, 12),
    ]),
    # Named after the Kinect joint names. (The authors' release calls joints 5-8 the
    # "right" arm; the sets, which are all that masking and mixing use, are the same.)
    parts={
        "trunk": (0, 1, 2, 3, 20),
        "left_arm": (4, 5, 6, 7, 21, 22),
        "right_arm": (8, 9, 10, 11, 23, 24),
        "left_leg": (12, 13, 14, 15),
        "right_leg": (16, 17, 18, 19),
    },
    center=1,  # spine_mid (joint 2, 1-based)
)

# Kinect v1 in the Kinect SDK order, used by NW-UCLA: 20 joints.
KINECT_V1 = Layout(
    name="kinect_v1",
    joint_names=(
        "hip_center", "spine", "shoulder_center", "head",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
    ),
    parents=_from_one_based([
        (1, 2), (2, 3), (3, 3), (4, 3), (5, 3), (6, 5), (7, 6), (8, 7), (9, 3), (10, 9),
        (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17),
        (19, 18), (20, 19),
    ]),
    parts={
        "trunk": (0, 1, 2, 3),
        "left_arm": (4, 5, 6, 7),
        "right_arm": (8, 9, 10, 11),
        "left_leg": (12, 13, 14, 15),
        "right_leg": (16, 17, 18, 19),
    },
    center=1,  # spine
)

# MSR Action3D (``*_skeleton3D.txt``): 20 Kinect-v1-like joints in the files' own order,
# established from the recordings (evidence in ``pcm3.data.msr3d``). Topology as KINECT_V1.
MSR20 = Layout(
    name="msr20",
    joint_names=(
        "left_shoulder", "right_shoulder", "neck", "spine",
        "left_hip", "right_hip", "hip_center",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
        "left_knee", "right_knee", "left_ankle", "right_ankle", "left_foot", "right_foot",
        "head",
    ),
    parents=_from_one_based([
        (1, 3), (2, 3), (3, 3), (4, 3), (5, 7), (6, 7), (7, 4), (8, 1), (9, 2), (10, 8),
        (11, 9), (12, 10), (13, 11), (14, 5), (15, 6), (16, 14), (17, 15), (18, 16),
        (19, 17), (20, 3),
    ]),
    parts={
        "trunk": (2, 3, 6, 19),
        "left_arm": (0, 7, 9, 11),
        "right_arm": (1, 8, 10, 12),
        "left_leg": (4, 13, 15, 17),
        "right_leg": (5, 14, 16, 18),
    },
    center=3,  # spine, as KINECT_V1
)

LAYOUTS: Dict[str, Layout] = {NTU25.name: NTU25, KINECT_V1.name: KINECT_V1, MSR20.name: MSR20}


def register_layout(layout: Layout) -> Layout:
    """Add a layout to the registry (used by readers of other sensors)."""
    LAYOUTS[layout.name] = layout
    return layout


def get_layout(name: str | Layout) -> Layout:
    """Return the registered layout ``name`` (a :class:`Layout` passes through)."""
    if isinstance(name, Layout):
        return name
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ConfigError(f"unknown skeleton layout {name!r}; known: {', '.join(sorted(LAYOUTS))}") from None


def check_joints(x, layout: str | Layout, what: str) -> Layout:
    """The registered ``layout``, after checking that ``x`` ``(..., V, M)`` has its ``V`` joints;
    a ``ValueError`` naming ``what`` otherwise (a wrong layout would silently pick wrong joints)."""
    layout = get_layout(layout)
    if x.shape[-2] != layout.num_joints:
        raise ValueError(f"{what}: {x.shape[-2]} joints, layout {layout.name} has {layout.num_joints}")
    return layout


def to_bone(x, layout: str | Layout = "ntu25"):
    """Bone stream of joints ``x`` ``(..., C, T, V, M)``: ``x[v] - x[parent(v)]``."""
    layout = check_joints(x, layout, "bone stream")
    return x - x[..., list(layout.parents), :]


def to_motion(x):
    """Motion stream of ``x`` ``(..., C, T, V, M)``: ``x[t+1] - x[t]``, last frame zero."""
    out = x * 0
    out[..., :-1, :, :] = x[..., 1:, :, :] - x[..., :-1, :, :]
    return out


def from_motion(m, first):
    """Joints from a motion stream: ``m`` ``(..., C, T, V, M)`` (:func:`to_motion`: ``x[t+1] -
    x[t]``) integrated from the joints of frame 0, ``first`` ``(..., C, 1, V, M)``:
    ``x[t] = first + m[0] + ... + m[t-1]`` (the inverse of :func:`to_motion`)."""
    import torch

    steps = torch.cumsum(m[..., :-1, :, :], dim=-3)
    return torch.cat([first, first + steps], dim=-3)


def to_stream(x, stream: str, layout: str | Layout = "ntu25"):
    """Convert joints ``(..., C, T, V, M)`` to ``stream`` (``joint``, ``bone`` or ``motion``)."""
    if stream == "joint":
        return x
    if stream == "bone":
        return to_bone(x, layout)
    if stream == "motion":
        return to_motion(x)
    raise ConfigError(f"unknown stream {stream!r}; choose one of {', '.join(STREAMS)}")


def part_mask(layout: str | Layout) -> np.ndarray:
    """``(P, V)`` bool: which joints belong to each of the P body parts."""
    layout = get_layout(layout)
    out = np.zeros((len(layout.parts), layout.num_joints), dtype=bool)
    for i, joints in enumerate(layout.parts.values()):
        out[i, list(joints)] = True
    return out


# --------------------------------------------------------------------------- view normalisation

ALIGN_JOINTS = {  # (hip, spine, left shoulder, right shoulder) by joint name, per layout
    "ntu25": ("spine_base", "spine_mid", "left_shoulder", "right_shoulder"),
    "kinect_v1": ("hip_center", "spine", "left_shoulder", "right_shoulder"),
    "msr20": ("hip_center", "spine", "left_shoulder", "right_shoulder"),
}
AXES = {"x": 0, "y": 1, "z": 2}


def view_rotation(x, layout: str | Layout = "ntu25", up: str = "z"):
    """The ``(3, 3)`` rotation that puts person 1 in a canonical orientation (or None).

    At person 1's first present frame whose hip -> spine and shoulder vectors are usable: the
    hip -> spine vector becomes the ``up`` axis (``z`` as in the NTU recipe of the field, or
    ``y``) exactly, and the left -> right shoulder vector, with its component along ``up``
    removed, becomes ``+x``. Unlike the NTU recipe's two successive axis-angle rotations (after
    which hip -> spine is only approximately vertical), this is one exact change of frame.

    Args:
        x: one sample ``(C, T, V, M)`` (metres), C = 3.
        layout: its layout (joints named in :data:`ALIGN_JOINTS`).
        up: ``"z"`` or ``"y"``.

    Returns:
        ``R`` with ``x_aligned = R @ x`` per joint, or None when no frame qualifies.
    """
    layout = get_layout(layout)
    if up not in ("y", "z"):
        raise ValueError(f"up must be 'y' or 'z', got {up!r}")
    names = ALIGN_JOINTS.get(layout.name)
    if names is None:
        raise ValueError(f"layout {layout.name!r} has no alignment joints (add it to ALIGN_JOINTS)")
    hip, spine, ls, rs = (layout.joint_names.index(n) for n in names)
    x = np.asarray(x, dtype=np.float64)
    p1 = x[..., 0]  # C x T x V
    ok = np.any(p1 != 0, axis=(0, 2))  # T: person 1 present (its centre joint may be exactly 0)
    for t in np.flatnonzero(ok):
        u = p1[:, t, spine] - p1[:, t, hip]
        s = p1[:, t, rs] - p1[:, t, ls]
        if np.linalg.norm(u) < 1e-8:
            continue
        u = u / np.linalg.norm(u)
        s = s - (s @ u) * u
        if np.linalg.norm(s) < 1e-8:
            continue
        s = s / np.linalg.norm(s)
        third = np.cross(s, u) if up == "y" else np.cross(u, s)  # right-handed: x, y, z
        rows = np.zeros((3, 3))
        rows[0] = s
        rows[AXES[up]] = u
        rows[3 - AXES[up]] = third  # the remaining axis (z for up=y, y for up=z)
        return rows
    return None


def align_view(x, layout: str | Layout = "ntu25", up: str = "z"):
    """Rotate a centred sample ``(C, T, V, M)`` by :func:`view_rotation`; absent joints stay 0.

    Returns the rotated float32 array (a copy), or the input unchanged (as float32) when person
    1 never shows the alignment joints.
    """
    x = np.asarray(x, dtype=np.float32)
    r = view_rotation(x, layout, up)
    if r is None:
        return x.copy()
    present = np.any(x != 0, axis=0, keepdims=True)  # 1 x T x V x M
    out = np.einsum("ij,jtvm->itvm", r, x.astype(np.float64)).astype(np.float32)
    return out * present
