"""Tests of pcm3.augment: shapes, seeding, crop bounds, linear maps, corruption, mixing, views."""

import math

import pytest
import torch
import torch.nn.functional as F

from pcm3 import augment as A
from pcm3.skeleton import NTU25, part_mask

V = 25
PARTS = torch.from_numpy(part_mask(NTU25))  # (5, 25)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=6, t=300, m=2, seed=0):
    return torch.randn(n, 3, t, V, m, generator=gen(seed))


def reference_resize(segment, out_len):
    """F.interpolate of one sample's frames (C, L, V, M) to out_len, as the release does."""
    c, length, v, m = segment.shape
    flat = segment.permute(0, 2, 3, 1).reshape(1, c * v * m, length)
    out = F.interpolate(flat, size=out_len, mode="linear", align_corners=False)
    return out.reshape(c, v, m, out_len).permute(0, 3, 1, 2)


# ------------------------------------------------------------------ crop-resize

def test_crop_resize_shape_and_seed():
    x, lengths = batch(), torch.tensor([300, 40, 64, 65, 150, 1])
    out = A.crop_resize(x, lengths, generator=gen(1))
    assert out.shape == (6, 3, 64, V, 2)
    assert torch.equal(out, A.crop_resize(x, lengths, generator=gen(1)))
    assert not torch.equal(out, A.crop_resize(x, lengths, generator=gen(2)))


def test_crop_resize_never_reads_padding():
    n, t = 64, 300
    x = batch(n, t)
    lengths = torch.randint(1, t + 1, (n,), generator=gen(3))
    pad = torch.arange(t).view(1, 1, t, 1, 1) >= lengths.view(n, 1, 1, 1, 1)
    x = torch.where(pad, torch.full_like(x, 1e6), x)
    for seed in range(20):
        out = A.crop_resize(x, lengths, ratio=(0.1, 1.0), min_len=64, generator=gen(seed))
        assert out.abs().max() < 100
    assert A.center_crop_resize(x, lengths).abs().max() < 100


def _recover_crop(out):
    """Crop start and length from the output of a sample whose frame t holds the value t.

    Valid for crops of at least out_len frames (no clamping at either end)."""
    first, last = out[0, 0, 0, 0].double(), out[0, -1, 0, 0].double()
    out_len = out.shape[1]
    length = (last - first) * out_len / (out_len - 1)
    start = first - (0.5 * length / out_len - 0.5)
    return start, length


def test_crop_resize_respects_min_len_and_ratio():
    n, t = 200, 300
    ramp = torch.arange(t, dtype=torch.float64).view(1, 1, t, 1, 1).expand(n, 3, t, V, 2).contiguous()
    lengths = torch.randint(64, t + 1, (n,), generator=gen(4))
    out = A.crop_resize(ramp, lengths, ratio=(0.1, 1.0), min_len=64, generator=gen(5))
    for i in range(n):
        start, length = _recover_crop(out[i])
        assert length >= 64 - 1e-6 and length <= lengths[i] + 1e-6
        assert start >= -1e-6 and start + length <= lengths[i] + 1e-6
        assert abs(length - round(float(length))) < 1e-6
    # A fixed ratio gives floor(ratio * length) frames exactly (where that is >= out_len).
    lengths = torch.randint(128, t + 1, (n,), generator=gen(6))
    out = A.crop_resize(ramp, lengths, ratio=(0.5, 0.5), min_len=1, generator=gen(7))
    for i in range(n):
        _, length = _recover_crop(out[i])
        assert round(float(length)) == math.floor(0.5 * int(lengths[i]))
    # Short clips: the whole valid clip (min_len is larger than the clip).
    short = torch.full((n,), 30)
    out = A.crop_resize(ramp, short, min_len=64, generator=gen(8))
    expected = reference_resize(ramp[0, :, :30], 64)
    assert torch.allclose(out, expected.expand_as(out), atol=1e-9)


def test_crop_resize_matches_interpolate_on_full_crop():
    x = batch(4, 300)
    lengths = torch.tensor([300, 100, 64, 17])
    out = A.crop_resize(x, lengths, ratio=(1.0, 1.0), generator=gen(0))
    for i, length in enumerate(lengths.tolist()):
        assert torch.allclose(out[i], reference_resize(x[i, :, :length], 64), atol=1e-5)


