"""The PCM3 module: queue, momentum, prompts, gradient routing, ablation switches, training."""

import pytest
import torch

from pcm3.errors import ConfigError
from pcm3.models import (PCM3, DomainPrompts, Encoder, EncoderConfig, LossConfig, ModelConfig, Positives,
                         TaskPrompts)

N, C, T, V, M = 6, 3, 8, 5, 2
HIDDEN = 16


def small_config(**encoder):
    return ModelConfig(encoder=EncoderConfig(num_joints=V, hidden=HIDDEN, layers=2, **encoder), proj_dim=8,
                       queue_size=20, decoder_hidden=16, prompt_dim=4)


def make_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    views = {name: torch.randn(N, C, T, V, M, generator=g) for name in ("view1", "view2", "view3", "mixed")}
    return {**views, "mask": torch.rand(N, T, V, M, generator=g) < 0.6,
            "lam": torch.rand(N, generator=g), "partner": torch.roll(torch.arange(N), 2)}


def model(loss=None, seed=0, **encoder):
    torch.manual_seed(seed)
    return PCM3(small_config(**encoder), loss or LossConfig())


# ---- queue and momentum ---------------------------------------------------------------

def test_queue_fifo_wraps_around():
    m = PCM3(ModelConfig(encoder=EncoderConfig(num_joints=V, hidden=8, layers=1), proj_dim=2, queue_size=10),
             LossConfig(masked_prediction=False, task_prompts=False, positives={"mask": False, "predict": False}))
    batches = [torch.full((4, 2), float(i)) + torch.arange(4.0)[:, None] / 10 for i in (1, 2, 3)]
    for b in batches:
        m.enqueue(b)
    # 10 slots, 3 batches of 4: the third batch fills slots 8, 9 then 0, 1
    torch.testing.assert_close(m.queue[0:2], batches[2][2:4])
    torch.testing.assert_close(m.queue[2:4], batches[0][2:4])  # oldest survivors
    torch.testing.assert_close(m.queue[4:8], batches[1])
    torch.testing.assert_close(m.queue[8:10], batches[2][0:2])
    assert int(m.queue_ptr) == 2
    big = torch.arange(26.0).reshape(13, 2)  # more keys than slots: the last 10 survive, in order
    m.enqueue(big)
    assert int(m.queue_ptr) == (2 + 13) % 10
    torch.testing.assert_close(m.queue[[(5 + i) % 10 for i in range(10)]], big[3:])


def test_forward_enqueues_the_plain_key_only_in_training():
    m = model(LossConfig(task_prompts=False))
    inputs = make_inputs()
    m.eval()
    before = m.queue.clone()
    m(inputs)
    torch.testing.assert_close(m.queue, before)
    assert int(m.queue_ptr) == 0
    m.train()
    m(inputs)
    assert int(m.queue_ptr) == N
    with torch.no_grad():  # the key encoder was updated before computing k, as in MoCo v2
        feat = m.encoder_k(inputs["view2"], domain_prompt=m.domain_prompts("intra"))
        k = torch.nn.functional.normalize(m.projector_k(feat), dim=1)
    torch.testing.assert_close(m.queue[:N], k)
    torch.testing.assert_close(m.queue[N:], before[N:])


def test_momentum_update_is_an_ema():
    m = model()
    with torch.no_grad():
        for p in m.encoder_q.parameters():
            p.add_(torch.randn_like(p))
    q = [p.clone() for p in list(m.encoder_q.parameters()) + list(m.projector_q.parameters())]
    k = [p.clone() for p in list(m.encoder_k.parameters()) + list(m.projector_k.parameters())]
    m.momentum_update()
    new = list(m.encoder_k.parameters()) + list(m.projector_k.parameters())
    assert len(new) == len(q) and not any(p.requires_grad for p in new)
    for pk, pq, pn in zip(k, q, new):
        torch.testing.assert_close(pn, 0.999 * pk + 0.001 * pq)
    assert any(not torch.equal(a, b) for a, b in zip(k, new))


