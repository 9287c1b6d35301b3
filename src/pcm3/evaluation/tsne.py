"""A small exact t-SNE in torch (van der Maaten & Hinton 2008), for the report's feature maps.

Exact: every pairwise affinity is computed, so memory and time grow as ``N^2``; meant for up to
a few thousand points (the report subsamples). Falls back to nothing: callers that cannot
afford it use :func:`pca_2d`, and say so on the figure.
"""

from __future__ import annotations

import numpy as np
import torch


def pca_2d(x: np.ndarray, dims: int = 2) -> np.ndarray:
    """Projection of centred ``x`` ``(N, D)`` onto its first ``dims`` principal axes -> ``(N, dims)``."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    t = t - t.mean(0, keepdim=True)
    if t.shape[0] < 2:
        return np.zeros((t.shape[0], dims))
    if t.shape[1] > t.shape[0]:  # wide (the raw input: N x 9,600): the N x N Gram matrix is cheaper
        evals, u = torch.linalg.eigh(t @ t.T)  # ascending; t t^T = U S^2 U^T
        keep = min(dims, t.shape[0])
        out = (u[:, -keep:].flip(1) * evals[-keep:].flip(0).clamp_min(0).sqrt()).numpy()
    else:
        u, s, _ = torch.linalg.svd(t, full_matrices=False)
        out = (u[:, :dims] * s[:dims]).numpy()
    if out.shape[1] < dims:
        out = np.pad(out, ((0, 0), (0, dims - out.shape[1])))
    return out


def _affinities(x: torch.Tensor, perplexity: float, iters: int = 50) -> torch.Tensor:
    """Symmetric joint probabilities ``P`` ``(N, N)`` with per-point perplexity (bisection on beta)."""
    n = x.shape[0]
    d = torch.cdist(x, x).pow(2)  # N x N squared distances
    d.fill_diagonal_(0)
    target = float(np.log(perplexity))
    lo = torch.zeros((n, 1), dtype=x.dtype)
    hi = torch.full((n, 1), np.inf, dtype=x.dtype)
    beta = torch.ones((n, 1), dtype=x.dtype) / d[d > 0].median().clamp_min(1e-12)
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(iters):
        p = torch.softmax((-d * beta).masked_fill(eye, -np.inf), dim=1)
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(1, keepdim=True)
        too_flat = entropy > target  # too many effective neighbours: sharpen (larger beta)
        lo = torch.where(too_flat, beta, lo)
        hi = torch.where(too_flat, hi, beta)
        beta = torch.where(torch.isinf(hi), beta * 2, (lo + hi) / 2)
    p = torch.softmax((-d * beta).masked_fill(eye, -np.inf), dim=1)
    p = (p + p.T) / (2 * n)
    return p.clamp_min(1e-12)


def tsne(x: np.ndarray, *, perplexity: float = 30.0, iters: int = 500, seed: int = 0, pca_dims: int = 50,
         device: str | torch.device = "cpu") -> np.ndarray:
    """2-D t-SNE embedding of ``x`` ``(N, D)`` -> ``(N, 2)``.

    The original algorithm: PCA to ``pca_dims``, Gaussian affinities at the given perplexity,
    Student-t similarities in 2-D, gradient descent with momentum (0.5, then 0.8), per-parameter
    gains, early exaggeration 12 for the first 250 iterations (or a quarter of ``iters``),
    learning rate ``max(N / 48, 50)``. Deterministic for a seed.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 4:
        return pca_2d(x)
    xr = pca_2d(x, min(pca_dims, x.shape[1], n))
    xr = xr / max(np.abs(xr).max(), 1e-12)
    perplexity = min(perplexity, (n - 1) / 3)
    dev = torch.device(device)
    p = _affinities(torch.as_tensor(xr, dtype=torch.float32), perplexity).to(dev)
    g = torch.Generator().manual_seed(seed)
    y = (torch.randn(n, 2, generator=g, dtype=torch.float64) * 1e-4).to(dev, torch.float32)
    velocity = torch.zeros_like(y)
    gains = torch.ones_like(y)
    lr = max(n / 48.0, 50.0)
    exaggerate = min(250, iters // 4)
    for it in range(iters):
        pe = p * 12.0 if it < exaggerate else p
        sq = y.pow(2).sum(1)
        num = 1.0 / (1.0 + (sq[:, None] + sq[None, :] - 2.0 * (y @ y.T)).clamp_min(0))  # N x N Student-t
        num.fill_diagonal_(0)
        q = (num / num.sum()).clamp_min(1e-12)
        w = (pe - q) * num  # N x N
        grad = 4.0 * (w.sum(1, keepdim=True) * y - w @ y)
        same = (grad > 0) == (velocity > 0)
        gains = torch.where(same, gains * 0.8, gains + 0.2).clamp_min(0.01)
        momentum = 0.5 if it < exaggerate else 0.8
        velocity = momentum * velocity - lr * gains * grad
        y = y + velocity
        y = y - y.mean(0, keepdim=True)
    return y.cpu().numpy().astype(np.float64)
