"""pcm3 visualize: animated sample, reconstruction of a run checkpoint, detections on a video."""

import numpy as np
import pytest
import torch
from PIL import Image

from pcm3.cli import main
from pcm3.data.prepared import Prepared
from pcm3.data.synthetic import prepare_synthetic_untrimmed
from pcm3.visualize import find_sample, reconstruct, view_axes
from tests.cli_errors import one_line_error
from tests.mpl_backend import pdf_backend


def frames(path):
    im = Image.open(path)
    return im.n_frames, im.size


def test_view_axes_put_the_head_up(synthetic_small):
    p = Prepared(synthetic_small)
    x = p.sample(0)[:, :40]
    h, v, sign = view_axes(x, p.layout)
    assert v == 2 and h in (0, 1)       # NTU-normalised: z is up
    head, base = x[v, :, 3, 0], x[v, :, 0, 0]
    assert np.mean(sign * (head - base)) > 0


def test_animate_sample(synthetic_small, tmp_path):
    out = tmp_path / "a.gif"
    assert main(["visualize", str(synthetic_small), "--sample", "0", "--out", str(out), "--max-frames", "12"]) == 0
    n, size = frames(out)
    assert n == 12 and size[0] > 100
    name = Prepared(synthetic_small).names[5]
    assert find_sample(Prepared(synthetic_small), name) == 5


def test_refusals(synthetic_small, tmp_path, capsys):
    out = tmp_path / "a.gif"
    assert main(["visualize", str(synthetic_small), "--sample", "nosuch", "--out", str(out)]) == 2
    assert main(["visualize", str(synthetic_small), "--sample", "0", "--out", str(tmp_path / "a.mp4")]) == 2
    out.write_text("mine")
    assert main(["visualize", str(synthetic_small), "--sample", "0", "--out", str(out)]) == 2
    assert out.read_text() == "mine"   # a file pcm3 did not write is left alone
    assert "error:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, synthetic_small):
    from pcm3.config import load_config
    from pcm3.data.prepared import Prepared
    from pcm3.pretrain import build_model, data_shape_into_config, save_checkpoint

    cfg = load_config("demo", ["model.encoder.hidden=8", "model.encoder.layers=1", "model.decoder_hidden=16",
                               "model.queue_size=64", "model.prompt_dim=4"])
    data_shape_into_config(cfg, Prepared(synthetic_small))
    model = build_model(cfg)
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "checkpoint_last.pt", model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, 1, [],
                    {"layout": "ntu25"})
    return run, cfg


def test_reconstruction(synthetic_small, tiny_run, tmp_path):
    run, cfg = tiny_run
    p = Prepared(synthetic_small)
    view, mask, recon = reconstruct(run, p.sample(0)[:, :int(p.lengths[0])], int(p.lengths[0]))
    L = cfg.views.out_len
    assert view.shape == recon.shape == (3, L, 25, 2) and mask.shape == (L, 25, 2)
    assert 0.3 < mask[:, :, 0].mean() < 0.9   # topology mask, ratio 0.6 in expectation
    out = tmp_path / "r.gif"
    assert main(["visualize", str(synthetic_small), "--sample", "0", "--checkpoint", str(run), "--out", str(out)]) == 0
    n, size = frames(out)
    assert n == L and size[0] > size[1]       # three panels side by side


