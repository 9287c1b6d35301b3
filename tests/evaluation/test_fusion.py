"""Fusion on constructed scores: alignment by sample, weighted sum, weight search on validation, CLI."""

import json

import numpy as np
import pytest

from pcm3.errors import DataError
from pcm3.evaluation.common import save_scores, write_results
from pcm3.evaluation.fusion import align, fuse, search_weights, simplex_grid

from .tiny import cli


def constructed(n=300, k=4, seed=0):
    """Three 'streams': each right on a different third of the samples, uninformative elsewhere."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    runs = []
    for s in range(3):
        p = rng.random((n, k)) * 0.5
        good = np.arange(n) % 3 == s
        p[good, y[good]] += 1.0
        runs.append(p / p.sum(1, keepdims=True))
    return runs, y


def test_fusion_beats_every_stream():
    runs, y = constructed()
    single = [(r.argmax(1) == y).mean() for r in runs]
    fused = (fuse(runs, [1 / 3] * 3).argmax(1) == y).mean()
    assert fused > max(single) + 0.2


def test_grid_and_search():
    grid = list(simplex_grid(3, 0.5))
    assert len(grid) == 6 and all(abs(w.sum() - 1) < 1e-12 for w in grid)
    runs, y = constructed()
    noise = np.random.default_rng(9).random(runs[0].shape)
    w = search_weights([runs[0], noise], y, 0.1)
    assert w[0] > w[1]          # the informative run, not the noise
    best = max((fuse([runs[0], noise], g).argmax(1) == y).mean() for g in simplex_grid(2, 0.1))
    assert (fuse([runs[0], noise], w).argmax(1) == y).mean() == best >= (runs[0].argmax(1) == y).mean()


def test_align_reorders_rows_and_rejects_other_samples():
    runs, y = constructed(12)
    idx = np.arange(12) + 100
    perm = np.random.default_rng(1).permutation(12)
    out = align([runs[0], runs[1][perm]], [idx, idx[perm]], [y, y[perm]], ["a", "b"])
    assert np.allclose(out[1], runs[1])
    with pytest.raises(DataError, match="other samples"):
        align([runs[0], runs[1]], [idx, idx + 1], [y, y], ["a", "b"])


def fake_run(folder, scores, index, labels, stream, val=None, task="linear", protocol=None, seed=0, prefixes=("",)):
    folder.mkdir()
    for prefix in prefixes:
        save_scores(folder, scores, index, labels, prefix=prefix)
    if val is not None:
        save_scores(folder, *val, prefix="val_")
    write_results(folder, {"task": task, "data": "d", "benchmark": "xsub", "input": {"stream": stream},
                           "encoder": {"kind": "pretrained"}, "protocol": protocol or {}, "seed": seed,
                           "figures": {}, "wall_seconds": 0})


def test_cli_fusion_weights_given_and_searched(tmp_path, capsys):
    runs, y = constructed(150)
    vruns, vy = constructed(90, seed=1)
    idx, vidx = np.arange(150), np.arange(90) + 1000
    dirs = []
    for s, name in enumerate(("joint", "bone", "motion")):
        fake_run(tmp_path / name, runs[s], idx, y, name, val=(vruns[s], vidx, vy))
        dirs.append(str(tmp_path / name))
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f1"), "--set", "weights=[1, 1, 1]") == 0
    m = json.loads((tmp_path / "f1" / "metrics.json").read_text())
    assert m["weights"] == pytest.approx([1 / 3] * 3) and not m["weights_searched"]
    assert m["figures"]["top1"] == pytest.approx(100 * (fuse(runs, [1, 1, 1]).argmax(1) == y).mean())
    assert m["figures"]["top1"] > max(m["figures"][f"{s}_top1"] for s in ("joint", "bone", "motion"))
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f2")) == 0
    m2 = json.loads((tmp_path / "f2" / "metrics.json").read_text())
    assert m2["weights_searched"] and sum(m2["weights"]) == pytest.approx(1) and "val_top1" in m2["figures"]
    # two runs of one stream: each keeps its own top-1 (neither overwrites the other)
    fake_run(tmp_path / "joint2", runs[1], idx, y, "joint")
    assert cli("eval", "fusion", "--scores", dirs[0], str(tmp_path / "joint2"), "--out", str(tmp_path / "f4"),
               "--set", "weights=[1, 1]") == 0
    f4 = json.loads((tmp_path / "f4" / "metrics.json").read_text())["figures"]
    assert f4["run1_joint_top1"] == pytest.approx(100 * (runs[0].argmax(1) == y).mean())
    assert f4["run2_joint_top1"] == pytest.approx(100 * (runs[1].argmax(1) == y).mean())
    capsys.readouterr()
    fake_run(tmp_path / "noval", runs[0], idx, y, "joint")
    assert cli("eval", "fusion", "--scores", dirs[0], str(tmp_path / "noval"), "--out", str(tmp_path / "f3")) == 2
    assert "no validation scores" in capsys.readouterr().err


def test_cli_fusion_searches_weights_on_validation_not_test(tmp_path):
    """Run a is informative on validation and noise on test, run b the reverse: weights searched
    on validation favour a (searched on test they would favour b)."""
    runs, y = constructed(150)
    vruns, vy = constructed(90, seed=1)
    rng = np.random.default_rng(5)
    noise, vnoise = rng.random(runs[0].shape), rng.random(vruns[0].shape)
    idx, vidx = np.arange(150), np.arange(90) + 1000
    fake_run(tmp_path / "a", noise, idx, y, "joint", val=(vruns[0], vidx, vy))
    fake_run(tmp_path / "b", runs[0], idx, y, "bone", val=(vnoise, vidx, vy))
    runs_ab = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert cli("eval", "fusion", "--scores", *runs_ab, "--out", str(tmp_path / "f")) == 0
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    expected = search_weights([vruns[0], vnoise], vy, 0.1)
    assert m["weights_searched"] and m["weights"] == pytest.approx(list(expected))
    assert m["weights"][0] > m["weights"][1]
    on_test = search_weights([noise, runs[0]], y, 0.1)
    assert on_test[1] > on_test[0]                       # the setup discriminates
    val_top1 = 100 * (fuse([vruns[0], vnoise], expected).argmax(1) == vy).mean()
    assert m["figures"]["val_top1"] == pytest.approx(val_top1)
    assert m["figures"]["top1"] == pytest.approx(100 * (fuse([noise, runs[0]], expected).argmax(1) == y).mean())


def test_cli_fusion_names_a_validation_split_that_differs(tmp_path, capsys):
    """Joint validated on val_fraction 0.2, bone on 0.3: the test samples are the same, the
    validation ones not. The search cannot run, and says why (not 'other samples' as if data or
    benchmark differed); given weights need no validation scores and fuse."""
    runs, y = constructed(150)
    vruns, vy = constructed(90, seed=1)
    idx, vidx = np.arange(150), np.arange(90) + 1000
    fractions = (0.2, 0.3, 0.2)
    dirs = []
    for s, (name, frac) in enumerate(zip(("joint", "bone", "motion"), fractions)):
        vi = vidx if frac == 0.2 else vidx + 500  # other validation subjects
        fake_run(tmp_path / name, runs[s], idx, y, name, val=(vruns[s], vi, vy),
                 protocol={"val_fraction": frac, "val_by": "subject"})
        dirs.append(str(tmp_path / name))
    capsys.readouterr()
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {dirs[1]}: its validation samples differ"), err
    assert "val_fraction 0.3 vs 0.2" in err and "test samples are the same" in err and "weights=[1, 1, 1]" in err
    assert not (tmp_path / "f").exists()
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f"), "--set", "weights=[1, 1, 1]") == 0
    # another seed draws other validation subjects: said too
    fake_run(tmp_path / "seed1", runs[1], idx, y, "bone", val=(vruns[1], vidx + 500, vy),
             protocol={"val_fraction": 0.2, "val_by": "subject"}, seed=1)
    capsys.readouterr()
    assert cli("eval", "fusion", "--scores", dirs[0], str(tmp_path / "seed1"), "--out", str(tmp_path / "g")) == 2
    err = capsys.readouterr().err
    assert "its validation samples differ" in err and "(seed 1 vs 0;" in err
    # other test samples are still the data or benchmark's fault
    fake_run(tmp_path / "other", runs[1], idx + 1, y, "bone")
    capsys.readouterr()
    assert cli("eval", "fusion", "--scores", dirs[0], str(tmp_path / "other"), "--out", str(tmp_path / "h"),
               "--set", "weights=[1, 1]") == 2
    err = capsys.readouterr().err
    assert "its test scores cover other samples" in err and "149 in common" in err


def test_cli_fusion_refuses_a_folder_given_twice(tmp_path, capsys):
    """``--scores X X X`` fused a run with itself, silently."""
    runs, y = constructed(30)
    fake_run(tmp_path / "joint", runs[0], np.arange(30), y, "joint")
    fake_run(tmp_path / "bone", runs[1], np.arange(30), y, "bone")
    j, b = str(tmp_path / "joint"), str(tmp_path / "bone")
    for scores in ([j, j, j], [j, b, f"{j}/"], [j, b, str(tmp_path / "." / "bone")]):
        capsys.readouterr()
        assert cli("eval", "fusion", "--scores", *scores, "--out", str(tmp_path / "f"),
                   "--set", "weights=[1, 1, 1]") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "given twice" in err and "runs:" in err, err
        assert not (tmp_path / "f").exists()


def test_cli_fusion_of_semi_folders_chooses_a_fraction(tmp_path, capsys):
    """A semi folder saves its test scores per labelled fraction and seed (``frac0.1_seed0_``...),
    no plain ``scores.npy``: it was called 'not an eval folder'. The message names what it holds
    and the option that chooses; with it (and weights: semi has no validation scores) it fuses."""
    runs, y = constructed(60)
    idx = np.arange(60)
    prefixes = ("frac0.01_seed0_", "frac0.1_seed0_")
    for s, name in enumerate(("joint", "bone")):
        fake_run(tmp_path / name, runs[s], idx, y, name, task="semi", prefixes=prefixes)
    dirs = [str(tmp_path / "joint"), str(tmp_path / "bone")]
    capsys.readouterr()
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {dirs[0]}: a semi eval folder"), err
    assert "frac0.01_seed0_scores.npy, frac0.1_seed0_scores.npy" in err and "--set prefix=frac0.1_seed0_" in err
    assert "not an eval folder" not in err
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f"), "--set", "prefix=frac0.1_seed0_") == 2
    assert "semi` saves none" in capsys.readouterr().err
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f"), "--set", "prefix=frac0.1_seed0_",
               "--set", "weights=[1, 1]") == 0
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert m["figures"]["top1"] == pytest.approx(100 * (fuse(runs[:2], [1, 1]).argmax(1) == y).mean())
    # the prefix applies to every folder: a linear folder among them is named, with what it holds
    fake_run(tmp_path / "lin", runs[2], idx, y, "motion")
    capsys.readouterr()
    assert cli("eval", "fusion", "--scores", *dirs, str(tmp_path / "lin"), "--out", str(tmp_path / "g"),
               "--set", "prefix=frac0.1_seed0_", "--set", "weights=[1, 1, 1]") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'lin'}: no frac0.1_seed0_scores.npy: this linear folder holds scores.npy" in err
    # a folder of a task that saves no scores (knn) says so
    knn = tmp_path / "knn"
    knn.mkdir()
    write_results(knn, {"task": "knn", "figures": {}, "wall_seconds": 0})
    assert cli("eval", "fusion", "--scores", str(tmp_path / "lin"), str(knn), "--out", str(tmp_path / "h"),
               "--set", "weights=[1, 1]") == 2
    assert "a knn eval folder without class scores" in capsys.readouterr().err
