"""Dual prompts of PCM3 (paper section 3.4): input-wise domain prompts, feature-wise task prompts.

Both are trained during pretraining only and dropped afterwards: they live in the PCM3
module, never in the :class:`~pcm3.models.encoder.Encoder`.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from pcm3.errors import ConfigError

VIEWS = ("intra", "inter", "mask", "predict")
TASKS = ("cl", "mp")


class DomainPrompts(nn.Module):
    """One trainable ``F``-vector per input view, added to the encoder input (paper Eq. 6).

    Views: ``intra`` (plain augmented views, query and key; the release's ``base_prompt``),
    ``inter`` (mixed view, ``mix_prompt``), ``mask`` (masked view, ``mask_prompt``) and
    ``predict`` (predicted view, ``recons_prompt``). Initialised Xavier-uniform as the
    release's ``(1, 1, F)`` tensors (bound ``sqrt(3 / F)``).

    Args:
        num_features: F = V * C * M.
        views: which views get a prompt.
    """

    def __init__(self, num_features: int, views: Sequence[str] = VIEWS):
        super().__init__()
        unknown = [v for v in views if v not in VIEWS]
        if unknown:
            raise ConfigError(f"unknown domain-prompt views {unknown}; known: {', '.join(VIEWS)}")
        self.prompts = nn.ParameterDict({v: nn.Parameter(torch.empty(num_features)) for v in views})
        for p in self.prompts.values():
            nn.init.xavier_uniform_(p.view(1, 1, -1))

    @property
    def views(self):
        return tuple(v for v in VIEWS if v in self.prompts)

    def forward(self, view: str) -> Tensor:
        """The ``(F,)`` prompt of ``view``."""
        return self.prompts[view]


class TaskPrompts(nn.Module):
    """Feature-wise task prompts ``p_cl`` and ``p_mp`` (paper section 3.4, "Task-Specific Prompt").

    Each prompt holds ``2r`` values: the first ``r`` are added to ``r`` consecutive channels
    of the feature's first half (the first GRU direction), the next ``r`` to the same
    channels of the second half, at a channel offset drawn uniformly from the ``hidden - r + 1``
    positions on every call. Initialised Xavier-uniform as the release's ``(1, 2r)`` tensors.

    Offsets (``per_sample``):
        ``True`` (default): one offset per sample, shared by the sample's frames.
        ``False``: one offset per call, shared by the whole batch, as the release does (its
        draw also leaves out the last position). Then ``p_mp`` is a constant added to every
        frame of the batch, and the decoder's first Linear + BatchNorm removes it exactly in
        training mode: it gets no gradient and has no effect (the same defect as the
        release's domain prompts before the input BatchNorm). ``p_cl`` feeds a projector
        without BatchNorm and acts either way.

    Args:
        feature_dim: D = 2 * hidden.
        r: prompt size per half (128 in the paper).
        tasks: which prompts to create (``"cl"`` contrastive, ``"mp"`` masked prediction).
        per_sample: offsets per sample (True) or per call (False).
    """

    def __init__(self, feature_dim: int, r: int = 128, tasks: Sequence[str] = TASKS, per_sample: bool = True):
        super().__init__()
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ConfigError(f"unknown task prompts {unknown}; known: {', '.join(TASKS)}")
        if feature_dim % 2 or r > feature_dim // 2:
            raise ConfigError(f"task prompt size (model.prompt_dim) {r} must be at most encoder.hidden "
                              f"{feature_dim // 2}")
        self.feature_dim = feature_dim
        self.r = r
        self.per_sample = per_sample
        self.prompts = nn.ParameterDict({t: nn.Parameter(torch.empty(2 * r)) for t in tasks})
        for p in self.prompts.values():
            nn.init.xavier_uniform_(p.view(1, -1))

    def forward(self, task: str) -> Tensor:
        """The ``(2r,)`` prompt of ``task``."""
        return self.prompts[task]

    def draw_offsets(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Channel offsets in ``[0, hidden - r]``: ``(n,)`` per sample, or ``(1,)`` per call.

        ``generator``: a CPU generator, or ``None`` for the global RNG.
        """
        high = self.feature_dim // 2 - self.r + 1
        return torch.randint(0, high, (n if self.per_sample else 1,), generator=generator)

    def add(self, feat: Tensor, task: str, generator: Optional[torch.Generator] = None,
            offsets: Optional[Union[int, Tensor]] = None) -> Tensor:
        """Add the ``task`` prompt to ``feat`` at random (or the given) channel offsets.

        (Named ``add``, not ``apply``: overriding ``nn.Module.apply`` would break
        ``model.apply(init_fn)`` on any module holding the prompts.)

        Shape:
            - feat: ``(N, D)`` or ``(N, T, D)``; returns the same shape.
            - offsets: an int, ``(1,)`` or ``(N,)``; drawn with :meth:`draw_offsets` if ``None``.
        """
        d, r, half = self.feature_dim, self.r, self.feature_dim // 2
        if feat.shape[-1] != d:
            raise ValueError(f"task prompt expects features of size {d}, got {tuple(feat.shape)}")
        if offsets is None:
            offsets = self.draw_offsets(feat.shape[0], generator)
        offsets = torch.as_tensor(offsets, device=feat.device).reshape(-1, 1)  # B x 1, B = 1 or N
        cols = offsets + torch.arange(r, device=feat.device)  # B x r, window in the first half
        cols = torch.cat([cols, cols + half], dim=1)  # B x 2r, the same window in the second half
        p = self.prompts[task].to(feat.dtype).expand(cols.shape[0], 2 * r)
        delta = feat.new_zeros(cols.shape[0], d).scatter(1, cols, p)  # B x D, zero outside the windows
        return feat + delta.view(cols.shape[0], *([1] * (feat.dim() - 2)), d)