def test_center_crop_resize_deterministic_and_reference():
    x = batch(4, 300)
    lengths = torch.tensor([300, 100, 64, 17])
    out = A.center_crop_resize(x, lengths, ratio=0.95, out_len=64)
    assert torch.equal(out, A.center_crop_resize(x, lengths, ratio=0.95, out_len=64))
    for i, length in enumerate(lengths.tolist()):
        bias = int((1 - 0.95) * length / 2)
        assert torch.allclose(out[i], reference_resize(x[i, :, bias:length - bias], 64), atol=1e-5)


# ------------------------------------------------------------------ linear maps

def test_shear_matrix_structure_and_application():
    mats = A.shear_matrix(1000, amplitude=0.7, generator=gen(0))
    eye = torch.eye(3, dtype=torch.bool)
    assert torch.all(mats[:, eye] == 1)
    off = mats[:, ~eye]
    assert off.abs().max() <= 0.7 and off.min() < -0.6 and off.max() > 0.6
    x = batch(5, 10)
    out = A.shear(x, amplitude=0.7, generator=gen(3))
    s = A.shear_matrix(5, amplitude=0.7, generator=gen(3))
    assert torch.allclose(out, torch.einsum("nij,njtvm->nitvm", s, x), atol=1e-6)
    # A hand-made sample: one joint at (1, 2, 3) maps to S @ (1, 2, 3).
    point = torch.zeros(1, 3, 1, 1, 1)
    point[0, :, 0, 0, 0] = torch.tensor([1.0, 2.0, 3.0])
    s1 = A.shear_matrix(1, generator=gen(9))[0]
    got = A.shear(point, generator=gen(9))[0, :, 0, 0, 0]
    assert torch.allclose(got, s1 @ torch.tensor([1.0, 2.0, 3.0]))
    expected = torch.tensor([1 + 2 * s1[0, 1] + 3 * s1[0, 2], s1[1, 0] + 2 + 3 * s1[1, 2],
                             s1[2, 0] + 2 * s1[2, 1] + 3])
    assert torch.allclose(got, expected)


def test_shear_and_rotate_are_linear():
    a, b = batch(4, 8, seed=1), batch(4, 8, seed=2)
    for fn in (lambda z, g: A.shear(z, 1.0, g), lambda z, g: A.rotate(z, 30.0, "xyz", g)):
        lhs = fn(2 * a - 3 * b, gen(5))
        rhs = 2 * fn(a, gen(5)) - 3 * fn(b, gen(5))
        assert torch.allclose(lhs, rhs, atol=1e-5)


def test_rotation_matrix():
    r = A.rotation_matrix(500, 20.0, "xyz", generator=gen(0))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3).expand(500, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(500), atol=1e-5)
    # About z only: (1, 0, 0) goes to (cos a, sin a, 0) with |a| <= 20 degrees.
    point = torch.zeros(500, 3, 1, 1, 1)
    point[:, 0] = 1
    out = A.rotate(point, 20.0, "z", generator=gen(1))[:, :, 0, 0, 0]
    angle = torch.atan2(out[:, 1], out[:, 0]) * 180 / math.pi
    assert torch.allclose(out[:, 2], torch.zeros(500))
    assert angle.abs().max() <= 20 + 1e-4 and angle.abs().max() > 15
    rz = A.rotation_matrix(500, 20.0, "z", generator=gen(1))
    assert torch.allclose(out, rz[:, :, 0], atol=1e-6)
    with pytest.raises(ValueError):
        A.rotation_matrix(2, 10.0, "xw")


def test_jitter():
    x = batch(4, 16)
    x[:, :, :, :, 1] = 0  # absent second person
    out = A.jitter(x, 0.01, generator=gen(0))
    assert torch.equal(out, A.jitter(x, 0.01, generator=gen(0)))
    assert torch.all(out[..., 1] == 0)
    d = (out - x)[..., 0]
    assert 0.008 < float(d.std()) < 0.012
    assert not torch.all(A.jitter(x, 0.01, generator=gen(0), keep_zeros=False)[..., 1] == 0)


# ------------------------------------------------------------------ joint corruption

def changed_joints(out, x):
    """(N, V) bool: joints whose coordinates changed anywhere."""
    return (out != x).any(dim=4).any(dim=2).any(dim=1)


def test_joint_corruption_touches_exactly_15_joints():
    x = batch(200, 12)
    out = A.joint_corruption(x, num_joints=15, p_zero=0.5, generator=gen(0))
    assert out.shape == x.shape
    assert torch.all(changed_joints(out, x).sum(dim=1) == 15)
    assert torch.equal(out, A.joint_corruption(x, generator=gen(0)))
    assert not torch.equal(out, A.joint_corruption(x, generator=gen(1)))
    zeroed = (out == 0).all(dim=4).all(dim=2).all(dim=1).sum(dim=1)  # joints set to zero
    frac_zero = float((zeroed == 15).float().mean())
    assert 0.35 < frac_zero < 0.65
    # The same joints in every frame and for every person.
    per_frame = (out != x).any(dim=1)  # (N, T, V, M)
    assert torch.all(per_frame == per_frame[:, :1, :, :1])


