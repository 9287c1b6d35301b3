"""``pcm3 import-release``: a checkpoint with exactly the release's key names, shapes and file
structure (hidden size 16 instead of 1024; everything else the release's: 25 joints x 3 x 2,
3 GRU layers, projector to 128, queue 128 x K, decoder 512 with a 2-layer GRU), against an
independent frame-by-frame implementation of the release's encoder written here (GRU cell
equations, float64)."""

import pytest
import torch

from pcm3 import load_encoder
from pcm3.cli import main
from pcm3.commands.import_release import import_release
from pcm3.errors import DataError

torch.set_num_threads(1)
C, V, M = 3, 25, 2
F = V * C * M  # 150, the release's input size
H, LAYERS, PROJ, K, DEC, R = 16, 3, 128, 256, 512, 8


def release_state_dict(seed=0, prompts=True):
    """The release's ``state_dict`` keys and shapes (hidden H)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale

    sd = {}
    for side in ("q", "k"):
        e = f"encoder_{side}."
        sd[e + "input_norm.weight"] = 1 + rnd(F, scale=0.2)
        sd[e + "input_norm.bias"] = rnd(F)
        sd[e + "input_norm.running_mean"] = rnd(F)
        sd[e + "input_norm.running_var"] = 0.5 + torch.rand(F, generator=g)
        sd[e + "input_norm.num_batches_tracked"] = torch.tensor(1000)
        for layer in range(LAYERS):
            fan_in = F if layer == 0 else 2 * H
            for d in ("", "_reverse"):
                sd[e + f"encoder.gru.weight_ih_l{layer}{d}"] = rnd(3 * H, fan_in)
                sd[e + f"encoder.gru.weight_hh_l{layer}{d}"] = rnd(3 * H, H)
                sd[e + f"encoder.gru.bias_ih_l{layer}{d}"] = rnd(3 * H)
                sd[e + f"encoder.gru.bias_hh_l{layer}{d}"] = rnd(3 * H)
        sd[e + "fc.0.weight"], sd[e + "fc.0.bias"] = rnd(2 * H, 2 * H), rnd(2 * H)
        sd[e + "fc.2.weight"], sd[e + "fc.2.bias"] = rnd(PROJ, 2 * H), rnd(PROJ)
    sd["linear.0.weight"], sd["linear.0.bias"] = rnd(DEC, 2 * H), rnd(DEC)
    sd["linear.1.weight"], sd["linear.1.bias"] = 1 + rnd(DEC, scale=0.1), rnd(DEC)
    sd["linear.1.running_mean"], sd["linear.1.running_var"] = rnd(DEC), 0.5 + torch.rand(DEC, generator=g)
    sd["linear.1.num_batches_tracked"] = torch.tensor(1000)
    sd["linear.3.weight"], sd["linear.3.bias"] = rnd(DEC, DEC), rnd(DEC)
    for layer in range(2):
        sd[f"recons_decoder.decoder.weight_ih_l{layer}"] = rnd(3 * DEC, DEC)
        sd[f"recons_decoder.decoder.weight_hh_l{layer}"] = rnd(3 * DEC, DEC)
        sd[f"recons_decoder.decoder.bias_ih_l{layer}"] = rnd(3 * DEC)
        sd[f"recons_decoder.decoder.bias_hh_l{layer}"] = rnd(3 * DEC)
    sd["recons_decoder.reconstruction.weight"], sd["recons_decoder.reconstruction.bias"] = rnd(F, DEC), rnd(F)
    sd["queue"] = torch.nn.functional.normalize(rnd(PROJ, K), dim=0)
    sd["queue_ptr"] = torch.tensor([128])
    if prompts:
        sd["cl_prompt"], sd["mp_prompt"] = rnd(1, 2 * R), rnd(1, 2 * R)
        for name in ("base_prompt", "mask_prompt", "recons_prompt", "mix_prompt"):
            sd[name] = rnd(1, 1, F)
    return sd


def release_features(sd, x):
    """The release's encoder in eval mode, written from its definition: BatchNorm with the
    running statistics, then for each frame, for each layer, each direction of the
    bidirectional GRU updates its own state from the layer's input of THIS frame (the release
    calls the GRU on one frame at a time and carries the state), in float64.

    x: (N, C, T, V, M) -> the top layer's output at the last frame (N, 2H)."""
    sd = {k: v.double() for k, v in sd.items()}
    n, c, t, v, m = x.shape
    seq = x.double().permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)  # feature v*C*M + c*M + m
    p = "encoder_q."
    seq = ((seq - sd[p + "input_norm.running_mean"]) / torch.sqrt(sd[p + "input_norm.running_var"] + 1e-5)
           * sd[p + "input_norm.weight"] + sd[p + "input_norm.bias"])
    state = {(layer, d): torch.zeros(n, H, dtype=torch.float64) for layer in range(LAYERS) for d in ("", "_reverse")}
    top = None
    for i in range(t):
        inp = seq[:, i]
        for layer in range(LAYERS):
            halves = []
            for d in ("", "_reverse"):
                w = lambda kind: sd[p + f"encoder.gru.{kind}_l{layer}{d}"]  # noqa: E731
                gi = inp @ w("weight_ih").T + w("bias_ih")
                gh = state[layer, d] @ w("weight_hh").T + w("bias_hh")
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
                cand = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
                state[layer, d] = (1 - z) * cand + z * state[layer, d]
                halves.append(state[layer, d])
            inp = torch.cat(halves, dim=1)
        top = inp
    return top


def _rel(a, b):
    return float((a.double() - b).norm() / b.norm())


@pytest.mark.parametrize("prefix,prompts,stream", [("module.", True, "joint"), ("", False, "bone"),
                                                   ("module.", False, "motion")])
