"""Motion prediction: the residual decoder, MPJPE by hand, an end-to-end run on the built-in clips."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pcm3.cli import main
from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.motion import MotionProtocol, ResidualGRUDecoder, joint_mask, mpjpe, run
from pcm3.models import Encoder, EncoderConfig
from tests.evaluation.tiny import NoFeatureDim, assert_seeded_and_leaves_the_global_generator
from tests.mpl_backend import pdf_backend


def tiny_encoder():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(hidden=8, layers=1)).eval()
    enc.layout, enc.stream, enc.clip_len, enc.test_crop = "ntu25", "joint", 16, 0.95
    return enc


def small_protocol(**kw):
    base = dict(observed=20, predicted=5, epochs=2, milestones=[1], max_train=64, max_test=32, decoder_hidden=16)
    base.update(kw)
    return MotionProtocol(**base)


def ctx(data, out, encoder, protocol=None):
    return SimpleNamespace(task="motion", data=data, benchmark="xsub", encoder=encoder, encoder_kind="pretrained",
                           encoder_info={}, out=out, device=torch.device("cpu"), seed=0, progress=False,
                           protocol=protocol or small_protocol())


def test_untrained_decoder_is_zero_velocity():
    dec = ResidualGRUDecoder(6, 9, 4)
    last = torch.randn(2, 9)
    out = dec(torch.randn(2, 6), last, 3)
    assert out.shape == (2, 3, 9) and torch.equal(out, last[:, None].expand(2, 3, 9))


def test_mpjpe_by_hand():
    target = torch.zeros(1, 3, 2, 2, 2)          # N C T V M
    target[:, :, :, :, 0] = 1.0                 # person 1 present, person 2 absent
    pred = target.clone()
    pred[0, 0, 0, 0, 0] += 0.3                   # frame 0, joint 0: 0.3 / 0.4 off -> 0.5
    pred[0, 1, 0, 0, 0] += 0.4
    pred[0, :, :, :, 1] = 5.0                    # absent person: ignored
    mask = joint_mask(target[:, :, 0], target)
    e = mpjpe(pred, target, mask)
    assert e.shape == (1, 2)
    assert e[0, 0].item() == pytest.approx(0.25) and e[0, 1].item() == 0.0   # mean over 2 present joints
    target[0, :, 1, 1, 0] = 0.0                 # a dropped joint in the target is not scored
    mask = joint_mask(target[:, :, 0], target)
    assert mask[0, 1].sum().item() == 1.0
    last = target[:, :, 0].clone()
    last[0, :, 0, 0] = 0.0                      # nor one lost in the last observed frame
    assert joint_mask(last, target)[0, :, 0, 0].sum().item() == 0.0


def test_run_end_to_end(synthetic_small, tmp_path, monkeypatch):
    import pcm3.visualize

    drawn = []  # the figures drawn, in order: mpjpe.png, prediction.png
    real = pcm3.visualize.new_figure
    monkeypatch.setattr(pcm3.visualize, "new_figure", lambda **kw: drawn.append(real(**kw)) or drawn[-1])
    result = run(ctx(synthetic_small, tmp_path, tiny_encoder()))
    f = result["figures"]
    assert f["MPJPE (encoder)"] > 0 and f["MPJPE (zero-velocity)"] > 0
    assert set(result["units"].values()) == {"mm"}
    z = np.asarray(result["mpjpe_per_horizon"]["zero_velocity"])
    assert len(z) == 5 and z[-1] > z[0]          # the error of standing still grows with the horizon
    assert result["splits"]["train"] == 64 and result["splits"]["test"] == 32
    for name in ("mpjpe.csv", "mpjpe.png", "prediction.png"):
        assert (tmp_path / name).stat().st_size > 100
    assert "set by the protocol (the defaults, 50 -> 10, follow Martinez" in result["notes"][0]
    assert result["warnings"] == []  # every clip of the built-in data holds 25 frames
    # the titles name the run and its horizon: two runs of one row differing in observed /
    # predicted frames had untitled, indistinguishable pictures
    mpjpe_fig, prediction_fig = drawn
    assert mpjpe_fig.axes[0].get_title() == ("MPJPE per predicted frame, pretrained (joint), synthetic xsub\n"
                                             "20 observed -> 5 predicted frames (167 ms at 30 fps)")
    assert prediction_fig._suptitle.get_text().startswith(
        "pretrained (joint), synthetic xsub, 20 observed -> 5 predicted frames (167 ms at 30 fps)\n")


def test_few_long_enough_clips_are_a_warning(synthetic_small, tmp_path, capsys):
    """MSR at 50 -> 10 trained on 1 window of 284 clips without a word; said in notes and on stderr."""
    from pcm3.evaluation.runner import save_encoder

    lengths = np.load(synthetic_small / "lengths.npy")
    span = int(np.sort(lengths)[-3])  # only the 3 longest clips of the whole set are long enough
    result = run(ctx(synthetic_small, tmp_path / "r", tiny_encoder(), small_protocol(observed=span - 5, predicted=5)))
    assert len(result["warnings"]) == 2 and "training clips hold observed + predicted" in result["warnings"][0]
    assert all(w in result["notes"] for w in result["warnings"])
    save_encoder(tiny_encoder(), tmp_path / "enc.pt", {})
    capsys.readouterr()
    assert main(["eval", "motion", "--encoder", str(tmp_path / "enc.pt"), "--data", str(synthetic_small),
                 "--benchmark", "xsub", "--out", str(tmp_path / "ev"), "--set", f"observed={span - 5}",
                 "--set", "predicted=5", "--set", "epochs=1", "--device", "cpu", "--quiet"]) == 0
    assert "warning: only" in capsys.readouterr().err


def test_training_lowers_the_training_error(synthetic_small, tmp_path):
    # the decoder starts as zero-velocity; training must lower its error on the training windows
    p = small_protocol(epochs=4, milestones=[3], max_train=128, lr=3e-3)
    result = run(ctx(synthetic_small, tmp_path, tiny_encoder(), p))
    err = [h["train_mpjpe_mm"] for h in result["history"]]
    assert err[-1] < err[0]


def test_refusals(synthetic_small, tmp_path):
    with pytest.raises(ConfigError):
        run(ctx(synthetic_small, tmp_path, None))
    with pytest.raises(DataError):                # no clip is 200 + 10 frames long
        run(ctx(synthetic_small, tmp_path, tiny_encoder(), small_protocol(observed=200, predicted=10)))
    with pytest.raises(ConfigError):
        MotionProtocol(predicted=0)


def test_benchmark_never_falls_back_to_train_on_test(synthetic_small, tmp_path, resplit):
    # a folder without xsub (as NW-UCLA: xview only) and no --benchmark: refused, not every clip
    # for both parts; `all` says so explicitly and the result carries the note
    data = resplit(synthetic_small, tmp_path / "xview_only", lambda s: {"xview": s["xview"]})
    c = ctx(data, tmp_path / "o1", tiny_encoder(), small_protocol(epochs=1, milestones=[], max_train=16, max_test=8))
    c.benchmark = None
    with pytest.raises(ConfigError, match="--benchmark: required.*xview"):
        run(c)
    c.benchmark = "all"
    assert any("smoke test" in n for n in run(c)["notes"])
    c.benchmark, c.out = "xview", tmp_path / "o2"
    result = run(c)
    assert not any("smoke test" in n for n in result["notes"]) and result["benchmark_used"] == "xview"
    c.benchmark = None
    c.data = synthetic_small                    # xsub present: taken by default, and recorded
    assert run(c)["benchmark_used"] == "xsub"


def test_cli(synthetic_small, tmp_path):
    from pcm3.evaluation.runner import save_encoder

    save_encoder(tiny_encoder(), tmp_path / "enc.pt", {})
    out = tmp_path / "ev"
    assert main(["eval", "motion", "--encoder", str(tmp_path / "enc.pt"), "--data", str(synthetic_small),
                 "--benchmark", "xsub", "--out", str(out), "--set", "observed=20", "--set", "predicted=4",
                 "--set", "epochs=1", "--set", "max_train=32", "--set", "max_test=16", "--device", "cpu",
                 "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["units"]["MPJPE (encoder)"] == "mm"


def test_split_with_test_clips_in_training_is_refused(synthetic_small, tmp_path, resplit):
    # a hand-edited splits.json with a test clip also in xsub/train: refused as `pcm3 eval linear`
    # refuses it, never run with only a "smoke test" note
    def leak(splits):
        splits["xsub"]["train"].append(splits["xsub"]["test"][0])
        return splits

    data = resplit(synthetic_small, tmp_path / "leak", leak)
    with pytest.raises(DataError, match="both train and test"):
        run(ctx(data, tmp_path / "o", tiny_encoder(), small_protocol(epochs=1, milestones=[], max_train=16,
                                                                     max_test=8)))


class _ExactVelocity(torch.nn.Module):
    """A decoder that knows the motion: ``pose_{t+k} = last_pose + k * velocity``."""

    def __init__(self, velocity):
        super().__init__()
        self.v = velocity                                            # (F,)

    def forward(self, feature, last_pose, steps):
        k = torch.arange(1, steps + 1, dtype=last_pose.dtype)[None, :, None]
        return last_pose[:, None] + k * self.v


def test_mpjpe_of_constant_velocity_motion_in_millimetres():
    """Every joint of person 1 moves 5 mm a frame (3, -4, 0 mm); person 2 is absent. Standing
    still is off by 5 h mm at horizon h; a decoder continuing the motion is exact."""
    from pcm3.evaluation.motion import Windows, evaluate_mpjpe

    n, t, v = 6, 40, 25
    rng = np.random.default_rng(0)
    step = np.array([0.003, -0.004, 0.0], dtype=np.float32)          # metres per frame
    data = np.zeros((n, 3, t, v, 2), dtype=np.float32)
    base = rng.normal(0, 0.3, (n, 3, 1, v)).astype(np.float32) + 1.0
    data[..., 0] = base + step[None, :, None, None] * np.arange(t, dtype=np.float32)[None, None, :, None]
    lengths = np.array([40, 40, 36, 30, 25, 20])                     # 20 frames are too short for 16 + 5
    for i, length in enumerate(lengths):
        data[i, :, length:] = 0                                      # padding
    prepared = SimpleNamespace(data=data, lengths=lengths, shape=data.shape)
    windows = Windows(prepared, np.arange(n), observed=16, predicted=5)
    assert windows.indices.tolist() == [0, 1, 2, 3, 4]
    velocity = torch.zeros(3, v, 2)
    velocity[:, :, 0] = torch.from_numpy(step)[:, None]
    decoder = _ExactVelocity(velocity.reshape(-1))
    errors = evaluate_mpjpe(torch.nn.Flatten(), decoder, windows, stream="joint", layout="ntu25", device="cpu")
    np.testing.assert_allclose(errors["zero_velocity"], 5.0 * np.arange(1, 6), rtol=1e-4)
    np.testing.assert_allclose(errors["model"], 0.0, atol=1e-3)


def _zero_velocity_mm(prepared, indices, observed, predicted, limit):
    """Zero-velocity MPJPE (mm) per horizon on the middle window of each long-enough clip, by hand."""
    span = observed + predicted
    idx = [int(i) for i in indices if prepared.lengths[i] >= span][:limit]
    sums, counts = np.zeros(predicted), np.zeros(predicted)
    for i in idx:
        start = (int(prepared.lengths[i]) - span) // 2
        x = np.asarray(prepared.data[i], dtype=np.float64)[:, start:start + span]        # C x span x V x M
        last, target = x[:, observed - 1], x[:, observed:]
        present = (np.abs(last).sum(0) > 0)[None] & (np.abs(target).sum(0) > 0)       # T x V x M
        dist = np.linalg.norm(target - last[:, None], axis=0)
        for h in range(predicted):
            if present[h].any():
                sums[h] += 1000.0 * dist[h][present[h]].mean()
                counts[h] += 1
    return sums / counts


def test_run_scores_the_middle_windows_of_the_test_clips(synthetic_small, tmp_path):
    from pcm3.data.prepared import Prepared

    p = small_protocol(epochs=1, milestones=[], max_train=32, max_test=24)
    result = run(ctx(synthetic_small, tmp_path, tiny_encoder(), p))
    prepared = Prepared(synthetic_small)
    on_test = _zero_velocity_mm(prepared, prepared.split("xsub", "test"), 20, 5, 24)
    on_train = _zero_velocity_mm(prepared, prepared.split("xsub", "train"), 20, 5, 32)
    assert not np.allclose(on_test, on_train, rtol=1e-3)                  # the two would be told apart
    np.testing.assert_allclose(result["mpjpe_per_horizon"]["zero_velocity"], on_test, rtol=1e-4)
    assert result["figures"]["MPJPE (zero-velocity)"] == pytest.approx(on_test.mean(), rel=1e-4)
    assert result["splits"] == {"train": 32, "test": 24}


def test_unlabelled_clips_are_fine_but_an_empty_part_is_named(synthetic_small, tmp_path, resplit):
    """Motion prediction reads no labels: -1 ("no label") on a clip is no error (a labelled row,
    ``--supervised``, refuses it); an empty test part is named, not a misleading "no test clip has
    observed + predicted frames"."""
    import shutil

    data = tmp_path / "nolabel"
    shutil.copytree(synthetic_small, data)
    labels = np.load(data / "labels.npy")
    first = json.loads((data / "splits.json").read_text())["xsub"]["train"][0]
    labels[first] = -1
    np.save(data / "labels.npy", labels)
    p = small_protocol(epochs=1, milestones=[], max_train=16, max_test=8)
    assert run(ctx(data, tmp_path / "o", tiny_encoder(), p))["splits"] == {"train": 16, "test": 8}
    c = ctx(data, tmp_path / "o2", tiny_encoder(), p)
    c.encoder_kind = "supervised"
    with pytest.raises(DataError, match=f"sample {first} .* no label"):
        run(c)

    def no_test(splits):
        splits["xsub"]["test"] = []
        return splits

    empty = resplit(synthetic_small, tmp_path / "empty", no_test)
    with pytest.raises(DataError, match="benchmark 'xsub' has no test clips"):
        run(ctx(empty, tmp_path / "o3", tiny_encoder(), p))


