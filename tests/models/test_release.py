"""Import of release checkpoints, on a synthetic release-style state dict (small sizes)."""

import pytest
import torch
from torch import nn

from pcm3.errors import DataError
from pcm3.models import PCM3, Encoder, convert_release_state_dict, load_release_checkpoint

N, C, T, V, M = 3, 3, 7, 4, 2
F = V * C * M
H, LAYERS, PROJ, K, DEC, R = 8, 2, 6, 10, 12, 3


class ReleaseLike(nn.Module):
    """Modules named as in the release, to produce its state-dict keys and reference outputs."""

    def __init__(self):
        super().__init__()
        for side in ("encoder_q", "encoder_k"):
            enc = nn.Module()
            enc.input_norm = nn.BatchNorm1d(F)
            enc.encoder = nn.Module()
            enc.encoder.gru = nn.GRU(F, H, num_layers=LAYERS, bidirectional=True, batch_first=True)
            enc.fc = nn.Sequential(nn.Linear(2 * H, 2 * H), nn.ReLU(), nn.Linear(2 * H, PROJ))
            setattr(self, side, enc)
        self.linear = nn.Sequential(nn.Linear(2 * H, DEC), nn.BatchNorm1d(DEC), nn.ReLU(), nn.Linear(DEC, DEC))
        self.recons_decoder = nn.Module()
        self.recons_decoder.decoder = nn.GRU(DEC, DEC, num_layers=2, batch_first=True)
        self.recons_decoder.reconstruction = nn.Linear(DEC, F)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(PROJ, K), dim=0))
        self.register_buffer("queue_ptr", torch.tensor([4]))
        self.cl_prompt = nn.Parameter(torch.randn(1, 2 * R))
        self.mp_prompt = nn.Parameter(torch.randn(1, 2 * R))
        for name in ("base_prompt", "mask_prompt", "recons_prompt", "mix_prompt"):
            setattr(self, name, nn.Parameter(torch.randn(1, 1, F)))
        with torch.no_grad():  # non-trivial BatchNorm statistics
            for bn in (self.encoder_q.input_norm, self.encoder_k.input_norm, self.linear[1]):
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_()

    def encode(self, x):
        """The release's encoder: BN, then the GRU called one frame at a time (eval mode)."""
        enc = self.encoder_q
        seq = x.permute(0, 2, 3, 1, 4).reshape(x.shape[0], x.shape[2], -1)
        seq = enc.input_norm(seq.permute(0, 2, 1)).permute(0, 2, 1)
        outs, hidden = [], None
        for t in range(seq.shape[1]):
            out, hidden = enc.encoder.gru(seq[:, t:t + 1]) if hidden is None else enc.encoder.gru(seq[:, t:t + 1], hidden)
            outs.append(out)
        return torch.cat(outs, dim=1)  # N x T x 2H

    def decode(self, seq):
        n, t, d = seq.shape
        h = self.linear(seq.reshape(n * t, d)).reshape(n, t, -1)
        out = self.recons_decoder.reconstruction(self.recons_decoder.decoder(h)[0])
        return out.reshape(n, t, V, C, M).permute(0, 3, 1, 2, 4)


@pytest.fixture(scope="module")
def release():
    torch.manual_seed(0)
    return ReleaseLike().eval()


def _checkpoint(release, prefix="module."):
    return {"epoch": 451, "state_dict": {prefix + k: v.clone() for k, v in release.state_dict().items()},
            "optimizer": {}}


