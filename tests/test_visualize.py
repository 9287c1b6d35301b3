"""pcm3 visualize: animated sample, reconstruction of a run checkpoint, detections on a video."""

import numpy as np
import pytest
import torch
from PIL import Image

from pcm3.cli import main
from pcm3.data.prepared import Prepared
from pcm3.data.synthetic import prepare_synthetic_untrimmed
from pcm3.visualize import find_sample, reconstruct, view_axes


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