def test_training_forward_applies_momentum_eval_does_not():
    m = model()
    with torch.no_grad():
        m.encoder_q.gru.weight_hh_l0.add_(1.0)
    k0 = m.encoder_k.gru.weight_hh_l0.clone()
    m.eval()(make_inputs())
    torch.testing.assert_close(m.encoder_k.gru.weight_hh_l0, k0)
    m.train()(make_inputs())
    torch.testing.assert_close(m.encoder_k.gru.weight_hh_l0, 0.999 * k0 + 0.001 * m.encoder_q.gru.weight_hh_l0)


def test_momentum_schedule_cosine_to_one():
    cfg = ModelConfig(momentum=0.9, momentum_schedule="cosine")
    values = [cfg.momentum_at(s, 101) for s in range(101)]
    assert values[0] == pytest.approx(0.9) and values[-1] == pytest.approx(1.0)
    assert values[50] == pytest.approx(0.95)  # halfway: 1 - 0.1 * (cos(pi/2) + 1) / 2
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))  # monotone
    const = ModelConfig(momentum=0.99)
    assert {const.momentum_at(s, 10) for s in range(10)} == {0.99}
    with pytest.raises(ConfigError, match="momentum_schedule"):
        ModelConfig(momentum_schedule="linear")
    m = model()
    m.set_momentum(0.5)
    with torch.no_grad():
        m.encoder_q.gru.weight_hh_l0.add_(1.0)
    k0 = m.encoder_k.gru.weight_hh_l0.clone()
    m.momentum_update()
    torch.testing.assert_close(m.encoder_k.gru.weight_hh_l0, 0.5 * k0 + 0.5 * m.encoder_q.gru.weight_hh_l0)


def test_queue_remembers_sample_indices():
    m = model(LossConfig(task_prompts=False))
    assert torch.all(m.queue_index == -1)
    inputs = make_inputs()
    inputs["index"] = torch.arange(100, 100 + N)
    m.train()(inputs)
    assert m.queue_index[:N].tolist() == list(range(100, 100 + N)) and torch.all(m.queue_index[N:] == -1)
    state = {k: v for k, v in m.state_dict().items() if k != "queue_index"}  # an older checkpoint
    m2 = model(LossConfig(task_prompts=False))
    m2.load_state_dict(state)
    assert torch.all(m2.queue_index == -1)


def test_own_sample_is_excluded_from_the_negatives():
    """A query's own older key in the queue is not a negative (InfoNCE and distillation): the
    loss equals a hand computation over the queue without those rows."""
    from pcm3.losses import info_nce, relational_kl

    m = model(LossConfig(masked_prediction=False, domain_prompts=False, task_prompts=False,
                         positives={"inter": False, "mask": False, "predict": False}))
    m.eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        m.queue.copy_(torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=1))
    index = torch.tensor([7, 8, 9, 10, 11, 12])
    m.queue_index[:] = torch.arange(20)  # entries 7..12 hold older keys of this batch's samples
    inputs = make_inputs()
    inputs["index"] = index
    out = m(inputs)
    z, k = out["z_query"], out["z_key"]
    con = kl = 0.0
    for n in range(N):  # by hand: each row drops exactly its own queue entry
        keep = [i for i in range(20) if i != int(index[n])]
        q_n, k_n, queue_n = z[n:n + 1], k[n:n + 1], m.queue[keep]
        logits = torch.cat([(q_n * k_n).sum(1, keepdim=True), q_n @ queue_n.t()], dim=1) / 0.07
        con = con + torch.nn.functional.cross_entropy(logits, torch.zeros(1, dtype=torch.long)) / N
        kl = kl + relational_kl(q_n, k_n, queue_n, 0.1, 0.05) / N
    torch.testing.assert_close(out["con_intra"], con)
    torch.testing.assert_close(out["kl_intra"], kl)
    assert not torch.allclose(out["con_intra"], info_nce(z, k, m.queue, 0.07))  # exclusion mattered
    m.config.exclude_own = False
    torch.testing.assert_close(m(inputs)["con_intra"], info_nce(z, k, m.queue, 0.07))


