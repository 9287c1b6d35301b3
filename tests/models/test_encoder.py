"""The encoder: flattening order, stepwise == the release's frame loop, bigru, prompts, export."""

import pytest
import torch
from torch import nn

from pcm3.errors import ConfigError
from pcm3.models import Encoder, EncoderConfig, flatten_frames, unflatten_frames

N, C, T, V, M = 4, 3, 9, 5, 2


def _x(seed=0, t=T):
    return torch.randn(N, C, t, V, M, generator=torch.Generator().manual_seed(seed))


def frame_by_frame(norm: nn.BatchNorm1d, gru: nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The release's encoder: BN, then the bidirectional GRU called on one frame at a time."""
    n, c, t, v, m = x.shape
    seq = x.permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)
    seq = norm(seq.permute(0, 2, 1)).permute(0, 2, 1)
    outs, hidden = [], None
    for i in range(t):
        out, hidden = gru(seq[:, i:i + 1]) if hidden is None else gru(seq[:, i:i + 1], hidden)
        outs.append(out)
    return torch.cat(outs, dim=1)  # N x T x 2H


def test_flatten_order_and_inverse():
    x = _x()
    flat = flatten_frames(x)
    assert flat.shape == (N, T, V * C * M)
    for v, c, m in [(0, 0, 0), (3, 2, 1), (4, 1, 0)]:
        torch.testing.assert_close(flat[:, :, v * C * M + c * M + m], x[:, c, :, v, m])
    torch.testing.assert_close(unflatten_frames(flat, C, V, M), x)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("train", [True, False])
def test_stepwise_equals_release_frame_loop(layers, train):
    torch.manual_seed(layers)
    enc = Encoder(EncoderConfig(num_joints=V, hidden=16, layers=layers)).train(train)
    with torch.no_grad():  # non-trivial BN statistics for eval mode
        enc.input_norm.running_mean.normal_()
        enc.input_norm.running_var.uniform_(0.5, 2.0)
    x = _x(1)
    feat, seq = enc(x, return_sequence=True)
    ref = frame_by_frame(enc.input_norm, enc.gru, x)
    assert seq.shape == (N, T, 32) and feat.shape == (N, 32) == (N, enc.feature_dim)
    torch.testing.assert_close(seq, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(feat, ref[:, -1], atol=1e-5, rtol=0)


def test_stepwise_gradients_match_frame_loop():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2))
    x = _x(2)
    enc(x).pow(2).sum().backward()
    ours = {n: p.grad.clone() for n, p in enc.named_parameters()}
    enc.zero_grad()
    frame_by_frame(enc.input_norm, enc.gru, x)[:, -1].pow(2).sum().backward()
    for name, p in enc.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_stepwise_is_causal_and_differs_from_bigru():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2)).eval()
    x = _x(3)
    y = x.clone()
    y[:, :, -1] += 1.0  # change the last frame only
    _, a = enc(x, return_sequence=True)
    _, b = enc(y, return_sequence=True)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])  # both halves run forward in time
    bi = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2, variant="bigru", pool="last")).eval()
    bi.load_state_dict(enc.state_dict())  # same names, same weights, another function
    assert not torch.allclose(bi(x), enc(x), atol=1e-4)


def test_bigru_pooling_sees_first_and_last_frames():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2, variant="bigru")).eval()
    assert enc.config.pool == "ends"
    x = _x(4)
    _, seq = enc(x, return_sequence=True)
    torch.testing.assert_close(seq, enc.gru(enc.input_norm(flatten_frames(x).transpose(1, 2)).transpose(1, 2))[0])
    base = enc(x)
    first, last = x.clone(), x.clone()
    first[:, :, 0] += 1.0
    last[:, :, -1] += 1.0
    # the forward half (final forward state) sees frame 0, the backward half sees the last frame
    assert (enc(first)[:, :8] - base[:, :8]).abs().max() > 1e-3
    assert (enc(last)[:, 8:] - base[:, 8:]).abs().max() > 1e-3
    mean = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2, variant="bigru", pool="mean")).eval()
    mean.load_state_dict(enc.state_dict())
    torch.testing.assert_close(mean(x), seq.mean(dim=1))


def test_domain_prompt_after_acts_before_is_cancelled_in_training():
    torch.manual_seed(0)
    x = _x(5)
    for position, acts in (("after", True), ("before", False)):
        enc = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2, domain_prompt_position=position)).train()
        prompt = torch.randn(V * C * M, requires_grad=True)
        out = enc(x, domain_prompt=prompt)
        out.pow(2).sum().backward()
        changed = (out - enc(x)).abs().max().item()
        if acts:
            assert changed > 1e-3 and prompt.grad.abs().max() > 1e-4
        else:  # BatchNorm in training mode removes any per-feature constant
            assert changed < 1e-5 and prompt.grad.abs().max() < 1e-5


def test_export_is_a_plain_module_without_prompts():
    enc = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2)).eval()
    assert not any("prompt" in name for name in enc.state_dict())
    assert enc(_x(6, t=5)).shape == (N, 16)  # any length
    assert set(dict(enc.named_children())) == {"input_norm", "gru"}
    assert all(name.startswith("weight") or name.startswith("bias") for name, _ in enc.gru.named_parameters())


def test_xavier_init_on_gru_weights():
    enc = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2))
    w = enc.gru.weight_ih_l0
    bound = (6.0 / (w.shape[0] + w.shape[1])) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound


def test_wrong_input_shape():
    enc = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=1))
    with pytest.raises(ValueError, match="encoder expects"):
        enc(torch.zeros(N, C, T, V + 1, M))


