"""Occlusion: masks (ratio distribution, whole parts, seeded), CLI run with the fixed part, errors."""

import json

import numpy as np
import pytest
import torch

from pcm3.evaluation.occlusion import accuracy_by_ratio, occlude
from pcm3.skeleton import part_mask

from .tiny import cli, encoder_file, fast, tiny_data


def batch(n=400, t=60):
    x = torch.randn(n, 3, t, 25, 2)
    lengths = torch.randint(20, t + 1, (n,))
    return x, lengths


def test_spatial_masks_are_whole_parts_within_the_range():
    x, lengths = batch()
    g = torch.Generator().manual_seed(0)
    out, mask, ratio = occlude(x, lengths, "spatial", layout="ntu25", ratio_range=(0.3, 0.7), generator=g)
    parts = part_mask("ntu25")  # P x V
    for row in mask.numpy():
        for p in parts:   # each part entirely occluded or entirely kept
            assert row[p].all() or not row[p].any()
    r = ratio.numpy()
    assert r.min() >= 0.3 - 1e-9 and r.max() <= 0.7 + 1e-9
    assert 0.4 < r.mean() < 0.6 and r.std() > 0.05         # spread over the range, centred near 0.5
    zeroed = (out == 0).all(1).all(1).all(-1)   # N x V: joints zero in every frame and person
    assert torch.equal(zeroed, mask)


def test_temporal_block_inside_the_valid_frames():
    x, lengths = batch()
    g = torch.Generator().manual_seed(1)
    out, frames, ratio = occlude(x, lengths, "temporal", layout="ntu25", ratio_range=(0.3, 0.7), generator=g)
    for row, length, r in zip(frames.numpy(), lengths.numpy(), ratio.numpy()):
        idx = np.flatnonzero(row)
        assert idx.size and np.all(np.diff(idx) == 1) and idx.max() < length    # one contiguous block
        assert abs(idx.size / length - r) < 1e-9 and 0.3 - 1 / length <= r <= 0.7 + 1 / length
    assert 0.4 < ratio.mean().item() < 0.6
    assert torch.equal((out == 0).all(1).all(-1).all(-1), frames)


def test_masks_are_seeded():
    x, lengths = batch(50)
    a = occlude(x, lengths, "spatial", layout="ntu25", ratio_range=(0.3, 0.7), generator=torch.Generator().manual_seed(5))[1]
    b = occlude(x, lengths, "spatial", layout="ntu25", ratio_range=(0.3, 0.7), generator=torch.Generator().manual_seed(5))[1]
    c = occlude(x, lengths, "spatial", layout="ntu25", ratio_range=(0.3, 0.7), generator=torch.Generator().manual_seed(6))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_accuracy_by_ratio_bins():
    bins = accuracy_by_ratio(np.array([1, 0, 1, 1]), np.array([0.31, 0.35, 0.69, 0.7]), 2, (0.3, 0.7))
    assert [b["samples"] for b in bins] == [2, 2] and [b["top1"] for b in bins] == [50.0, 100.0]


def test_cli_occlusion_with_fixed_part(tmp_path_factory, tmp_path):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    out = tmp_path / "occ"
    code = cli("eval", "occlusion", "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub", "--out", str(out),
               *fast("fixed_part=left_arm", "save_features=true"), "--seed", "4")
    assert code == 0
    assert np.load(out / "test_features.npy").shape[0] == 96  # the clean test features, when asked for
    m = json.loads((out / "metrics.json").read_text())
    f = m["figures"]
    for k in ("spatial", "temporal", "part_left_arm"):
        assert f[f"{k}_drop"] == pytest.approx(f["clean_top1"] - f[f"{k}_top1"])
    part = np.load(out / "occlusion_part_left_arm_mask.npy")
    assert part.shape == (96, 25) and part[:, [4, 5, 6, 7, 21, 22]].all() and part.sum() == 96 * 6
    assert np.load(out / "occlusion_temporal_mask.npy").shape == (96, 300)
    assert len(m["by_ratio"]["spatial"]) == 4 and m["seed"] == 4
    # results.md holds the accuracy per bin too (it was in metrics.json only)
    md = (out / "results.md").read_text()
    first = m["by_ratio"]["spatial"][0]
    assert "top-1 (%) by realised occlusion ratio" in md
    assert f"| spatial | {first['low']:.2f}-{first['high']:.2f} | {first['samples']} |" in md


