"""The built-in data set: seeded synthetic skeleton actions in the NTU 25-joint layout.

``pcm3 prepare synthetic --out DIR`` writes it; ``pcm3 demo`` and the test-suite run on it.
Nothing is downloaded: every sample comes from a small kinematic body model.

How a sample is made (all vectorised over the samples of one class):

1. **Body.** Each of ``num_subjects`` subjects has a height (about 1.5-1.95 m) and its own
   segment proportions (trunk, arms, legs, shoulder and hip width), a posture (slouch, stance
   width, how the idle arms hang) and a tempo and amplitude tendency. A two-person sample's
   partner is another subject of the same cross-subject half.
2. **Action.** A class function turns per-sample parameters (speed, amplitude, phase,
   centre positions, number of repetitions) into controls over time: trunk bend and twist,
   pelvis height, root position and facing, wrist targets and ankle targets. The action
   starts after an idle period (with sway, breathing, a slow turn) and the valid clip is
   40-150 frames at 30 fps (at least 70-80 for slow and two-person actions, see
   :data:`CLASS_MIN_LENGTH`). Arms and legs follow their targets through two-bone inverse
   kinematics.
3. **Sensor.** The scene is seen by one of three Kinect-like cameras: the body is turned by
   -45, 0 or +45 degrees (camera 1, 2, 3) plus a per-sample deviation (a pair, facing each
   other, is seen from the side), the camera is tilted, and the skeleton is expressed in
   camera coordinates (x sensor-left, y up, z depth). Then the sensor's faults: white and
   slowly drifting jitter (a few millimetres; larger along depth and for hands and feet,
   with a view-dependent level), "inferred" joints hidden behind the trunk (centimetre-sized
   smooth errors), and dropped joints (stuck at their last position or at zero for a few
   frames). Of two persons, the one with more motion energy becomes person 1.
4. **The field's NTU preprocessing** (method doc, section 1): subtract person 1's
   spine-middle joint in every frame (zeros stay zero), rotate so that person 1's
   spine-base -> spine-middle vector at frame 0 lies along +z, then so that the
   right-shoulder - left-shoulder vector (joints 9 - 5, 1-based) lies along +x; pad to 300
   frames by repeating the valid clip. So the model sees what it would see on prepared NTU
   data: z up, x towards person 1's right, person 1 facing +y, metres. What differs between
   views is what survives the normalisation: residual tilt, noise anisotropy, occlusions.

Classes share body parts and differ in how they move (see :data:`CLASS_NAMES`): a linear
classifier on each sample's mean pose is far from perfect (about 60% cross-subject) while
models that see the motion do much better (a small supervised GRU: about 85%);
``tests/data/test_synthetic.py`` checks the first and that simple motion statistics help.

Default size: 16 classes x 20 subjects x 3 cameras x 2 repetitions = 1,920 clips, about
330 MB on disk as float32 ``(N, 3, 300, 25, 2)``, generated in a few seconds.

Benchmarks: ``xsub`` trains on the subjects with an even 0-based index (1-based ids 1, 3,
..., 19) and tests on the others; ``xview`` trains on cameras 2 and 3 (0 and +45 degrees)
and tests on camera 1 (-45 degrees), as NTU trains on its cameras 2 and 3.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from pcm3.args import seed_arg
from pcm3.errors import ConfigError

CLASS_NAMES: Tuple[str, ...] = (
    # right hand raised beside the head: still, small and fast, large and slow
    "raise_hand", "wave_small_fast", "wave_large_slow",
    # right hand drawing in front of the chest: a circle or a figure eight, same place and size
    "draw_circle", "draw_figure_eight",
    # right arm extends forward: fast strikes from a guard, or a slow reach and hold
    "punch", "reach_forward",
    # both hands meet in front of the chest: repeatedly, or once and held
    "clap", "hands_together",
    # right leg lifts: a fast straight-legged kick, or a slow bent knee raise and hold
    "kick", "knee_raise",
    # the body lowers: bending the knees, or bending at the hips
    "squat", "bow",
    # two persons, who first approach each other
    "handshake", "push", "hug",
)
TWO_PERSON: Tuple[str, ...] = ("handshake", "push", "hug")
# Shortest valid clip (frames) of the actions that need time: slow ones and interactions.
CLASS_MIN_LENGTH: Dict[str, int] = {"wave_large_slow": 75, "draw_circle": 70, "draw_figure_eight": 80,
                                    "handshake": 70, "push": 70, "hug": 70}
VIEW_YAW_DEG: Tuple[float, ...] = (-45.0, 0.0, 45.0)  # camera 1, 2, 3
VIEW_TILT_DEG: Tuple[float, ...] = (12.0, 6.0, 9.0)
VIEW_NOISE: Tuple[float, ...] = (1.3, 1.0, 1.15)
XVIEW_TRAIN_VIEWS: Tuple[int, ...] = (1, 2)
FPS = 30.0
FRAMES = 300
MIN_LENGTH, MAX_LENGTH = 40, 150
DEFAULT_SUBJECTS = 20
DEFAULT_REPETITIONS = 2

# NTU25, 0-based (see pcm3.skeleton.NTU25).
(SPINE_BASE, SPINE_MID, NECK, HEAD, L_SHOULDER, L_ELBOW, L_WRIST, L_HAND, R_SHOULDER, R_ELBOW,
 R_WRIST, R_HAND, L_HIP, L_KNEE, L_ANKLE, L_FOOT, R_HIP, R_KNEE, R_ANKLE, R_FOOT, SPINE_SHOULDER,
 L_HAND_TIP, L_THUMB, R_HAND_TIP, R_THUMB) = range(25)
EXTREMITIES = (L_HAND, R_HAND, L_HAND_TIP, L_THUMB, R_HAND_TIP, R_THUMB, L_FOOT, R_FOOT)
TRUNK = (SPINE_BASE, SPINE_MID, NECK, HEAD, L_SHOULDER, R_SHOULDER, L_HIP, R_HIP, SPINE_SHOULDER)
# Joints that Kinect loses now and then (never the trunk, which the normalisation needs).
DROPPABLE = (L_ELBOW, L_WRIST, L_HAND, R_ELBOW, R_WRIST, R_HAND, L_KNEE, L_ANKLE, L_FOOT,
             R_KNEE, R_ANKLE, R_FOOT, L_HAND_TIP, L_THUMB, R_HAND_TIP, R_THUMB)


# --------------------------------------------------------------------------- small maths

def _ss(x):
    """Minimum-jerk smooth step: 0 for x <= 0, 1 for x >= 1."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (x * (6.0 * x - 15.0) + 10.0)


def _window(t, start, rise, hold, fall):
    """0 before ``start``, smoothly up over ``rise``, 1 for ``hold``, down over ``fall`` (frames)."""
    hold = np.maximum(hold, 0.0)
    return np.clip(_ss((t - start) / rise) - _ss((t - start - rise - hold) / fall), 0.0, 1.0)