def test_a_module_without_feature_dim_is_measured_by_one_forward_pass(synthetic_small, tmp_path):
    """``encoder.config.feature_dim`` was read: an AttributeError for any other module."""
    result = run(ctx(synthetic_small, tmp_path, NoFeatureDim(), small_protocol(epochs=1)))
    assert result["figures"]["MPJPE (encoder)"] > 0


def test_per_frame_outputs_are_one_line(synthetic_small, tmp_path):
    class PerFrame(NoFeatureDim):
        def forward(self, x):
            return self.lin(x.permute(0, 2, 1, 3, 4).flatten(2))  # N x T x 6

    with pytest.raises(ConfigError, match=r"^encoder PerFrame: returned shape \(1, 20, 6\) for 1 clips"):
        run(ctx(synthetic_small, tmp_path, PerFrame(), small_protocol(epochs=1)))


def test_training_leaves_the_global_generator_alone(synthetic_small):
    """``train_decoder`` called ``torch.manual_seed(seed)``: the caller's next draw was seed 0's."""
    from pcm3.data.prepared import Prepared
    from pcm3.evaluation.motion import Windows, train_decoder

    prepared = Prepared(synthetic_small)
    p = small_protocol(epochs=1)
    windows = Windows(prepared, np.arange(32), p.observed, p.predicted)
    assert_seeded_and_leaves_the_global_generator(tiny_encoder, lambda encoder: train_decoder(
        encoder, windows, p, stream="joint", layout="ntu25", device="cpu", seed=3)[0])


