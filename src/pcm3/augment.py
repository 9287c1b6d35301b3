"""Skeleton augmentations: pure, seeded, batched tensor transforms and batch mixing.

Every transform takes a batch ``x`` of shape ``(N, C, T, V, M)`` (samples, 3 coordinates,
frames, joints, persons; coordinates in the sensor's units, metres for Kinect) and returns a
new tensor on the same device; nothing is modified in place. Randomness comes from the
``generator`` argument only: random numbers are drawn on the generator's device (a CPU
generator is the normal case; ``None`` means torch's default CPU generator) and then moved to
``x.device``, so the same seed gives the same result on CPU and GPU. Every random choice is
made per sample, vectorised over the batch.

Pretraining views, as released (method doc, section 2), see :func:`make_views`:
    views 1 and 2: :func:`crop_resize`, then per sample with ``p=0.5`` :func:`joint_corruption`,
    otherwise :func:`shear`; view 3: :func:`crop_resize` then :func:`shear`.
Mixing of view 1 over the batch: :func:`cutmix`, :func:`resizemix`, :func:`mixup`, picked by
:func:`random_mix`. Test time: :func:`center_crop_resize`.

Linear maps act on the coordinate axis: ``out[n, :, t, v, m] = A[n] @ x[n, :, t, v, m]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from pcm3.errors import ConfigError
from pcm3.skeleton import Layout, check_joints, part_mask

MIX_KINDS = ("cutmix", "resizemix", "mixup")


# --------------------------------------------------------------------------- random helpers

def _gen_device(generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape, generator: Optional[torch.Generator], device, dtype=torch.float32) -> torch.Tensor:
    """U[0, 1) of ``shape``, drawn on the generator's device, returned on ``device``."""
    return torch.rand(shape, generator=generator, device=_gen_device(generator), dtype=dtype).to(device)


def _uniform(shape, low: float, high: float, generator, device, dtype=torch.float32) -> torch.Tensor:
    return low + (high - low) * _rand(shape, generator, device, dtype)


def _randint(low: torch.Tensor | int, high: torch.Tensor | int, shape, generator, device) -> torch.Tensor:
    """Integers uniform in ``[low, high]`` (both inclusive, broadcastable tensors or ints)."""
    u = _rand(shape, generator, device, torch.float64)
    span = torch.as_tensor(high, device=device) - torch.as_tensor(low, device=device) + 1
    k = torch.floor(u * span).long()
    return torch.as_tensor(low, device=device) + torch.minimum(k, span - 1)


def _random_subset(n: int, size: int, k: torch.Tensor, generator, device) -> torch.Tensor:
    """``(n, size)`` bool: per row ``k[row]`` distinct items chosen uniformly at random."""
    ranks = _rand((n, size), generator, device).argsort(dim=1, stable=True).argsort(dim=1, stable=True)  # ranks
    return ranks < k.view(-1, 1)