def test_joint_corruption_zero_and_matrix():
    x = batch(50, 6)
    out = A.joint_corruption(x, p_zero=1.0, generator=gen(2))
    ch = changed_joints(out, x)
    assert torch.all(ch.sum(1) == 15)
    assert torch.all(out.permute(0, 3, 1, 2, 4)[ch] == 0)
    out = A.joint_corruption(x, p_zero=0.0, generator=gen(3))
    ch = changed_joints(out, x)
    for i in range(50):
        src = x[i][:, :, ch[i]].reshape(3, -1).T  # (points, 3)
        dst = out[i][:, :, ch[i]].reshape(3, -1).T
        sol = torch.linalg.lstsq(src.double(), dst.double()).solution  # dst = src @ A^T
        assert torch.allclose(src.double() @ sol, dst.double(), atol=1e-5)
        assert sol.abs().max() <= 1 + 1e-5


# ------------------------------------------------------------------ mixing

def check_region(mixed, x, partner, lam, window=(28, 44), step=4, parts=(2, 3)):
    """Mixed equals the partner in a region of whole parts x a window, itself elsewhere."""
    n, _, t, v, _ = x.shape
    region = (mixed != x).any(dim=1).any(dim=-1)  # (N, T, V)
    r = region.view(n, 1, t, v, 1).expand_as(x)
    assert torch.equal(mixed[r], x[partner][r])
    assert torch.equal(mixed[~r], x[~r])
    assert torch.allclose(lam, region.float().mean(dim=(1, 2)))
    assert torch.all((lam >= 0) & (lam <= 1))
    for i in range(n):
        frames = region[i].any(dim=1).nonzero().flatten()
        joints = region[i].any(dim=0)
        start, length = int(frames[0]), len(frames)
        assert int(frames[-1]) == start + length - 1  # contiguous
        assert start % step == 0 and length % step == 0 and window[0] <= length <= window[1]
        hit = (PARTS & joints).any(dim=1)
        assert torch.equal(PARTS[hit].any(dim=0), joints)  # a union of whole parts
        assert parts[0] <= int(hit.sum()) <= parts[1]
        assert torch.all(region[i, frames] == joints)  # the same joints in every frame
    return region


@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix(per_sample):
    x = batch(16, 64)
    mixed, lam, partner = A.cutmix(x, "ntu25", per_sample=per_sample, generator=gen(0))
    shift = (partner - torch.arange(16)) % 16
    assert torch.all(shift == shift[0]) and 1 <= int(shift[0]) <= 14
    region = check_region(mixed, x, partner, lam)
    assert torch.all(lam > 0)
    if not per_sample:
        assert torch.all(region == region[:1])
    else:
        assert not torch.all(region == region[:1])
    again = A.cutmix(x, "ntu25", per_sample=per_sample, generator=gen(0))
    assert torch.equal(again[0], mixed)
    assert not torch.equal(A.cutmix(x, "ntu25", per_sample=per_sample, generator=gen(1))[0], mixed)


@pytest.mark.parametrize("per_sample", [False, True])
def test_resizemix(per_sample):
    x = batch(8, 64)
    mixed, lam, partner = A.resizemix(x, NTU25, per_sample=per_sample, generator=gen(4))
    region = (mixed != x).any(dim=1).any(dim=-1)
    assert torch.allclose(lam, region.float().mean(dim=(1, 2))) and torch.all(lam > 0)
    for i in range(8):
        frames = region[i].any(dim=1).nonzero().flatten()
        s, w = int(frames[0]), len(frames)
        src = x[partner[i], :, :min(2 * w, 64)]
        c, length, v, m = src.shape
        shrunk = F.interpolate(src.permute(0, 2, 3, 1).reshape(1, -1, length), size=w, mode="nearest")
        shrunk = shrunk.reshape(c, v, m, w).permute(0, 3, 1, 2)
        joints = region[i, s]
        assert torch.equal(mixed[i, :, s:s + w][:, :, joints], shrunk[:, :, joints])
        outside = ~region[i]
        assert torch.equal(mixed[i].permute(1, 2, 0, 3)[outside], x[i].permute(1, 2, 0, 3)[outside])