def test_pictures_leave_the_matplotlib_backend_alone(tmp_path):
    """``matplotlib.use("Agg")`` stopped a notebook's inline plots after any call."""
    from pcm3.evaluation.motion import plot_mpjpe, render_prediction

    target = np.random.default_rng(0).normal(size=(3, 4, 25, 2)).astype(np.float32)
    with pdf_backend() as unchanged:
        plot_mpjpe(tmp_path / "m.png", {"encoder": [10.0, 20.0], "zero-velocity": [12.0, 25.0]}, 30.0)
        render_prediction(tmp_path / "p.png", target[:, 0], target, target + 0.01, "ntu25", 30.0, title="x")
        unchanged()
    for name in ("m.png", "p.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("usable, total, warned", [(20, 100, True), (10, 12, True), (10, 10, False), (16, 64, False),
                                                   (40, 100, False)])
def test_few_windows_needs_a_quarter_and_16_clips(usable, total, warned):
    from pcm3.evaluation.motion import _few_windows

    prepared = SimpleNamespace(lengths=np.array([30] * usable + [5] * (total - usable)))
    text = _few_windows(prepared, np.arange(total), small_protocol(observed=20, predicted=5), "training")
    assert (text is not None) == warned
    if warned:
        assert text.startswith(f"only {usable} of the {total} training clips hold observed + predicted = 25 frames")