def _apply_matrix(x: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """``out[n, :, t, v, m] = mats[n] @ x[n, :, t, v, m]``; mats ``(N, C, C)``."""
    if x.shape[1] != mats.shape[-1]:
        raise ValueError(f"expected {mats.shape[-1]}-D coordinates (N, {mats.shape[-1]}, T, V, M), "
                         f"got shape {tuple(x.shape)}")
    return torch.einsum("nij,njtvm->nitvm", mats.to(device=x.device, dtype=x.dtype), x)


def _check_batch(x: torch.Tensor) -> None:
    if x.dim() != 5:
        raise ValueError(f"expected a batch (N, C, T, V, M), got shape {tuple(x.shape)}")


# --------------------------------------------------------------------------- temporal crop-resize

def _resize_segments(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor, out_len: int) -> torch.Tensor:
    """Resize frames ``[start, start + length)`` of each sample to ``out_len`` frames.

    Linear interpolation with ``align_corners=False`` semantics, as
    ``F.interpolate(..., mode="linear")`` on the segment alone: output frame ``i`` reads the
    segment at ``max((i + 0.5) * length / out_len - 0.5, 0)``. Only frames inside the segment
    are ever read.
    """
    n = x.shape[0]
    dev = x.device
    start, length = start.to(dev).long(), length.to(dev).long()
    i = torch.arange(out_len, device=dev, dtype=torch.float64)
    scale = length.to(torch.float64).view(n, 1) / out_len
    src = ((i + 0.5) * scale - 0.5).clamp(min=0)                  # (N, out_len) frames into the segment
    i0 = src.floor().long()
    i0 = torch.minimum(i0, length.view(n, 1) - 1)
    w1 = (src - i0.to(torch.float64)).to(x.dtype)                 # weight of the next frame
    i1 = torch.minimum(i0 + 1, length.view(n, 1) - 1)
    _, c, t, v, m = x.shape
    # One gather along time of both neighbours, on the (N, C, T, V*M) view (no copy of x).
    idx = torch.cat([start.view(n, 1) + i0, start.view(n, 1) + i1], dim=1)   # (N, 2 * out_len)
    pair = torch.gather(x.reshape(n, c, t, v * m), 2, idx.view(n, 1, 2 * out_len, 1).expand(n, c, 2 * out_len, v * m))
    a, b = pair[:, :, :out_len], pair[:, :, out_len:]
    return torch.lerp(a, b, w1.view(n, 1, out_len, 1)).view(n, c, out_len, v, m)


def _valid_lengths(x: torch.Tensor, lengths) -> torch.Tensor:
    lengths = torch.as_tensor(lengths, device=x.device).long().view(-1)
    if lengths.numel() != x.shape[0]:
        raise ValueError(f"{lengths.numel()} lengths for a batch of {x.shape[0]}")
    return lengths.clamp(1, x.shape[2])  # at most the padded length (as the release: min(len, 300))


def crop_resize(x: torch.Tensor, lengths, out_len: int = 64, ratio: Tuple[float, float] = (0.1, 1.0),
                min_len: int = 64, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random temporal crop of the valid frames, resized to ``out_len`` frames.

    Per sample: ``p ~ U(ratio)``, crop length ``min(max(floor(p * length), min_len), length)``
    (so at least ``min_len`` frames where the clip is longer, never beyond its valid frames),
    start uniform among the crops that fit in ``[0, length)``, then linear interpolation in time
    to ``out_len`` frames (align_corners=False, as the release's ``F.interpolate``).

    Args:
        x: ``(N, C, T, V, M)``, frames beyond ``lengths`` are padding and never read.
        lengths: ``(N,)`` true number of frames (clamped to ``[1, T]``).
        out_len: output frames.
        ratio: range of the crop length as a fraction of the valid frames.
        min_len: minimum crop length in frames.
        generator: source of randomness.

    Returns:
        ``(N, C, out_len, V, M)``.
    """
    _check_batch(x)
    n = x.shape[0]
    lengths = _valid_lengths(x, lengths)
    p = _uniform((n,), ratio[0], ratio[1], generator, x.device, torch.float64)
    crop = torch.floor(lengths.to(torch.float64) * p).long()
    crop = torch.minimum(crop.clamp(min=min_len), lengths).clamp(min=1)
    start = _randint(0, lengths - crop, (n,), generator, x.device)
    return _resize_segments(x, start, crop, out_len)


def center_crop_resize(x: torch.Tensor, lengths, ratio: float = 0.95, out_len: int = 64) -> torch.Tensor:
    """Test-time input (method doc, section 3): the centre ``ratio`` of the valid frames, resized.

    Drops ``int((1 - ratio) * length / 2)`` frames at each end of the valid frames, then
    resizes as :func:`crop_resize`. Deterministic.

    Returns:
        ``(N, C, out_len, V, M)``.
    """
    _check_batch(x)
    lengths = _valid_lengths(x, lengths)
    bias = torch.floor((1.0 - ratio) * lengths.to(torch.float64) / 2).long()
    crop = (lengths - 2 * bias).clamp(min=1)
    return _resize_segments(x, bias, crop, out_len)


# --------------------------------------------------------------------------- spatial transforms

def shear_matrix(n: int, amplitude: float = 1.0, generator: Optional[torch.Generator] = None,
                 device=None) -> torch.Tensor:
    """``(n, 3, 3)`` shear matrices: diagonal 1, off-diagonal entries ``U(-amplitude, amplitude)``."""
    off = _uniform((n, 3, 3), -amplitude, amplitude, generator, device or "cpu")
    eye = torch.eye(3, dtype=torch.bool, device=off.device)
    return torch.where(eye, torch.ones_like(off), off)


def shear(x: torch.Tensor, amplitude: float = 1.0, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random shear, one matrix per sample (:func:`shear_matrix`) applied to every joint.

    Returns:
        ``(N, C, T, V, M)``, ``out[n, :, t, v, m] = S[n] @ x[n, :, t, v, m]``.
    """
    _check_batch(x)
    return _apply_matrix(x, shear_matrix(x.shape[0], amplitude, generator, x.device))


def rotation_matrix(n: int, max_degrees: float, axes: str = "xyz", generator: Optional[torch.Generator] = None,
                    device=None) -> torch.Tensor:
    """``(n, 3, 3)`` random rotations: per sample and axis an angle ``U(-max_degrees, max_degrees)``.

    The rotations about ``axes`` are applied in the order written: for ``"xyz"`` the matrix is
    ``Rz @ Ry @ Rx``.
    """
    if not axes or any(a not in "xyz" for a in axes):
        raise ValueError(f"axes must be made of 'x', 'y', 'z', got {axes!r}")
    angles = _uniform((n, len(axes)), -max_degrees, max_degrees, generator, device or "cpu") * (math.pi / 180)
    out = torch.eye(3, device=angles.device).expand(n, 3, 3)
    for k, axis in enumerate(axes):
        c, s = torch.cos(angles[:, k]), torch.sin(angles[:, k])
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        if axis == "x":
            rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
        elif axis == "y":
            rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
        else:
            rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
        r = torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)  # (n, 3, 3)
        out = r @ out
    return out


def rotate(x: torch.Tensor, max_degrees: float, axes: str = "xyz",
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random rotation about the origin, one per sample (:func:`rotation_matrix`), angles in degrees.

    Returns:
        ``(N, C, T, V, M)``.
    """
    _check_batch(x)
    return _apply_matrix(x, rotation_matrix(x.shape[0], max_degrees, axes, generator, x.device))


def jitter(x: torch.Tensor, sigma: float, generator: Optional[torch.Generator] = None,
           keep_zeros: bool = True) -> torch.Tensor:
    """Add Gaussian noise ``N(0, sigma^2)`` (coordinate units) to every coordinate.

    Args:
        keep_zeros: leave joints that are exactly zero (an absent person, zero padding) at zero.

    Returns:
        ``(N, C, T, V, M)``.
    """
    _check_batch(x)
    noise = torch.randn(x.shape, generator=generator, device=_gen_device(generator)).to(x.device, x.dtype)
    out = x + sigma * noise
    if keep_zeros:
        present = (x != 0).any(dim=1, keepdim=True)
        out = torch.where(present, out, x)
    return out


def _corruption(n: int, v: int, num_joints: int, p_zero: float, generator, device):
    """Draws of :func:`joint_corruption`: joints ``(n, V)`` bool and matrices ``(n, 3, 3)``."""
    joints = _random_subset(n, v, torch.full((n,), min(num_joints, v), device=device), generator, device)
    zero = _rand((n,), generator, device) < p_zero
    mats = _uniform((n, 3, 3), -1.0, 1.0, generator, device)
    mats = torch.where(zero.view(n, 1, 1), torch.zeros_like(mats), mats)
    return joints, mats


def joint_corruption(x: torch.Tensor, num_joints: int = 15, p_zero: float = 0.5,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The release's "joint corruption": per sample, ``num_joints`` random joints (the same in
    every frame and for every person) are zeroed with probability ``p_zero``, otherwise
    multiplied by one random 3x3 matrix with entries ``U(-1, 1)``; other joints are unchanged.

    Returns:
        ``(N, C, T, V, M)``.
    """
    _check_batch(x)
    n, _, _, v, _ = x.shape
    joints, mats = _corruption(n, v, num_joints, p_zero, generator, x.device)
    return torch.where(joints.view(n, 1, 1, v, 1), _apply_matrix(x, mats), x)


# --------------------------------------------------------------------------- mixing

def mix_partner(n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """``(n,)`` partner indices: the batch rolled by one random shift, ``partner[i] = (i + s) % n``.

    ``s`` is uniform in ``[1, n - 2]`` as in the release; for ``n == 2`` it is 1 (the other
    sample) and for ``n == 1`` it is 0 (the sample mixes with itself).
    """
    high = max(n - 2, 1) if n > 1 else 0
    low = min(1, high)
    s = int(_randint(low, high, (1,), generator, "cpu")[0])
    return (torch.arange(n, device=device) + s) % n


def _window(n: int, t: int, window: Tuple[int, int], step: int, generator, device):
    """Per draw a window of whole ``step``-frame blocks: start ``(n,)`` and length ``(n,)`` in frames.

    Length ``step * c`` with ``c`` uniform in ``[ceil(window[0]/step), floor(window[1]/step)]``
    (at most ``t // step``), start ``step * b`` with ``b`` uniform such that it fits in ``t``.
    """
    blocks = t // step
    if blocks < 1:
        raise ValueError(f"mixing window: {t} frames is shorter than one step of {step}")
    hi = max(1, min(window[1] // step, blocks))
    lo = max(1, min(-(-window[0] // step), hi))
    c = _randint(lo, hi, (n,), generator, device)
    b = _randint(torch.zeros_like(c), blocks - c, (n,), generator, device)
    return b * step, c * step


def _cut_region(n: int, t: int, layout: Layout, parts: Tuple[int, int], window: Tuple[int, int], step: int,
                per_sample: bool, generator, device):
    """The pasted region ``(n, T, V)`` bool and the window ``(start, length)`` per sample."""
    pm = torch.from_numpy(part_mask(layout)).to(device)  # (P, V)
    k_draws = n if per_sample else 1
    num_parts = pm.shape[0]
    k = _randint(min(parts[0], num_parts), min(parts[1], num_parts), (k_draws,), generator, device)
    chosen = _random_subset(k_draws, num_parts, k, generator, device)                  # (k, P)
    joints = (chosen.unsqueeze(-1) & pm.unsqueeze(0)).any(dim=1)                      # (k, V)
    start, length = _window(k_draws, t, window, step, generator, device)
    frames = torch.arange(t, device=device).view(1, t)
    in_win = (frames >= start.view(-1, 1)) & (frames < (start + length).view(-1, 1))  # (k, T)
    region = in_win.unsqueeze(-1) & joints.unsqueeze(1)                               # (k, T, V)
    if not per_sample:
        region, start, length = region.expand(n, -1, -1), start.expand(n), length.expand(n)
    return region, start, length


def _paste(x: torch.Tensor, source: torch.Tensor, region: torch.Tensor):
    """``source`` inside ``region`` ``(N, T, V)``, ``x`` elsewhere; lam = pasted fraction."""
    mixed = torch.where(region.unsqueeze(1).unsqueeze(-1), source, x)
    lam = region.to(torch.float32).mean(dim=(1, 2))
    return mixed, lam


def cutmix(x: torch.Tensor, layout: str | Layout = "ntu25", parts: Tuple[int, int] = (2, 3),
           window: Tuple[int, int] = (28, 44), step: int = 4, per_sample: bool = False,
           generator: Optional[torch.Generator] = None, partner: Optional[torch.Tensor] = None):
    """Skeleton CutMix (paper Sec. 3.1): paste body parts over a window of frames from a partner.

    A number of body parts uniform in ``parts`` (inclusive) and a window of whole ``step``-frame
    blocks with length in ``window`` frames, starting on a multiple of ``step``; inside (both
    persons) the sample takes the partner's coordinates. As released the parts and the window are
    drawn once for the batch; ``per_sample=True`` draws them per sample.

    Args:
        x: ``(N, C, T, V, M)``.
        partner: ``(N,)`` partner indices; default :func:`mix_partner`.

    Returns:
        ``(mixed, lam, partner)``: mixed ``(N, C, T, V, M)``; lam ``(N,)`` float32, the pasted
        fraction of joints x frames; partner ``(N,)`` long, the mixed-in sample of each sample.
    """
    _check_batch(x)
    n, _, t, _, _ = x.shape
    layout = check_joints(x, layout, "mixing")
    if partner is None:
        partner = mix_partner(n, generator, x.device)
    region, _, _ = _cut_region(n, t, layout, parts, window, step, per_sample, generator, x.device)
    mixed, lam = _paste(x, x[partner], region)
    return mixed, lam, partner


def resizemix(x: torch.Tensor, layout: str | Layout = "ntu25", parts: Tuple[int, int] = (2, 3),
              window: Tuple[int, int] = (28, 44), step: int = 4, per_sample: bool = False,
              generator: Optional[torch.Generator] = None, partner: Optional[torch.Tensor] = None):
    """Skeleton ResizeMix (paper Sec. 3.1): as :func:`cutmix`, but what is pasted into a window of
    ``w`` frames is the partner's first ``min(2 w, T)`` frames shrunk in time to ``w`` frames
    (nearest frame, as the release: frame ``i`` of the window is partner frame
    ``floor(i * min(2 w, T) / w)``).

    Returns:
        ``(mixed, lam, partner)`` as :func:`cutmix`.
    """
    _check_batch(x)
    n, _, t, _, _ = x.shape
    layout = check_joints(x, layout, "mixing")
    if partner is None:
        partner = mix_partner(n, generator, x.device)
    region, start, length = _cut_region(n, t, layout, parts, window, step, per_sample, generator, x.device)
    frames = torch.arange(t, device=x.device).view(1, t)
    src_len = torch.clamp(2 * length, max=t).view(n, 1)
    src = ((frames - start.view(n, 1)).clamp(min=0) * src_len) // length.view(n, 1)
    src = src.clamp(max=t - 1)                                                    # (N, T) partner frame
    shrunk = x[partner].transpose(1, 2)[torch.arange(n, device=x.device).view(n, 1), src].transpose(1, 2)
    mixed, lam = _paste(x, shrunk, region)
    return mixed, lam, partner


def mixup(x: torch.Tensor, per_sample: bool = False, generator: Optional[torch.Generator] = None,
          partner: Optional[torch.Tensor] = None):
    """Mixup (paper Sec. 3.1): ``(1 - lam) * x + lam * x[partner]`` with ``lam ~ U(0, 1)``,
    one for the batch as released, or one per sample with ``per_sample=True``.

    Returns:
        ``(mixed, lam, partner)`` as :func:`cutmix`; lam is the mixing weight.
    """
    _check_batch(x)
    n = x.shape[0]
    if partner is None:
        partner = mix_partner(n, generator, x.device)
    lam = _rand((n if per_sample else 1,), generator, x.device).expand(n).contiguous()
    w = lam.to(x.dtype).view(n, 1, 1, 1, 1)
    return (1 - w) * x + w * x[partner], lam, partner


def random_mix(x: torch.Tensor, layout: str | Layout = "ntu25", probs: Sequence[float] = (0.5, 0.25, 0.25),
               parts: Tuple[int, int] = (2, 3), window: Tuple[int, int] = (28, 44), step: int = 4,
               per_sample: bool = False, generator: Optional[torch.Generator] = None):
    """Mix a batch with one method picked for the whole batch, as the release: CutMix, ResizeMix
    or Mixup with probabilities ``probs``.

    The key of the mixed query is ``normalize((1 - lam) k + lam k[partner])`` (paper Eq. 2).

    Returns:
        ``(mixed, lam, partner, kind)``; kind is one of ``"cutmix"``, ``"resizemix"``, ``"mixup"``.
    """
    if len(probs) != 3 or min(probs) < 0 or sum(probs) <= 0:
        raise ValueError(f"probs must be 3 non-negative weights (cutmix, resizemix, mixup), got {probs}")
    total = float(sum(probs))
    u = float(_rand((1,), generator, "cpu")[0]) * total
    kind = "mixup"
    if u < probs[0]:
        kind = "cutmix"
    elif u < probs[0] + probs[1]:
        kind = "resizemix"
    if kind == "mixup":
        mixed, lam, partner = mixup(x, per_sample, generator)
    else:
        fn = cutmix if kind == "cutmix" else resizemix
        mixed, lam, partner = fn(x, layout, parts, window, step, per_sample, generator)
    return mixed, lam, partner, kind


# --------------------------------------------------------------------------- the three views

@dataclass
class ViewConfig:
    """Every parameter of the pretraining views, defaults as released (method doc, section 2).

    Attributes:
        out_len: frames of every view.
        crop_ratio: crop length as a fraction of the valid frames, ``U(crop_ratio)``.
        min_len: minimum crop length in frames (where the clip is longer).
        p_corrupt: probability, per sample, of joint corruption (else shear) in views 1 and 2.
        corrupt_ratio: fraction of the layout's joints hit by joint corruption (release: 15 of
            NTU's 25 = 0.6), rounded to a joint count per layout (12 of Kinect v1's 20).
        corrupt_joints: an absolute joint count instead of ``corrupt_ratio`` (None: use the ratio).
        p_zero: probability that corrupted joints are zeroed (else a random 3x3 matrix).
        shear_amplitude: off-diagonal shear entries are ``U(-a, a)``.
        mix_probs: probabilities of CutMix, ResizeMix, Mixup (one picked per batch).
        mix_parts: number of body parts pasted by CutMix/ResizeMix (inclusive range).
        mix_window: pasted window length in frames (inclusive range, multiples of ``mix_step``).
        mix_step: window start and length are multiples of this many frames.
        mix_per_sample: draw the mixing parts/window/lambda per sample (the release: per batch).
        test_crop_ratio: centre crop at test time (:func:`center_crop_resize`).
        bone_scale: body-shape jitter (not in the release; 0 = off): every bone of every sample is
            scaled by ``U(1 - a, 1 + a)`` (:func:`bone_scale`), in all three views. On small data
            sets instance discrimination otherwise latches onto each subject's body proportions,
            which carry no class information across subjects.
    """

    out_len: int = 64
    crop_ratio: Tuple[float, float] = (0.1, 1.0)
    min_len: int = 64
    p_corrupt: float = 0.5
    corrupt_ratio: float = 0.6
    corrupt_joints: Optional[int] = None
    p_zero: float = 0.5
    shear_amplitude: float = 1.0
    mix_probs: Tuple[float, float, float] = (0.5, 0.25, 0.25)
    mix_parts: Tuple[int, int] = (2, 3)
    mix_window: Tuple[int, int] = (28, 44)
    mix_step: int = 4
    mix_per_sample: bool = False
    test_crop_ratio: float = 0.95
    bone_scale: float = 0.0

    def __post_init__(self):
        def bad(msg):
            raise ConfigError(f"views: {msg}")
        if self.out_len < 1 or self.min_len < 1 or (self.corrupt_joints or 0) < 0 or self.mix_step < 1:
            bad("out_len, min_len and mix_step must be positive, corrupt_joints non-negative")
        if not 0 <= self.corrupt_ratio <= 1:
            bad(f"corrupt_ratio must be in [0, 1], got {self.corrupt_ratio}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1] <= 1:
            bad(f"crop_ratio must satisfy 0 < low <= high <= 1, got {self.crop_ratio}")
        for name in ("p_corrupt", "p_zero"):
            if not 0 <= getattr(self, name) <= 1:
                bad(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.mix_probs) != 3 or min(self.mix_probs) < 0 or sum(self.mix_probs) <= 0:
            bad(f"mix_probs must be 3 non-negative weights (cutmix, resizemix, mixup), got {self.mix_probs}")
        if not 1 <= self.mix_parts[0] <= self.mix_parts[1]:
            bad(f"mix_parts must satisfy 1 <= low <= high, got {self.mix_parts}")
        if not 1 <= self.mix_window[0] <= self.mix_window[1]:
            bad(f"mix_window must satisfy 1 <= low <= high, got {self.mix_window}")
        if not 0 <= self.bone_scale < 1:
            bad(f"bone_scale must be in [0, 1), got {self.bone_scale}")
        if not 0 < self.test_crop_ratio <= 1:
            bad(f"test_crop_ratio must be in (0, 1], got {self.test_crop_ratio}")


def corrupt_count(cfg: ViewConfig, num_joints: int) -> int:
    """Joints hit by joint corruption for a layout of ``num_joints`` joints."""
    if cfg.corrupt_joints is not None:
        return min(int(cfg.corrupt_joints), num_joints)
    return int(round(cfg.corrupt_ratio * num_joints))


def _corrupt_or_shear(x: torch.Tensor, cfg: ViewConfig, p_corrupt: float, generator) -> torch.Tensor:
    """Per sample: joint corruption with probability ``p_corrupt``, else a shear."""
    n, _, _, v, _ = x.shape
    joints, cmats = _corruption(n, v, corrupt_count(cfg, v), cfg.p_zero, generator, x.device)
    smats = shear_matrix(n, cfg.shear_amplitude, generator, x.device)
    corrupt = _rand((n,), generator, x.device) < p_corrupt
    # Corrupted samples: their matrix on the chosen joints only; sheared samples: on every joint.
    mats = torch.where(corrupt.view(n, 1, 1), cmats, smats)
    chosen = joints | ~corrupt.view(n, 1)
    return torch.where(chosen.view(n, 1, 1, v, 1), _apply_matrix(x, mats), x)


def bone_scale(x: torch.Tensor, layout, amplitude: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Scale every bone by its own factor ``U(1 - amplitude, 1 + amplitude)``, per sample.

    Bones are ``x[v] - x[parent(v)]`` of the layout; the skeleton is rebuilt from the root
    outwards with the scaled bones, so the root joint stays where it is. One factor per
    (sample, bone), the same in every frame and for both persons. Absent persons and frames
    (all zeros) stay zero.

    The joints are rebuilt one at a time in topological order: a batched form (one matrix
    product over the bone paths) computes the same up to float rounding, which changes every
    measured training run, so the measured order of operations is kept.

    Shape:
        x: ``(N, C, T, V, M)``; output: the same.
    """
    _check_batch(x)
    layout = check_joints(x, layout, "bone_scale")
    n, _, _, v, _ = x.shape
    if amplitude <= 0:
        return x
    scale = 1 + amplitude * (2 * _rand((n, v), generator, x.device) - 1)  # N x V, the bone into joint v
    parents = list(layout.parents)
    out = x.clone()
    present = (x != 0).any(dim=(1, 3), keepdim=True).to(x.dtype)  # N x 1 x T x 1 x M
    for j in _topological_order(parents):
        p = parents[j]
        if p == j:
            continue
        bone = x[:, :, :, j] - x[:, :, :, p]  # N x C x T x M
        out[:, :, :, j] = out[:, :, :, p] + scale[:, j].view(n, 1, 1, 1) * bone
    return out * present


def _topological_order(parents) -> list:
    """Joints ordered so that every parent comes before its children (roots first)."""
    order, seen = [], set()

    def visit(j):
        if j in seen:
            return
        if parents[j] != j:
            visit(parents[j])
        seen.add(j)
        order.append(j)

    for j in range(len(parents)):
        visit(j)
    return order


def make_views(x: torch.Tensor, lengths, cfg: Optional[ViewConfig] = None,
               generator: Optional[torch.Generator] = None, layout=None):
    """The three pretraining views of a raw batch (method doc, section 2).

    - view 1 (query) and view 2 (key): an independent :func:`crop_resize` each, then per sample
      with probability ``cfg.p_corrupt`` :func:`joint_corruption`, otherwise :func:`shear`
      (the choice is drawn per sample, as the release's loader does per item);
    - view 3 (input of the masked branch): :func:`crop_resize` then :func:`shear`, always.

    Mixing (:func:`random_mix`) and masking (``pcm3.masking``) are applied afterwards on views 1
    and 3.

    With ``cfg.bone_scale > 0`` each view first gets its own :func:`bone_scale` (needs
    ``layout``).

    Args:
        x: ``(N, C, T, V, M)`` raw padded batch.
        lengths: ``(N,)`` true number of frames.
        layout: the skeleton layout (name or :class:`~pcm3.skeleton.Layout`).

    Returns:
        ``(view1, view2, view3)``, each ``(N, C, cfg.out_len, V, M)``.
    """
    cfg = cfg or ViewConfig()
    _check_batch(x)
    if cfg.bone_scale > 0 and layout is None:
        raise ValueError("views.bone_scale needs the layout (make_views(..., layout=...))")
    if layout is not None:
        check_joints(x, layout, "make_views")
    views = []
    for p_corrupt in (cfg.p_corrupt, cfg.p_corrupt, 0.0):
        v = crop_resize(x, lengths, cfg.out_len, cfg.crop_ratio, cfg.min_len, generator)
        if cfg.bone_scale > 0:
            v = bone_scale(v, layout, cfg.bone_scale, generator)
        views.append(_corrupt_or_shear(v, cfg, p_corrupt, generator))
    return tuple(views)
