"""Seeing collapse and divergence while a pretraining run happens.

Contrastive runs fail silently: the projections collapse to a point (every loss term still
finite, the contrastive loss stuck near ``ln(K + 1)``), or one term explodes without ever
becoming infinite. :func:`embedding_stats` measures, per step and on the device, what tells
them apart; :class:`CollapseMonitor` turns the per-epoch means into a one-line warning with
the likely causes (once per collapse episode, and a ``note:`` line if the run recovers);
:class:`DivergenceGuard` stops (or warns) when a loss term grows far beyond its first-epoch
value.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import Tensor

STAT_NAMES = ("pos_cos", "queue_cos", "emb_std", "inst_top1")


@torch.no_grad()
def embedding_stats(z: Tensor, k: Tensor, queue: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Health of a batch of contrastive embeddings (0-dim tensors, no host sync).

    Args:
        z: L2-normalised query embeddings ``(N, d)``.
        k: their L2-normalised positive keys ``(N, d)`` (row ``n`` belongs to ``z[n]``).
        queue: the negatives ``(K, d)``, optional.

    Returns:
        ``pos_cos`` mean cosine of each query with its key; ``queue_cos`` mean cosine of the
        queries with the queue entries; ``emb_std`` the per-dimension standard deviation of
        ``z`` over the batch, averaged over dimensions (about ``1 / sqrt(d)`` for spread-out
        embeddings, 0 when they collapse to a point); ``inst_top1`` the fraction of queries
        whose most similar key in the batch is their own (chance: ``1 / N``).
    """
    z, k = z.float(), k.float()
    out = {"pos_cos": (z * k).sum(dim=1).mean(), "emb_std": z.std(dim=0).mean()}
    sim = z @ k.t()  # N x N
    out["inst_top1"] = (sim.argmax(dim=1) == torch.arange(z.shape[0], device=z.device)).float().mean()
    if queue is not None and queue.numel():
        out["queue_cos"] = (z @ queue.float().mean(dim=0)).mean()  # = mean of z @ queue.T, without the N x K matrix
    return out


class CollapseMonitor:
    """Warns when the contrastive embeddings collapse or instance discrimination stays at chance.

    Args:
        dim: embedding size ``d``.
        batch_size: queries per step (sets chance for ``inst_top1``).
        std_fraction: warn when ``emb_std < std_fraction / sqrt(d)``.
        patience: consecutive epochs of a collapsed std, or of ``inst_top1`` below twice
            chance, before warning (the first epochs of a run often dip and recover). A std
            below the threshold counts only while it is not recovering: an epoch whose std
            rose by more than 10% over the previous epoch's restarts the count (measured: the
            ``center_time`` configs start near 0.01 and climb past the threshold by epoch 6-7).
    """

    def __init__(self, dim: int, batch_size: int, std_fraction: float = 0.25, patience: int = 5):
        self.std_threshold = std_fraction / math.sqrt(dim)
        self.chance = 1.0 / max(batch_size, 1)
        self.patience = patience
        self.low_epochs = 0
        self.collapsed_epochs = 0
        self.warned = False  # a warning was given and the run has not recovered since (one per episode)
        self.previous_std: Optional[float] = None

    def check(self, epoch: int, metrics: Dict[str, float]) -> Optional[str]:
        """One epoch's means (``emb_std``, ``inst_top1``...) -> a warning line, or None.

        One warning per collapse episode: the first epoch at which a condition has held for
        ``patience`` epochs warns, the following epochs of the same episode are quiet (a run
        collapsed for 8 epochs prints one line, not 8). After a warning, the first epoch where
        neither condition holds any more gives one ``note:`` line saying the embeddings
        recovered (early dips that recover are common), which ends the episode: a later
        collapse warns again."""
        problems: List[str] = []
        std = metrics.get("emb_std")
        if std is not None:
            rising = self.previous_std is not None and std > 1.1 * self.previous_std
            self.previous_std = std
            self.collapsed_epochs = self.collapsed_epochs + 1 if std < self.std_threshold and not rising else 0
            if self.collapsed_epochs >= self.patience:
                problems.append(f"embedding std {std:.4f} < {self.std_threshold:.4f} for {self.collapsed_epochs} "
                                "epochs (collapsed to a point)")
        top1 = metrics.get("inst_top1")
        if top1 is not None:
            self.low_epochs = self.low_epochs + 1 if top1 < 2 * self.chance else 0
            if self.low_epochs >= self.patience:
                problems.append(f"instance top-1 {top1:.3f} at chance ({self.chance:.3f}) for {self.low_epochs} epochs")
        if not problems:
            if self.warned and not self.collapsed_epochs and not self.low_epochs:
                self.warned = False
                seen = [f"std {std:.4f}"] if std is not None else []
                seen += [f"instance top-1 {top1:.3f}; chance {self.chance:.3f}"] if top1 is not None else []
                return f"note: epoch {epoch}: the contrastive embeddings recovered ({', '.join(seen)})"
            return None
        if self.warned:  # the episode already warned about: not repeated every epoch
            return None
        self.warned = True
        return (f"warning: epoch {epoch}: contrastive collapse? {'; '.join(problems)}. Likely causes: views too "
                "strong for the data (views.corrupt_ratio, views.shear_amplitude), key encoder too slow "
                "(model.momentum, model.momentum_schedule: cosine), learning rate too high, queue too large "
                "for the data set (model.queue_size). Not repeated while it lasts; a note follows if it recovers")


