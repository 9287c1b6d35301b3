"""Detection: windows, post-processing on hand-computed cases, end-to-end runs (built-in, CLI, PKU-MMD)."""

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pcm3.cli import main
from pcm3.data.synthetic import prepare_synthetic_untrimmed
from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.detection import (DetectionProtocol, run, segments, smooth, window_indices,
                                       window_offsets)
from pcm3.models import Encoder, EncoderConfig
from tests.mpl_backend import pdf_backend
from tests.evaluation.tiny import NoFeatureDim, assert_seeded_and_leaves_the_global_generator
from tests.prepared_copies import copy_with_values


def tiny_encoder(seed=0):
    torch.manual_seed(seed)
    enc = Encoder(EncoderConfig(hidden=8, layers=1)).eval()
    enc.layout, enc.stream, enc.clip_len, enc.test_crop = "ntu25", "joint", 16, 0.95
    return enc


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "u"
    prepare_synthetic_untrimmed(out, seed=1, num_subjects=2, videos_per_view=1, actions_per_video=3, progress=False)
    return out


def ctx(data, out, encoder, protocol=None, benchmark="xsub"):
    return SimpleNamespace(task="detection", data=data, benchmark=benchmark, encoder=encoder,
                           encoder_kind="random_init", encoder_info={}, out=out, device=torch.device("cpu"),
                           seed=0, progress=False,
                           protocol=protocol or DetectionProtocol(epochs=2, milestones=[1], timeline_videos=2))


def test_windows_are_dilated_and_clamped():
    assert window_offsets(16).tolist() == list(range(-8, 8))
    idx = window_indices(np.array([0, 20]), np.array([30, 30]), np.array([4, 3]), 16)
    assert idx[0].tolist() == [0] * 9 + [4, 8, 12, 16, 20, 24, 28]     # clamped at frame 0
    assert idx[1].tolist() == [0, 0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 29, 29, 29, 29]   # 20 + 3 * (-8..7)


def test_smooth_centred_by_hand():
    p = np.array([[0.0], [3.0], [6.0], [0.0], [9.0]])
    # k = 1: frame 0 -> mean(0, 3); frame 1 -> mean(0, 3, 6); ...; frame 4 -> mean(0, 9)
    assert np.allclose(smooth(p, 1)[:, 0], [1.5, 3.0, 3.0, 5.0, 4.5])
    assert np.allclose(smooth(p, 0), p)


def test_smooth_release_matches_the_authors_loop():
    rng = np.random.default_rng(0)
    x = rng.random((37, 4))
    k = 5
    # the authors' `smoothing` (Simple-Skeleton-Detection): window [t-k, t+k), end clamped to l-1
    l = len(x)
    s, e = np.arange(-k, l - k), np.arange(k, l + k)
    s[s < 0] = 0
    e[e >= l] = l - 1
    ref = np.stack([x[s[i]:e[i]].mean(axis=0) for i in range(l)])
    assert np.allclose(smooth(x, k, "release"), ref, atol=1e-6)


def test_segments_by_hand():
    # 7 frames, background + 2 classes; active where 1 - P(bg) >= 0.4
    p = np.array([[0.9, 0.05, 0.05],
                  [0.2, 0.7, 0.1],
                  [0.5, 0.3, 0.2],     # 1 - 0.5 = 0.5: active
                  [0.7, 0.2, 0.1],     # 0.3: not active
                  [0.1, 0.2, 0.7],
                  [0.6, 0.3, 0.1],     # 0.4: active (>=)
                  [0.9, 0.1, 0.0]])
    segs = segments(p, 0.4)
    assert [(c, s, e) for c, s, e, _ in segs] == [(1, 1, 3), (2, 4, 6)]
    assert segs[0][3] == pytest.approx((0.7 + 0.3) / 2)
    # frames 4-5: class means (0.25, 0.4) -> class 2 with confidence 0.4
    assert segs[1][3] == pytest.approx(0.4)
    assert segments(np.tile([[1.0, 0.0, 0.0]], (5, 1)), 0.4) == []