def test_model_import_reproduces_release_outputs(release, tmp_path):
    path = tmp_path / "checkpoint_0450.pth.tar"
    torch.save(_checkpoint(release), path)
    model = load_release_checkpoint(path).eval()
    assert isinstance(model, PCM3)
    cfg = model.config
    assert (cfg.encoder.num_joints, cfg.encoder.hidden, cfg.encoder.layers, cfg.encoder.variant) == (V, H, LAYERS, "stepwise")
    assert (cfg.proj_dim, cfg.queue_size, cfg.decoder_hidden, cfg.decoder_layers, cfg.prompt_dim) == (PROJ, K, DEC, 2, R)

    x = torch.randn(N, C, T, V, M)
    with torch.no_grad():
        ref_seq = release.encode(x)
        feat, seq = model.encoder(x, return_sequence=True)
        torch.testing.assert_close(seq, ref_seq, atol=1e-5, rtol=0)
        torch.testing.assert_close(feat, ref_seq[:, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(model.projector_q(feat), release.encoder_q.fc(ref_seq[:, -1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.decoder(seq), release.decode(ref_seq), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encoder_k.gru.weight_hh_l1_reverse, release.encoder_k.encoder.gru.weight_hh_l1_reverse)
    torch.testing.assert_close(model.encoder_k.input_norm.running_var, release.encoder_k.input_norm.running_var)
    torch.testing.assert_close(model.projector_k.net[2].bias, release.encoder_k.fc[2].bias)
    torch.testing.assert_close(model.queue, release.queue.t())
    assert int(model.queue_ptr) == 4
    torch.testing.assert_close(model.task_prompts.prompts["cl"], release.cl_prompt.reshape(-1))
    torch.testing.assert_close(model.task_prompts.prompts["mp"], release.mp_prompt.reshape(-1))
    for ours, theirs in (("intra", "base_prompt"), ("inter", "mix_prompt"), ("mask", "mask_prompt"),
                         ("predict", "recons_prompt")):
        torch.testing.assert_close(model.domain_prompts(ours), getattr(release, theirs).reshape(-1))


def test_encoder_import_from_plain_state_dict(release):
    enc = load_release_checkpoint(release.state_dict(), what="encoder").eval()
    assert isinstance(enc, Encoder) and not any("prompt" in k for k in enc.state_dict())
    x = torch.randn(N, C, T, V, M)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), release.encode(x)[:, -1], atol=1e-5, rtol=0)


def test_convert_names_and_inferred_switches(release):
    state = {k: v for k, v in release.state_dict().items() if "prompt" not in k}  # the bone/motion recipe
    mapped, cfg, loss = convert_release_state_dict({"state_dict": state})
    assert not loss.domain_prompts and not loss.task_prompts and loss.contrast and loss.masked_prediction
    assert "encoder_q.gru.weight_hh_l1_reverse" in mapped and "decoder.gru.weight_ih_l1" in mapped
    assert mapped["queue"].shape == (K, PROJ)
    PCM3(cfg, loss).load_state_dict(mapped)  # strict


def test_prompts_switch_of_the_whole_model_import(release):
    """The release saves its six prompts in every recipe (bone and motion: untrained); the keys
    cannot tell, so ``prompts=False`` drops them and leaves the prompts off."""
    state = release.state_dict()
    _, _, loss = convert_release_state_dict({"state_dict": state})
    assert loss.domain_prompts and loss.task_prompts  # present: on by default
    mapped, cfg, loss = convert_release_state_dict({"state_dict": state}, prompts=False)
    assert not loss.domain_prompts and not loss.task_prompts and not any("prompt" in k for k in mapped)
    PCM3(cfg, loss).load_state_dict(mapped)  # strict
    model = load_release_checkpoint(state, prompts=False)
    assert model.domain_prompts is None and model.task_prompts is None
    with pytest.raises(DataError, match="holds no prompts"):
        convert_release_state_dict({k: v for k, v in state.items() if "prompt" not in k}, prompts=True)


def test_not_a_checkpoint_names_the_file(tmp_path, release):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DataError, match="junk.pth"):
        load_release_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(DataError, match="other.pt.*not a PCM3 release checkpoint"):
        load_release_checkpoint(other)
    with pytest.raises(DataError, match="missing.pt"):
        load_release_checkpoint(tmp_path / "missing.pt")
    extra = dict(release.state_dict(), **{"surprise.weight": torch.zeros(1)})
    with pytest.raises(DataError, match="surprise.weight"):
        load_release_checkpoint(extra)
    broken = dict(release.state_dict())
    broken["encoder_q.fc.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(DataError, match="does not fit"):
        load_release_checkpoint(broken)