@pytest.mark.parametrize("kwargs,match", [
    ({"variant": "lstm"}, "variant"),
    ({"pool": "max"}, "pool"),
    ({"pool": "ends"}, "bigru"),
    ({"hidden": 0}, "hidden"),
    ({"layers": 2.5}, "layers"),
    ({"domain_prompt_position": "middle"}, "domain_prompt_position"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EncoderConfig(**kwargs)


# ---- several views in one call ----------------------------------------------------------

def _views(g=3, seed=5):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(N, C, T, V, M, generator=gen) * (1 + i) + i for i in range(g)]  # different statistics


def test_per_view_statistics_equal_separate_calls():
    """bn_stats per_view: one call on G concatenated views = G calls (features, gradients,
    running statistics), each view with its own domain prompt (given per sample)."""
    torch.manual_seed(0)
    one = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2))
    sep = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2))
    sep.load_state_dict(one.state_dict())
    views = _views()
    prompts = [torch.randn(V * C * M) for _ in views]
    feat, seq = one(torch.cat(views), domain_prompt=torch.cat([p.expand(N, -1) for p in prompts]),
                    return_sequence=True, chunks=3)
    ref = [sep(x, domain_prompt=p, return_sequence=True) for x, p in zip(views, prompts)]
    torch.testing.assert_close(feat, torch.cat([r[0] for r in ref]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(seq, torch.cat([r[1] for r in ref]), atol=1e-5, rtol=1e-4)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(one.input_norm, name), getattr(sep.input_norm, name), atol=1e-5, rtol=1e-4)
    feat.pow(2).sum().backward()
    sum(r[0].pow(2).sum() for r in ref).backward()
    for (name, a), b in zip(one.named_parameters(), sep.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_joint_statistics_are_one_batchnorm_over_all_views():
    torch.manual_seed(0)
    joint = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2, bn_stats="joint"))
    x = torch.cat(_views())
    a = joint(x, chunks=3)
    b = joint(x)  # one chunk: the plain BatchNorm call
    torch.testing.assert_close(a, b)
    per_view = Encoder(EncoderConfig(num_joints=V, hidden=8, layers=2))
    per_view.load_state_dict(joint.state_dict())
    assert not torch.allclose(per_view(x, chunks=3), a, atol=1e-3)  # the statistics matter here
    per_view.load_state_dict(joint.state_dict())
    per_view.eval(), joint.eval()
    torch.testing.assert_close(per_view(x, chunks=3), joint(x, chunks=3))  # eval: running statistics only
    with pytest.raises(ValueError, match="equal view chunks"):
        joint(x[:-1], chunks=3)
    with pytest.raises(ConfigError, match="bn_stats"):
        EncoderConfig(bn_stats="both")


def test_input_norm_none_feeds_coordinates_as_they_are():
    from pcm3.models import Encoder, EncoderConfig

    torch.manual_seed(0)
    cfg = EncoderConfig(num_joints=5, hidden=8, layers=1, input_norm="none")
    enc = Encoder(cfg)
    assert not any(k.startswith("input_norm") for k in enc.state_dict())
    x = torch.randn(3, 3, 6, 5, 2)
    torch.testing.assert_close(enc.normalize(x.permute(0, 2, 3, 1, 4).reshape(3, 6, -1)),
                               x.permute(0, 2, 3, 1, 4).reshape(3, 6, -1))
    assert enc(x).shape == (3, 16)
    with pytest.raises(Exception, match="input_norm"):
        EncoderConfig(input_norm="layer")


@pytest.mark.parametrize("variant", ["bigru", "stepwise"])
def test_center_time_reads_the_motion_about_the_mean_pose(variant):
    """``center_time``: a pose offset constant over the clip changes nothing; the same motion
    about another mean pose gives the same feature, and a different motion a different one."""
    torch.manual_seed(0)
    cfg = dict(num_joints=5, hidden=8, layers=2, variant=variant, pool="mean")
    enc, plain = Encoder(EncoderConfig(**cfg, center_time=True)).eval(), Encoder(EncoderConfig(**cfg)).eval()
    x = torch.randn(3, 3, 12, 5, 2)
    offset = torch.randn(3, 3, 1, 5, 2)  # per sample, coordinate, joint, person; constant in time
    torch.testing.assert_close(enc(x + offset), enc(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain(x + offset), plain(x), atol=1e-3)  # without it the pose matters
    assert not torch.allclose(enc(x.flip(2)), enc(x), atol=1e-3)  # the motion still matters


def test_mean_pose_weight_keeps_a_share_of_the_pose():
    torch.manual_seed(0)
    cfg = dict(num_joints=5, hidden=8, layers=1, variant="bigru", pool="mean")
    plain = Encoder(EncoderConfig(**cfg)).eval()
    whole = Encoder(EncoderConfig(**cfg, center_time=True, mean_pose_weight=1.0)).eval()
    whole.load_state_dict(plain.state_dict())
    half = Encoder(EncoderConfig(**cfg, center_time=True, mean_pose_weight=0.5)).eval()
    half.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 12, 5, 2)
    offset = torch.randn(3, 3, 1, 5, 2)
    torch.testing.assert_close(whole(x), plain(x))  # weight 1: the input unchanged
    # weight 0.5: the clip minus half its mean pose, i.e. the plain encoder on that input
    torch.testing.assert_close(half(x), plain(x - 0.5 * x.mean(dim=2, keepdim=True)), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(half(x + offset), half(x), atol=1e-3)  # the pose is still seen
    with pytest.raises(ConfigError, match="mean_pose_weight"):
        EncoderConfig(**cfg, center_time=True, mean_pose_weight=1.5)
