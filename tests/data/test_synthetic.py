"""The built-in synthetic data set: format, determinism, body units, splits, CLI, difficulty."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pcm3 import cli
from pcm3.data.prepared import Prepared
from pcm3.data.synthetic import (CLASS_NAMES, MAX_LENGTH, MIN_LENGTH, TWO_PERSON, VIEW_YAW_DEG,
                                 XVIEW_TRAIN_VIEWS, generate, prepare_synthetic, sample_grid)
from pcm3.errors import ConfigError
from pcm3.skeleton import NTU25

J = {name: i for i, name in enumerate(NTU25.joint_names)}
TWO = [CLASS_NAMES.index(c) for c in TWO_PERSON]


@pytest.fixture(scope="module")
def small():
    return generate(seed=0, samples_per_class=9)


def _bone_lengths(data, lengths, child, parent):
    """Per sample: lengths ``(N, T)`` of one bone of person 1 over its valid frames (NaN elsewhere)."""
    seg = np.linalg.norm(data[:, :, :, child, 0] - data[:, :, :, parent, 0], axis=1)
    # a dropped joint is all zeros; the centre joint (spine-middle) is zero by construction
    present = np.ones(seg.shape, dtype=bool)
    for j in (child, parent):
        if j != NTU25.center:
            present &= (data[:, :, :, j, 0] != 0).any(1)
    valid = np.arange(data.shape[2])[None] < lengths[:, None]
    return np.where(present & valid, seg, np.nan)


def test_shapes_dtypes_and_ranges(small):
    n = 9 * len(CLASS_NAMES)
    assert len(CLASS_NAMES) >= 12 and len(TWO_PERSON) >= 3
    assert small["data"].shape == (n, 3, 300, 25, 2)
    assert small["data"].dtype == np.float32
    for key in ("labels", "lengths", "subject", "view", "repetition"):
        assert small[key].shape == (n,) and small[key].dtype == np.int64
    assert np.isfinite(small["data"]).all()
    assert small["lengths"].min() >= MIN_LENGTH and small["lengths"].max() <= MAX_LENGTH
    assert np.bincount(small["labels"]).tolist() == [9] * len(CLASS_NAMES)
    assert len(set(small["names"])) == n


def test_same_seed_same_data_other_seed_other_data(small):
    again = generate(seed=0, samples_per_class=9)
    for key in ("data", "labels", "lengths", "subject", "view", "repetition"):
        assert np.array_equal(small[key], again[key]), key
    assert small["names"] == again["names"] and small["splits"] == again["splits"]
    other = generate(seed=1, samples_per_class=9)
    assert not np.array_equal(small["data"], other["data"])
    assert not np.array_equal(small["lengths"], other["lengths"])


def test_padding_repeats_the_valid_clip(small):
    data, lengths = small["data"], small["lengths"]
    t = np.arange(data.shape[2])
    for i in range(0, len(lengths), 7):
        assert np.array_equal(data[i], data[i][:, t % lengths[i]])
        # the valid clip itself is not constant: something moves
        assert np.abs(np.diff(data[i, :, :lengths[i], :, 0], axis=1)).max() > 0.01


def test_two_person_classes_have_person_two_and_others_do_not(small):
    data, labels, lengths = small["data"], small["labels"], small["lengths"]
    for i in range(len(labels)):
        p2 = data[i, :, :lengths[i], :, 1]
        if labels[i] in TWO:
            # present in (nearly) every frame; a dropped joint is zero for a few frames only
            assert (np.abs(p2).sum(axis=(0, 2)) > 0).all()
            assert np.median(np.linalg.norm(p2[:, :, J["spine_mid"]], axis=0)) > 0.25
        else:
            assert not p2.any()


def test_canonical_frame_of_the_ntu_preprocessing(small):
    x = small["data"][:, :, 0, :, 0]                   # (N, 3, V): person 1 at frame 0
    assert np.abs(x[:, :, J["spine_mid"]]).max() < 1e-6  # centred on the spine-middle joint
    spine = x[:, :, J["spine_mid"]] - x[:, :, J["spine_base"]]
    spine /= np.linalg.norm(spine, axis=1, keepdims=True)
    shoulders = x[:, :, J["right_shoulder"]] - x[:, :, J["left_shoulder"]]
    shoulders /= np.linalg.norm(shoulders, axis=1, keepdims=True)
    assert np.allclose(shoulders, [1, 0, 0], atol=1e-4)  # aligned last, exactly
    assert (spine[:, 2] > 0.97).all()                  # aligned first; the second rotation tilts it a bit
    # a standing person: head up, feet down, z is up
    assert (x[:, 2, J["head"]] > 0.3).all() and (x[:, 2, J["head"]] < 0.6).all()
    assert (x[:, 2, J["left_ankle"]] < -0.8).all() and (x[:, 2, J["right_ankle"]] < -0.8).all()


@pytest.mark.parametrize("child,parent,lo,hi", [
    ("right_knee", "right_hip", 0.33, 0.52), ("left_ankle", "left_knee", 0.31, 0.50),
    ("right_elbow", "right_shoulder", 0.22, 0.36), ("left_wrist", "left_elbow", 0.19, 0.32),
    ("spine_mid", "spine_base", 0.20, 0.33), ("neck", "spine_shoulder", 0.04, 0.11),
])
def test_bones_have_human_lengths_in_metres(small, child, parent, lo, hi):
    seg = _bone_lengths(small["data"], small["lengths"], J[child], J[parent])
    per_sample = np.nanmedian(seg, axis=1)
    assert (per_sample > lo).all() and (per_sample < hi).all(), (per_sample.min(), per_sample.max())
    # constant over time apart from sensor noise
    spread = np.nanmedian(np.abs(seg - per_sample[:, None]), axis=1)
    assert np.median(spread) < 0.012


def test_each_subject_keeps_its_body():
    g = generate(seed=0, samples_per_class=40)
    one = ~np.isin(g["labels"], TWO)   # in a pair, person 1 is whoever moves more
    thigh = np.nanmedian(_bone_lengths(g["data"], g["lengths"], J["right_knee"], J["right_hip"]), axis=1)
    per_subject = [thigh[one & (g["subject"] == s)] for s in np.unique(g["subject"])]
    within = np.median([np.std(t) for t in per_subject])
    between = np.std([np.median(t) for t in per_subject])
    assert within < 0.006 and between > 3 * within, (within, between)


def test_splits_cover_subjects_and_views(small):
    n = len(small["labels"])
    for bench, parts in small["splits"].items():
        train, test = np.asarray(parts["train"]), np.asarray(parts["test"])
        assert not np.intersect1d(train, test).size and np.union1d(train, test).size == n, bench
        for part in (train, test):
            assert set(small["labels"][part]) == set(range(len(CLASS_NAMES))), bench
    xsub = small["splits"]["xsub"]
    assert set(small["subject"][xsub["train"]]).isdisjoint(small["subject"][xsub["test"]])
    xview = small["splits"]["xview"]
    assert set(small["view"][xview["train"]]) == set(XVIEW_TRAIN_VIEWS)
    assert set(small["view"][xview["test"]]) == set(range(len(VIEW_YAW_DEG))) - set(XVIEW_TRAIN_VIEWS)


def test_sample_grid_is_balanced_for_any_prefix():
    subject, view, rep = sample_grid(2, 20)
    assert set(subject % 2) == {0, 1}                  # both xsub halves from two samples
    subject, view, rep = sample_grid(120, 20)
    pairs = set(zip(subject.tolist(), view.tolist(), rep.tolist()))
    assert len(pairs) == 120 and set(rep.tolist()) == {0, 1}
    subject, view, rep = sample_grid(6, 20)
    assert set(view.tolist()) == {0, 1, 2}


def test_bad_arguments_raise_config_errors():
    with pytest.raises(ConfigError):
        generate(samples_per_class=0)
    with pytest.raises(ConfigError):
        generate(num_subjects=1)


def test_prepare_writes_a_prepared_folder(tmp_path):
    out = tmp_path / "syn"
    summary = prepare_synthetic(out, seed=0, samples_per_class=3, progress=False)
    ds = Prepared(out)
    g = generate(seed=0, samples_per_class=3)
    assert len(ds) == summary["samples"] == 3 * len(CLASS_NAMES)
    assert np.array_equal(np.asarray(ds.data), g["data"]) and np.array_equal(ds.lengths, g["lengths"])
    assert ds.class_names == list(CLASS_NAMES) and ds.kind == "clips" and ds.layout == "ntu25"
    assert ds.validate() == []
    row = ds.rows[0]
    assert {"subject", "view", "camera", "repetition"} <= set(row)
    assert [int(r["subject"]) for r in ds.rows] == g["subject"].tolist()
    assert {b: {p: i.tolist() for p, i in parts.items()} for b, parts in ds.splits.items()} == g["splits"]
    assert summary["per_class"] == {c: 3 for c in CLASS_NAMES}
    # written again with the same seed: identical bytes
    prepare_synthetic(tmp_path / "again", seed=0, samples_per_class=3, progress=False)
    for name in ("data.npy", "labels.npy", "lengths.npy", "samples.csv", "splits.json", "meta.json"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["prepare", "synthetic", "--out", str(out), "--samples-per-class", "3", "--quiet"]) == 0
    printed = capsys.readouterr().out
    ds = Prepared(out)
    assert len(ds) == 3 * len(CLASS_NAMES) and set(ds.benchmarks) == {"xsub", "xview"}
    for name in CLASS_NAMES:
        assert f"{name} 3" in printed
    for key in ("xsub/train", "xview/test", "C001", "C003", "P001"):
        assert key in printed
    assert json.loads((out / "meta.json").read_text())["class_names"] == list(CLASS_NAMES)


def test_cli_default_size_is_as_documented():
    parser = cli.build_parser()
    args = parser.parse_args(["prepare", "synthetic", "--out", "x"])
    # --subjects defaults per kind: 20 for the clips (DEFAULT_SUBJECTS), fewer for --untrimmed
    from pcm3.data.synthetic import DEFAULT_SUBJECTS

    assert args.samples_per_class is None and args.seed == 0 and args.subjects is None
    assert DEFAULT_SUBJECTS == 20


@pytest.mark.parametrize("argv", [["--samples-per-class", "0"], ["--subjects", "1"], ["--subjects", "0"],
                                  ["--seed", "-1"], ["--untrimmed", "--subjects", "0"],
                                  ["--untrimmed", "--videos-per-camera", "0"],
                                  ["--untrimmed", "--actions-per-video", "99"]])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, argv):
    out = tmp_path / "bad"
    assert cli.main(["prepare", "synthetic", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert argv[-2] in err  # the option at fault
    assert not out.exists()


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_seed_must_be_a_whole_number_not_below_zero(tmp_path, seed):
    from pcm3.data.synthetic import iter_untrimmed

    with pytest.raises(ConfigError, match="seed"):
        generate(seed=seed, samples_per_class=1)
    with pytest.raises(ConfigError, match="seed"):
        prepare_synthetic(tmp_path / "bad", seed=seed, samples_per_class=1, progress=False)
    with pytest.raises(ConfigError, match="seed"):
        next(iter_untrimmed(seed, num_subjects=2, videos_per_view=1, actions_per_video=1))
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- difficulty

def _probe(train_x, train_y, test_x, test_y, classes) -> float:
    """Softmax regression (L-BFGS, small L2) on standardised features; test accuracy."""
    torch.manual_seed(0)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    xtr = torch.tensor((train_x - mu) / sd, dtype=torch.float32)
    xte = torch.tensor((test_x - mu) / sd, dtype=torch.float32)
    ytr = torch.tensor(train_y)
    lin = torch.nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xtr), ytr) + 1e-3 * (lin.weight ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(xte).argmax(1).numpy() == test_y).mean())


def test_mean_pose_is_not_enough_but_motion_is():
    """A linear classifier on each sample's mean pose (per-joint mean position over the valid
    frames) must be far from perfect; adding simple motion statistics must help a lot."""
    g = generate(seed=3, samples_per_class=48)
    data, lengths, labels = g["data"], g["lengths"], g["labels"]
    mean, motion = [], []
    for i in range(len(labels)):
        x = data[i, :, :lengths[i]].transpose(1, 0, 2, 3).reshape(lengths[i], -1)   # (T, 150)
        v = np.diff(x, axis=0)
        mean.append(x.mean(0))
        motion.append(np.concatenate([x.mean(0), x.std(0), np.abs(v).mean(0),
                                      np.abs(np.diff(v, axis=0)).mean(0)]))
    mean, motion = np.asarray(mean), np.asarray(motion)
    train, test = np.asarray(g["splits"]["xsub"]["train"]), np.asarray(g["splits"]["xsub"]["test"])
    k = len(CLASS_NAMES)
    static = _probe(mean[train], labels[train], mean[test], labels[test], k)
    dynamic = _probe(motion[train], labels[train], motion[test], labels[test], k)
    assert 2.0 / k < static < 0.7, static
    assert dynamic > static + 0.1, (static, dynamic)


def test_normalisation_and_person_order_agree_with_the_ntu_reader(small):
    """The generator's own (vectorised) NTU steps give what the NTU reader's do."""
    ntu = pytest.importorskip("pcm3.data.ntu")
    if not all(hasattr(ntu, f) for f in ("center_on_spine", "align_to_axes", "motion_energy")):
        pytest.skip("pcm3.data.ntu has no per-clip preprocessing functions")
    from pcm3.data.synthetic import _order_by_energy, ntu_normalise

    rng = np.random.default_rng(0)
    two = np.isin(small["labels"], TWO)
    pick = np.r_[np.nonzero(~two)[0][:4], np.nonzero(two)[0][:4]]
    for i in pick:
        length = int(small["lengths"][i])
        clip = small["data"][i, :, :length].transpose(3, 1, 2, 0).astype(np.float64)   # (M, L, V, 3)
        # back to "camera" coordinates: any rotation and offset (absent joints stay zero)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        cam = (clip @ q.T + rng.normal(size=3)) * clip.any(-1, keepdims=True)
        ours = ntu_normalise(cam.transpose(1, 0, 2, 3)[None])[0].transpose(1, 0, 2, 3)
        theirs = ntu.align_to_axes(ntu.center_on_spine(cam))
        assert np.allclose(ours, theirs, atol=1e-6)
        swapped = cam[::-1].transpose(1, 0, 2, 3)[None]
        first = _order_by_energy(swapped, np.array([length]))[0].transpose(1, 0, 2, 3)
        energy = [ntu.motion_energy(b) for b in cam]
        assert np.array_equal(first[0], cam[int(np.argmax(energy))])