def _test_truth(data):
    """The test videos' names and labelled intervals (class numbers 1..K), from the prepared folder."""
    from pcm3.data.prepared import Prepared

    prepared = Prepared(data)
    test = [int(i) for i in prepared.split("xsub", "test")]
    truth = [{"video": prepared.names[iv["index"]], "label": iv["label"] + 1, "start": iv["start"], "end": iv["end"]}
             for iv in prepared.intervals() if iv["index"] in test]
    return [prepared.names[i] for i in test], truth


def _assert_figures_score_the_written_detections(figs, out, data):
    from pcm3.evaluation.detection_metrics import detection_metrics

    rows = list(csv.DictReader(open(out / "detections.csv")))
    dets = [{"video": r["video"], "label": int(r["class"]), "start": int(r["start"]), "end": int(r["end"]),
             "confidence": float(r["confidence"])} for r in rows]
    names, truth = _test_truth(data)
    ref = detection_metrics(truth, dets, names, 16, (0.1, 0.3, 0.5))
    assert set(figs) == {f"mAP_{a}@{t} ({m})" for a in "av" for t in ref["voc"] for m in ref} | {"frame accuracy"}
    for m, by_t in ref.items():
        for t, r in by_t.items():
            assert figs[f"mAP_a@{t} ({m})"] == pytest.approx(100 * r["mAP_a"], abs=1e-6), (m, t)
            assert figs[f"mAP_v@{t} ({m})"] == pytest.approx(100 * r["mAP_v"], abs=1e-6), (m, t)
    return rows


def test_run_end_to_end(videos, tmp_path):
    result = run(ctx(videos, tmp_path, tiny_encoder()))
    figs = result["figures"]
    assert 0 <= figs["frame accuracy"] <= 100
    assert result["splits"] == {"train": 3, "val": 0, "test": 3}
    assert open(tmp_path / "detections.csv").readline().strip() == "video,class,start,end,confidence"
    rows = _assert_figures_score_the_written_detections(figs, tmp_path, videos)
    for r in rows:
        assert 1 <= int(r["class"]) <= 16 and 0 <= int(r["start"]) < int(r["end"])
    assert (tmp_path / "timeline.png").stat().st_size > 1000
    assert (tmp_path / "per_class_ap.csv").exists() and (tmp_path / "history.csv").exists()
    assert len(result["history"]) == 2


def _oracle(data, shift=0, seed=0):
    """Per-frame probabilities ``{video index: (T, 17)}``: each labelled interval (moved ``shift``
    frames later) is its class (label + 1) with a random confidence in [0.6, 1), the rest background."""
    from pcm3.data.prepared import Prepared

    prepared = Prepared(data)
    rng = np.random.default_rng(seed)
    probs = {}
    for i, t in enumerate(np.diff(prepared.offsets)):
        probs[i] = np.zeros((t, 17), dtype=np.float32)
        probs[i][:, 0] = 1
    for iv in prepared.intervals():
        conf = rng.uniform(0.6, 1.0)
        row = np.zeros(17, dtype=np.float32)
        row[0], row[iv["label"] + 1] = 1 - conf, conf
        probs[iv["index"]][iv["start"] + shift:iv["end"] + shift] = row
    return probs