def test_mined_neighbours_are_positives_of_the_plain_key_pairs_only():
    """``loss.nn_positives``: each key's most similar filled, non-own queue entry joins the
    numerator of the intra / mask / predict InfoNCE (hand computation), never the mixed pair's."""
    m = model(LossConfig(nn_positives=1, domain_prompts=False, task_prompts=False))
    m.eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        m.queue.copy_(torch.nn.functional.normalize(torch.randn(20, 8, generator=g), dim=1))
    m.queue_index[:] = torch.arange(20)
    m.queue_index[15:] = -1  # never filled: not eligible
    index = torch.tensor([7, 8, 9, 10, 11, 12])
    inputs = make_inputs()
    inputs["index"] = index
    out = m(inputs)
    z, k = out["z_query"], out["z_key"]
    con = 0.0
    for n in range(N):
        eligible = [i for i in range(15) if i != int(index[n])]
        nn = eligible[int(torch.argmax(m.queue[eligible] @ k[n]))]
        keep = [i for i in range(20) if i != int(index[n])]
        pos = torch.logsumexp(torch.stack([(z[n] * k[n]).sum(), z[n] @ m.queue[nn]]) / 0.07, 0)
        den = torch.logsumexp(torch.cat([(z[n] * k[n]).sum().view(1), m.queue[keep] @ z[n]]) / 0.07, 0)
        con = con + (den - pos) / N
    torch.testing.assert_close(out["con_intra"], con)
    m.loss_config.nn_positives = 0
    plain = m(inputs)
    assert float(out["con_intra"].detach()) < float(plain["con_intra"].detach())  # a mined positive lowers the loss
    torch.testing.assert_close(out["con_inter"], plain["con_inter"])  # the mixed pair: unchanged
    assert not torch.allclose(out["con_mask"], plain["con_mask"])


def test_nn_positives_is_checked():
    with pytest.raises(ConfigError, match="nn_positives"):
        LossConfig(nn_positives=-1)


def test_mixed_view_excludes_own_and_partner_samples():
    m = model(LossConfig(masked_prediction=False, positives={"mask": False, "predict": False}))
    m.queue_index[:] = torch.arange(20)
    index = torch.arange(N)
    ex = m._excluded(index, torch.roll(torch.arange(N), 2))
    assert ex.shape == (N, 20)
    for n in range(N):
        assert set(torch.nonzero(ex[n]).flatten().tolist()) == {n, (n - 2) % N}


# ---- prompts and gradient routing -----------------------------------------------------

def test_all_prompts_receive_gradient():
    m = model()
    m(make_inputs())["loss"].backward()
    for name, p in list(m.domain_prompts.named_parameters()) + list(m.task_prompts.named_parameters()):
        assert p.grad is not None and p.grad.abs().max() > 1e-7, name
    assert set(m.domain_prompts.views) == {"intra", "inter", "mask", "predict"}


def test_domain_prompts_before_norm_get_no_gradient():
    """The release's placement: BatchNorm in training mode cancels the prompts."""
    m = model(domain_prompt_position="before")
    m(make_inputs())["loss"].backward()
    for name, p in m.domain_prompts.named_parameters():
        assert p.grad is None or p.grad.abs().max() < 1e-5, name
    assert m.task_prompts.prompts["cl"].grad.abs().max() > 1e-7


