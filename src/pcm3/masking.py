"""Mask generators for masked motion prediction, and occlusions for evaluation.

One convention throughout: a mask is a bool tensor ``(N, T, V, M)`` (samples, frames, joints,
persons) and **True means masked** (removed, set to zero, to be predicted), as MAE's
"0 is keep, 1 is remove". The paper's ``M`` (Eq. 4) is the opposite (1 = visible), so the
paper's ``1 - M`` is this ``mask``. :func:`apply_mask` zeroes the masked coordinates.

Strategies (:class:`MaskConfig`, :func:`make_mask`):

``topology`` (paper Sec. 3.2 and the release, the default)
    The frames are cut into clips of ``clip_len`` frames; in each clip of each sample
    ``int(P * ratio)`` of the layout's P body parts, drawn uniformly, are masked (3 of 5 at
    0.6: all 10 subsets equally likely), the same for every frame of the clip and for both
    persons. The masked fraction of *parts* is ``int(P * ratio) / P``; the fraction of joints
    follows the part sizes.
``topology_count``
    A variant that honours ``ratio`` in joints: among the subsets of parts, with ``lo``/``hi``
    the largest/smallest joint counts at most/at least ``ratio * V``, a subset of ``lo``
    joints is taken with probability ``(hi - ratio * V) / (hi - lo)``, else one of ``hi``
    joints, uniformly among the subsets of that count. The expected masked fraction of
    joints x frames is then exactly ``ratio``, but few patterns remain (NTU at 0.6: 4 subsets,
    the trunk always masked, never both arms), so it is not the paper's mask.
``release_topology``
    The authors' release: ``int(P * ratio)`` of the P parts per clip (3 of 5 at 0.6), person 1
    only, one mask shared by the whole batch.
``random_joint``
    Random joints in every frame of every sample (both persons alike).
``random_frame``
    Random whole frames of every sample.
For ``random_joint`` and ``random_frame`` the number of masked joints (frames) is ``ratio * V``
(``ratio * T``) stochastically rounded, so their expected fraction is also exactly ``ratio``.

All generators take ``generator`` (random numbers are drawn on its device, CPU by default, then
moved to ``device``), so a seed fixes the mask on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Tuple

import torch

from pcm3.errors import ConfigError
from pcm3.skeleton import LAYOUTS, Layout, check_joints, get_layout, part_mask

STRATEGIES = ("topology", "topology_count", "random_joint", "random_frame", "release_topology")


# --------------------------------------------------------------------------- helpers

def _gen_device(generator: Optional[torch.Generator]) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=_gen_device(generator), dtype=dtype).to(device)


def _check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"mask ratio must be in [0, 1], got {ratio}")


@lru_cache(maxsize=16)
def _subsets_cached(parts: Tuple[Tuple[int, ...], ...], v: int):
    pm = torch.zeros(len(parts), v, dtype=torch.bool)
    for i, joints in enumerate(parts):
        pm[i, list(joints)] = True
    p = len(parts)
    codes = torch.arange(2 ** p)
    chosen = (codes.view(-1, 1) >> torch.arange(p).view(1, -1)) & 1 == 1       # (S, P)
    joints = (chosen.unsqueeze(-1) & pm.unsqueeze(0)).any(dim=1)               # (S, V)
    return chosen, joints, joints.sum(dim=1)


def part_subsets(layout: str | Layout):
    """Every subset of the layout's P body parts.

    Returns:
        ``(parts (S, P) bool, joints (S, V) bool, counts (S,) long)`` with ``S = 2 ** P``:
        which parts each subset holds, which joints they cover, and how many.
    """
    layout = get_layout(layout)
    return _subsets_cached(tuple(tuple(j) for j in layout.parts.values()), layout.num_joints)


def _pick_by_count(target: torch.Tensor, counts: torch.Tensor, generator, device) -> torch.Tensor:
    """Per entry of ``target`` (joints, float, any shape) pick a subset index by stochastic
    rounding between the nearest reachable counts below and above (see the module docstring)."""
    counts = counts.to(device)
    shape = target.shape
    tgt = target.reshape(-1, 1).to(device=device, dtype=torch.float64)
    c = counts.view(1, -1).to(torch.float64)
    big = float(counts.max()) + 1.0
    lo = torch.where(c <= tgt + 1e-9, c, torch.full_like(c, -1.0)).max(dim=1, keepdim=True).values
    hi = torch.where(c >= tgt - 1e-9, c, torch.full_like(c, big)).min(dim=1, keepdim=True).values
    p_hi = torch.where(hi > lo, (tgt - lo) / (hi - lo).clamp(min=1e-12), torch.zeros_like(tgt))
    u = _rand(tgt.shape, generator, device, torch.float64)
    level = torch.where(u < p_hi, hi, lo)                                      # (K, 1) chosen count
    score = _rand((tgt.shape[0], c.shape[1]), generator, device)               # uniform among ties
    score = torch.where(c == level, score, torch.full_like(score, -1.0))
    return score.argmax(dim=1).view(shape)


def _pick_nearest(target: torch.Tensor, counts: torch.Tensor, allowed: torch.Tensor, generator, device):
    """Per entry of ``target`` the allowed subset whose count is nearest, ties at random."""
    counts = counts.to(device=device, dtype=torch.float64).view(1, -1)
    tgt = target.reshape(-1, 1).to(device=device, dtype=torch.float64)
    dist = (counts - tgt).abs() + 1e-6 * _rand((tgt.shape[0], counts.shape[1]), generator, device, torch.float64)
    dist = torch.where(allowed.to(device).view(1, -1), dist, torch.full_like(dist, float("inf")))
    return dist.argmin(dim=1).view(target.shape)


def _clip_index(t: int, clip_len: int, device) -> torch.Tensor:
    if clip_len < 1:
        raise ConfigError(f"clip_len must be at least 1, got {clip_len}")
    return torch.arange(t, device=device) // clip_len  # (T,) clip of each frame (the last may be short)


def _stochastic_count(shape, expected: float, generator, device) -> torch.Tensor:
    """Integers ``floor(expected)`` or ``ceil(expected)`` with mean ``expected``."""
    base = int(expected // 1)
    frac = expected - base
    return base + (_rand(shape, generator, device, torch.float64) < frac).long()


def _random_positions(shape_rows: Tuple[int, ...], size: int, k: torch.Tensor, generator, device) -> torch.Tensor:
    """``(*shape_rows, size)`` bool with ``k[row]`` random True entries per row."""
    ranks = _rand((*shape_rows, size), generator, device).argsort(dim=-1, stable=True).argsort(dim=-1, stable=True)
    return ranks < k.unsqueeze(-1)


# --------------------------------------------------------------------------- mask generators

def _refuse_no_parts(parts: float, ratio: float, num_parts: int, layout: Layout) -> None:
    """A :class:`ConfigError` when a positive ``ratio`` masks ``int(parts) == 0`` body parts."""
    if ratio > 0 and int(parts) == 0:
        raise ConfigError(f"mask.ratio {ratio}: int({num_parts} * ratio) = 0 of the {num_parts} body parts of layout "
                          f"{layout.name!r} per clip masks nothing")


def topology_mask(n: int, t: int, layout: str | Layout = "ntu25", ratio: float = 0.6, clip_len: int = 8,
                  persons: int = 2, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Topology-based mask (paper Sec. 3.2), per sample and per clip, both persons alike.

    In each clip of ``clip_len`` frames of each sample, ``int(P * ratio)`` of the P body parts
    are drawn uniformly (every such subset equally likely) and masked in all its frames.

    Returns:
        ``(n, t, V, persons)`` bool, True = masked.
    """
    _check_ratio(ratio)
    layout = get_layout(layout)
    device = torch.device(device or "cpu")
    pm = torch.from_numpy(part_mask(layout)).to(device)                       # (P, V)
    num_parts = pm.shape[0]
    _refuse_no_parts(num_parts * ratio + 1e-9, ratio, num_parts, layout)
    clip = _clip_index(t, clip_len, device)
    n_clips = -(-t // clip_len)
    k = torch.full((n, n_clips), int(num_parts * ratio + 1e-9), device=device)
    chosen = _random_positions((n, n_clips), num_parts, k, generator, device)  # (n, clips, P)
    per_clip = (chosen.unsqueeze(-1) & pm.view(1, 1, *pm.shape)).any(dim=2)    # (n, clips, V)
    return per_clip[:, clip].unsqueeze(-1).expand(-1, -1, -1, persons).contiguous()


def topology_count_mask(n: int, t: int, layout: str | Layout = "ntu25", ratio: float = 0.6, clip_len: int = 8,
                        persons: int = 2, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Topology mask whose part subset is chosen by joint count (``topology_count``).

    Per clip of ``clip_len`` frames a set of whole body parts is masked, chosen by stochastic
    rounding of ``ratio * V`` over the reachable joint counts (module docstring), so that the
    expected masked fraction of joints x frames is ``ratio``.

    Returns:
        ``(n, t, V, persons)`` bool, True = masked.
    """
    _check_ratio(ratio)
    layout = get_layout(layout)
    device = torch.device(device or "cpu")
    _, joints, counts = part_subsets(layout)
    clip = _clip_index(t, clip_len, device)
    n_clips = -(-t // clip_len)
    target = torch.full((n, n_clips), ratio * layout.num_joints)
    pick = _pick_by_count(target, counts, generator, device)                  # (n, clips)
    per_clip = joints.to(device)[pick]                                          # (n, clips, V)
    return per_clip[:, clip].unsqueeze(-1).expand(-1, -1, -1, persons).contiguous()


def release_topology_mask(n: int, t: int, layout: str | Layout = "ntu25", ratio: float = 0.6, clip_len: int = 8,
                          persons: int = 2, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """The release's topology mask: ``int(P * ratio)`` random parts per clip, person 1 only, and
    one mask shared by the whole batch (method doc, section 2). Kept for reproduction; its
    masked fraction is ``int(P * ratio) / P`` of person 1's parts, not ``ratio``.

    Returns:
        ``(n, t, V, persons)`` bool, True = masked; persons after the first are never masked.
    """
    _check_ratio(ratio)
    layout = get_layout(layout)
    device = torch.device(device or "cpu")
    pm = torch.from_numpy(part_mask(layout)).to(device)                       # (P, V)
    num_parts = pm.shape[0]
    _refuse_no_parts(num_parts * ratio, ratio, num_parts, layout)
    k = int(num_parts * ratio)
    clip = _clip_index(t, clip_len, device)
    n_clips = -(-t // clip_len)
    chosen = _random_positions((n_clips,), num_parts, torch.full((n_clips,), k, device=device), generator, device)
    per_clip = (chosen.unsqueeze(-1) & pm.unsqueeze(0)).any(dim=1)             # (clips, V)
    mask = torch.zeros(n, t, layout.num_joints, persons, dtype=torch.bool, device=device)
    mask[..., 0] = per_clip[clip].unsqueeze(0)
    return mask


def random_joint_mask(n: int, t: int, v: int, m: int = 2, ratio: float = 0.6,
                      generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Random joints per frame and sample, both persons alike; ``ratio * v`` joints a frame
    (stochastically rounded).

    Returns:
        ``(n, t, v, m)`` bool, True = masked.
    """
    _check_ratio(ratio)
    device = torch.device(device or "cpu")
    k = _stochastic_count((n, t), ratio * v, generator, device)
    mask = _random_positions((n, t), v, k, generator, device)
    return mask.unsqueeze(-1).expand(-1, -1, -1, m).contiguous()


def random_frame_mask(n: int, t: int, v: int, m: int = 2, ratio: float = 0.6,
                      generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Random whole frames per sample (every joint and person); ``ratio * t`` frames a sample
    (stochastically rounded).

    Returns:
        ``(n, t, v, m)`` bool, True = masked.
    """
    _check_ratio(ratio)
    device = torch.device(device or "cpu")
    k = _stochastic_count((n,), ratio * t, generator, device)
    frames = _random_positions((n,), t, k, generator, device)
    return frames.view(n, t, 1, 1).expand(n, t, v, m).contiguous()


@dataclass
class MaskConfig:
    """Masking of the masked-prediction branch.

    Attributes:
        strategy: ``topology`` (paper, per sample: ``int(P * ratio)`` parts per clip),
            ``topology_count`` (parts chosen to match ``ratio`` in joints), ``release_topology``
            (the release: batch-shared, person 1 only), ``random_joint`` or ``random_frame``.
        ratio: in [0, 1]; for ``random_joint`` / ``random_frame`` / ``topology_count`` the expected
            fraction of joints x frames masked; for ``topology`` / ``release_topology`` the
            fraction of the P body parts, rounded down to ``int(P * ratio)`` parts per clip
            (NTU: 0.5 masks 2 of 5 parts; a ratio below 1/P is an error).
        clip_len: frames per clip for the topology strategies.
    """

    strategy: str = "topology"
    ratio: float = 0.6
    clip_len: int = 8

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown mask strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        _check_ratio(self.ratio)
        if self.strategy in ("topology", "release_topology") and 0 < self.ratio:
            # refused here when no registered layout has parts enough (every packaged one has 5);
            # the mask itself checks the layout it is drawn for
            most = max(len(get_layout(name).parts) for name in LAYOUTS)
            if int(most * self.ratio + 1e-9) == 0:
                raise ConfigError(f"mask.ratio {self.ratio}: the {self.strategy} mask takes int(P * ratio) = 0 of "
                                  f"the P body parts per clip (P <= {most}), i.e. masks nothing; use a ratio >= "
                                  f"{1 / most:.2g} (or 0 to mask nothing)")
        if self.clip_len < 1:
            raise ConfigError(f"mask clip_len must be at least 1, got {self.clip_len}")


def make_mask(cfg: MaskConfig, n: int, t: int, layout: str | Layout = "ntu25", persons: int = 2,
              generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """The mask of ``cfg.strategy``: ``(n, t, V, persons)`` bool, True = masked.

    Raises:
        ConfigError: unknown strategy or a ratio outside [0, 1].
    """
    layout = get_layout(layout)
    if cfg.strategy == "topology":
        return topology_mask(n, t, layout, cfg.ratio, cfg.clip_len, persons, generator, device)
    if cfg.strategy == "topology_count":
        return topology_count_mask(n, t, layout, cfg.ratio, cfg.clip_len, persons, generator, device)
    if cfg.strategy == "release_topology":
        return release_topology_mask(n, t, layout, cfg.ratio, cfg.clip_len, persons, generator, device)
    if cfg.strategy == "random_joint":
        return random_joint_mask(n, t, layout.num_joints, persons, cfg.ratio, generator, device)
    if cfg.strategy == "random_frame":
        return random_frame_mask(n, t, layout.num_joints, persons, cfg.ratio, generator, device)
    raise ConfigError(f"unknown mask strategy {cfg.strategy!r}; choose one of {', '.join(STRATEGIES)}")


def apply_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked coordinates: ``x`` ``(N, C, T, V, M)``, ``mask`` ``(N, T, V, M)`` bool
    (True = masked, broadcast over C). Returns a new tensor."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be bool (True = masked), got {mask.dtype}")
    if x.dim() != 5 or tuple(mask.shape) != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit x {tuple(x.shape)}: expected (N, T, V, M) for "
                         "x (N, C, T, V, M)")
    return x.masked_fill(mask.unsqueeze(1).to(x.device), 0)


# --------------------------------------------------------------------------- occlusion (evaluation)

def spatial_occlusion(x: torch.Tensor, layout: str | Layout = "ntu25", ratio_range: Tuple[float, float] = (0.3, 0.7),
                      generator: Optional[torch.Generator] = None, return_mask: bool = False):
    """Zero random whole body parts in every frame, for both persons (Table 4 protocol).

    Per sample ``r ~ U(ratio_range)``; the occluded parts are a subset whose joint count is
    nearest to ``r * V`` (ties at random), among the subsets whose fraction lies in
    ``ratio_range`` (when any does), so the occluded fraction of joints is within the range.

    Args:
        x: ``(N, C, T, V, M)``.
        return_mask: also return the ``(N, T, V, M)`` bool mask (True = occluded).

    Returns:
        the occluded ``(N, C, T, V, M)`` (and the mask).
    """
    layout = check_joints(x, layout, "spatial occlusion")
    n, _, t, v, m = x.shape
    _, joints, counts = part_subsets(layout)
    lo, hi = ratio_range
    frac = counts.to(torch.float64) / v
    allowed = (frac >= lo - 1e-9) & (frac <= hi + 1e-9)
    if not bool(allowed.any()):
        allowed = counts > 0
    r = lo + (hi - lo) * _rand((n,), generator, x.device, torch.float64)
    pick = _pick_nearest(r * v, counts, allowed, generator, x.device)
    mask = joints.to(x.device)[pick].view(n, 1, v, 1).expand(n, t, v, m)
    out = apply_mask(x, mask)
    return (out, mask.contiguous()) if return_mask else out


def temporal_occlusion(x: torch.Tensor, lengths, ratio_range: Tuple[float, float] = (0.3, 0.7),
                       generator: Optional[torch.Generator] = None, return_mask: bool = False):
    """Zero one random block of consecutive frames within the valid frames (Table 4 protocol).

    Per sample ``r ~ U(ratio_range)``, block ``round(r * length)`` frames starting uniformly
    among the positions where it fits in ``[0, length)``; every joint and person of those
    frames is zeroed. Use ``lengths = T`` for batches that were already cropped and resized.

    Args:
        x: ``(N, C, T, V, M)``.
        lengths: ``(N,)`` true number of frames (clamped to ``[1, T]``).
        return_mask: also return the ``(N, T, V, M)`` bool mask (True = occluded).

    Returns:
        the occluded ``(N, C, T, V, M)`` (and the mask).
    """
    n, _, t, v, m = x.shape
    lengths = torch.as_tensor(lengths, device=x.device).long().view(-1).clamp(1, t)
    lo, hi = ratio_range
    r = lo + (hi - lo) * _rand((n,), generator, x.device, torch.float64)
    block = torch.floor(r * lengths.to(torch.float64) + 0.5).long().clamp(0, t)
    block = torch.minimum(block, lengths)
    u = _rand((n,), generator, x.device, torch.float64)
    span = lengths - block + 1
    start = torch.minimum(torch.floor(u * span).long(), span - 1)
    frames = torch.arange(t, device=x.device).view(1, t)
    occluded = (frames >= start.view(n, 1)) & (frames < (start + block).view(n, 1))   # (N, T)
    mask = occluded.view(n, t, 1, 1).expand(n, t, v, m)
    out = apply_mask(x, mask)
    return (out, mask.contiguous()) if return_mask else out
