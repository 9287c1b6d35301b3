"""Tests of pcm3.masking: mask conventions, ratios, topology structure, release variant, occlusion."""

import pytest
import torch

from pcm3 import masking as Mk
from pcm3.errors import ConfigError
from pcm3.skeleton import KINECT_V1, NTU25, part_mask

RATIOS = (0.2, 0.4, 0.6, 0.8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_whole_parts(joints, layout=NTU25):
    """``joints`` (..., V) bool: each row is a union of whole body parts."""
    parts = torch.from_numpy(part_mask(layout))  # (P, V)
    rows = joints.reshape(-1, joints.shape[-1])
    hit = (rows.unsqueeze(1) & parts.unsqueeze(0)).any(dim=-1)           # (R, P) part touched
    full = (rows.unsqueeze(1) | ~parts.unsqueeze(0)).all(dim=-1)         # (R, P) part fully masked
    assert torch.equal(hit, full)
    return hit


# ------------------------------------------------------------------ ratios

@pytest.mark.parametrize("strategy", ["topology_count", "random_joint", "random_frame"])
@pytest.mark.parametrize("ratio", RATIOS)
def test_mean_ratio_is_honoured(strategy, ratio):
    g = gen(1)
    means = [Mk.make_mask(Mk.MaskConfig(strategy, ratio), 64, 64, "ntu25", 2, g).float().mean() for _ in range(8)]
    assert abs(float(torch.stack(means).mean()) - ratio) < 0.03


@pytest.mark.parametrize("ratio", (0.1, 0.3, 0.5, 0.7, 0.9))
@pytest.mark.parametrize("layout", [NTU25, KINECT_V1])
def test_topology_ratio_between_reachable_counts(ratio, layout):
    # Targets that no subset of parts reaches exactly: the expected ratio is still the target.
    mask = Mk.topology_count_mask(2048, 16, layout, ratio, clip_len=8, generator=gen(2))
    assert abs(float(mask.float().mean()) - ratio) < 0.03


@pytest.mark.parametrize("ratio", RATIOS + (0.5, 1.0))
@pytest.mark.parametrize("layout", [NTU25, KINECT_V1])
def test_topology_pattern_distribution(ratio, layout):
    """``topology`` masks int(P * ratio) parts drawn uniformly: every such subset of parts
    appears, each at frequency 1 / C(P, k) (the paper and the release; issue: the count-matched
    variant reached only 4 of the 10 subsets at 0.6 on NTU)."""
    from itertools import combinations
    from math import comb

    mask = Mk.topology_mask(4000, 16, layout, ratio, clip_len=8, generator=gen(5))
    per_clip = mask[:, ::8, :, 0].reshape(-1, layout.num_joints)             # (draws, V)
    hit = assert_whole_parts(per_clip, layout)                               # (draws, P)
    p = hit.shape[1]
    k = int(p * ratio + 1e-9)
    assert torch.all(hit.sum(dim=1) == k)
    codes = (hit.long() * (2 ** torch.arange(p))).sum(dim=1)
    expected = {sum(2 ** i for i in c) for c in combinations(range(p), k)}
    counts = torch.bincount(codes, minlength=2 ** p)
    assert set(torch.nonzero(counts).flatten().tolist()) == expected
    freq = counts[sorted(expected)].double() / len(codes)
    assert torch.allclose(freq, torch.full_like(freq, 1 / comb(p, k)), atol=0.02)


def test_topology_count_has_few_patterns():
    # Documented behaviour of the named variant: at 0.6 on NTU only the 15-joint subsets remain.
    mask = Mk.topology_count_mask(2000, 8, NTU25, 0.6, clip_len=8, generator=gen(6))
    hit = assert_whole_parts(mask[:, 0, :, 0])
    assert len({tuple(h.tolist()) for h in hit}) == 4


def test_release_ratio():
    for ratio in RATIOS:
        mask = Mk.make_mask(Mk.MaskConfig("release_topology", ratio), 32, 64, "ntu25", 2, gen(3))
        per_clip = mask[0, ::8, :, 0]  # (clips, V)
        hit = assert_whole_parts(per_clip)
        assert torch.all(hit.sum(dim=1) == int(5 * ratio))


# ------------------------------------------------------------------ structure

@pytest.mark.parametrize("t", [64, 60])
def test_topology_structure(t):
    n, clip_len = 32, 8
    mask = Mk.topology_mask(n, t, "ntu25", 0.6, clip_len=clip_len, persons=2, generator=gen(0))
    assert mask.shape == (n, t, 25, 2) and mask.dtype == torch.bool
    assert torch.equal(mask[..., 0], mask[..., 1])                       # both persons alike
    for start in range(0, t, clip_len):
        clip = mask[:, start:start + clip_len, :, 0]
        assert torch.all(clip == clip[:, :1])                             # constant within a clip
    assert_whole_parts(mask[..., 0])
    parts = assert_whole_parts(mask[:, ::clip_len, :, 0])
    assert torch.all(parts.sum(dim=-1) == 3)                              # int(5 * 0.6) parts
    assert not torch.all(mask == mask[:1])                                # per sample
    assert torch.equal(mask, Mk.topology_mask(n, t, "ntu25", 0.6, clip_len=clip_len, generator=gen(0)))
    assert not torch.equal(mask, Mk.topology_mask(n, t, "ntu25", 0.6, clip_len=clip_len, generator=gen(1)))


def test_topology_mask_redraws_parts_per_clip():
    # 3 of 5 parts: C(5, 3) = 10 subsets, so 8 clips of a sample all alike has probability 1e-7
    mask = Mk.topology_mask(64, 64, "ntu25", 0.6, clip_len=8, generator=gen(0))
    clips = mask[:, ::8, :, 0]                                            # (n, 8 clips, V)
    redrawn = (clips != clips[:, :1]).any(dim=2)                          # (n, 8): clip differs from clip 0
    assert float(redrawn[:, 1:].float().mean()) > 0.8                     # expected 0.9
    assert redrawn.any(dim=1).all()


def test_release_topology_structure():
    mask = Mk.release_topology_mask(16, 64, "ntu25", 0.6, clip_len=8, persons=2, generator=gen(0))
    assert mask.shape == (16, 64, 25, 2)
    assert torch.all(mask == mask[:1])                                    # one mask for the batch
    assert not mask[..., 1].any()                                         # person 1 only
    for start in range(0, 64, 8):
        assert torch.all(mask[:, start:start + 8] == mask[:, start:start + 1])
    assert torch.all(assert_whole_parts(mask[0, :, :, 0]).sum(dim=1) == 3)  # int(5 * 0.6) parts
    assert float(mask.float().mean()) < 0.6                               # the ratio is not honoured


def test_random_joint_and_frame_structure():
    mask = Mk.random_joint_mask(8, 64, 25, 2, 0.6, generator=gen(0))
    assert mask.shape == (8, 64, 25, 2)
    assert torch.all(mask[..., 0].sum(dim=-1) == 15)                      # 15 joints in every frame
    assert torch.equal(mask[..., 0], mask[..., 1])
    assert not torch.all(mask[:, 1:] == mask[:, :1])                      # differ between frames
    frames = Mk.random_frame_mask(8, 64, 25, 2, 0.5, generator=gen(0))
    assert torch.all(frames == frames[:, :, :1, :1])                      # whole frames
    assert torch.all(frames[:, :, 0, 0].sum(dim=1) == 32)


def test_make_mask_dispatch_and_errors():
    for strategy in Mk.STRATEGIES:
        mask = Mk.make_mask(Mk.MaskConfig(strategy, 0.4, 8), 4, 64, "ntu25", 2, gen(0))
        assert mask.shape == (4, 64, 25, 2) and mask.dtype == torch.bool
    with pytest.raises(ConfigError):
        Mk.make_mask(Mk.MaskConfig("bogus"), 4, 64)
    cfg = Mk.MaskConfig()
    cfg.strategy = "bogus"  # changed after construction: make_mask still refuses it
    with pytest.raises(ConfigError):
        Mk.make_mask(cfg, 4, 64)
    with pytest.raises(ConfigError):
        Mk.make_mask(Mk.MaskConfig("topology", 1.5), 4, 64)
    with pytest.raises(ConfigError):
        Mk.make_mask(Mk.MaskConfig("topology", 0.5, clip_len=0), 4, 64)


def test_make_mask_dispatches_each_strategy_to_its_generator():
    direct = {
        "topology": lambda g: Mk.topology_mask(4, 64, "ntu25", 0.6, 8, 2, g),
        "topology_count": lambda g: Mk.topology_count_mask(4, 64, "ntu25", 0.6, 8, 2, g),
        "release_topology": lambda g: Mk.release_topology_mask(4, 64, "ntu25", 0.6, 8, 2, g),
        "random_joint": lambda g: Mk.random_joint_mask(4, 64, 25, 2, 0.6, g),
        "random_frame": lambda g: Mk.random_frame_mask(4, 64, 25, 2, 0.6, g),
    }
    assert set(direct) == set(Mk.STRATEGIES)
    for strategy, make in direct.items():
        got = Mk.make_mask(Mk.MaskConfig(strategy, 0.6, 8), 4, 64, "ntu25", 2, gen(0))
        assert torch.equal(got, make(gen(0))), strategy
    joint = Mk.make_mask(Mk.MaskConfig("random_joint", 0.6), 4, 64, "ntu25", 2, gen(0))
    assert torch.all(joint[..., 0].sum(dim=-1) == 15)                     # 15 of 25 joints in every frame


def test_extreme_ratios():
    assert not Mk.topology_mask(4, 64, ratio=0.0, generator=gen(0)).any()
    assert Mk.topology_mask(4, 64, ratio=1.0, generator=gen(0)).all()
    assert not Mk.random_joint_mask(4, 64, 25, 2, 0.0, generator=gen(0)).any()
    assert Mk.random_frame_mask(4, 64, 25, 2, 1.0, generator=gen(0)).all()


def test_apply_mask_zeroes_exactly_masked_entries():
    x = torch.randn(4, 3, 64, 25, 2, generator=gen(0))
    mask = Mk.topology_mask(4, 64, "ntu25", 0.6, generator=gen(1))
    out = Mk.apply_mask(x, mask)
    m = mask.unsqueeze(1).expand_as(x)
    assert torch.all(out[m] == 0)
    assert torch.equal(out[~m], x[~m])
    assert not torch.all(x[m] == 0)  # x itself is untouched
    with pytest.raises(TypeError):
        Mk.apply_mask(x, mask.float())


# ------------------------------------------------------------------ occlusion

def test_spatial_occlusion():
    n = 500
    x = torch.randn(n, 3, 64, 25, 2, generator=gen(0))
    out, mask = Mk.spatial_occlusion(x, "ntu25", (0.3, 0.7), generator=gen(1), return_mask=True)
    frac = mask.float().mean(dim=(1, 2, 3))
    assert torch.all((frac >= 0.3) & (frac <= 0.7))
    assert frac.std() > 0.05                                              # drawn per sample
    assert torch.all(mask == mask[:, :1, :, :1])                          # every frame, both persons
    assert_whole_parts(mask[:, 0, :, 0])
    assert torch.equal(out, Mk.apply_mask(x, mask))
    assert torch.equal(out, Mk.spatial_occlusion(x, "ntu25", (0.3, 0.7), generator=gen(1)))


def test_temporal_occlusion():
    n, t = 500, 300
    x = torch.randn(n, 3, t, 25, 2, generator=gen(0))
    lengths = torch.randint(20, t + 1, (n,), generator=gen(1))
    out, mask = Mk.temporal_occlusion(x, lengths, (0.3, 0.7), generator=gen(2), return_mask=True)
    frames = mask[:, :, 0, 0]
    assert torch.all(mask == frames.view(n, t, 1, 1))
    block = frames.sum(dim=1)
    frac = block.double() / lengths.double()
    slack = 0.5 / lengths.double()
    assert torch.all((frac >= 0.3 - slack) & (frac <= 0.7 + slack))
    for i in range(n):
        idx = frames[i].nonzero().flatten()
        assert int(idx[-1]) - int(idx[0]) + 1 == len(idx)                 # one block
        assert int(idx[-1]) < int(lengths[i])                             # inside the valid frames
    assert torch.equal(out, Mk.apply_mask(x, mask))
    assert torch.equal(out, Mk.temporal_occlusion(x, lengths, (0.3, 0.7), generator=gen(2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_same_seed_same_mask_on_gpu():
    for strategy in Mk.STRATEGIES:
        cfg = Mk.MaskConfig(strategy, 0.6)
        cpu = Mk.make_mask(cfg, 16, 64, "ntu25", 2, gen(7), "cpu")
        gpu = Mk.make_mask(cfg, 16, 64, "ntu25", 2, gen(7), "cuda")
        assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize("strategy", ("topology", "release_topology"))
def test_topology_ratio_below_one_part_is_an_error(strategy):
    """int(5 * 0.1) = 0 parts would mask nothing while the run reports ratio 0.1."""
    with pytest.raises(ConfigError, match="masks nothing"):
        Mk.MaskConfig(strategy, 0.1)
    with pytest.raises(ConfigError, match="masks nothing"):
        Mk.topology_mask(4, 16, "ntu25", 0.1, clip_len=8, generator=gen(0))
    assert not Mk.make_mask(Mk.MaskConfig(strategy, 0.0), 4, 16, "ntu25", 2, gen(0)).any()
    assert Mk.make_mask(Mk.MaskConfig(strategy, 0.2), 4, 16, "ntu25", 2, gen(0)).any()
    Mk.MaskConfig("random_joint", 0.1)  # the joint-level strategies take any ratio


def test_masks_and_occlusion_check_their_shapes():
    x = torch.randn(2, 3, 8, 17, 1)
    with pytest.raises(ValueError, match="spatial occlusion: 17 joints, layout ntu25 has 25"):
        Mk.spatial_occlusion(x, "ntu25")
    with pytest.raises(ValueError, match=r"mask \(2, 8, 25, 1\) does not fit x \(2, 3, 8, 17, 1\)"):
        Mk.apply_mask(x, torch.zeros(2, 8, 25, 1, dtype=torch.bool))


def test_the_release_mask_refuses_a_ratio_below_one_part():
    """int(5 * 0.1) = 0 parts: it used to return an all-False mask, unlike topology_mask."""
    with pytest.raises(ConfigError, match="masks nothing"):
        Mk.release_topology_mask(2, 8, "ntu25", 0.1)
    assert Mk.release_topology_mask(2, 8, "ntu25", 0.2).any()