def test_task_prompt_placement():
    prompts = TaskPrompts(feature_dim=2 * HIDDEN, r=4)
    p = prompts("cl").detach()
    out = prompts.add(torch.zeros(3, 2 * HIDDEN), "cl", offsets=torch.tensor([0, 5, HIDDEN - 4]))
    for n, off in enumerate([0, 5, HIDDEN - 4]):
        expected = torch.zeros(2 * HIDDEN)
        expected[off:off + 4] = p[:4]  # first half (first GRU direction)
        expected[HIDDEN + off:HIDDEN + off + 4] = p[4:]  # same channels of the second half
        torch.testing.assert_close(out[n], expected)
    seq = prompts.add(torch.zeros(3, 5, 2 * HIDDEN), "mp", offsets=2)  # (N, T, D), one offset for all
    assert seq.shape == (3, 5, 2 * HIDDEN) and torch.equal(seq[0, 0], seq[2, 4])
    a = prompts.add(torch.zeros(64, 2 * HIDDEN), "cl", generator=torch.Generator().manual_seed(1))
    b = prompts.add(torch.zeros(64, 2 * HIDDEN), "cl", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)  # reproducible from a generator
    assert len({tuple(row.nonzero().flatten().tolist()) for row in a}) > 1  # offsets differ per sample
    batch = TaskPrompts(feature_dim=2 * HIDDEN, r=4, per_sample=False)
    c = batch.add(torch.zeros(64, 2 * HIDDEN), "cl")
    assert len({tuple(row.nonzero().flatten().tolist()) for row in c}) == 1  # one offset per call
    offsets = torch.cat([prompts.draw_offsets(64, torch.Generator().manual_seed(s)) for s in range(8)])
    assert offsets.min() == 0 and offsets.max() == HIDDEN - 4  # every position can be drawn


def test_domain_prompts_init_and_views():
    prompts = DomainPrompts(150)
    assert prompts.views == ("intra", "inter", "mask", "predict")
    p = prompts("mask")
    assert p.shape == (150,) and 0.5 * (3 / 150) ** 0.5 < p.abs().max() <= (3 / 150) ** 0.5
    with pytest.raises(ConfigError, match="unknown domain-prompt views"):
        DomainPrompts(150, ["plain"])


def test_mp_task_prompt_with_one_offset_per_batch_is_cancelled():
    """The release draws one offset per call: p_mp is then a constant that the decoder's
    Linear + BatchNorm removes in training mode (no gradient); per-sample offsets act."""
    m = model(LossConfig(task_prompt_offset="batch"))
    m(make_inputs())["loss"].backward()
    assert m.task_prompts.prompts["mp"].grad.abs().max() < 1e-5
    assert m.task_prompts.prompts["cl"].grad.abs().max() > 1e-4
    m = model(LossConfig(task_prompt_offset="sample"))
    m(make_inputs())["loss"].backward()
    assert m.task_prompts.prompts["mp"].grad.abs().max() > 1e-4


def _grads(out, term, params):
    grads = torch.autograd.grad(out[term], params, allow_unused=True, retain_graph=True)
    return [0.0 if g is None else g.abs().max().item() for g in grads]


@pytest.mark.parametrize("to_decoder", [True, False])
def test_predicted_view_gradient_reaches_decoder_when_switched_on(to_decoder):
    m = model(LossConfig(predict_grad_to_decoder=to_decoder))
    out = m(make_inputs())
    dec = _grads(out, "con_predict", list(m.decoder.parameters()))
    if to_decoder:
        assert max(dec) > 0
    else:
        assert max(dec) == 0
    assert max(_grads(out, "mask_mse", list(m.decoder.parameters()))) > 0  # the MSE always trains it


@pytest.mark.parametrize("to_masked_encoder", [False, True])
def test_predicted_view_gradient_stops_at_masked_features_as_released(to_masked_encoder):
    m = model(LossConfig(predict_grad_to_masked_encoder=to_masked_encoder))
    out = m(make_inputs())
    # the mp prompt acts only on the masked branch's features, before the decoder
    (mp,) = _grads(out, "con_predict", [m.task_prompts.prompts["mp"]])
    assert (mp > 0) == to_masked_encoder
    assert max(_grads(out, "con_predict", list(m.decoder.parameters()))) > 0


# ---- ablation switches ----------------------------------------------------------------