class DivergenceGuard:
    """Flags a loss term that grew ``factor`` times beyond its first-epoch value.

    The distillation terms (``kl_*``) start near 0 by construction (random embeddings give
    near-uniform distributions), and so do the optional variance / covariance regularisers
    (``feat_var``, ``feat_cov``: hinge and off-diagonal terms, about 0 for an uncollapsed
    random encoder). The InfoNCE terms (``con_*``) start near 0 when the first epoch is shorter
    than the queue (the queries then meet the queue's random initial vectors, far from every
    key) and cannot diverge: with normalised embeddings each is at most ``2 / T + ln(K + 1)``.
    None of these is guarded on its own; a blow-up of any of them shows in the total ``loss``,
    which is, against at least ``MIN_LOSS_REFERENCE`` (a contrast-only first epoch against a
    random queue can start near 0 too). Every other term (the masked MSE) is guarded against
    its first-epoch value.

    Args:
        factor: growth that counts as divergence (0 disables the guard).
    """

    def __init__(self, factor: float = 100.0, first: Optional[Dict[str, float]] = None):
        self.factor = factor
        self.first: Dict[str, float] = self._reference(first or {})

    MIN_LOSS_REFERENCE = 1.0

    @classmethod
    def _reference(cls, terms: Dict[str, float]) -> Dict[str, float]:
        """The first epoch's values of the guarded terms (a resumed run passes them in)."""
        return {k: v for k, v in terms.items() if cls.guarded(k) and math.isfinite(v)}

    def _limit(self, name: str) -> float:
        """What the term ``name`` is compared against: its first-epoch value (the total loss: at
        least ``MIN_LOSS_REFERENCE``)."""
        first = self.first[name]
        return max(first, self.MIN_LOSS_REFERENCE) if name == "loss" else first

    @staticmethod
    def guarded(name: str) -> bool:
        return (not name.startswith(("kl_", "con_")) and name not in ("feat_var", "feat_cov")
                and name not in STAT_NAMES)

    def check(self, epoch: int, terms: Dict[str, float]) -> Optional[str]:
        """Record the first epoch's values; later, a message naming each diverged term, or None."""
        if not self.first:
            self.first = self._reference(terms)
            return None
        if self.factor <= 0:
            return None
        bad = [f"{k}={v:.4g} (first epoch {self.first[k]:.4g})" for k, v in terms.items()
               if k in self.first and self._limit(k) > 0 and v > self.factor * self._limit(k)]
        if not bad:
            return None
        return (f"epoch {epoch}: loss diverging: {', '.join(bad)} grew more than {self.factor:g}x "
                "(lower optim.lr?)")
