"""The exact t-SNE: perplexity calibration and cluster separation; PCA fallback."""

import numpy as np
import torch

from pcm3.evaluation.tsne import _affinities, pca_2d, tsne


def test_affinities_reach_the_perplexity():
    x = torch.randn(120, 5)
    p = _affinities(x, 10.0)
    assert torch.allclose(p, p.T) and abs(p.sum().item() - 1) < 1e-4
    assert (p.diagonal() < 1e-6).all()


def test_affinities_have_the_entropy_of_the_perplexity():
    """Points evenly spaced on a circle: every row has the same distances, so the same calibrated
    beta, the conditional P(j|i) is symmetric and ``N * P`` is it; each row's entropy is log(perplexity)."""
    n = 90
    angle = torch.arange(n, dtype=torch.float32) * (2 * np.pi / n)
    x = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    for perplexity in (5.0, 10.0, 25.0):
        rows = n * _affinities(x, perplexity).double()
        assert torch.allclose(rows.sum(1), torch.ones(n, dtype=torch.float64), atol=1e-4)
        entropy = -(rows * rows.log()).sum(1)
        assert torch.allclose(entropy, torch.full_like(entropy, np.log(perplexity)), atol=1e-3), perplexity


def test_clusters_stay_apart():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 40)
    x = rng.normal(size=(4, 30))[y] * 4 + rng.normal(size=(160, 30))
    e = tsne(x, iters=250, seed=0)
    assert e.shape == (160, 2) and np.isfinite(e).all()
    cent = np.stack([e[y == k].mean(0) for k in range(4)])
    within = np.mean([np.linalg.norm(e[y == k] - cent[k], axis=1).mean() for k in range(4)])
    between = np.min([np.linalg.norm(cent[a] - cent[b]) for a in range(4) for b in range(a + 1, 4)])
    assert between > 2 * within
    assert np.allclose(e, tsne(x, iters=250, seed=0))


def test_pca_fallback():
    x = np.random.default_rng(1).normal(size=(50, 6)) * np.array([10, 1, 0.1, 0.1, 0.1, 0.1])
    e = pca_2d(x)
    assert e.shape == (50, 2) and e[:, 0].std() > e[:, 1].std() > 0


def test_pca_of_wide_data_matches_the_svd():
    """More features than points (the raw-input row): the Gram-matrix path gives the SVD's
    components up to their signs, and a zero-padded column when there are fewer points than dims."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 300)) * np.linspace(5, 0.1, 300)
    wide = pca_2d(x, 10)
    c = x - x.mean(0)
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    assert np.allclose(np.abs(wide), np.abs(u[:, :10] * s[:10]), atol=1e-8)
    assert pca_2d(x[:3], 5).shape == (3, 5)