def test_window_longer_than_half_the_clip():
    # Windows of 44 frames read the partner's first min(88, 64) = 64 frames.
    x = batch(4, 64)
    mixed, lam, partner = A.resizemix(x, window=(44, 44), generator=gen(0))
    region = (mixed != x).any(dim=1).any(dim=-1)
    frames = region[0].any(dim=1).nonzero().flatten()
    assert len(frames) == 44
    s, joints = int(frames[0]), region[0, int(frames[0])]
    expected = x[partner[0]][:, (torch.arange(44) * 64) // 44][:, :, joints]
    assert torch.equal(mixed[0, :, s:s + 44][:, :, joints], expected)


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup(per_sample):
    x = batch(10, 8)
    mixed, lam, partner = A.mixup(x, per_sample=per_sample, generator=gen(0))
    assert lam.shape == (10,) and torch.all((lam >= 0) & (lam <= 1))
    expected = (1 - lam.view(-1, 1, 1, 1, 1)) * x + lam.view(-1, 1, 1, 1, 1) * x[partner]
    assert torch.allclose(mixed, expected, atol=1e-6)
    assert torch.all(lam == lam[0]) != per_sample


def test_small_batches():
    x = batch(2, 64)
    for fn in (A.cutmix, A.resizemix):
        mixed, lam, partner = fn(x, generator=gen(0))
        assert partner.tolist() == [1, 0]
    x1 = batch(1, 64)
    mixed, lam, partner = A.cutmix(x1, generator=gen(0))
    assert partner.tolist() == [0] and torch.equal(mixed, x1)
    mixed, lam, partner = A.mixup(x1, generator=gen(0))
    assert torch.allclose(mixed, x1)


def test_random_mix_picks_like_release():
    x = torch.randn(3, 3, 8, V, 1, generator=gen(0))  # tiny: only the choice matters here
    counts = {k: 0 for k in A.MIX_KINDS}
    g = gen(0)
    for _ in range(300):
        mixed, lam, partner, kind = A.random_mix(x, "ntu25", generator=g)
        counts[kind] += 1
        assert mixed.shape == x.shape and lam.shape == (3,)
    assert 110 < counts["cutmix"] < 190 and 40 < counts["resizemix"] < 110 and 40 < counts["mixup"] < 110
    only = A.random_mix(x, probs=(0, 0, 1), generator=gen(0))
    assert only[3] == "mixup"
    with pytest.raises(ValueError):
        A.random_mix(x, probs=(1, 0))


# ------------------------------------------------------------------ views

def test_make_views():
    n = 400
    cfg = A.ViewConfig()
    # Constant in time, so crop-resize is exact identity and only the spatial transform shows.
    frame = torch.randn(n, 3, 1, V, 2, generator=gen(0))
    x = frame.expand(n, 3, 300, V, 2).contiguous()
    lengths = torch.randint(1, 301, (n,), generator=gen(1))
    v1, v2, v3 = A.make_views(x, lengths, cfg, generator=gen(2))
    base = frame.expand(n, 3, 64, V, 2)
    for v in (v1, v2, v3):
        assert v.shape == (n, 3, 64, V, 2)
    for v in (v1, v2):
        counts = changed_joints(v, base).sum(dim=1)
        assert set(counts.tolist()) <= {15, 25}
        assert 0.4 < float((counts == 15).float().mean()) < 0.6  # corruption with p = 0.5 per sample
    assert torch.all(changed_joints(v3, base).sum(dim=1) == 25)  # always sheared
    # View 3 is one shear per sample: a linear map with unit diagonal.
    for i in range(5):
        src = base[i].reshape(3, -1).T.double()
        sol = torch.linalg.lstsq(src, v3[i].reshape(3, -1).T.double()).solution
        assert torch.allclose(torch.diagonal(sol), torch.ones(3, dtype=torch.float64), atol=1e-4)
    again = A.make_views(x, lengths, cfg, generator=gen(2))
    assert all(torch.equal(a, b) for a, b in zip((v1, v2, v3), again))
    assert not torch.equal(v1, A.make_views(x, lengths, cfg, generator=gen(3))[0])


def test_batch_shape_checked():
    with pytest.raises(ValueError):
        A.shear(torch.zeros(3, 10, 25, 2))
    with pytest.raises(ValueError):
        A.crop_resize(torch.zeros(2, 3, 10, 25, 2), torch.tensor([5, 5, 5]))


def test_a_layout_of_other_joints_is_refused_not_applied():
    """20-joint parents on 25-joint data silently rebuilt joints 0-19 with the wrong bones."""
    x = torch.randn(2, 3, 10, 25, 2)
    with pytest.raises(ValueError, match="bone_scale: 25 joints, layout kinect_v1 has 20"):
        A.bone_scale(x, "kinect_v1", 0.2)
    with pytest.raises(ValueError, match="mixing: 17 joints, layout ntu25 has 25"):
        A.cutmix(torch.randn(4, 3, 48, 17, 1))
    with pytest.raises(ValueError, match="mixing: 17 joints"):
        A.resizemix(torch.randn(4, 3, 48, 17, 1))
    with pytest.raises(ValueError, match="make_views: 25 joints, layout msr20 has 20"):
        A.make_views(x, torch.tensor([10, 10]), layout="msr20")
    with pytest.raises(ValueError, match=r"expected 3-D coordinates \(N, 3, T, V, M\), got shape \(2, 2, 10, 25, 2\)"):
        A.shear(torch.randn(2, 2, 10, 25, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_same_seed_same_result_on_gpu():
    x, lengths = batch(8, 300), torch.randint(1, 301, (8,), generator=gen(0))
    cpu = A.make_views(x, lengths, generator=gen(5))
    gpu = A.make_views(x.cuda(), lengths.cuda(), generator=gen(5))
    for a, b in zip(cpu, gpu):
        assert b.is_cuda and torch.allclose(a, b.cpu(), atol=1e-4)
    m_cpu = A.random_mix(cpu[0], generator=gen(6))
    m_gpu = A.random_mix(gpu[0], generator=gen(6))
    assert m_cpu[3] == m_gpu[3] and torch.allclose(m_cpu[0], m_gpu[0].cpu(), atol=1e-4)


def test_view_config_validation():
    from pcm3.errors import ConfigError
    assert A.ViewConfig().crop_ratio == (0.1, 1.0)
    for bad in ({"crop_ratio": (0.5, 0.2)}, {"p_corrupt": 1.5}, {"mix_probs": (1, 0)},
                {"mix_window": (44, 28)}, {"test_crop_ratio": 0.0}):
        with pytest.raises(ConfigError):
            A.ViewConfig(**bad)


def test_corruption_strength_is_relative_to_the_layout():
    """15 of NTU's 25 joints is 60%: the same config corrupts 12 of Kinect v1's 20."""
    cfg = A.ViewConfig()
    assert A.corrupt_count(cfg, 25) == 15 and A.corrupt_count(cfg, 20) == 12
    assert A.corrupt_count(A.ViewConfig(corrupt_ratio=0.2), 20) == 4
    assert A.corrupt_count(A.ViewConfig(corrupt_joints=5), 20) == 5  # absolute count when given
    with pytest.raises(Exception, match="corrupt_ratio"):
        A.ViewConfig(corrupt_ratio=1.5)


def test_bone_scale_scales_each_bone_and_keeps_the_root():
    from pcm3.skeleton import get_layout

    lay = get_layout("ntu25")
    x = torch.randn(4, 3, 6, 25, 2, generator=gen(0))
    x[1, :, :, :, 1] = 0  # an absent second person stays absent
    y = A.bone_scale(x, lay, 0.2, gen(1))
    root = [j for j, p in enumerate(lay.parents) if p == j]
    assert torch.equal(y[..., root, :][x[..., root, :] != 0], x[..., root, :][x[..., root, :] != 0])
    ratios = []
    for j, p in enumerate(lay.parents):
        if p == j:
            continue
        r = (y[:, :, :, j] - y[:, :, :, p]).norm(dim=1) / (x[:, :, :, j] - x[:, :, :, p]).norm(dim=1)  # N x T x M
        r0 = r[:, :, 0]
        assert torch.allclose(r0, r0[:, :1].expand_as(r0), atol=1e-4)  # same factor in every frame
        ratios.append(r0[:, 0])
    ratios = torch.stack(ratios)
    assert ratios.min() >= 0.8 - 1e-4 and ratios.max() <= 1.2 + 1e-4 and ratios.std() > 0.05
    assert torch.all(y[1, :, :, :, 1] == 0)
    assert torch.equal(A.bone_scale(x, lay, 0.0), x)
    v1, _, _ = A.make_views(x, torch.full((4,), 6), A.ViewConfig(out_len=6, min_len=6, bone_scale=0.2), gen(2), layout=lay)
    assert v1.shape == x.shape
    with pytest.raises(ValueError, match="layout"):
        A.make_views(x, torch.full((4,), 6), A.ViewConfig(out_len=6, min_len=6, bone_scale=0.2), gen(2))