ABLATIONS = [
    (LossConfig(), {"con_intra", "con_inter", "con_mask", "con_predict", "kl_intra", "kl_inter", "kl_mask",
                    "kl_predict", "mask_mse"}),
    # Table 7
    (LossConfig(contrast=False), {"mask_mse"}),
    (LossConfig(masked_prediction=False, distill=False, positives={"mask": False, "predict": False}),
     {"con_intra", "con_inter"}),
    (LossConfig(distill=False, positives={"mask": False, "predict": False}), {"con_intra", "con_inter", "mask_mse"}),
    # Table 8 (no prompts)
    (LossConfig(masked_prediction=False, distill=False, domain_prompts=False, task_prompts=False,
                positives=Positives(inter=False, mask=False, predict=False)), {"con_intra"}),
    (LossConfig(masked_prediction=False, domain_prompts=False, task_prompts=False,
                positives=Positives(mask=False, predict=False)), {"con_intra", "con_inter", "kl_intra", "kl_inter"}),
    (LossConfig(domain_prompts=False, task_prompts=False, positives=Positives(mask=False)),
     {"con_intra", "con_inter", "con_predict", "kl_intra", "kl_inter", "kl_predict", "mask_mse"}),
    (LossConfig(domain_prompts=False, task_prompts=False, positives=Positives(inter=False, predict=False)),
     {"con_intra", "con_mask", "kl_intra", "kl_mask", "mask_mse"}),
    # Table 9
    (LossConfig(task_prompts=False), None),
    (LossConfig(domain_prompts=False), None),
]


@pytest.mark.parametrize("loss,terms", ABLATIONS)
def test_ablation_switches(loss, terms):
    terms = terms or ABLATIONS[0][1]
    m = model(loss)
    inputs = make_inputs()
    if not loss.contrast:  # masked prediction only: no key view, no queue, no key encoder
        inputs = {k: inputs[k] for k in ("view3", "mask")}
        assert m.encoder_k is None and not hasattr(m, "queue")
    if not loss.masked_prediction:
        inputs.pop("view3")
        assert m.decoder is None
    out = m(inputs)
    tensors = {"reconstruction", "predicted"} if loss.masked_prediction else set()
    tensors |= {"z_query", "z_key"} if loss.contrast else set()
    assert set(out) == terms | tensors | {"loss"}
    expected = (loss.w_con * sum(out[t] for t in terms if t.startswith("con_"))
                + loss.w_kl * sum(out[t] for t in terms if t.startswith("kl_"))
                + loss.w_mask * out.get("mask_mse", 0.0))
    torch.testing.assert_close(out["loss"], torch.as_tensor(expected))
    out["loss"].backward()
    assert (m.domain_prompts is not None) == loss.domain_prompts
    assert (m.task_prompts is not None) == loss.task_prompts


def test_outputs_of_the_masked_branch():
    m = model()
    inputs = make_inputs()
    out = m(inputs)
    mask = inputs["mask"].unsqueeze(1).expand(N, C, T, V, M)
    assert out["reconstruction"].shape == out["predicted"].shape == (N, C, T, V, M)
    torch.testing.assert_close(out["predicted"][~mask], inputs["view3"][~mask])
    torch.testing.assert_close(out["predicted"][mask], out["reconstruction"][mask])


def test_mask_mse_is_against_the_unmasked_view():
    """The reconstruction target is view3 itself, not the zero-filled encoder input."""
    from pcm3.losses import masked_mse

    inputs = make_inputs()
    out = model()(inputs)
    target = inputs["view3"]
    torch.testing.assert_close(out["mask_mse"], masked_mse(out["reconstruction"], target, inputs["mask"]))
    zeroed = target.masked_fill(inputs["mask"].unsqueeze(1), 0.0)
    assert not torch.allclose(out["mask_mse"], masked_mse(out["reconstruction"], zeroed, inputs["mask"]))


def test_missing_input_is_named():
    inputs = make_inputs()
    del inputs["mixed"]
    with pytest.raises(KeyError, match="mixed"):
        model()(inputs)


@pytest.mark.parametrize("kwargs,match", [
    ({"contrast": False, "masked_prediction": False}, "nothing to train"),
    ({"masked_prediction": False}, "need loss.masked_prediction"),
    ({"positives": {"intra": False, "inter": False, "mask": False, "predict": False}}, "every"),
    ({"positives": {"masked": True}}, "unknown key"),
    ({"temperature": 0}, "temperature"),
    ({"w_mask": -1.0}, "w_mask"),
    ({"distill": "yes"}, "distill"),
    ({"task_prompt_offset": "frame"}, "task_prompt_offset"),
    ({"predict_grad_to_decoder": False, "predict_grad_to_masked_encoder": True}, "predict_grad_to_decoder"),
])
def test_loss_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LossConfig(**kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"momentum": 1.0}, "momentum"),
    ({"queue_size": 0}, "queue_size"),
    ({"encoder": {"hidden": 8, "depth": 2}}, "unknown key"),
])
def test_model_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)