def test_perfect_frame_predictions_score_100(videos, tmp_path, monkeypatch):
    """A predictor returning each test frame's ground truth (read from the prepared folder's
    intervals, label + 1; 0 = background): every detection is a ground-truth interval."""
    from pcm3.evaluation import detection

    probs = _oracle(videos)
    monkeypatch.setattr(detection, "predict_video", lambda encoder, head, vids, i, **kw: probs[int(i)].copy())
    p = DetectionProtocol(epochs=1, milestones=[], smooth_k=0, timeline_videos=0)
    figs = run(ctx(videos, tmp_path, tiny_encoder(), p))["figures"]
    assert figs["frame accuracy"] == 100.0
    for m in ("authors", "voc"):
        assert figs[f"mAP_a@0.5 ({m})"] == pytest.approx(100.0) and figs[f"mAP_v@0.5 ({m})"] == pytest.approx(100.0)
    # official mAP_a: each class's only hit is its most confident detection, AP 0 (evaluate.py's quirk)
    assert figs["mAP_v@0.5 (official)"] == pytest.approx(100.0)
    _, truth = _test_truth(videos)
    rows = list(csv.DictReader(open(tmp_path / "detections.csv")))
    assert ({(r["video"], int(r["class"]), int(r["start"]), int(r["end"])) for r in rows}
            == {(g["video"], g["label"], g["start"], g["end"]) for g in truth})
    assert len(rows) == len(truth) == 9


def test_figures_are_the_metrics_of_the_written_detections(videos, tmp_path, monkeypatch):
    """Detections 25 frames late with varied confidences: figures between 0 and 100 that differ
    by metric and threshold, each the metric of detections.csv against the test intervals."""
    from pcm3.evaluation import detection

    probs = _oracle(videos, shift=25, seed=1)
    monkeypatch.setattr(detection, "predict_video", lambda encoder, head, vids, i, **kw: probs[int(i)].copy())
    p = DetectionProtocol(epochs=1, milestones=[], smooth_k=0, timeline_videos=0)
    figs = run(ctx(videos, tmp_path, tiny_encoder(), p))["figures"]
    _assert_figures_score_the_written_detections(figs, tmp_path, videos)
    assert figs["mAP_a@0.1 (voc)"] == pytest.approx(100.0) and 0 < figs["mAP_a@0.5 (voc)"] < 100
    assert len({round(v, 6) for k, v in figs.items() if k != "frame accuracy"}) > 4


def test_validation_split_and_best_val(videos, tmp_path):
    p = DetectionProtocol(epochs=2, milestones=[1], val_fraction=0.5, val_every=1, select="best_val",
                          timeline_videos=0)
    # two training subjects... only one (subject 0) in xsub/train, so carve by video instead
    p.val_by = "video"
    with pytest.raises(ConfigError):  # one video per subject-camera: 'video' has one value -> empty part
        run(ctx(videos, tmp_path, tiny_encoder(), p))
    p.val_by = "camera"
    result = run(ctx(videos, tmp_path / "b", tiny_encoder(), p))
    assert result["splits"]["val"] >= 1 and "selected_epoch" in result["history"][-1]
    with pytest.raises(ConfigError):
        DetectionProtocol(select="best_val")  # never selects on the test set


def test_refusals(videos, synthetic_small, tmp_path):
    with pytest.raises(ConfigError):
        run(ctx(videos, tmp_path, None))                     # raw input
    with pytest.raises(DataError):
        run(ctx(synthetic_small, tmp_path, tiny_encoder()))  # clips, not videos