def test_reconstruction_of_each_stream(synthetic_small, tmp_path_factory, tmp_path, capsys):
    """A run pretrained on the motion stream (the demo's since round 9) was refused ("only
    joint-stream reconstructions can be drawn"): its predicted differences are integrated from
    the clip's first frame. The masked input is the stream's, as in pretraining; a bone-stream
    run is refused in one line."""
    from pcm3.config import load_config
    from pcm3.pretrain import build_model, data_shape_into_config, save_checkpoint

    p = Prepared(synthetic_small)
    x, n = p.sample(0)[:, :int(p.lengths[0])], int(p.lengths[0])
    runs = {}
    for stream in ("joint", "motion", "bone"):
        cfg = load_config("demo", [f"data.stream={stream}", "model.encoder.hidden=8", "model.encoder.layers=1",
                                   "model.decoder_hidden=16", "model.queue_size=64", "model.prompt_dim=4"])
        data_shape_into_config(cfg, p)
        model = build_model(cfg)
        runs[stream] = run = tmp_path_factory.mktemp(f"run-{stream}")
        save_checkpoint(run / "checkpoint_last.pt", model, torch.optim.SGD(model.parameters(), lr=0.1), cfg, 1, [],
                        {"layout": "ntu25"})
    view, mask, recon = reconstruct(runs["motion"], x, n, seed=3)
    assert recon.shape == view.shape
    np.testing.assert_allclose(recon[:, 0], view[:, 0], atol=1e-6)  # anchored at the first frame
    # before a joint's first masked difference its reconstruction is the clip itself
    first = np.where(mask.any(axis=0), mask.argmax(axis=0), mask.shape[0])  # V x M: first masked frame
    assert first.min() < first.max()  # masked from different frames on
    for v, m in np.ndindex(first.shape):  # frames 0..first use visible differences only
        np.testing.assert_allclose(recon[:, :first[v, m] + 1, v, m], view[:, :first[v, m] + 1, v, m], atol=1e-4)
    assert not np.allclose(recon, view, atol=1e-3)  # later, the predicted differences
    jv, jm, jr = reconstruct(runs["joint"], x, n, seed=3)
    np.testing.assert_array_equal(jm, mask)  # the same crop and mask, whatever the stream
    np.testing.assert_allclose(jv, view)
    assert main(["visualize", str(synthetic_small), "--sample", "0", "--checkpoint", str(runs["motion"]),
                 "--out", str(tmp_path / "m.gif")]) == 0
    assert main(["visualize", str(synthetic_small), "--sample", "0", "--checkpoint", str(runs["bone"]),
                 "--out", str(tmp_path / "b.gif")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pretrained on the bone stream; only joint- and motion-stream" in err[0], err
    assert not (tmp_path / "b.gif").exists()


def test_detections_overlay(tmp_path):
    data = tmp_path / "u"
    prepare_synthetic_untrimmed(data, seed=0, num_subjects=2, videos_per_view=1, actions_per_video=2, progress=False)
    name = Prepared(data).names[0]
    det = tmp_path / "detections.csv"
    det.write_text(f"video,class,start,end,confidence\n{name},3,10,60,0.8\n")
    out = tmp_path / "d.gif"
    assert main(["visualize", str(data), "--sample", name, "--detections", str(det), "--out", str(out),
                 "--max-frames", "10"]) == 0
    assert frames(out)[0] == 10
    det.write_text("video,label\nx,1\n")
    assert main(["visualize", str(data), "--sample", "0", "--detections", str(det), "--out",
                 str(tmp_path / "e.gif")]) == 2


def test_detections_of_another_data_set_are_refused(tmp_path, capsys):
    data = tmp_path / "u"
    prepare_synthetic_untrimmed(data, seed=0, num_subjects=2, videos_per_view=1, actions_per_video=2, progress=False)
    name = Prepared(data).names[0]
    det = tmp_path / "detections.csv"
    for rows, needle in ((["other_video,3,10,60,0.8"], "names no video of"),
                         ([f"{name},3,60,10,0.8"], "line 2: expected 0 <= start < end"),
                         ([f"{name},3,-5,10,0.8"], "line 2: expected 0 <= start < end"),
                         ([f"{name},3,10,99999,0.8"], "end after its")):
        det.write_text("video,class,start,end,confidence\n" + "\n".join(rows) + "\n")
        assert main(["visualize", str(data), "--sample", "0", "--detections", str(det), "--out",
                     str(tmp_path / "d.gif"), "--max-frames", "4"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
        assert not (tmp_path / "d.gif").exists()
    det.write_text("video,class,start,end,confidence\n")  # no detections at all: drawn
    assert main(["visualize", str(data), "--sample", "0", "--detections", str(det), "--out",
                 str(tmp_path / "d.gif"), "--max-frames", "4"]) == 0


# --------------------------------------------------------------------------- files: what --overwrite may replace

def test_overwrite_replaces_only_a_gif_pcm3_wrote(synthetic_small, tmp_path, capsys):
    """``--overwrite`` replaced any file with the GIF's name, the user's own GIF too; now only
    one whose record (``.NAME.gif.pcm3``, checksum) proves it pcm3's and unchanged."""
    mine = tmp_path / "b.gif"
    Image.new("RGB", (8, 8), "red").save(mine)  # the user's own GIF
    before = mine.read_bytes()
    argv = ["visualize", str(synthetic_small), "--sample", "0", "--max-frames", "2"]
    assert main([*argv, "--out", str(mine), "--overwrite"]) == 2
    one_line_error(capsys, "b.gif", "not written by pcm3 visualize", "remove it yourself")
    assert mine.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["b.gif"]

    ours = tmp_path / "a.gif"
    assert main([*argv, "--out", str(ours)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.gif.pcm3", "a.gif", "b.gif"]
    capsys.readouterr()
    assert main([*argv, "--out", str(ours)]) == 2
    one_line_error(capsys, "--overwrite")
    assert main([*argv, "--out", str(ours), "--overwrite", "--fps", "5"]) == 0  # its own GIF: replaced
    capsys.readouterr()
    Image.new("RGB", (8, 8), "blue").save(ours)  # the user replaced it (edited, or saved another GIF there)
    edited = ours.read_bytes()
    assert main([*argv, "--out", str(ours), "--overwrite"]) == 2
    one_line_error(capsys, "a.gif", "changed since pcm3 wrote it")
    assert ours.read_bytes() == edited


def test_gif_is_not_written_inside_a_pcm3_folder(synthetic_small, tmp_path, capsys):
    """``--out DATA/x.gif`` was written into the prepared folder being read, after which
    ``pcm3 prepare --overwrite`` of that folder refused (a file it did not write)."""
    from tests.test_bad_input import make_prepared, tree

    data = make_prepared(tmp_path / "data")
    other = make_prepared(tmp_path / "other", seed=1)
    before = tree(tmp_path)
    assert main(["visualize", str(data), "--sample", "0", "--out", str(data / "x.gif")]) == 2
    one_line_error(capsys, "x.gif", "input")
    assert main(["visualize", str(data), "--sample", "0", "--out", str(other / "x.gif")]) == 2
    one_line_error(capsys, "x.gif", "pcm3 prepared folder", str(other))
    assert tree(tmp_path) == before


def test_checkpoint_of_another_layout_is_one_line(tiny_run, tmp_path, capsys):
    """An NTU run on MSR data (20 joints) ended in ``RuntimeError: The size of tensor a (25) must
    match the size of tensor b (20)`` and a traceback."""
    from tests.test_bad_input import make_prepared, tree

    run, _ = tiny_run
    msr = make_prepared(tmp_path / "msr", layout="msr20", joints=20, persons=1)
    before = tree(tmp_path)
    assert main(["visualize", str(msr), "--sample", "0", "--checkpoint", str(run),
                 "--out", str(tmp_path / "v.gif")]) == 2
    one_line_error(capsys, str(run), "'ntu25'", "'msr20'")
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- drawing real data

@pytest.fixture(scope="module")
def real_prepared(shared_data, tmp_path_factory):
    """MSR Action3D and the NTU samples of ../shared/data, prepared (both centred on a joint)."""
    from pcm3.data.msr3d import prepare_msr3d
    from pcm3.data.ntu import prepare_ntu

    root = tmp_path_factory.mktemp("real")
    prepare_msr3d(shared_data / "msr_action3d", root / "msr", progress=False, log=lambda *a: None)
    prepare_ntu(shared_data / "ntu_raw", root / "ntu", variant="ntu60", progress=False)
    return {"msr": root / "msr", "ntu": root / "ntu"}


@pytest.mark.parametrize("name", ["msr", "ntu"])
def test_the_centre_joint_and_its_bones_are_drawn(real_prepared, tmp_path, monkeypatch, name):
    """After preparation the centre joint (MSR spine, NTU spine_mid) is exactly (0, 0, 0), the
    origin; it was taken for a joint lost by the sensor and it and its bones never drawn."""
    import pcm3.visualize as vis
    from pcm3.skeleton import get_layout

    p = Prepared(real_prepared[name])
    layout = get_layout(p.layout)
    x = p.sample(0)[:, :int(p.lengths[0])]
    there = np.any(x[..., 0] != 0, axis=(0, 2))
    assert there.any() and not np.any(x[:, there, layout.center, 0])  # what the readers write

    drawn = []
    real = vis.draw_pose

    def spy(ax, pose, *a, **kw):  # person 1 only: the bones drawn in each frame of the GIF
        artists = real(ax, pose[..., :1], *a, **{**kw, "joints": None if kw.get("joints") is None
                                                  else kw["joints"][:, :1]})
        drawn.append(sum(1 for line in artists if len(line.get_xdata()) == 2))
        return artists

    monkeypatch.setattr(vis, "draw_pose", spy)
    assert main(["visualize", str(real_prepared[name]), "--sample", "0", "--out", str(tmp_path / "a.gif"),
                 "--max-frames", "3"]) == 0
    assert drawn and all(n == len(layout.bones) for n in drawn), (drawn, len(layout.bones))
    shown = vis.shown_joints(x, p.layout)
    assert shown[there, layout.center, 0].all() and shown[there, :, 0].all()  # no joint of these is lost
    assert not shown[~there, :, 0].any()


def test_lost_joints_and_absent_persons_are_not_drawn(synthetic_small):
    from pcm3.skeleton import get_layout
    from pcm3.visualize import shown_joints

    p = Prepared(synthetic_small)
    x = p.sample(0)[:, :20].copy()
    x[:, 3, 7, 0] = 0          # a joint lost in one frame
    x[:, 5, :, 0] = 0          # person 1 absent from a frame
    centre = get_layout(p.layout).center
    assert not np.any(x[:, :, centre, 0])  # centred on it
    shown = shown_joints(x, p.layout)
    assert not shown[3, 7, 0] and shown[3, centre, 0]
    assert not shown[5, :, 0].any()
    world = x + 1.0            # not centred: a zero centre joint would be a lost one
    world[:, 4, 1, 0] = 0
    assert not shown_joints(world, p.layout)[4, 1, 0]


def test_animations_leave_the_matplotlib_backend_alone(synthetic_small, tiny_run, tmp_path):
    """``matplotlib.use("Agg")`` stopped a notebook's inline plots after any animation."""
    from pcm3.visualize import animate_detections, animate_reconstruction, animate_sample

    p = Prepared(synthetic_small)
    videos = tmp_path / "u"
    prepare_synthetic_untrimmed(videos, seed=0, num_subjects=2, videos_per_view=1, actions_per_video=2, progress=False)
    v = Prepared(videos)
    with pdf_backend() as unchanged:
        animate_sample(p, 0, tmp_path / "s.gif", max_frames=4)
        animate_reconstruction(p, 0, tiny_run[0], tmp_path / "r.gif")
        animate_detections(v, 0, [{"video": v.names[0], "label": 3, "start": 10, "end": 60, "confidence": 0.8}],
                           tmp_path / "d.gif", max_frames=4)
        unchanged()
    assert frames(tmp_path / "s.gif")[0] == 4 and frames(tmp_path / "d.gif")[0] == 4
    assert frames(tmp_path / "r.gif")[0] == tiny_run[1].views.out_len


def test_reconstruct_leaves_the_global_generator_alone(synthetic_small, tiny_run):
    """Building the run's model seeded the global generator with the run's seed."""
    p = Prepared(synthetic_small)
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    reconstruct(tiny_run[0], p.sample(0)[:, :int(p.lengths[0])], int(p.lengths[0]))
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- damaged folders: one line, no GIF

def _small_folders(tmp_path):
    from tests.data.test_bad_folders import write_clips, write_sequences

    return write_clips(tmp_path / "c"), write_sequences(tmp_path / "s")


def _refused(capsys, argv, out, *needles):
    assert main([str(a) for a in argv]) == 2
    one_line_error(capsys, *needles)
    assert not out.exists()


def test_a_sample_without_frames_is_refused_as_the_loaders_refuse_it(tmp_path, capsys):
    """A 0 in lengths.npy crashed the GIF writer (IndexError in _save); pretrain and eval said
    why in one line: visualize now runs their check (pcm3.checks.check_samples)."""
    clips, _ = _small_folders(tmp_path)
    lengths = np.load(clips / "lengths.npy")
    lengths[1] = 0
    np.save(clips / "lengths.npy", lengths)
    out = tmp_path / "v.gif"
    for sample in ("1", "s1"):
        _refused(capsys, ["visualize", clips, "--sample", sample, "--out", out],
                 out, "lengths.npy: sample 1 (s1) has length 0, outside 1..10")
    assert main(["visualize", str(clips), "--sample", "0", "--out", str(out), "--max-frames", "2"]) == 0


def test_the_sample_index_is_checked_against_the_folder_not_samples_csv(tmp_path, capsys):
    """With samples.csv cut to 3 rows of 6, `--sample 4` said "sample index 4 outside 0..2";
    bytes that are not UTF-8 were a UnicodeDecodeError."""
    clips, _ = _small_folders(tmp_path)
    out = tmp_path / "v.gif"
    _refused(capsys, ["visualize", clips, "--sample", "6", "--out", out], out, "sample index 6 outside 0..5")
    good = (clips / "samples.csv").read_bytes()
    (clips / "samples.csv").write_bytes(b"\r\n".join(good.split(b"\r\n")[:4]) + b"\r\n")
    _refused(capsys, ["visualize", clips, "--sample", "4", "--out", out], out,
             "samples.csv: 3 rows, expected one per sample (6)")
    (clips / "samples.csv").write_bytes(bytes(range(128, 256)) * 4)
    _refused(capsys, ["visualize", clips, "--sample", "0", "--out", out], out, "samples.csv: line 1: not UTF-8 text")


def test_detections_over_damaged_intervals_or_offsets(tmp_path, capsys):
    """A truncated or non-UTF-8 intervals.csv (TypeError, UnicodeDecodeError), a class beyond
    the data set's (IndexError) or an inconsistent offsets.npy (IndexError) crashed
    ``visualize --detections``."""
    _, videos = _small_folders(tmp_path)
    det = tmp_path / "detections.csv"
    det.write_text("video,class,start,end,confidence\nv0,1,1,4,0.9\n")
    out = tmp_path / "d.gif"
    argv = ["visualize", videos, "--sample", "v0", "--detections", det, "--out", out, "--max-frames", "3"]
    good = (videos / "intervals.csv").read_bytes()
    for text, needle in ((good[:40], "intervals.csv: line 2: 4 fields, the header has 5"),
                         (b"\xff\xfe" * 20, "intervals.csv: line 1: not UTF-8 text"),
                         (good + b"0,999,1,2,1.0\n", "intervals.csv: line 5: label 999 outside 0..2")):
        (videos / "intervals.csv").write_bytes(text)
        _refused(capsys, argv, out, needle)
    (videos / "intervals.csv").unlink()
    _refused(capsys, argv, out, "intervals.csv: missing")
    # the videos themselves are still drawn: only the overlay needs the labelled actions
    assert main([str(a) for a in argv if a not in ("--detections", det)]) == 0 and out.exists()
    out.unlink()
    (videos / "intervals.csv").write_bytes(good)
    offsets = np.load(videos / "offsets.npy")
    offsets[1] = 10 ** 9
    np.save(videos / "offsets.npy", offsets)
    _refused(capsys, argv, out, "offsets.npy: offsets must not decrease")
