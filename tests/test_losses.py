"""Each loss against a hand-written NumPy reference, over shapes and temperatures."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pcm3.losses import info_nce, masked_mse, mix_key, nearest_neighbours, relational_kl

SHAPES = [(1, 3, 1), (4, 8, 5), (7, 16, 33)]  # (N, d, K)
TEMPS = [0.07, 0.2, 1.0]


def _unit(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _ref_info_nce(q, k, queue, t):
    total = 0.0
    for n in range(q.shape[0]):
        pos = math.exp(float(q[n] @ k[n]) / t)
        neg = sum(math.exp(float(q[n] @ m) / t) for m in queue)
        total += -math.log(pos / (pos + neg))
    return total / q.shape[0]


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _ref_kl(q, k, queue, tq, tk):
    total = 0.0
    for n in range(q.shape[0]):
        p_k = _softmax(np.array([float(k[n] @ m) / tk for m in queue]))
        p_q = _softmax(np.array([float(q[n] @ m) / tq for m in queue]))
        total += float(np.sum(p_k * (np.log(p_k) - np.log(p_q))))
    return total / q.shape[0]


@pytest.mark.parametrize("n,d,k_size", SHAPES)
@pytest.mark.parametrize("t", TEMPS)
def test_info_nce_matches_reference(n, d, k_size, t):
    q, k, queue = _unit((n, d), 1), _unit((n, d), 2), _unit((k_size, d), 3)
    got = info_nce(q, k, queue, t).item()
    assert got == pytest.approx(_ref_info_nce(q.numpy(), k.numpy(), queue.numpy(), t), rel=1e-9)


def test_info_nce_gradients_and_perfect_case():
    q, queue = _unit((4, 8), 1), _unit((6, 8), 2)
    q.requires_grad_(True)
    queue.requires_grad_(True)
    info_nce(q, q.detach(), queue, 0.1).backward()
    assert q.grad.abs().sum() > 0 and queue.grad is None  # the queue is a constant
    # a positive far above every negative gives a loss near 0
    far = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert info_nce(far, far, torch.tensor([[-1.0, 0.0]] * 3, dtype=torch.float64), 0.01).item() < 1e-6


@pytest.mark.parametrize("n,d,k_size", SHAPES)
@pytest.mark.parametrize("tq,tk", [(0.1, 0.05), (0.2, 0.2), (1.0, 0.5)])
def test_relational_kl_matches_reference(n, d, k_size, tq, tk):
    q, k, queue = _unit((n, d), 4), _unit((n, d), 5), _unit((k_size, d), 6)
    got = relational_kl(q, k, queue, tq, tk).item()
    assert got == pytest.approx(_ref_kl(q.numpy(), k.numpy(), queue.numpy(), tq, tk), rel=1e-9, abs=1e-12)


def test_relational_kl_key_is_detached_and_zero_on_agreement():
    q, k, queue = _unit((5, 8), 1), _unit((5, 8), 2), _unit((9, 8), 3)
    k.requires_grad_(True)
    q.requires_grad_(True)
    relational_kl(q, k, queue).backward()
    assert k.grad is None and q.grad.abs().sum() > 0
    assert relational_kl(q, q, queue, 0.1, 0.1).item() == pytest.approx(0.0, abs=1e-12)
    assert relational_kl(q, k, queue).item() >= 0


def _ref_masked_mse(pred, target, mask):
    total, count = 0.0, 0
    n, c, t, v, m = pred.shape
    for i in range(n):
        for ti in range(t):
            for vi in range(v):
                for mi in range(m):
                    if mask[i, ti, vi, mi]:
                        for ci in range(c):
                            total += (pred[i, ci, ti, vi, mi] - target[i, ci, ti, vi, mi]) ** 2
                            count += 1
    return total / count if count else 0.0


@pytest.mark.parametrize("shape", [(1, 3, 4, 5, 2), (3, 2, 6, 4, 1), (2, 3, 8, 25, 2)])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_masked_mse_matches_reference(shape, ratio):
    g = torch.Generator().manual_seed(7)
    pred = torch.randn(*shape, generator=g, dtype=torch.float64)
    target = torch.randn(*shape, generator=g, dtype=torch.float64)
    n, c, t, v, m = shape
    mask = torch.rand(n, t, v, m, generator=g) < ratio
    got = masked_mse(pred, target, mask).item()
    assert got == pytest.approx(_ref_masked_mse(pred.numpy(), target.numpy(), mask.numpy()), rel=1e-9, abs=0)


def test_masked_mse_special_cases():
    pred = torch.randn(2, 3, 4, 5, 2, requires_grad=True)
    target = torch.randn(2, 3, 4, 5, 2)
    none = torch.zeros(2, 4, 5, 2, dtype=torch.bool)
    loss = masked_mse(pred, target, none)
    assert loss.item() == 0.0
    loss.backward()  # still differentiable
    assert pred.grad.abs().sum() == 0
    full = torch.ones(2, 4, 5, 2, dtype=torch.bool)
    assert masked_mse(pred, target, full).item() == pytest.approx(F.mse_loss(pred, target).item(), rel=1e-6)
    # unmasked coordinates do not matter
    mask = torch.rand(2, 4, 5, 2) < 0.5
    other = target.clone()
    other[~mask.unsqueeze(1).expand_as(other)] += 100.0
    assert masked_mse(pred, other, mask).item() == pytest.approx(masked_mse(pred, target, mask).item(), rel=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_mix_key(lam):
    k = _unit((5, 4), 1)
    partner = torch.tensor([1, 2, 3, 4, 0])
    got = mix_key(k, torch.full((5,), lam, dtype=torch.float64), partner)
    for n in range(5):
        ref = (1 - lam) * k[n].numpy() + lam * k[partner[n]].numpy()
        np.testing.assert_allclose(got[n].numpy(), ref / np.linalg.norm(ref), rtol=1e-12)
    torch.testing.assert_close(mix_key(k, lam, partner), got)  # a scalar lam broadcasts


def test_mix_key_per_sample_lambda():
    k = _unit((3, 4), 2)
    lam = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    got = mix_key(k, lam, torch.tensor([2, 0, 1]))
    torch.testing.assert_close(got[0], k[0])
    torch.testing.assert_close(got[1], k[0])
    torch.testing.assert_close(got[2], F.normalize(k[2] + k[1], dim=0))


def test_shape_errors():
    q, queue = _unit((4, 8), 1), _unit((6, 8), 2)
    with pytest.raises(ValueError, match="q and k"):
        info_nce(q, q[:3], queue)
    with pytest.raises(ValueError, match="queue"):
        relational_kl(q, q, queue[:, :5])
    with pytest.raises(ValueError, match="mask"):
        masked_mse(torch.zeros(1, 3, 4, 5, 2), torch.zeros(1, 3, 4, 5, 2), torch.zeros(1, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="lam"):
        mix_key(q, torch.zeros(3), torch.arange(4))


def test_variance_covariance_against_a_hand_computation():
    from pcm3.losses import variance_covariance

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=g) * torch.tensor([0.1, 0.5, 1.0, 2.0, 0.0])
    v, c = variance_covariance(x, std_target=0.5)
    xc = x - x.mean(0)
    std = torch.sqrt(xc.var(0) + 1e-4)
    assert torch.allclose(v, torch.clamp(0.5 - std, min=0).mean())
    cov = xc.t() @ xc / 15
    off = cov - torch.diag(torch.diag(cov))
    assert torch.allclose(c, (off ** 2).sum() / 5)
    collapsed = torch.ones(8, 4)  # every sample the same: full variance penalty, no covariance
    v, c = variance_covariance(collapsed, std_target=0.5)
    assert v == pytest.approx(0.5 - 0.01, abs=1e-4) and float(c) == 0.0
    with pytest.raises(ValueError):
        variance_covariance(torch.ones(1, 4))


def _ref_info_nce_multi(q, k, queue, t, positives, exclude):
    """-log((exp(q.k/t) + sum_{i in P} exp(q.m_i/t)) / (exp(q.k/t) + sum_{i not excluded} exp(q.m_i/t)))."""
    total = 0.0
    for n in range(q.shape[0]):
        pos = math.exp(float(q[n] @ k[n]) / t)
        num = pos + sum(math.exp(float(q[n] @ queue[i]) / t) for i in range(queue.shape[0])
                        if positives[n, i] and not exclude[n, i])
        den = pos + sum(math.exp(float(q[n] @ queue[i]) / t) for i in range(queue.shape[0]) if not exclude[n, i])
        total += -math.log(num / den)
    return total / q.shape[0]


@pytest.mark.parametrize("t", [0.07, 0.5])
def test_info_nce_extra_positives_matches_reference(t):
    q, k, queue = _unit((5, 8), 1), _unit((5, 8), 2), _unit((12, 8), 3)
    g = torch.Generator().manual_seed(4)
    positives = torch.rand(5, 12, generator=g) < 0.3
    exclude = torch.rand(5, 12, generator=g) < 0.2
    positives[0, 3], exclude[0, 3] = True, True  # an excluded entry is never a positive
    got = float(info_nce(q, k, queue, t, exclude=exclude, extra_positives=positives))
    assert got == pytest.approx(_ref_info_nce_multi(q, k, queue, t, positives, exclude), rel=1e-9)
    none = torch.zeros(5, 12, dtype=torch.bool)  # no mined positive: the plain InfoNCE
    assert float(info_nce(q, k, queue, t, extra_positives=none)) == pytest.approx(float(info_nce(q, k, queue, t)), rel=1e-9)


def test_nearest_neighbours_picks_the_most_similar_valid_entries():
    queue = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.2], [-1.0, 0.0]]), dim=1)
    k = F.normalize(torch.tensor([[1.0, 0.05], [0.0, 1.0]]), dim=1)
    got = nearest_neighbours(k, queue, 2)
    assert got[0].nonzero().flatten().tolist() == [0, 1] and got[1].nonzero().flatten().tolist() == [2, 3]
    exclude = torch.zeros(2, 5, dtype=torch.bool)
    exclude[0, 0] = True  # the sample's own older key: never mined
    valid = torch.tensor([True, False, True, True, True])  # slot 1 never filled
    got = nearest_neighbours(k, queue, 2, exclude=exclude, valid=valid)
    assert got[0].nonzero().flatten().tolist() == [2, 3]  # 0 excluded, 1 empty: the next two
    assert got[1].nonzero().flatten().tolist() == [2, 3]
    few = nearest_neighbours(k, queue, 4, valid=torch.tensor([True, False, False, False, False]))
    assert few.sum(dim=1).tolist() == [1, 1]  # fewer eligible entries than asked: only those
    assert not nearest_neighbours(k, queue, 0).any()