def _slow_noise(rng: np.random.Generator, shape, step: int) -> np.ndarray:
    """Standard-normal noise that varies smoothly along axis 1: knots every ``step`` frames,
    linearly interpolated (float32, ``shape`` (n, T, ...))."""
    T = shape[1]
    knots = rng.standard_normal((shape[0], T // step + 2) + tuple(shape[2:]), dtype=np.float32)
    pos = np.arange(T) / step
    i = pos.astype(np.int64)
    f = (pos - i).astype(np.float32).reshape((1, T) + (1,) * (len(shape) - 2))
    # interpolation shrinks the variance mid-way between knots; rescale to about 1
    return (knots[:, i] * (1 - f) + knots[:, i + 1] * f) / np.sqrt((1 - f) ** 2 + f ** 2)


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _mv(r, v):
    """Rotate vectors ``v`` (..., 3) by matrices ``r`` (..., 3, 3)."""
    return r[..., :, 0] * v[..., 0, None] + r[..., :, 1] * v[..., 1, None] + r[..., :, 2] * v[..., 2, None]


def _rotate_samples(r, x):
    """Rotate every point of ``x`` (n, ..., 3) by its sample's matrix ``r`` (n, 3, 3)."""
    flat = x.reshape(x.shape[0], -1, 3)
    return np.matmul(flat, np.swapaxes(r, 1, 2)).reshape(x.shape)


def _unit(v, fallback=(0.0, 0.0, 1.0)):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 1e-9, v / np.maximum(n, 1e-9), np.asarray(fallback))


def _vec(x=0.0, y=0.0, z=0.0):
    """Stack broadcastable components into (..., 3)."""
    x, y, z = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
    return np.stack([x, y, z], -1)


def _two_bone_ik(root, target, a, b, pole):
    """Middle and end joints of a two-bone chain reaching for ``target``.

    ``root``/``target``/``pole`` (..., 3), bone lengths ``a``, ``b`` (...,). The chain bends
    towards ``pole``; out-of-reach targets are clamped to the reach.
    """
    d = target - root
    dist = np.linalg.norm(d, axis=-1)
    dhat = _unit(d, (0.0, 0.0, -1.0))
    dist = np.clip(dist, np.abs(a - b) + 0.02, (a + b) * 0.999)
    cos_a = np.clip((a * a + dist * dist - b * b) / (2 * a * dist), -1.0, 1.0)
    perp = pole - np.sum(pole * dhat, -1, keepdims=True) * dhat
    perp = _unit(perp, (0.0, 1.0, 0.0))
    mid = root + a[..., None] * (cos_a[..., None] * dhat + np.sqrt(1 - cos_a ** 2)[..., None] * perp)
    end = root + dist[..., None] * dhat
    return mid, end


def _align(v, target):
    """Rotation matrices (N, 3, 3) taking unit directions of ``v`` (N, 3) onto ``target`` (3,).

    The minimal rotation (about ``v x target``), as the field's NTU preprocessing does.
    """
    v = _unit(v)
    t = np.asarray(target, float)
    axis = np.cross(v, t)
    s = np.linalg.norm(axis, axis=-1)
    c = np.clip(v @ t, -1.0, 1.0)
    k = axis / np.maximum(s, 1e-12)[:, None]
    kx = np.zeros((len(v), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx[:, 1, 0], kx[:, 2, 0], kx[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    return np.eye(3) + s[:, None, None] * kx + (1 - c)[:, None, None] * (kx @ kx)


# --------------------------------------------------------------------------- bodies

_BODY_BASE = {  # metres at scale 1 (a 1.72 m adult)
    "spine_low": 0.26, "spine_up": 0.22, "neck": 0.07, "head": 0.14, "shoulder": 0.18,
    "upper_arm": 0.28, "forearm": 0.25, "hand": 0.08, "hand_tip": 0.07, "thumb": 0.05,
    "hip": 0.085, "hip_drop": 0.07, "thigh": 0.42, "shin": 0.40, "foot": 0.13, "ankle": 0.08,
}
_BODY_GROUPS = {  # which proportion factor scales each length
    "spine_low": "trunk", "spine_up": "trunk", "neck": "head", "head": "head", "shoulder": "width",
    "upper_arm": "arm", "forearm": "arm", "hand": "hand", "hand_tip": "hand", "thumb": "hand",
    "hip": "hips", "hip_drop": "hips", "thigh": "leg", "shin": "leg", "foot": "leg", "ankle": "leg",
}


def subject_table(rng: np.random.Generator, num_subjects: int) -> Dict[str, np.ndarray]:
    """Per-subject body lengths (metres), posture and tempo, each an array ``(S,)``."""
    s = num_subjects
    scale = np.clip(rng.normal(1.0, 0.055, s), 0.86, 1.14)
    factors = {g: np.clip(rng.normal(1.0, 0.04, s), 0.9, 1.1)
               for g in ("trunk", "head", "width", "arm", "hand", "hips", "leg")}
    out = {k: v * scale * factors[_BODY_GROUPS[k]] for k, v in _BODY_BASE.items()}
    out["height"] = (out["ankle"] + 0.985 * (out["thigh"] + out["shin"]) + out["hip_drop"]
                     + out["spine_low"] + out["spine_up"] + out["neck"] + out["head"] + 0.1 * scale)
    out["slouch"] = rng.uniform(0.0, 0.14, s)           # upper-spine forward bend, rad
    out["stance"] = rng.uniform(-0.02, 0.07, s)         # extra foot spread, leg lengths
    out["arm_out"] = rng.uniform(0.02, 0.12, s)         # idle hands away from the thighs, arm lengths
    out["arm_fwd"] = rng.uniform(-0.04, 0.10, s)
    out["tempo"] = np.clip(rng.normal(1.0, 0.08, s), 0.85, 1.18)
    out["vigour"] = np.clip(rng.normal(1.0, 0.08, s), 0.85, 1.18)
    return out


# --------------------------------------------------------------------------- controls

@dataclass
class _Person:
    """Controls of one person over time; arrays ``(n, T)`` or ``(n, T, 3)``.

    Wrist targets are relative to the shoulder and ankle targets relative to the standing
    hip, both in the person's facing frame (x right, y forward, z up), in units of the arm
    reach (upper arm + forearm) and of the leg length (thigh + shin). ``*_world`` targets
    (metres, scene frame) take over where their weight is 1.
    """

    root: np.ndarray              # (n, T, 3) floor point under the pelvis; z < 0 lowers the pelvis
    yaw: np.ndarray               # (n, T) facing, rad (0: facing +y)
    pitch: np.ndarray             # (n, T) forward bend at the hips, rad
    roll: np.ndarray              # (n, T) sideways lean, rad (+: to the right)
    twist: np.ndarray             # (n, T) upper-trunk rotation about the spine, rad
    head_pitch: np.ndarray        # (n, T)
    wrist_r: np.ndarray           # (n, T, 3)
    wrist_l: np.ndarray
    ankle_r: np.ndarray           # (n, T, 3)
    ankle_l: np.ndarray
    pole_r: np.ndarray            # (n, T, 3) where the elbows point, facing frame
    pole_l: np.ndarray
    bend_r: np.ndarray            # (n, T, 3) wrist bend added to the hand direction, facing frame
    bend_l: np.ndarray
    world_r: Optional[np.ndarray] = None
    world_r_w: Optional[np.ndarray] = None
    world_l: Optional[np.ndarray] = None
    world_l_w: Optional[np.ndarray] = None


@dataclass
class _Ctx:
    """What a class function needs about its ``n`` samples (arrays ``(n, 1)`` unless said)."""

    rng: np.random.Generator
    t: np.ndarray                 # (1, T) frame index
    start: np.ndarray             # first action frame
    dur: np.ndarray               # action frames
    length: np.ndarray            # valid frames
    tempo: np.ndarray             # speed factor (subject tendency x sample)
    vigour: np.ndarray            # amplitude factor
    body: Dict[str, np.ndarray]   # subject table rows of person 1, each (n, 1)
    body2: Dict[str, np.ndarray]  # of the partner
    p1: Optional[_Person] = None
    p2: Optional[_Person] = None

    @property
    def n(self) -> int:
        return self.start.shape[0]

    def u(self, lo, hi, *shape):
        return self.rng.uniform(lo, hi, (self.n, 1) + shape)

    def normal(self, sd, *shape):
        return self.rng.normal(0.0, sd, (self.n, 1) + shape)

    def tau(self):
        """Frames since the action started (negative before)."""
        return self.t - self.start

    def envelope(self, rise=None, fall=None):
        """Smoothly 0 -> 1 over ``rise`` frames at the action start, back over ``fall`` at its end."""
        rise = np.clip(0.22 * self.dur, 6, 16) / self.tempo if rise is None else rise
        fall = rise if fall is None else fall
        return _window(self.t, self.start, rise, self.dur - rise - fall, fall)

    def warp(self, amount=0.25):
        """Frames since the start, time-warped: the pace changes within the action."""
        tau = np.clip(self.tau(), 0, None)
        a = self.u(-amount, amount)
        return tau + self.dur * a * np.sin(2 * np.pi * np.clip(tau / self.dur, 0, 1)) / (2 * np.pi)


def _idle_person(ctx: _Ctx, body: Dict[str, np.ndarray]) -> _Person:
    """A person standing: sway, breathing, a slow turn; free arms hanging (with the subject's
    posture), a hand on the hip or behind the back."""
    n, T = ctx.n, ctx.t.shape[1]
    t = ctx.t / FPS
    sway_f = ctx.u(0.15, 0.45)
    sway = _vec(ctx.u(0.004, 0.015) * np.sin(2 * np.pi * sway_f * t + ctx.u(0, 6.3)),
                ctx.u(0.003, 0.012) * np.sin(2 * np.pi * sway_f * 0.7 * t + ctx.u(0, 6.3)), 0.0)
    breathe = ctx.u(0.005, 0.02) * np.sin(2 * np.pi * ctx.u(0.2, 0.35) * t + ctx.u(0, 6.3))
    out, fwd = body["arm_out"] + ctx.normal(0.03), body["arm_fwd"] + ctx.normal(0.03)
    arms, poles = [], []
    for side in (1.0, -1.0):
        # each free arm hangs (mostly), rests a hand on the hip, or holds it behind the back
        pose = ctx.u(0, 1)[..., None]
        hang = _vec(side * (out + ctx.normal(0.02)), fwd + ctx.normal(0.02), -0.96)
        hip = _vec(side * ctx.u(0.15, 0.3), ctx.u(-0.1, 0.05), ctx.u(-0.62, -0.5))
        back = _vec(-side * ctx.u(0.05, 0.2), ctx.u(-0.3, -0.2), ctx.u(-0.8, -0.7))
        arms.append(np.where(pose < 0.6, hang, np.where(pose < 0.8, hip, back)) + np.zeros((n, T, 3)))
        poles.append(np.where(pose < 0.6, _vec(side * 0.5, -0.5, -0.7), _vec(side * 1.0, -0.4, -0.2))
                     + np.zeros((n, T, 3)))
    stance = 0.0 + body["stance"] + ctx.normal(0.015)
    rest_knee = ctx.u(0, 0.03)  # weight on one leg, the other knee a little bent
    knee_side = ctx.u(0, 1) < 0.5
    return _Person(
        root=sway + np.zeros((n, T, 3)),
        # a little sway about the vertical, and a slow turn of up to ~20 degrees over the action
        yaw=(ctx.normal(0.03) * np.sin(2 * np.pi * sway_f * 0.5 * t)
             + ctx.u(-0.35, 0.35) * _ss(ctx.tau() / ctx.dur) + np.zeros((n, T))),
        pitch=breathe + np.zeros((n, T)), roll=ctx.normal(0.02) + np.zeros((n, T)),
        twist=np.zeros((n, T)), head_pitch=ctx.normal(0.08) + np.zeros((n, T)),
        wrist_r=arms[0], wrist_l=arms[1],
        ankle_r=_vec(stance, ctx.normal(0.03), -0.985 + rest_knee * knee_side) + np.zeros((n, T, 3)),
        ankle_l=_vec(-stance, ctx.normal(0.03), -0.985 + rest_knee * ~knee_side) + np.zeros((n, T, 3)),
        pole_r=poles[0], pole_l=poles[1],
        bend_r=np.zeros((n, T, 3)), bend_l=np.zeros((n, T, 3)),
    )


def _toward(a, b, w):
    """``a + w (b - a)``, ``w`` (n, T) broadcast over the last axis of vectors."""
    return a + w[..., None] * (b - a)


def _walk(ctx: _Ctx, p: _Person, body, travel: np.ndarray, direction: float = 1.0):
    """Stepping feet and swinging arms while the root covers ``travel`` (n, T) metres."""
    leg = body["thigh"] + body["shin"]
    stride = ctx.u(0.28, 0.4)
    phase = np.pi * travel / stride
    moving = np.clip(np.abs(np.gradient(travel, axis=1)) * 60, 0, 1)
    for k, ankle in enumerate((p.ankle_r, p.ankle_l)):
        ph = phase + np.pi * k
        ankle[..., 1] += moving * direction * 0.5 * stride / leg * np.cos(ph)
        # the foot is lifted while it swings ahead (moves relative to the hip the way one walks)
        ankle[..., 2] += moving * 0.07 / leg * np.maximum(0.0, -np.sin(ph))
    p.wrist_r[..., 1] -= moving * 0.12 * np.cos(phase)
    p.wrist_l[..., 1] += moving * 0.12 * np.cos(phase)


# --------------------------------------------------------------------------- classes

def _raise_or_wave(ctx: _Ctx, freq, amp, flap):
    p = ctx.p1
    env = ctx.envelope()
    centre = _vec(0.42 + ctx.normal(0.08), 0.15 + ctx.normal(0.08), 0.4 + ctx.normal(0.1))
    p.wrist_r = _toward(p.wrist_r, centre + 0 * p.wrist_r, env)
    p.pole_r = _toward(p.pole_r, _vec(1.0, -0.3, -1.0) + 0 * p.pole_r, env)
    if freq is not None:
        f = freq * ctx.tempo / FPS
        osc = np.sin(2 * np.pi * f * ctx.warp() + ctx.u(0, 6.3))
        a = amp * ctx.vigour * env ** 2
        p.wrist_r = p.wrist_r + _vec(a * osc, 0.0, -0.8 * (a * osc) ** 2)
        p.bend_r = p.bend_r + _vec(flap * env * osc, 0.0, 0.0)
    else:  # a raised hand drifts a little
        p.wrist_r = p.wrist_r + _vec(0.02 * np.sin(2 * np.pi * ctx.t / FPS * ctx.u(0.2, 0.5) + ctx.u(0, 6.3)), 0.0,
                                     0.02 * np.sin(2 * np.pi * ctx.t / FPS * ctx.u(0.2, 0.5))) * env[..., None]
    p.head_pitch = p.head_pitch - 0.1 * env


def _raise_hand(ctx):
    _raise_or_wave(ctx, None, None, 0.0)


def _wave_small_fast(ctx):
    _raise_or_wave(ctx, ctx.u(1.3, 2.2), ctx.u(0.1, 0.16), 0.6)


def _wave_large_slow(ctx):
    _raise_or_wave(ctx, ctx.u(0.55, 1.1), ctx.u(0.2, 0.32), 0.15)


def _front_arm(ctx: _Ctx, w):
    """Elbow and wrist of a right hand working in front of the chest (shared by its classes)."""
    p = ctx.p1
    pole = _vec(0.7 + ctx.normal(0.15), -0.3 + ctx.normal(0.15), -1.0)
    p.pole_r = _toward(p.pole_r, pole + 0 * p.pole_r, w)
    p.bend_r = p.bend_r + _vec(ctx.normal(0.1), 0.0, ctx.u(-0.1, 0.35)) * w[..., None]


def _draw(ctx: _Ctx, eight: bool):
    p = ctx.p1
    env = ctx.envelope()
    inner = env ** 2
    centre = _vec(-0.12 + ctx.normal(0.07), ctx.u(0.42, 0.72), ctx.u(-0.45, 0.0))
    radius = ctx.u(0.2, 0.32) * ctx.vigour
    # a clip holds one to three figures: the pace follows the duration
    cycles = ctx.u(1.2, 2.2) if eight else ctx.u(1.5, 3.0)
    f = np.clip(cycles * FPS / ctx.dur, 0.3, 1.4) / FPS
    phi = 2 * np.pi * f * ctx.warp() * np.where(ctx.u(0, 1) < 0.5, -1.0, 1.0) + ctx.u(0, 6.3)
    if eight:
        upright = ctx.u(0, 1) < 0.5   # an "8" or a lying "infinity"
        a, b = np.sin(phi), 0.9 * np.sin(2 * phi)
        x, z = np.where(upright, b, a), np.where(upright, a, b)
    else:
        x, z = np.cos(phi), np.sin(phi)
    tilt = ctx.normal(0.25)
    shape = radius * inner
    p.wrist_r = _toward(p.wrist_r, centre + 0 * p.wrist_r, env) + _vec(shape * x, shape * tilt * z, shape * z)
    _front_arm(ctx, env)


def _draw_circle(ctx):
    _draw(ctx, eight=False)


def _draw_figure_eight(ctx):
    _draw(ctx, eight=True)


def _punch(ctx: _Ctx):
    p = ctx.p1
    env = ctx.envelope(rise=np.clip(0.18 * ctx.dur, 5, 10) / ctx.tempo)
    guard = _vec(-0.15 + ctx.normal(0.06), ctx.u(0.3, 0.65), ctx.u(-0.45, -0.05))
    strike = _vec(-0.2 + ctx.normal(0.05), 0.97, ctx.u(-0.3, 0.15))
    p.wrist_r = _toward(p.wrist_r, guard + 0 * p.wrist_r, env)
    _front_arm(ctx, env)
    count = ctx.rng.integers(1, 5, (ctx.n, 1))
    margin = np.clip(0.18 * ctx.dur, 5, 10) + 2
    hit = np.zeros_like(env)
    for i in range(4):
        at = ctx.start + margin + (i + ctx.u(0.1, 0.7)) * (ctx.dur - 2 * margin - 8) / count
        w = _window(ctx.t, at, ctx.u(2.5, 4.5) / ctx.tempo, ctx.u(0, 2), ctx.u(4, 7) / ctx.tempo)
        hit = np.maximum(hit, w * (i < count))
    p.wrist_r = _toward(p.wrist_r, strike + 0 * p.wrist_r, hit)
    p.twist = p.twist + 0.2 * ctx.vigour * hit
    both = ctx.u(0, 1) < 0.4  # some keep the other fist up too
    lguard = _vec(0.15 + ctx.normal(0.05), ctx.u(0.25, 0.55), ctx.u(-0.45, -0.1))
    p.wrist_l = _toward(p.wrist_l, lguard + 0 * p.wrist_l, env * both)


def _reach_forward(ctx: _Ctx):
    p = ctx.p1
    rise = ctx.u(0.25, 0.45) * ctx.dur
    fall = ctx.u(0.25, 0.45) * ctx.dur
    w = _window(ctx.t, ctx.start, rise, ctx.dur - rise - fall, fall)
    target = _vec(-0.1 + ctx.normal(0.08), ctx.u(0.6, 0.95), ctx.u(-0.6, 0.3))
    p.wrist_r = _toward(p.wrist_r, target + 0 * p.wrist_r, w)
    _front_arm(ctx, w)
    p.pitch = p.pitch + ctx.u(-0.04, 0.1) * w
    p.bend_r = p.bend_r + _vec(0, 0, 0.3) * (w ** 4 - w)[..., None]  # the grasp at full reach


def _hands_meet(ctx: _Ctx, clap: bool):
    p, b = ctx.p1, ctx.body
    env = ctx.envelope()
    reach = b["upper_arm"] + b["forearm"]
    mid = -b["shoulder"] / reach   # the body's midline, in arm reaches from the right shoulder
    y, z = ctx.u(0.3, 0.6), ctx.u(-0.45, 0.05)
    cx = ctx.normal(0.04)
    if clap:
        f = ctx.u(1.4, 2.8) * ctx.tempo / FPS
        gap_max = ctx.u(0.25, 0.55) * ctx.vigour
        # the hands spend longer close together than far apart
        opening = (0.5 - 0.5 * np.cos(2 * np.pi * f * ctx.warp() + ctx.u(0, 1.0))) ** 1.5
        gap = 0.1 + gap_max * opening * env ** 2
    else:   # palms together, or held loosely a little apart
        gap = ctx.u(0.1, 0.2) + 0.01 * np.sin(2 * np.pi * ctx.t / FPS * ctx.u(0.2, 0.6)) + np.zeros_like(env)
    gap_l = gap + ctx.normal(0.01)
    right = _vec(mid + cx + gap / 2, y, z)
    left = _vec(-mid + cx - gap_l / 2, y, z + ctx.normal(0.01))
    p.wrist_r = _toward(p.wrist_r, right, env)
    p.wrist_l = _toward(p.wrist_l, left, env)
    p.pole_r = _toward(p.pole_r, _vec(1.0, -0.3, -1.0) + 0 * p.pole_r, env)
    p.pole_l = _toward(p.pole_l, _vec(-1.0, -0.3, -1.0) + 0 * p.pole_l, env)
    p.bend_r = p.bend_r + _vec(-0.4, 0, 0.6) * env[..., None]
    p.bend_l = p.bend_l + _vec(0.4, 0, 0.6) * env[..., None]
    p.head_pitch = p.head_pitch + 0.1 * env


def _clap(ctx):
    _hands_meet(ctx, clap=True)


def _hands_together(ctx):
    _hands_meet(ctx, clap=False)


def _leg_lift(ctx: _Ctx, kick: bool):
    p, b = ctx.p1, ctx.body
    leg = b["thigh"] + b["shin"]
    thigh = b["thigh"] / leg
    count = np.where(ctx.u(0, 1) < 0.35, 2, 1)
    lift = np.zeros((ctx.n, ctx.t.shape[1]))
    ext = np.zeros_like(lift)
    for i in range(2):
        slot = ctx.dur / count
        at = ctx.start + i * slot
        rise, fall = ctx.u(0.15, 0.35) * slot, ctx.u(0.15, 0.35) * slot
        if kick:  # the knee comes up (the chamber), the lower leg snaps out and back
            rise, fall = np.minimum(rise, ctx.u(6, 12) / ctx.tempo), np.minimum(fall, ctx.u(7, 13) / ctx.tempo)
            hold = (slot - rise - fall) * ctx.u(0.2, 0.9)
            chamber = _window(ctx.t, at, rise, hold, fall)
            snap_at = at + rise * ctx.u(0.6, 1.0) + ctx.u(0, 0.5) * np.maximum(hold - 8, 0)
            snap = _window(ctx.t, snap_at, ctx.u(3, 5) / ctx.tempo, ctx.u(0, 3), ctx.u(4, 7) / ctx.tempo)
        else:
            chamber = _window(ctx.t, at, rise, (slot - rise - fall) * ctx.u(0.3, 1.0), fall)
            snap = np.zeros_like(chamber)
        lift = np.maximum(lift, chamber * (i < count))
        ext = np.maximum(ext, snap * (i < count))
    if kick:
        knee_up = ctx.u(0.8, 1.5) * ctx.vigour      # chamber: thigh raised, knee bent
        angle = ctx.u(0.8, 1.35) * ctx.vigour        # the straight leg at the snap
        bent = _vec(0.0, thigh * np.sin(knee_up) + 0.05, -thigh * np.cos(knee_up) - (1 - thigh))
        straight = _vec(0.0, 0.98 * np.sin(angle), -0.98 * np.cos(angle))
        target = _toward(bent + 0 * p.ankle_r, straight + 0 * p.ankle_r, ext)
        p.pitch = p.pitch - 0.15 * ext + ctx.normal(0.06) * lift
    else:
        angle = ctx.u(0.8, 1.6) * np.sqrt(ctx.vigour)  # thigh raised, shin hanging
        target = _vec(0.0, thigh * np.sin(angle) + 0.05, -thigh * np.cos(angle) - (1 - thigh))
        p.pitch = p.pitch + ctx.normal(0.06) * lift
    p.ankle_r = _toward(p.ankle_r, target + 0 * p.ankle_r, lift)
    p.ankle_l[..., 2] += 0.01 * lift                # the standing knee gives a little
    p.roll = p.roll - 0.06 * lift                     # weight over the standing leg
    balance = ctx.u(0.0, 0.25)
    p.wrist_r = p.wrist_r + _vec(balance, 0.1, balance) * lift[..., None]
    p.wrist_l = p.wrist_l + _vec(-balance, 0.1, balance) * lift[..., None]


def _kick(ctx):
    _leg_lift(ctx, kick=True)


def _knee_raise(ctx):
    _leg_lift(ctx, kick=False)


def _lower_body(ctx: _Ctx, squat: bool):
    p, b = ctx.p1, ctx.body
    count = np.where(ctx.u(0, 1) < 0.3, 2, 1)
    w = np.zeros((ctx.n, ctx.t.shape[1]))
    for i in range(2):
        slot = ctx.dur / count
        rise, fall = ctx.u(0.2, 0.4) * slot, ctx.u(0.2, 0.4) * slot
        hold = (slot - rise - fall) * ctx.u(0.2, 1.0)
        w = np.maximum(w, _window(ctx.t, ctx.start + i * slot, rise, hold, fall) * (i < count))
    if squat:   # knees bend and the pelvis goes down (and back); the trunk leans to keep balance
        depth = ctx.u(0.12, 0.42) * ctx.vigour * b["thigh"] / 0.42
        p.root = p.root - _vec(0, ctx.u(0.0, 0.3), 1.0) * (depth * w)[..., None]
        p.pitch = p.pitch + (0.2 + 1.2 * depth + ctx.normal(0.1)) * w
    else:       # a bend at the hips, the legs straight or a little bent, the hips going back
        p.pitch = p.pitch + ctx.u(0.35, 1.1) * ctx.vigour * w
        p.root = p.root - _vec(0, 1.0, 0) * (ctx.u(0.03, 0.1) * w)[..., None]
        p.root = p.root - _vec(0, 0, 1.0) * (ctx.u(0.0, 0.1) * w)[..., None]
        p.head_pitch = p.head_pitch + ctx.u(0.1, 0.35) * w
    # the arms: hanging, forward for balance, or hands together in front
    arms = ctx.u(0, 1)
    forward, clasp = (arms < 0.3) * w, ((arms >= 0.3) & (arms < 0.6)) * w
    p.wrist_r = _toward(p.wrist_r, _vec(-0.05, 0.95, 0.0), forward)
    p.wrist_l = _toward(p.wrist_l, _vec(0.05, 0.95, 0.0), forward)
    p.wrist_r = _toward(p.wrist_r, _vec(-0.2, 0.3, -0.8), clasp)
    p.wrist_l = _toward(p.wrist_l, _vec(0.2, 0.3, -0.8), clasp)


def _squat(ctx):
    _lower_body(ctx, squat=True)


def _bow(ctx):
    _lower_body(ctx, squat=False)


def _pair(ctx: _Ctx, near: Tuple[float, float], far: Tuple[float, float]):
    """Put person 2 facing person 1, ``far`` metres away, and walk both towards each other
    until they are ``near``; returns the frames the approach takes."""
    d0, d1 = ctx.u(*far), ctx.u(*near)
    walk_frames = ctx.u(0.3, 0.55) * ctx.dur
    w = _window(ctx.t, ctx.start, walk_frames, 1e6, 1.0)
    gap = d0 + (d1 - d0) * w
    share = ctx.u(0.3, 0.7)                         # how much of the approach person 1 walks
    lateral = ctx.normal(0.06)
    ctx.p1.root[..., 1] += share * (d0 - gap)
    ctx.p2.root[..., 0] += lateral
    ctx.p2.root[..., 1] += d0 - (1 - share) * (d0 - gap)
    ctx.p2.yaw = ctx.p2.yaw + np.pi + ctx.normal(0.08)
    _walk(ctx, ctx.p1, ctx.body, share * (d0 - gap))
    _walk(ctx, ctx.p2, ctx.body2, (1 - share) * (d0 - gap))
    return walk_frames


def _chest(ctx: _Ctx, p: _Person, body, frac: float = 0.75):
    """Approximate scene position of ``p``'s trunk at ``frac`` of the spine (from the pelvis)."""
    h = body["ankle"] + 0.985 * (body["thigh"] + body["shin"]) + body["hip_drop"]
    return p.root + _vec(0, 0, h + frac * (body["spine_low"] + body["spine_up"]))


def _handshake(ctx: _Ctx):
    walk_frames = _pair(ctx, (0.7, 0.85), (1.1, 1.5))
    after = ctx.start + walk_frames - 4
    stay = ctx.start + ctx.dur - after
    w = _window(ctx.t, after, ctx.u(8, 14), stay - 22, ctx.u(6, 10))   # the right hands meet
    f = ctx.u(2.0, 3.8) * ctx.tempo / FPS
    pumping = _window(ctx.t, after + 10, 4, stay - 30, 4)
    shake = ctx.u(0.02, 0.05) * ctx.vigour * np.sin(2 * np.pi * f * (ctx.t - after)) * pumping
    meet_h = 0.58 * (ctx.body["height"] + ctx.body2["height"]) / 2 + ctx.normal(0.04)
    meet = _vec(ctx.normal(0.04), (ctx.p1.root[..., 1] + ctx.p2.root[..., 1]) / 2, meet_h + shake)
    for p in (ctx.p1, ctx.p2):
        p.world_r, p.world_r_w = meet, w
        p.pole_r = _toward(p.pole_r, _vec(0.6, -0.5, -1.0) + 0 * p.pole_r, w)
        p.bend_r = p.bend_r + _vec(-0.3, 0.0, 0.0) * w[..., None]


def _push(ctx: _Ctx):
    walk_frames = _pair(ctx, (0.55, 0.7), (0.8, 1.1))
    hit_at = ctx.start + walk_frames + ctx.u(2, 10)
    out, back = ctx.u(4, 8) / ctx.tempo, ctx.u(10, 18)
    hold = ctx.u(1, 6)
    arms = _window(ctx.t, hit_at, out, hold, back)
    force = ctx.u(0.2, 0.45) * ctx.vigour
    # person 2 staggers back after the contact, leaning back, then recovers
    shove = _ss((ctx.t - hit_at - 0.6 * out) / ctx.u(8, 14))
    lean = _window(ctx.t, hit_at + 0.6 * out, ctx.u(5, 9), ctx.u(0, 6), ctx.u(12, 20))
    disp = force * shove
    ctx.p2.root[..., 1] += disp
    _walk(ctx, ctx.p2, ctx.body2, disp, direction=-1.0)
    ctx.p2.pitch = ctx.p2.pitch - ctx.u(0.15, 0.35) * lean
    ctx.p2.wrist_r = ctx.p2.wrist_r + _vec(0.25, 0.3, 0.45) * (ctx.u(0, 1) * lean)[..., None]
    ctx.p2.wrist_l = ctx.p2.wrist_l + _vec(-0.25, 0.3, 0.45) * (ctx.u(0, 1) * lean)[..., None]
    chest = _chest(ctx, ctx.p2, ctx.body2)
    for side, sign in (("r", 1.0), ("l", -1.0)):
        target = chest + _vec(sign * ctx.u(0.08, 0.15), -0.12, ctx.normal(0.04))
        setattr(ctx.p1, f"world_{side}", target)
        setattr(ctx.p1, f"world_{side}_w", arms)
        setattr(ctx.p1, f"bend_{side}", getattr(ctx.p1, f"bend_{side}") + _vec(0, 0, 0.7) * arms[..., None])
    ctx.p1.pitch = ctx.p1.pitch + ctx.u(0.08, 0.25) * arms
    _walk(ctx, ctx.p1, ctx.body, 0.25 * force * shove)
    ctx.p1.root[..., 1] += 0.25 * force * shove


def _hug(ctx: _Ctx):
    walk_frames = _pair(ctx, (0.3, 0.42), (1.1, 1.6))
    after = ctx.start + walk_frames - 6
    w = _window(ctx.t, after, ctx.u(8, 14), ctx.start + ctx.dur - after - 20, ctx.u(6, 10))
    for p, q, qbody, toward in ((ctx.p1, ctx.p2, ctx.body2, 1.0), (ctx.p2, ctx.p1, ctx.body, -1.0)):
        # around the partner: one arm over the shoulder, one under the arm
        back = _chest(ctx, q, qbody) + _vec(0, toward * 0.12, 0)
        hi, lo = ctx.u(0.08, 0.2), ctx.u(-0.15, -0.02)
        p.world_r = back + _vec(toward * 0.1, 0, hi)
        p.world_l = back + _vec(-toward * 0.1, 0, lo)
        p.world_r_w = p.world_l_w = w
        p.pole_r = _toward(p.pole_r, _vec(1.0, 0.0, -0.3) + 0 * p.pole_r, w)
        p.pole_l = _toward(p.pole_l, _vec(-1.0, 0.0, -0.3) + 0 * p.pole_l, w)
        p.pitch = p.pitch + 0.12 * w
        p.head_pitch = p.head_pitch - 0.2 * w


CLASS_FUNCTIONS: Dict[str, Callable[[_Ctx], None]] = {
    "raise_hand": _raise_hand, "wave_small_fast": _wave_small_fast, "wave_large_slow": _wave_large_slow,
    "draw_circle": _draw_circle, "draw_figure_eight": _draw_figure_eight,
    "punch": _punch, "reach_forward": _reach_forward, "clap": _clap, "hands_together": _hands_together,
    "kick": _kick, "knee_raise": _knee_raise, "squat": _squat, "bow": _bow,
    "handshake": _handshake, "push": _push, "hug": _hug,
}


# --------------------------------------------------------------------------- kinematics

def _pose(p: _Person, body: Dict[str, np.ndarray]) -> np.ndarray:
    """Joint positions ``(n, T, 25, 3)`` in the scene frame (metres) from controls ``p``."""
    n, T = p.yaw.shape
    J = np.zeros((n, T, 25, 3))
    reach = body["upper_arm"] + body["forearm"]
    leg = body["thigh"] + body["shin"]
    yaw = _rot_z(p.yaw)
    trunk = yaw @ _rot_x(-p.pitch) @ _rot_y(p.roll)
    upper = trunk @ _rot_x(-(body["slouch"] + 0.3 * p.pitch)) @ _rot_z(p.twist)
    pelvis = yaw @ _rot_x(-0.25 * p.pitch)
    hip_z = body["ankle"] + 0.985 * leg
    base = p.root + _vec(0, 0, hip_z + body["hip_drop"])
    J[:, :, SPINE_BASE] = base
    J[:, :, SPINE_MID] = base + _mv(trunk, _vec(0, 0, body["spine_low"]))
    J[:, :, SPINE_SHOULDER] = J[:, :, SPINE_MID] + _mv(upper, _vec(0, 0, body["spine_up"]))
    J[:, :, NECK] = J[:, :, SPINE_SHOULDER] + _mv(upper, _vec(0, 0.01, body["neck"]))
    head = upper @ _rot_x(-p.head_pitch)
    J[:, :, HEAD] = J[:, :, NECK] + _mv(head, _vec(0, 0.02, body["head"]))
    fwd = _mv(yaw, _vec(0, 1.0, 0))
    lateral = _mv(yaw, _vec(1.0, 0, 0))
    up = np.array([0.0, 0.0, 1.0])
    for side, sh, el, wr, ha, tip, th, hip, kn, an, ft in (
            (1.0, R_SHOULDER, R_ELBOW, R_WRIST, R_HAND, R_HAND_TIP, R_THUMB, R_HIP, R_KNEE, R_ANKLE, R_FOOT),
            (-1.0, L_SHOULDER, L_ELBOW, L_WRIST, L_HAND, L_HAND_TIP, L_THUMB, L_HIP, L_KNEE, L_ANKLE, L_FOOT)):
        s = "r" if side > 0 else "l"
        shoulder = J[:, :, SPINE_SHOULDER] + _mv(upper, _vec(side * body["shoulder"], -0.02, -0.035))
        J[:, :, sh] = shoulder
        target = shoulder + _mv(yaw, getattr(p, f"wrist_{s}") * reach[..., None])
        world, w = getattr(p, f"world_{s}"), getattr(p, f"world_{s}_w")
        if world is not None:
            target = _toward(target, world, w)
        elbow, wrist = _two_bone_ik(shoulder, target, body["upper_arm"] + 0 * p.yaw,
                                    body["forearm"] + 0 * p.yaw, _mv(yaw, getattr(p, f"pole_{s}")))
        J[:, :, el], J[:, :, wr] = elbow, wrist
        forearm = _unit(wrist - elbow)
        hand_dir = _unit(forearm + _mv(yaw, getattr(p, f"bend_{s}")))
        J[:, :, ha] = wrist + body["hand"][..., None] * hand_dir
        J[:, :, tip] = J[:, :, ha] + body["hand_tip"][..., None] * _unit(hand_dir + 0.25 * fwd)
        # the thumb: forward, up and inwards, away from the hand's own direction
        lead = fwd + 0.6 * up - 0.4 * side * lateral
        thumb_dir = _unit(lead - np.sum(lead * hand_dir, -1, keepdims=True) * hand_dir + 0.5 * hand_dir)
        J[:, :, th] = wrist + 0.6 * body["hand"][..., None] * hand_dir + body["thumb"][..., None] * thumb_dir
        J[:, :, hip] = base + _mv(pelvis, _vec(side * body["hip"], 0, -body["hip_drop"]))
        standing_hip = p.root * [1, 1, 0] + _mv(yaw, _vec(side * body["hip"], 0, 0)) + _vec(0, 0, hip_z)
        ankle_t = standing_hip + _mv(yaw, getattr(p, f"ankle_{s}") * leg[..., None])
        knee_pole = fwd + 0.15 * side * lateral
        knee, ankle = _two_bone_ik(J[:, :, hip], ankle_t, body["thigh"] + 0 * p.yaw,
                                   body["shin"] + 0 * p.yaw, knee_pole)
        J[:, :, kn], J[:, :, an] = knee, ankle
        shin = _unit(ankle - knee)
        J[:, :, ft] = ankle + body["foot"][..., None] * _unit(fwd + 0.35 * shin)
    return J


# --------------------------------------------------------------------------- sensor

def _camera(scene: np.ndarray, yaw: np.ndarray, tilt: np.ndarray, distance: np.ndarray,
            height: np.ndarray) -> np.ndarray:
    """Scene frame (x right of person 1, y forward, z up) -> Kinect camera coordinates.

    ``scene`` (n, T, M, V, 3); the camera stands ``distance`` in front of person 1's start
    position, turned by ``yaw`` about the vertical, at ``height``, tilted down by ``tilt``.
    Camera axes: x sensor-left (person 1's right when facing it), y up, z depth.
    """
    p = _rotate_samples(_rot_z(yaw), scene)
    cam = np.stack([p[..., 0], p[..., 2] - height[:, None, None, None],
                    distance[:, None, None, None] - p[..., 1]], -1)
    return _rotate_samples(_rot_x(tilt), cam)


def _sensor(rng: np.random.Generator, cam: np.ndarray, view: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Kinect faults on camera coordinates ``cam`` (n, T, M, V, 3); zeros mark lost joints."""
    n, T, M, V, _ = cam.shape
    level = np.asarray(VIEW_NOISE, dtype=np.float32)[view][:, None, None, None, None]
    scale = np.ones(V, dtype=np.float32)
    scale[list(EXTREMITIES)] = 1.5
    scale[[L_HAND_TIP, L_THUMB, R_HAND_TIP, R_THUMB]] = 2.5
    sd = np.array([0.002, 0.002, 0.004], dtype=np.float32) * level * scale[:, None]
    noise = rng.standard_normal(cam.shape, dtype=np.float32) * sd
    # slow drift: low-passed noise, a few millimetres
    noise += _slow_noise(rng, cam.shape, 6) * (0.003 * level)
    # inferred joints: behind the trunk as the camera sees it -> large, smooth errors
    centre = cam[:, :, :, SPINE_MID:SPINE_MID + 1]
    behind = (cam[..., 2] > centre[..., 2] + 0.05) & (np.abs(cam[..., 0] - centre[..., 0]) < 0.2)
    behind[..., list(TRUNK)] = False
    if behind.any():
        noise += behind[..., None] * _slow_noise(rng, cam.shape, 5) * np.float32(0.025)
    out = cam + noise
    # dropped joints: stuck at their last position, or zero, for a few frames
    events = rng.poisson(0.7 * np.asarray(VIEW_NOISE)[view])
    for i in np.nonzero(events)[0]:
        for _ in range(events[i]):
            m = int(rng.integers(M)) if rng.random() < 0.4 else 0
            j = DROPPABLE[rng.integers(len(DROPPABLE))]
            s = int(rng.integers(1, max(2, length[i] - 2)))
            e = min(int(length[i]), s + int(rng.integers(2, 13)))
            out[i, s:e, m, j] = 0.0 if rng.random() < 0.35 else out[i, s - 1, m, j]
    return out


def _order_by_energy(x: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Put the person with the most motion energy first, as the field's NTU readers do.

    Energy of a person: the standard deviations of its x, y and z coordinates over all joints
    of its non-empty valid frames, summed. ``x`` (n, T, M, V, 3).
    """
    valid = (np.arange(x.shape[1])[None, :] < length[:, None])[:, :, None, None]   # (n, T, 1, 1)
    valid = valid & np.any(x != 0, axis=(3, 4), keepdims=True)[..., 0]             # (n, T, M, 1)
    w = valid[..., None].astype(x.dtype)                                              # (n, T, M, 1, 1)
    count = w.sum(axis=(1, 3)) * x.shape[3]                                           # (n, M, 1)
    mean = (x * w).sum(axis=(1, 3)) / np.maximum(count, 1)
    var = ((x - mean[:, None, :, None]) ** 2 * w).sum(axis=(1, 3)) / np.maximum(count, 1)
    energy = np.sqrt(var).sum(-1)                                                     # (n, M)
    order = np.argsort(-energy, axis=1, kind="stable")
    return np.take_along_axis(x, order[:, None, :, None, None], axis=2)


def ntu_normalise(x: np.ndarray) -> np.ndarray:
    """The field's NTU normalisation of ``x`` (n, T, M, V, 3), zeros meaning missing.

    Per frame, subtract person 1's spine-middle joint (missing joints stay zero); then rotate
    every sample so that person 1's spine-base -> spine-middle vector at frame 0 lies along
    +z, and then so that its right-shoulder - left-shoulder vector lies along +x (each the
    minimal rotation, as in the 2s-AGCN ``pre_normalization`` the field uses).
    """
    mask = np.any(x != 0, axis=-1, keepdims=True)
    x = (x - x[:, :, :1, SPINE_MID:SPINE_MID + 1]) * mask
    r1 = _align(x[:, 0, 0, SPINE_MID] - x[:, 0, 0, SPINE_BASE], (0.0, 0.0, 1.0))
    x = _rotate_samples(r1, x)
    r2 = _align(x[:, 0, 0, R_SHOULDER] - x[:, 0, 0, L_SHOULDER], (1.0, 0.0, 0.0))
    return _rotate_samples(r2, x) * mask


# --------------------------------------------------------------------------- generator

def sample_grid(num_samples: int, num_subjects: int, num_views: int = 3):
    """(subject, view, repetition) of a class's samples 0..K-1, 0-based.

    Every prefix is balanced: the first ``num_subjects`` samples cover every subject once
    and the views in turn, so small ``samples_per_class`` still fill both halves of xsub
    and xview.
    """
    k = np.arange(num_samples)
    rep = k // (num_subjects * num_views)
    j = k % (num_subjects * num_views)
    subject = j % num_subjects
    view = (j // num_subjects + subject) % num_views
    return subject, view, rep


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a whole number, 0 or more (got {seed!r})")


def _check_args(samples_per_class, num_subjects, repetitions, frames, seed=0):
    _check_seed(seed)
    if num_subjects is None or int(num_subjects) < 2:
        raise ConfigError(f"num_subjects must be at least 2 (got {num_subjects})")
    if repetitions is None or int(repetitions) < 1:
        raise ConfigError(f"repetitions must be at least 1 (got {repetitions})")
    if samples_per_class is not None and int(samples_per_class) < 1:
        raise ConfigError(f"samples per class must be at least 1 (got {samples_per_class})")
    if frames < MAX_LENGTH:
        raise ConfigError(f"frames must be at least {MAX_LENGTH} (got {frames})")


def _generate_class(c: int, seed: int, subjects: Dict[str, np.ndarray], samples: int, frames: int,
                    timing: Optional[dict] = None):
    """Samples of class ``c``: data (K, C, T, V, M) float32 and per-sample columns.

    ``timing``, when given, receives ``start`` and ``dur`` ``(K,)``: the action's first frame and
    its number of frames within the valid clip (the untrimmed videos label that stretch).
    """
    name = CLASS_NAMES[c]
    S = len(subjects["height"])
    rng = np.random.default_rng([seed, 1, c])
    subject, view, rep = sample_grid(samples, S, len(VIEW_YAW_DEG))
    # the partner of a two-person action: another subject of the same xsub half
    half = subject % 2
    members = (S - half + 1) // 2
    other = (subject // 2 + rng.integers(1, np.maximum(members, 2), samples)) % members
    partner = half + 2 * other
    n = samples
    two = name in TWO_PERSON
    length = rng.integers(MIN_LENGTH, MAX_LENGTH + 1, n)
    if name in CLASS_MIN_LENGTH:  # slow and two-person actions need more time
        length = np.maximum(length, rng.integers(CLASS_MIN_LENGTH[name], MAX_LENGTH + 1, n))
    dur = np.minimum(np.maximum(np.round(length * rng.uniform(0.3, 0.95, n)), 36), length)
    start = np.floor(rng.uniform(0, 1, n) * (length - dur + 1))
    T = MAX_LENGTH
    body = {k: v[subject][:, None] for k, v in subjects.items()}
    body2 = {k: v[partner][:, None] for k, v in subjects.items()}
    ctx = _Ctx(rng=rng, t=np.arange(T, dtype=float)[None], start=start[:, None], dur=dur[:, None],
               length=length[:, None], tempo=body["tempo"] * rng.uniform(0.92, 1.08, (n, 1)),
               vigour=body["vigour"] * rng.uniform(0.92, 1.08, (n, 1)), body=body, body2=body2)
    ctx.p1 = _idle_person(ctx, body)
    ctx.p2 = _idle_person(ctx, body2) if two else None
    CLASS_FUNCTIONS[name](ctx)
    persons = [_pose(ctx.p1, body)] + ([_pose(ctx.p2, body2)] if two else [])
    scene = np.stack(persons, 2)                                    # (n, T, M, V, 3), M = 1 or 2
    # each repetition turned a little towards one side, like NTU's two takes
    facing = np.where(rep % 2 == 0, 1.0, -1.0) * rng.uniform(0, 12, n)
    yaw = np.deg2rad(np.asarray(VIEW_YAW_DEG)[view] + facing + rng.normal(0, 5, n))
    if two:  # a pair faces each other, so the cameras see them from the side (as in NTU)
        yaw += np.deg2rad(np.where(rng.random(n) < 0.5, -1.0, 1.0) * rng.uniform(70, 90, n))
    tilt = np.deg2rad(np.asarray(VIEW_TILT_DEG)[view] + rng.normal(0, 2, n))
    cam = _camera(scene, yaw, tilt, rng.uniform(2.4, 3.6, n), rng.uniform(0.8, 1.2, n))
    cam = _sensor(rng, cam, view, length)
    if two:
        cam = _order_by_energy(cam, length)
    x = ntu_normalise(cam).astype(np.float32)
    if not two:  # person 2 absent: zeros
        x = np.concatenate([x, np.zeros_like(x)], axis=2)
    x = np.transpose(x, (0, 4, 1, 3, 2))                           # (n, C, T, V, M)
    # pad to `frames` by repeating the valid clip (the NTU recipe)
    idx = np.arange(frames)[None, :] % length[:, None]
    data = x[np.arange(n)[:, None, None], np.arange(3)[None, :, None], idx[:, None, :]]
    if timing is not None:
        timing["start"], timing["dur"] = start.astype(np.int64), dur.astype(np.int64)
    return data, length.astype(np.int64), subject, view, rep


def generate(seed: int = 0, samples_per_class: Optional[int] = None, *, num_subjects: int = DEFAULT_SUBJECTS,
             repetitions: int = DEFAULT_REPETITIONS, frames: int = FRAMES) -> Dict[str, object]:
    """Generate the data set in memory (deterministic for a given ``seed``).

    Args:
        seed: random seed; the same seed gives identical arrays.
        samples_per_class: samples of each class; ``None``: every subject in every view
            ``repetitions`` times (``num_subjects * 3 * repetitions``).
        num_subjects: number of subjects (body proportions, posture and tempo each).
        repetitions: repetitions per subject and view when ``samples_per_class`` is None.
        frames: padded length ``T`` (at least 150).

    Returns:
        ``data`` ``(N, 3, T, 25, 2)`` float32 (metres, NTU-normalised, padded by repeating the
        valid clip), ``labels`` ``(N,)`` int64, ``lengths`` ``(N,)`` int64 (40..150),
        ``subject``, ``view``, ``repetition`` ``(N,)`` int64 (0-based), ``names`` (NTU-style
        ``SsssCcccPpppRrrrAaaa``), ``class_names`` and ``splits``
        ``{"xsub"|"xview": {"train"|"test": indices}}``. Samples are ordered by class.
    """
    out = {"data": [], "labels": [], "lengths": [], "subject": [], "view": [], "repetition": []}
    for chunk in _iter_classes(seed, samples_per_class, num_subjects, repetitions, frames):
        for k in out:
            out[k].append(chunk[k])
    result: Dict[str, object] = {k: np.concatenate(v) for k, v in out.items()}
    result.update(_index(result["labels"], result["subject"], result["view"], result["repetition"]))
    return result


def _iter_classes(seed, samples_per_class, num_subjects, repetitions, frames) -> Iterator[dict]:
    _check_args(samples_per_class, num_subjects, repetitions, frames, seed)
    seed = int(seed)
    subjects = subject_table(np.random.default_rng([seed, 0]), int(num_subjects))
    k = _per_class(samples_per_class, num_subjects, repetitions)
    for c in range(len(CLASS_NAMES)):
        data, length, subject, view, rep = _generate_class(c, seed, subjects, k, int(frames))
        yield {"data": data, "labels": np.full(k, c, dtype=np.int64), "lengths": length,
               "subject": subject.astype(np.int64), "view": view.astype(np.int64),
               "repetition": rep.astype(np.int64)}


def _per_class(samples_per_class, num_subjects, repetitions) -> int:
    if samples_per_class is not None:
        return int(samples_per_class)
    return int(num_subjects) * len(VIEW_YAW_DEG) * int(repetitions)


def _name(label: int, subject: int, view: int, rep: int) -> str:
    """NTU-style sample name ``SsssCcccPpppRrrrAaaa`` (1-based; one setup)."""
    return f"S001C{view + 1:03d}P{subject + 1:03d}R{rep + 1:03d}A{label + 1:03d}"


def _index(labels, subject, view, rep) -> dict:
    names = [_name(c, s, v, r) for c, s, v, r in zip(labels.tolist(), subject.tolist(), view.tolist(), rep.tolist())]
    idx = np.arange(len(labels))
    xsub = subject % 2 == 0
    xview = np.isin(view, XVIEW_TRAIN_VIEWS)
    splits = {"xsub": {"train": idx[xsub].tolist(), "test": idx[~xsub].tolist()},
              "xview": {"train": idx[xview].tolist(), "test": idx[~xview].tolist()}}
    return {"names": names, "class_names": list(CLASS_NAMES), "splits": splits}


def prepare_synthetic(out: str | os.PathLike, seed: int = 0, samples_per_class: Optional[int] = None, *,
                      num_subjects: int = DEFAULT_SUBJECTS, repetitions: int = DEFAULT_REPETITIONS,
                      progress: bool = True, overwrite: bool = False) -> dict:
    """Generate the built-in data set and write it as a prepared folder (atomically).

    ``out`` must be new or empty, or (``overwrite``) a prepared folder written by pcm3.

    Arguments as :func:`generate`. ``samples.csv`` gets the columns ``subject``, ``view``
    (0-based camera), ``camera`` (1-based), ``repetition``. Returns a summary: samples,
    seconds, and counts per class, view and subject.
    """
    from pcm3.progress import track

    from pcm3.data.prepared import PreparedWriter

    _check_args(samples_per_class, num_subjects, repetitions, FRAMES, seed)
    t0 = time.perf_counter()
    n = _per_class(samples_per_class, num_subjects, repetitions) * len(CLASS_NAMES)
    meta = {"seed": int(seed), "num_subjects": int(num_subjects), "views_deg": list(VIEW_YAW_DEG),
            "fps": FPS, "units": "metres", "two_person_classes": list(TWO_PERSON),
            "generator": "pcm3.data.synthetic"}
    cols: Dict[str, List[np.ndarray]] = {"labels": [], "subject": [], "view": [], "repetition": []}
    with PreparedWriter(out, kind="clips", shape=(n, 3, FRAMES, 25, 2), dataset="synthetic", layout="ntu25",
                        class_names=CLASS_NAMES, source=f"pcm3 built-in synthetic actions (seed {int(seed)})",
                        extra_meta=meta, overwrite=overwrite) as w:
        i = 0
        chunks = _iter_classes(seed, samples_per_class, num_subjects, repetitions, FRAMES)
        for chunk in track(chunks, total=len(CLASS_NAMES), desc="synthetic", unit="class", disable=not progress):
            for j in range(len(chunk["labels"])):
                c, s, v, r = (int(chunk[key][j]) for key in ("labels", "subject", "view", "repetition"))
                w.set(i, chunk["data"][j], label=c, length=int(chunk["lengths"][j]), name=_name(c, s, v, r),
                      subject=s, view=v, camera=v + 1, repetition=r)
                i += 1
            for key in cols:
                cols[key].append(chunk[key])
        arr = {key: np.concatenate(v) for key, v in cols.items()}
        w.set_splits(_index(arr["labels"], arr["subject"], arr["view"], arr["repetition"])["splits"])
    return {"out": str(out), "samples": n, "seconds": time.perf_counter() - t0,
            **counts(arr["labels"], arr["subject"], arr["view"])}


def counts(labels: np.ndarray, subject: np.ndarray, view: np.ndarray) -> dict:
    """Samples per class name, per view (camera, 1-based) and per subject (1-based)."""
    return {"per_class": {CLASS_NAMES[c]: int((labels == c).sum()) for c in range(len(CLASS_NAMES))},
            "per_camera": {int(v) + 1: int((view == v).sum()) for v in np.unique(view)},
            "per_subject": {int(s) + 1: int((subject == s).sum()) for s in np.unique(subject)}}


def format_counts(summary: dict) -> str:
    """Per-class, per-camera and per-subject sample counts, a few lines."""
    lines = ["  per class:   " + ", ".join(f"{k} {v}" for k, v in summary["per_class"].items()),
             "  per camera:  " + ", ".join(f"C{k:03d} ({VIEW_YAW_DEG[k - 1]:+.0f} deg) {v}"
                                           for k, v in summary["per_camera"].items()),
             "  per subject: " + ", ".join(f"P{k:03d} {v}" for k, v in summary["per_subject"].items())]
    return "\n".join(lines)


# --------------------------------------------------------------------------- untrimmed videos

UNTRIMMED_SUBJECTS = 10
UNTRIMMED_VIDEOS_PER_VIEW = 2
UNTRIMMED_ACTIONS = 8
TRANSITION_FRAMES = (8, 30)


def _untrimmed_args(num_subjects, videos_per_view, actions_per_video):
    if num_subjects is None or int(num_subjects) < 2:
        raise ConfigError(f"num_subjects must be at least 2 (got {num_subjects})")
    if videos_per_view is None or int(videos_per_view) < 1:
        raise ConfigError(f"videos per subject and camera must be at least 1 (got {videos_per_view})")
    if actions_per_video is None or not 1 <= int(actions_per_video) <= len(CLASS_NAMES):
        raise ConfigError(f"actions per video must be in 1..{len(CLASS_NAMES)} (got {actions_per_video})")


def _untrimmed_name(subject: int, view: int, video: int) -> str:
    """``SsssCcccPpppVvvv`` (1-based): setup, camera, performer, video of that performer and camera."""
    return f"S002C{view + 1:03d}P{subject + 1:03d}V{video + 1:03d}"


def _transition(a: np.ndarray, b: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """``frames`` frames ``(C, G, V, M)`` moving from pose ``a`` to pose ``b`` (``(C, V, M)`` each)
    with a minimum-jerk blend and a few millimetres of sensor noise. Person 2 is kept only where
    both ends have one (else it is absent, zeros)."""
    w = _ss((np.arange(1, frames + 1) / (frames + 1)))[None, :, None, None]       # (1, G, 1, 1)
    out = a[:, None] * (1 - w) + b[:, None] * w
    present = out != 0
    out = out + rng.normal(0.0, 0.003, out.shape) * present
    out = (out - out[:, :, SPINE_MID:SPINE_MID + 1, :1]) * present   # centred as the clips are
    both = np.any(a[..., 1] != 0) and np.any(b[..., 1] != 0)
    if not both:
        out[..., 1] = 0.0
    return out.astype(np.float32)


def iter_untrimmed(seed: int = 0, *, num_subjects: int = UNTRIMMED_SUBJECTS,
                   videos_per_view: int = UNTRIMMED_VIDEOS_PER_VIEW,
                   actions_per_video: int = UNTRIMMED_ACTIONS) -> Iterator[dict]:
    """Untrimmed videos of the built-in actions, one dict per video (deterministic per ``seed``).

    Each video belongs to one subject seen by one camera and strings ``actions_per_video``
    different actions together: every action is a clip of the built-in generator (its idle
    stretches before and after the action included), and consecutive clips are joined by a
    transition of 8-30 frames (a smooth blend between the two poses, with sensor noise). The
    action's own frames (from the clip's action start, for its duration) are labelled; idle and
    transition frames are background.

    Yields:
        ``{"name", "data" (C, T, V, M) float32 (metres, NTU-normalised per clip), "subject",
        "view" (0-based), "video" (0-based, per subject and view), "intervals": [(label, start,
        end, 1.0)]}``, label 0-based, frames 0-based with ``end`` exclusive.
    """
    _check_seed(seed)
    _untrimmed_args(num_subjects, videos_per_view, actions_per_video)
    S, views, K = int(num_subjects), len(VIEW_YAW_DEG), len(CLASS_NAMES)
    per_pair = int(videos_per_view) * int(actions_per_video)   # clips needed per (subject, camera)
    reps = -(-per_pair // K)                                   # clips of each class per (subject, camera)
    # another stream than the clip data set's: same seed, different clips
    seed = int(seed)
    clip_seed = seed + 1_000_003
    subjects = subject_table(np.random.default_rng([clip_seed, 0]), S)
    samples = S * views * reps
    clips = []
    for c in range(K):
        timing: dict = {}
        data, length, subject, view, rep = _generate_class(c, clip_seed, subjects, samples, MAX_LENGTH, timing)
        lookup = {(int(s), int(v), int(r)): k for k, (s, v, r) in enumerate(zip(subject, view, rep))}
        clips.append((data, length, timing["start"], timing["dur"], lookup))
    rng = np.random.default_rng([seed, 2])
    for s in range(S):
        for v in range(views):
            order = np.concatenate([rng.permutation(K) for _ in range(reps)])   # each class `reps` times
            used = np.zeros(K, dtype=np.int64)
            for video in range(int(videos_per_view)):
                parts, intervals, offset, prev = [], [], 0, None
                for c in order[video * int(actions_per_video):(video + 1) * int(actions_per_video)]:
                    data, length, start, dur, lookup = clips[c]
                    k = lookup[(s, v, int(used[c]))]
                    used[c] += 1
                    clip = data[k][:, :length[k]]
                    if prev is not None:
                        gap = _transition(prev, clip[:, 0], int(rng.integers(*TRANSITION_FRAMES, endpoint=True)), rng)
                        parts.append(gap)
                        offset += gap.shape[1]
                    a = offset + int(start[k])
                    intervals.append((int(c), a, min(a + int(dur[k]), offset + int(length[k])), 1.0))
                    parts.append(clip)
                    offset += clip.shape[1]
                    prev = clip[:, -1]
                yield {"name": _untrimmed_name(s, v, video), "data": np.concatenate(parts, axis=1),
                       "subject": s, "view": v, "video": video, "intervals": intervals}


def untrimmed_splits(subject: np.ndarray, view: np.ndarray) -> dict:
    """``xsub`` (even 0-based subjects train, as the clip data set) and ``xview`` (cameras 2, 3 train)."""
    idx = np.arange(len(subject))
    xsub = subject % 2 == 0
    xview = np.isin(view, XVIEW_TRAIN_VIEWS)
    return {"xsub": {"train": idx[xsub].tolist(), "test": idx[~xsub].tolist()},
            "xview": {"train": idx[xview].tolist(), "test": idx[~xview].tolist()}}


def prepare_synthetic_untrimmed(out: str | os.PathLike, seed: int = 0, *, num_subjects: int = UNTRIMMED_SUBJECTS,
                                videos_per_view: int = UNTRIMMED_VIDEOS_PER_VIEW,
                                actions_per_video: int = UNTRIMMED_ACTIONS, progress: bool = True,
                                overwrite: bool = False) -> dict:
    """Write the built-in untrimmed videos as a prepared ``sequences`` folder (the format of
    ``pcm3 prepare pku1``: ``data.npy`` frames, ``offsets.npy``, ``intervals.csv``), atomically.

    ``num_subjects * 3 * videos_per_view`` videos (default 10 x 3 x 2 = 60, about 55,000 frames,
    35 MB), see :func:`iter_untrimmed`; benchmarks ``xsub`` and ``xview`` as
    :func:`untrimmed_splits`. ``samples.csv`` columns: ``subject``, ``view`` (0-based),
    ``camera`` (1-based), ``video``, ``actions``. Returns a summary (videos, frames, seconds).
    """
    from pcm3.progress import track

    from pcm3.data.prepared import PreparedWriter

    _check_seed(seed)
    _untrimmed_args(num_subjects, videos_per_view, actions_per_video)
    t0 = time.perf_counter()
    n = int(num_subjects) * len(VIEW_YAW_DEG) * int(videos_per_view)
    meta = {"seed": int(seed), "num_subjects": int(num_subjects), "views_deg": list(VIEW_YAW_DEG), "fps": FPS,
            "units": "metres", "two_person_classes": list(TWO_PERSON), "generator": "pcm3.data.synthetic (untrimmed)",
            "actions_per_video": int(actions_per_video)}
    subjects, views, frames = [], [], 0
    with PreparedWriter(out, kind="sequences", shape=(n, 3, 25, 2), dataset="synthetic_untrimmed", layout="ntu25",
                        class_names=CLASS_NAMES, extra_meta=meta, overwrite=overwrite,
                        source=f"pcm3 built-in synthetic untrimmed videos (seed {int(seed)})") as w:
        videos = iter_untrimmed(seed, num_subjects=num_subjects, videos_per_view=videos_per_view,
                                actions_per_video=actions_per_video)
        for v in track(videos, total=n, desc="synthetic untrimmed", unit="video", disable=not progress):
            w.append(v["data"], name=v["name"], intervals=v["intervals"], subject=v["subject"], view=v["view"],
                     camera=v["view"] + 1, video=v["video"], actions=len(v["intervals"]))
            subjects.append(v["subject"])
            views.append(v["view"])
            frames += v["data"].shape[1]
        w.set_splits(untrimmed_splits(np.asarray(subjects), np.asarray(views)))
    return {"out": str(out), "videos": n, "frames": frames, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- command line

def add_prepare_parsers(subparsers) -> None:
    from pcm3.data.common import add_output_options

    p = subparsers.add_parser(
        "synthetic", help="generate the built-in synthetic data set (no download)",
        description="Generate seeded synthetic skeleton actions in the NTU 25-joint layout "
                    f"({len(CLASS_NAMES)} classes, {len(TWO_PERSON)} of them two-person; subjects with "
                    "their own body proportions; 3 camera views; NTU-normalised, metres) with "
                    "cross-subject (xsub) and cross-view (xview) benchmarks.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=seed_arg, default=0, help="random seed (default 0)")
    p.add_argument("--samples-per-class", type=int, default=None, metavar="K",
                   help="samples per class (default: every subject in every view, "
                        f"{DEFAULT_REPETITIONS} repetitions = {DEFAULT_SUBJECTS * 3 * DEFAULT_REPETITIONS})")
    p.add_argument("--subjects", type=int, default=None,
                   help=f"number of subjects (default {DEFAULT_SUBJECTS}; {UNTRIMMED_SUBJECTS} with --untrimmed)")
    p.add_argument("--untrimmed", action="store_true",
                   help="write untrimmed videos (several actions with idle and transition stretches, labelled "
                        "intervals) in the format of `pcm3 prepare pku1`, for `pcm3 eval detection`")
    p.add_argument("--videos-per-camera", type=int, default=UNTRIMMED_VIDEOS_PER_VIEW, metavar="K",
                   help=f"--untrimmed: videos per subject and camera (default {UNTRIMMED_VIDEOS_PER_VIEW})")
    p.add_argument("--actions-per-video", type=int, default=UNTRIMMED_ACTIONS, metavar="A",
                   help=f"--untrimmed: different actions in each video (default {UNTRIMMED_ACTIONS})")
    add_output_options(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    from pcm3.data.common import print_prepared_summary
    from pcm3.outputs import check_output_dir

    if args.seed < 0:
        raise ConfigError(f"--seed: must be 0 or more (got {args.seed})")
    if args.subjects is not None and args.subjects < 2:  # 0 too: it is not "the default"
        raise ConfigError(f"--subjects: must be at least 2 (got {args.subjects})")
    if args.samples_per_class is not None and args.samples_per_class < 1 and not args.untrimmed:
        raise ConfigError(f"--samples-per-class: must be at least 1 (got {args.samples_per_class})")
    if args.untrimmed and args.videos_per_camera < 1:
        raise ConfigError(f"--videos-per-camera: must be at least 1 (got {args.videos_per_camera})")
    if args.untrimmed and not 1 <= args.actions_per_video <= len(CLASS_NAMES):
        raise ConfigError(f"--actions-per-video: must be in 1..{len(CLASS_NAMES)} (got {args.actions_per_video})")
    check_output_dir(args.out, "prepared", overwrite=args.overwrite)
    if args.untrimmed:
        if args.samples_per_class is not None:
            raise ConfigError("--samples-per-class: not used with --untrimmed (see --videos-per-camera, "
                              "--actions-per-video)")
        summary = prepare_synthetic_untrimmed(
            args.out, seed=args.seed, num_subjects=UNTRIMMED_SUBJECTS if args.subjects is None else args.subjects,
            videos_per_view=args.videos_per_camera, actions_per_video=args.actions_per_video,
            progress=not args.quiet, overwrite=args.overwrite)
        print_prepared_summary(args.out)
        print(f"  generated {summary['videos']} videos ({summary['frames']} frames) in {summary['seconds']:.1f} s")
        return 0
    summary = prepare_synthetic(args.out, seed=args.seed, samples_per_class=args.samples_per_class,
                                num_subjects=DEFAULT_SUBJECTS if args.subjects is None else args.subjects,
                                progress=not args.quiet, overwrite=args.overwrite)
    print_prepared_summary(args.out)
    print(format_counts(summary))
    print(f"  generated {summary['samples']} samples in {summary['seconds']:.1f} s")
    return 0