def test_imported_features_equal_the_release_frame_loop(tmp_path, prefix, prompts, stream):
    sd = release_state_dict(prompts=prompts)
    ckpt = tmp_path / "checkpoint_0450.pth.tar"
    torch.save({"epoch": 451, "state_dict": {prefix + k: v for k, v in sd.items()}, "optimizer": {}}, ckpt)
    out = tmp_path / "encoder.pt"
    assert main(["import-release", str(ckpt), "--out", str(out), "--stream", stream]) == 0
    enc = load_encoder(out)
    assert enc.config.variant == "stepwise" and (enc.config.hidden, enc.config.layers) == (H, LAYERS)
    assert (enc.stream, enc.layout, enc.clip_len) == (stream, "ntu25", 64)
    x = torch.randn(4, C, 20, V, M, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = enc(x)
    ref = release_features(sd, x)
    assert ours.shape == (4, 2 * H)
    assert _rel(ours, ref) < 1e-5
    assert torch.load(out, weights_only=False)["pretrain_epochs"] == 451
    assert main(["import-release", str(ckpt), "--out", str(out)]) == 2  # exists: refused
    assert main(["import-release", str(ckpt), "--out", str(out), "--overwrite", "--stream", stream]) == 0


def test_python_function_and_reference_is_sensitive():
    sd = release_state_dict(seed=3)
    x = torch.randn(2, C, 12, V, M, generator=torch.Generator().manual_seed(2))
    ref = release_features(sd, x)
    # the reference is not a tautology: a true bidirectional pass gives other features
    other = dict(sd)
    other["encoder_q.encoder.gru.weight_hh_l2_reverse"] = sd["encoder_q.encoder.gru.weight_hh_l2_reverse"] * 0.5
    assert _rel(release_features(other, x).float(), ref) > 1e-3
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = import_release({"state_dict": sd}, Path(tmp) / "enc.pt", stream="joint")
        with torch.no_grad():
            assert _rel(load_encoder(path)(x), ref) < 1e-5


def test_unknown_and_missing_keys_are_one_line_errors(tmp_path, capsys):
    sd = release_state_dict()
    extra = dict(sd, **{"surprise.weight": torch.zeros(1), "encoder_q.extra": torch.zeros(1)})
    ckpt = tmp_path / "extra.pth.tar"
    torch.save({"state_dict": extra}, ckpt)
    assert main(["import-release", str(ckpt), "--out", str(tmp_path / "e.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "surprise.weight" in err and "encoder_q.extra" in err and "extra.pth.tar" in err
    missing = {k: v for k, v in sd.items() if k not in ("encoder_k.encoder.gru.bias_hh_l2", "linear.1.running_var")}
    with pytest.raises(DataError, match=r"missing keys: encoder_k\.encoder\.gru\.bias_hh_l2, linear\.1\.running_var"):
        import_release({"state_dict": missing}, tmp_path / "m.pt")
    bad = dict(sd)
    bad["encoder_q.fc.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(DataError, match=r"wrong shapes: encoder_q\.fc\.0\.weight"):
        import_release({"state_dict": bad}, tmp_path / "b.pt")
    assert not any(p.name.endswith(".pt") for p in tmp_path.iterdir())  # nothing half-written
    assert main(["import-release", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "e.pt")]) == 2
    assert "absent.pth" in capsys.readouterr().err
    assert main(["import-release", str(ckpt), "--out", str(ckpt), "--overwrite"]) == 2  # never the input
    assert "checkpoint itself" in capsys.readouterr().err and ckpt.stat().st_size > 0
    (tmp_path / "a_folder").mkdir()   # a folder was "no such checkpoint file"
    assert main(["import-release", str(tmp_path / "a_folder"), "--out", str(tmp_path / "e.pt")]) == 2
    assert "a_folder: a folder, not a checkpoint file" in capsys.readouterr().err


def test_a_layout_with_other_joints_is_refused(tmp_path, capsys):
    """A 25-joint release checkpoint imported as Kinect v1 (20 joints) is a one-line error, not a
    file that claims a layout its weights cannot read."""
    ckpt = tmp_path / "r.pth.tar"
    torch.save({"state_dict": release_state_dict()}, ckpt)
    assert main(["import-release", str(ckpt), "--out", str(tmp_path / "e.pt"), "--layout", "kinect_v1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "25 joints" in err and "kinect_v1 has 20 joints" in err and "r.pth.tar" in err
    assert not (tmp_path / "e.pt").exists()


def test_pcm3_files_and_garbage_are_one_short_line(tmp_path, capsys):
    """A pcm3 checkpoint or encoder given instead of the release's says what it is; an unreadable
    file gives a short line (torch's own message is a kilobyte with terminal escape codes)."""
    from pcm3.models import Encoder, EncoderConfig

    run_ckpt = tmp_path / "checkpoint_last.pt"
    torch.save({"format": "pcm3-pretrain", "model": {}, "history": [], "cfg": object.__new__(EncoderConfig)},
               run_ckpt)
    enc = tmp_path / "enc.pt"
    torch.save({"format": "pcm3-encoder", "version": 1,
                "state_dict": Encoder(EncoderConfig(hidden=8, layers=1)).state_dict()}, enc)
    garbage = tmp_path / "g.pth.tar"
    garbage.write_bytes(b"garbage\n")
    for path, needle in ((run_ckpt, "is a pcm3 pretraining checkpoint"), (enc, "is an encoder written by pcm3"),
                         (garbage, "torch cannot read it (UnpicklingError")):
        assert main(["import-release", str(path), "--out", str(tmp_path / "out.pt")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and "\x1b" not in err[0] and len(err[0]) < 300, err
        assert "the authors' release checkpoint (.pth.tar)" in err[0]
        assert not (tmp_path / "out.pt").exists()
