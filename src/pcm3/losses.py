"""The losses of PCM3 as pure functions (paper Eq. 1-4).

Embeddings ``q`` (queries) and ``k`` (keys) are L2-normalised rows; the memory queue holds
``K`` normalised keys of earlier batches, one per row. Masks follow one convention across the
project: ``True`` = masked (hidden from the model).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_pair(q: Tensor, k: Tensor, queue: Tensor) -> None:
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be (N, d); got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}); got {tuple(queue.shape)}")


def _check_exclude(exclude: Optional[Tensor], q: Tensor, queue: Tensor) -> None:
    if exclude is not None and tuple(exclude.shape) != (q.shape[0], queue.shape[0]):
        raise ValueError(f"exclude must be (N, K) = {(q.shape[0], queue.shape[0])}; got {tuple(exclude.shape)}")


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float = 0.07,
             exclude: Optional[Tensor] = None, extra_positives: Optional[Tensor] = None) -> Tensor:
    """InfoNCE against a memory queue (paper Eq. 1-2, MoCo v2), mean over the batch.

    ``-log( exp(q.k/t) / (exp(q.k/t) + sum_i exp(q.m_i/t)) )``; the queue gets no gradient.

    Args:
        q: queries, L2-normalised.
        k: positive keys, L2-normalised (row ``n`` is the positive of ``q[n]``).
        queue: negatives ``m_i``, L2-normalised.
        temperature: ``tau`` (0.07).
        exclude: optional bool ``(N, K)``, True where queue entry ``i`` is not a negative of
            query ``n`` (an older key of the same sample, when the queue is as large as the
            data set); those terms leave the denominator.
        extra_positives: optional bool ``(N, K)``, True where queue entry ``i`` counts as a
            further positive of query ``n`` (mined neighbours, :func:`nearest_neighbours`):
            the numerator becomes ``exp(q.k/t) + sum_{i in P(n)} exp(q.m_i/t)`` (AimCLR's
            nearest-neighbour mining; not in PCM3). Excluded entries are never positives.

    Shape:
        - q, k: ``(N, d)``; queue: ``(K, d)``; exclude, extra_positives: ``(N, K)``; output: scalar.
    """
    _check_pair(q, k, queue)
    _check_exclude(exclude, q, queue)
    _check_exclude(extra_positives, q, queue)
    l_pos = (q * k).sum(dim=1, keepdim=True)  # N x 1
    l_neg = q @ queue.detach().t()  # N x K
    if exclude is not None:
        l_neg = l_neg.masked_fill(exclude, float("-inf"))  # exp(-inf) = 0: out of the denominator
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # N x (1 + K), positive first
    if extra_positives is None:
        labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, labels)
    if exclude is not None:
        extra_positives = extra_positives & ~exclude
    is_pos = torch.cat([torch.ones_like(extra_positives[:, :1]), extra_positives], dim=1)  # N x (1 + K)
    numerator = torch.logsumexp(logits.masked_fill(~is_pos, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - numerator).mean()


def nearest_neighbours(k: Tensor, queue: Tensor, count: int, exclude: Optional[Tensor] = None,
                       valid: Optional[Tensor] = None) -> Tensor:
    """The ``count`` queue entries most similar to each key, as a bool ``(N, K)`` mask.

    Mined positives for :func:`info_nce` (``extra_positives``; AimCLR's nearest-neighbour
    mining, Guo et al., AAAI 2022), chosen by the key (the momentum encoder's embedding of the
    clean view), never among ``exclude`` (the sample's own older keys) or entries not
    ``valid`` (queue slots not yet filled).

    Shape:
        - k: ``(N, d)``; queue: ``(K, d)``; exclude: ``(N, K)``; valid: ``(K,)``; output: ``(N, K)``.
    """
    _check_pair(k, k, queue)
    _check_exclude(exclude, k, queue)
    if count <= 0:
        return torch.zeros(k.shape[0], queue.shape[0], dtype=torch.bool, device=k.device)
    sim = k.detach().float() @ queue.detach().float().t()  # N x K
    blocked = torch.zeros_like(sim, dtype=torch.bool) if exclude is None else exclude.clone()
    if valid is not None:
        blocked |= ~valid.view(1, -1)
    sim = sim.masked_fill(blocked, float("-inf"))
    top = sim.topk(min(count, queue.shape[0]), dim=1).indices  # N x count
    chosen = torch.zeros_like(blocked).scatter_(1, top, True)
    return chosen & ~blocked  # fewer than ``count`` eligible entries: no blocked ones slip in


def relational_kl(q: Tensor, k: Tensor, queue: Tensor, tq: float = 0.1, tk: float = 0.05,
                  exclude: Optional[Tensor] = None) -> Tensor:
    """Relational knowledge distillation (paper Eq. 3), mean over the batch.

    ``KL( softmax(k . queue / tk) || softmax(q . queue / tq) )`` over all queue entries. The
    key's distribution is the target: ``k`` is detached. (Eq. 3 writes the cross-entropy;
    the two differ by the entropy of the target, which has no gradient.)

    Args:
        q: queries (student), L2-normalised.
        k: keys (teacher), L2-normalised.
        queue: the anchors ``m_j``.
        tq: student temperature (0.1).
        tk: teacher temperature (0.05).
        exclude: optional bool ``(N, K)``, True where queue entry ``j`` is left out of both
            distributions of row ``n`` (the sample's own older key; see :func:`info_nce`).

    Shape:
        - q, k: ``(N, d)``; queue: ``(K, d)``; exclude: ``(N, K)``; output: scalar.
    """
    _check_pair(q, k, queue)
    _check_exclude(exclude, q, queue)
    queue = queue.detach()
    s_q = q @ queue.t() / tq  # N x K
    s_k = k.detach() @ queue.t() / tk  # N x K
    if exclude is None:
        return F.kl_div(F.log_softmax(s_q, dim=1), F.log_softmax(s_k, dim=1), reduction="batchmean", log_target=True)
    s_q = s_q.masked_fill(exclude, float("-inf"))
    s_k = s_k.masked_fill(exclude, float("-inf"))
    log_p_q, log_p_k = F.log_softmax(s_q, dim=1), F.log_softmax(s_k, dim=1)
    terms = torch.where(exclude, torch.zeros_like(log_p_q), log_p_k.exp() * (log_p_k - log_p_q))  # 0 * inf -> 0
    return terms.sum() / q.shape[0]


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Reconstruction loss on masked coordinates only (paper Eq. 4, as released).

    Squared error summed over the masked coordinates, divided by their number (joints x
    coordinates), in raw coordinate units; 0 when nothing is masked.

    Args:
        pred: reconstruction.
        target: the input before masking.
        mask: ``True`` = masked, shared by the C coordinates of a joint.

    Shape:
        - pred, target: ``(N, C, T, V, M)``; mask: ``(N, T, V, M)`` bool; output: scalar.
    """
    if pred.shape != target.shape or pred.dim() != 5:
        raise ValueError(f"pred and target must both be (N, C, T, V, M); got {tuple(pred.shape)}, {tuple(target.shape)}")
    n, c, t, v, m = pred.shape
    if tuple(mask.shape) != (n, t, v, m):
        raise ValueError(f"mask must be {(n, t, v, m)} (N, T, V, M); got {tuple(mask.shape)}")
    weight = mask.unsqueeze(1).to(pred.dtype)  # N x 1 x T x V x M, broadcast over C
    count = weight.sum() * c  # masked coordinates
    return ((pred - target) ** 2 * weight).sum() / count.clamp_min(1)  # no host sync for the 0 case


def mix_key(k: Tensor, lam: Union[Tensor, float], partner: Tensor) -> Tensor:
    """Key of a mixed query (paper Eq. 2): ``normalize((1 - lam) k + lam k[partner])``.

    Shape:
        - k: ``(N, d)``; lam: ``(N,)`` or a scalar; partner: ``(N,)`` long; output: ``(N, d)``.
    """
    lam = torch.as_tensor(lam, dtype=k.dtype, device=k.device)
    lam = lam.expand(k.shape[0]) if lam.dim() == 0 else lam
    if lam.shape != (k.shape[0],) or partner.shape != (k.shape[0],):
        raise ValueError(f"lam and partner must be ({k.shape[0]},); got {tuple(lam.shape)}, {tuple(partner.shape)}")
    lam = lam.unsqueeze(1)  # N x 1
    return F.normalize((1 - lam) * k + lam * k[partner], dim=1)


def variance_covariance(x: Tensor, std_target: float = 0.5, eps: float = 1e-4):
    """Variance and covariance terms of VICReg (Bardes et al., ICLR 2022) on features.

    Not part of PCM3: an optional regulariser against dimensional collapse of the encoder's
    feature on small data sets (``loss.w_var``, ``loss.w_cov``). ``variance`` is the mean hinge
    ``relu(std_target - std_d)`` over dimensions; ``covariance`` the sum of squared
    off-diagonal covariances divided by ``D``.

    Shape:
        x: ``(N, D)`` with ``N >= 2``; outputs: two scalars.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be (N, D) with N >= 2; got {tuple(x.shape)}")
    x = x.float()
    x = x - x.mean(dim=0)
    std = torch.sqrt(x.var(dim=0) + eps)  # D
    variance = F.relu(std_target - std).mean()
    n, d = x.shape
    cov = x.t() @ x / (n - 1)  # D x D
    off = cov - torch.diag(torch.diagonal(cov))
    covariance = off.pow(2).sum() / d
    return variance, covariance