def test_prompt_dim_larger_than_hidden_is_an_error_only_with_task_prompts():
    cfg = ModelConfig(encoder=EncoderConfig(num_joints=V, hidden=8, layers=1), prompt_dim=16)
    with pytest.raises(ConfigError, match="prompt_dim"):
        PCM3(cfg)
    PCM3(cfg, LossConfig(task_prompts=False))


def test_config_defaults_are_the_paper():
    cfg, loss = ModelConfig(), LossConfig()
    assert (cfg.encoder.hidden, cfg.encoder.layers, cfg.encoder.feature_dim, cfg.encoder.in_features) == (1024, 3, 2048, 150)
    assert (cfg.proj_dim, cfg.queue_size, cfg.momentum, cfg.decoder_hidden, cfg.prompt_dim) == (128, 16384, 0.999, 512, 128)
    assert (loss.temperature, loss.kl_tq, loss.kl_tk, loss.w_mask, loss.w_kl, loss.w_con) == (0.07, 0.1, 0.05, 40.0, 1.0, 1.0)
    assert cfg.encoder.variant == "stepwise" and cfg.encoder.pool == "last"
    assert ModelConfig(encoder={"variant": "bigru"}).encoder.pool == "ends"


# ---- it learns ------------------------------------------------------------------------

def test_loss_falls_on_a_fixed_batch():
    """A few SGD steps on one batch lower every part of the objective.

    The queue is restored after each step: enqueuing the same batch again and again puts its
    own keys among the negatives, which raises InfoNCE whatever the model does.
    """
    m = model(seed=1)
    inputs = make_inputs(3)
    queue = m.queue.clone()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    history = []
    for _ in range(20):
        out = m(inputs, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        with torch.no_grad():
            m.queue.copy_(queue)
            m.queue_ptr.zero_()
        con = sum(v.item() for k, v in out.items() if k.startswith("con_"))
        kl = sum(v.item() for k, v in out.items() if k.startswith("kl_"))
        history.append((out["loss"].item(), out["mask_mse"].item(), con, kl))
    first, last = history[0], history[-1]
    assert last[0] < 0.8 * first[0], history
    assert last[1] < 0.9 * first[1] and last[2] < 0.5 * first[2] and last[3] < 0.5 * first[3], history


def test_encoder_export_after_training():
    m = model()
    m(make_inputs())["loss"].backward()
    enc = m.encoder
    assert isinstance(enc, Encoder) and enc is m.encoder_q
    assert not any("prompt" in k for k in enc.state_dict())
    clone = Encoder(enc.config)
    clone.load_state_dict(enc.state_dict())
    x = make_inputs()["view1"]
    torch.testing.assert_close(clone.eval()(x), enc.eval()(x))
    assert clone(x).shape == (N, 2 * HIDDEN)


# ---- one query-encoder call per step ----------------------------------------------------

@pytest.mark.parametrize("loss", [LossConfig(), LossConfig(predict_grad_to_masked_encoder=True),
                                  LossConfig(contrast=False), LossConfig(domain_prompts=False, task_prompts=False)])
def test_one_call_equals_the_release_structure(loss):
    """One query-encoder call on the concatenated views (bn_stats per_view) computes what the
    release's structure computes (one call per view, frame-by-frame GRU loop): the same loss
    terms, gradients, queue and BatchNorm statistics."""
    import copy

    from pcm3.models.release import release_style

    ours = model(loss)
    theirs = release_style(copy.deepcopy(ours))
    inputs = make_inputs(3)
    if not loss.contrast:
        inputs = {k: inputs[k] for k in ("view3", "mask")}
    a = ours({**inputs, "generator": torch.Generator().manual_seed(1)})
    b = theirs({**inputs, "generator": torch.Generator().manual_seed(1)})
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    a["loss"].backward()
    b["loss"].backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3, msg=name)
    sa, sb = ours.state_dict(), theirs.state_dict()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=1e-5, rtol=1e-4, msg=k)