def test_cli(videos, tmp_path, capsys):
    from pcm3.evaluation.runner import save_encoder

    enc = tiny_encoder()
    save_encoder(enc, tmp_path / "enc.pt", {})
    out = tmp_path / "ev"
    code = main(["eval", "detection", "--encoder", str(tmp_path / "enc.pt"), "--data", str(videos), "--benchmark",
                 "xsub", "--out", str(out), "--set", "epochs=1", "--set", "milestones=[1]", "--device", "cpu",
                 "--quiet"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "mAP_a@0.5 (official)" in m["figures"] and (out / "detections.csv").exists()
    assert main(["eval", "detection", "--raw-input", "--data", str(videos), "--out", str(tmp_path / "r")]) == 2
    assert "--raw-input" in capsys.readouterr().err
    # the random-init row from a pretraining config: its input size from the videos' (N, C, V, M)
    # shape (an IndexError: the clips' (N, C, T, V, M) was assumed)
    assert main(["eval", "detection", "--random-init", "--pretrain-config", "demo", "--data", str(videos),
                 "--benchmark", "xsub", "--out", str(tmp_path / "ri"), "--set", "epochs=1", "--set", "milestones=[1]",
                 "--device", "cpu", "--quiet"]) == 0
    assert json.loads((tmp_path / "ri" / "metrics.json").read_text())["encoder"]["kind"] == "random_init"


def test_pku_mmd_smoke(shared_data, tmp_path):
    """The three real PKU-MMD Part I videos, trained and tested on the same videos (a smoke test only)."""
    from pcm3.data.pku import prepare_pku

    raw = shared_data / "pku_mmd"
    if not raw.is_dir():
        pytest.skip("no PKU-MMD sample in the shared data")
    data = prepare_pku(raw, tmp_path / "pku1", part=1, progress=False, workers=1, log=lambda s: None)
    p = DetectionProtocol(epochs=2, milestones=[1], timeline_videos=3, test_batch_size=512)
    result = run(ctx(data, tmp_path / "out", tiny_encoder(), p, benchmark="all"))
    assert result["splits"] == {"train": 3, "val": 0, "test": 3}
    assert any("smoke test" in n for n in result["notes"])
    rows = list(csv.DictReader(open(tmp_path / "out" / "detections.csv")))
    assert all(1 <= int(r["class"]) <= 51 for r in rows)
    assert (tmp_path / "out" / "timeline.png").exists()


def test_callers_encoder_is_left_alone(videos, tmp_path):
    enc = tiny_encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    p = DetectionProtocol(epochs=1, milestones=[1], finetune=True, max_videos=2, timeline_videos=0)
    run(ctx(videos, tmp_path, enc, p))
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert all(q.requires_grad for q in enc.parameters())


def test_benchmark_never_falls_back_to_train_on_test(videos, tmp_path, resplit):
    # a folder without xsub and no --benchmark: refused (as motion does), not every video for both parts
    data = resplit(videos, tmp_path / "xview_only", lambda s: {"xview": s["xview"]})
    c = ctx(data, tmp_path / "o", tiny_encoder(), DetectionProtocol(epochs=1, milestones=[], timeline_videos=0),
            benchmark=None)
    with pytest.raises(ConfigError, match="--benchmark: required.*xview"):
        run(c)
    c.benchmark = "all"                          # asked for explicitly: a smoke test, and said so
    assert any("smoke test" in n for n in run(c)["notes"])


def _leak_one_test_sample(splits):
    splits["xsub"]["train"].append(splits["xsub"]["test"][0])
    return splits


def test_split_with_test_videos_in_training_is_refused(videos, tmp_path, resplit):
    # a hand-edited splits.json with a test video also in xsub/train: refused as `pcm3 eval linear` does
    data = resplit(videos, tmp_path / "leak", _leak_one_test_sample)
    with pytest.raises(DataError, match="both train and test"):
        run(ctx(data, tmp_path / "o", tiny_encoder(), DetectionProtocol(epochs=1, milestones=[], timeline_videos=0)))


def test_best_val_keeps_the_adapted_input_norm_of_the_selected_epoch(videos):
    # frozen encoder, adapting input BatchNorm statistics, select best_val: the restored head must be
    # paired with the statistics it was trained and validated with (epoch 1 here), not the last epoch's
    from pcm3.data.prepared import Prepared
    from pcm3.evaluation.detection import Videos, train_head

    prepared = Prepared(videos)
    vids = Videos(prepared)
    enc = tiny_encoder()
    snapshots, scores = [], iter([50.0, 10.0, 5.0])

    def validate(head):
        snapshots.append({k: v.clone() for k, v in enc.input_norm.state_dict().items()})
        return next(scores)

    p = DetectionProtocol(epochs=3, milestones=[], adapt_input_norm=True, val_fraction=0.3, val_every=1,
                          select="best_val")
    _, history = train_head(enc, vids, np.asarray(prepared.split("xsub", "train")), p, stream="joint",
                            layout="ntu25", device=torch.device("cpu"), seed=0, validate=validate)
    assert history[-1] == {"selected_epoch": 1}
    assert not torch.equal(snapshots[0]["running_mean"], snapshots[-1]["running_mean"])  # the stats did move
    assert all(torch.equal(v, snapshots[0][k]) for k, v in enc.input_norm.state_dict().items())
    assert all(not q.requires_grad for q in enc.parameters())  # still frozen


@pytest.mark.parametrize("part", ["train", "test"])
@pytest.mark.parametrize("scan", [True, False], ids=["scanned", "as-read"])
def test_non_finite_frames_are_one_line(videos, tmp_path, capsys, monkeypatch, scan, part):
    """A NaN frame in a video (checked up front, or as read in a folder beyond the scan budget)
    names the video and frame instead of training on it."""

    from pcm3.data.prepared import Prepared
    from pcm3.evaluation.detection import Videos
    from pcm3.evaluation.runner import save_encoder

    p = Prepared(videos)
    video = int(p.split("xsub", part)[0])  # test videos are read by predict_video, training ones by frames()
    bad = copy_with_values(videos, tmp_path / "bad",  # every window reads some
                           np.s_[int(p.offsets[video]) + 5:int(p.offsets[video + 1]), 0, 3, 0])
    if not scan:
        monkeypatch.setattr(Videos, "SCAN_BYTES", 0)
    save_encoder(tiny_encoder(), tmp_path / "enc.pt", {})
    out = tmp_path / "ev"
    code = main(["eval", "detection", "--encoder", str(tmp_path / "enc.pt"), "--data", str(bad), "--benchmark",
                 "xsub", "--out", str(out), "--set", "epochs=1", "--set", "milestones=[1]", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"video {video} ({p.names[video]}) holds non-finite values (NaN or inf) at frame" in err[0]
    if scan or part == "test":  # read whole: the first bad frame
        assert err[0].endswith("at frame 5; `pcm3 info` lists such samples")
    assert not out.exists()


def test_a_module_without_feature_dim_is_measured_by_one_forward_pass(videos, tmp_path):
    """``encoder.config.feature_dim`` was read: an AttributeError for any other module."""
    p = DetectionProtocol(epochs=1, milestones=[1], max_videos=2, timeline_videos=0)
    result = run(ctx(videos, tmp_path, NoFeatureDim(), p))
    assert 0 <= result["figures"]["frame accuracy"] <= 100


def test_training_leaves_the_global_generator_alone(videos):
    """``train_head`` called ``torch.manual_seed(seed)``: the caller's next draw was seed 0's."""
    from pcm3.data.prepared import Prepared
    from pcm3.evaluation.detection import Videos, train_head

    v = Videos(Prepared(videos))
    p = DetectionProtocol(epochs=1, milestones=[1], windows_per_video=8)
    assert_seeded_and_leaves_the_global_generator(tiny_encoder, lambda encoder: train_head(
        encoder, v, np.arange(2), p, stream="joint", layout="ntu25", device="cpu", seed=3)[0])


def test_timeline_leaves_the_matplotlib_backend_alone(videos, tmp_path):
    """``matplotlib.use("Agg")`` stopped a notebook's inline plots after any call."""
    from pcm3.data.prepared import Prepared
    from pcm3.evaluation.detection import Videos, plot_timeline

    v = Videos(Prepared(videos))
    dets = [{"video": v.names[0], "label": 2, "start": 5, "end": 30, "confidence": 0.7}]
    with pdf_backend() as unchanged:
        plot_timeline(tmp_path / "t.png", v, [0, 1], dets, {0: np.full((int(v.lengths[0]), 17), 1 / 17)})
        unchanged()
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