def test_occlusion_uses_the_validation_split_of_its_linear_protocol(tmp_path_factory, tmp_path):
    """val_fraction / select: val mean in occlusion what they mean in linear: the layer is chosen on the
    validation subjects (history with val_top1, the selected epoch recorded), the same layer as linear's."""
    import csv

    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    base = ["--data", str(data), "--benchmark", "xsub",
            *fast("val_fraction=0.5", "select=val", "epochs=6", "milestones=[4]", "batch_size=16")]
    assert cli("eval", "linear", "--encoder", str(enc), "--out", str(tmp_path / "lin"), *base) == 0
    assert cli("eval", "occlusion", "--encoder", str(enc), "--out", str(tmp_path / "occ"), *base,
               "--set", "kinds=[spatial]") == 0
    lin = json.loads((tmp_path / "lin" / "metrics.json").read_text())
    occ = json.loads((tmp_path / "occ" / "metrics.json").read_text())
    with open(tmp_path / "occ" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert "val_top1" in rows[0]
    assert occ["selected_epoch"] == lin["selected_epoch"]
    assert occ["figures"]["clean_top1"] == lin["figures"]["top1"]


def test_cli_occlusion_unknown_part(tmp_path_factory, tmp_path, capsys):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    code = cli("eval", "occlusion", "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub",
               "--out", str(tmp_path / "o"), *fast("fixed_part=tail"))
    err = capsys.readouterr().err
    assert code == 2 and "fixed_part: 'tail'" in err and err.count("\n") == 1


def test_occlusion_reuses_a_linear_run_of_the_same_encoder(tmp_path_factory, tmp_path, capsys):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    base = ["--data", str(data), "--benchmark", "xsub"]
    assert cli("eval", "linear", "--encoder", str(enc), "--out", str(tmp_path / "lin"), *base, *fast()) == 0
    assert cli("eval", "occlusion", "--encoder", str(enc), "--out", str(tmp_path / "own"), *base, *fast()) == 0
    assert cli("eval", "occlusion", "--encoder", str(enc), "--out", str(tmp_path / "reuse"), *base,
               "--set", f"linear_run={tmp_path / 'lin'}") == 0
    lin = json.loads((tmp_path / "lin" / "metrics.json").read_text())["figures"]
    own = json.loads((tmp_path / "own" / "metrics.json").read_text())["figures"]
    reuse = json.loads((tmp_path / "reuse" / "metrics.json").read_text())["figures"]
    assert own["clean_top1"] == reuse["clean_top1"] == lin["top1"]       # same protocol and seed: the same layer
    assert own["spatial_top1"] == reuse["spatial_top1"]
    other = encoder_file(tmp_path_factory, seed=11)
    capsys.readouterr()
    assert cli("eval", "occlusion", "--encoder", str(other), "--out", str(tmp_path / "bad"), *base,
               "--set", f"linear_run={tmp_path / 'lin'}") == 2
    assert "linear_run: its encoder file_hash" in capsys.readouterr().err
    # the same encoder on other data (same layout, benchmark and data set name): refused, not scored
    from pcm3.data.synthetic import prepare_synthetic

    prepare_synthetic(tmp_path / "other_data", seed=1, num_subjects=6, repetitions=1, progress=False)
    assert cli("eval", "occlusion", "--encoder", str(enc), "--out", str(tmp_path / "other"), "--data",
               str(tmp_path / "other_data"), "--benchmark", "xsub", "--set", f"linear_run={tmp_path / 'lin'}") == 2
    assert "linear_run: its test samples" in capsys.readouterr().err
    # --out the linear run itself, with --overwrite: refused (it replaced the run it was reading)
    before = sorted(p.name for p in (tmp_path / "lin").iterdir())
    assert cli("eval", "occlusion", "--encoder", str(enc), "--out", str(tmp_path / "lin"), "--overwrite", *base,
               "--set", f"linear_run={tmp_path / 'lin'}") == 2
    assert "--out" in capsys.readouterr().err and sorted(p.name for p in (tmp_path / "lin").iterdir()) == before


def test_occluded_features_see_the_occlusion(tmp_path_factory):
    """Features of a flattening module: the occluded joints are zero in every frame and person,
    every other joint is exactly its clean (unoccluded) feature."""
    from pcm3.evaluation.common import open_split
    from pcm3.evaluation.features import encode
    from pcm3.evaluation.occlusion import occluded_features

    from .tiny import CLIP

    test = open_split(tiny_data(tmp_path_factory), "xsub", "test")
    flat = torch.nn.Flatten()
    spec = {"clip_len": CLIP, "stream": "joint", "layout": "ntu25", "test_crop": 0.95}
    f, mask, ratio, labels = occluded_features(flat, test, "spatial", spec=spec, ratio_range=(0.3, 0.7), seed=0,
                                               batch_size=32, device=torch.device("cpu"))
    clean, clean_labels, _ = encode(flat, test, clip_len=CLIP, stream="joint", layout="ntu25", test_crop=0.95)
    assert np.array_equal(labels, clean_labels) and mask.shape == (len(test), 25) and mask.any(1).all()
    assert np.allclose(ratio, mask.sum(1) / 25)
    occ, ref = f.reshape(len(test), 3, CLIP, 25, 2), clean.reshape(len(test), 3, CLIP, 25, 2)
    for n in range(len(test)):
        assert not occ[n][:, :, mask[n]].any()
        assert ref[n][:, :, mask[n]].any()                    # there was something to occlude
        np.testing.assert_allclose(occ[n][:, :, ~mask[n]], ref[n][:, :, ~mask[n]], atol=1e-6)


def test_a_damaged_layer_of_a_linear_run_is_one_line_naming_it(tmp_path_factory, tmp_path, capsys):
    """`linear_run=DIR` whose linear_head.pt was truncated gave torch's RuntimeError traceback,
    one without a `weight` key a KeyError; a layer of other classes or features a shape error."""
    import os
    import shutil

    from tests.cli_errors import one_line_error

    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    base = ["--data", str(data), "--benchmark", "xsub"]
    lin = tmp_path / "lin"
    assert cli("eval", "linear", "--encoder", str(enc), "--out", str(lin), *base, *fast("crops=1")) == 0
    state = torch.load(lin / "linear_head.pt")
    k, d = state["weight"].shape
    nan = state["weight"].clone()
    nan[0, 0] = float("nan")
    cases = [("truncated", None, "torch cannot read it"),
             ("no_weight", {"bias": state["bias"]}, "it holds keys bias"),
             ("classes", {"weight": state["weight"][:5], "bias": state["bias"][:5]},
              f"a layer of 5 classes; this run's data has {k}"),
             ("features", {"weight": state["weight"][:, :3], "bias": state["bias"]},
              f"a layer of 3 input features; this run's encoder gives {d}"),
             ("nan", {"weight": nan, "bias": state["bias"]}, "NaN or inf"),
             ("list", [1, 2], "it holds a list"),
             ("encoder", "encoder", "is an encoder written by pcm3 export")]
    capsys.readouterr()
    for name, content, message in cases:
        run = tmp_path / f"lin_{name}"
        shutil.copytree(lin, run)
        head = run / "linear_head.pt"
        if content is None:
            os.truncate(head, 50)
        elif content == "encoder":
            shutil.copyfile(enc, head)
        else:
            torch.save(content, head)
        assert cli("eval", "occlusion", "--encoder", str(enc), "--out", str(tmp_path / "occ"), *base,
                   "--set", f"linear_run={run}") == 2, name
        one_line_error(capsys, f"{head}: ", message)
        assert not (tmp_path / "occ").exists()
    os.truncate(tmp_path / "lin_nan" / "scores_index.npy", 60)
    assert cli("eval", "occlusion", "--encoder", str(enc), "--out", str(tmp_path / "occ"), *base,
               "--set", f"linear_run={tmp_path / 'lin_nan'}") == 2
    one_line_error(capsys, f"{tmp_path / 'lin_nan' / 'scores_index.npy'}: truncated")


def test_a_linear_run_on_data_without_class_names_is_reused(tmp_path_factory, tmp_path):
    """On a folder whose meta.json names no classes, the layer check compared the layer's 16
    classes with the 0 names and refused the linear run it had just written."""
    import shutil

    data = tmp_path / "nonames"
    shutil.copytree(tiny_data(tmp_path_factory), data)
    meta = json.loads((data / "meta.json").read_text())
    meta["class_names"] = []
    (data / "meta.json").write_text(json.dumps(meta))
    base = ["--raw-input", "--data", str(data), "--benchmark", "xsub"]
    assert cli("eval", "linear", "--out", str(tmp_path / "lin"), *base, *fast("crops=1")) == 0
    assert cli("eval", "occlusion", "--out", str(tmp_path / "occ"), *base,
               "--set", f"linear_run={tmp_path / 'lin'}") == 0