def test_joint_bn_stats_changes_the_step_and_still_routes_gradients():
    ours = model()
    joint = model(bn_stats="joint")
    inputs = make_inputs(4)
    a = ours(inputs)
    b = joint(inputs)
    assert not torch.allclose(a["loss"], b["loss"])
    b["loss"].backward()
    for name, p in list(joint.domain_prompts.named_parameters()) + list(joint.task_prompts.named_parameters()):
        assert p.grad is not None and p.grad.abs().max() > 1e-7, name


def test_bf16_autocast_step_runs():
    """The train.amp path (bfloat16 autocast) through the one-call forward (on the CPU here)."""
    m = model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(make_inputs(5))
    assert torch.isfinite(out["loss"])
    assert out["con_intra"].dtype == out["kl_predict"].dtype == torch.float32  # similarities in fp32
    out["loss"].float().backward()
    assert m.encoder_q.gru.weight_ih_l0.grad is not None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compile_keeps_parameter_names():
    plain = model()
    cfg = small_config()
    cfg.compile = True
    torch.manual_seed(0)
    compiled = PCM3(cfg, LossConfig())
    assert list(compiled.state_dict()) == list(plain.state_dict())
    compiled.load_state_dict(plain.state_dict())


def test_feature_regulariser_is_off_by_default_and_adds_its_terms():
    out = model()(make_inputs())
    assert "feat_var" not in out
    m = model(LossConfig(w_var=2.0, w_cov=0.5))
    out = m(make_inputs())
    expected = (sum(out[t] for t in out if t.startswith("con_")) + sum(out[t] for t in out if t.startswith("kl_"))
                + 40.0 * out["mask_mse"] + 2.0 * out["feat_var"] + 0.5 * out["feat_cov"])
    torch.testing.assert_close(out["loss"], expected)
    out["feat_var"].backward(retain_graph=True)
    assert m.encoder_q.gru.weight_ih_l0.grad is not None  # it acts on the encoder



@pytest.mark.parametrize("name,terms", [
    ("ablation_t7_contrastive", {"con_intra", "con_inter"}),
    ("ablation_t7_multitask", {"con_intra", "con_inter", "mask_mse"}),
    ("ablation_t8_intra", {"con_intra", "mask_mse"}),
    ("ablation_t8_intra_inter", {"con_intra", "con_inter", "mask_mse"}),
    ("ablation_t8_intra_inter_kl", {"con_intra", "con_inter", "kl_intra", "kl_inter", "mask_mse"}),
])
def test_packaged_ablation_configs_compute_their_table_row(name, terms):
    """Table 7's pipelines have no L_KL; Table 8's rows keep the masked-prediction task."""
    from pcm3.config import CONFIG_DIR, load_config

    loss = load_config(CONFIG_DIR / f"{name}.yaml").loss
    out = model(loss)(make_inputs())
    assert {k for k in out if k.startswith(("con_", "kl_", "mask_mse"))} == terms


def test_forward_and_backward_run_on_the_meta_device():
    """Shapes without data: the float32 similarities used to enter torch.autocast('meta'), which
    torch refuses ('unsupported scalarType'); the model must follow its input's device."""
    m = model().to("meta")
    inputs = {k: v.to("meta") for k, v in make_inputs().items()}
    out = m(inputs)
    assert out["loss"].device.type == "meta" and out["reconstruction"].shape == (N, C, T, V, M)
    out["loss"].backward()
    assert all(p.grad is None or p.grad.device.type == "meta" for p in m.parameters())


def test_autocast_off_without_is_autocast_available(monkeypatch):
    """torch 2.1-2.3 (allowed by pyproject) have no torch.amp.is_autocast_available."""
    from pcm3.models import pcm3 as module

    monkeypatch.delattr(torch.amp, "is_autocast_available", raising=False)
    with module._autocast_off("cpu"), module._autocast_off("meta"):
        pass
    m = model()
    assert torch.isfinite(m(make_inputs())["loss"])
