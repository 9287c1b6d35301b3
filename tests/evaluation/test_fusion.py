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


def fake_run(folder, scores, index, labels, stream, val=None, task="linear", protocol=None, seed=0, prefixes=("",),
             encoder=None):
    folder.mkdir()
    for prefix in prefixes:
        save_scores(folder, scores, index, labels, prefix=prefix)
    if val is not None:
        save_scores(folder, *val, prefix="val_")
    write_results(folder, {"task": task, "data": "d", "benchmark": "xsub", "input": {"stream": stream},
                           "encoder": encoder or {"kind": "pretrained"}, "protocol": protocol or {}, "seed": seed,
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
    capsys.readouterr()
    fake_run(tmp_path / "noval", runs[1], idx, y, "bone")
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


def _refused(capsys, tmp_path, dirs, *sets):
    """Run a fusion that must be refused: exit 2, one `error: runs: ...` line, nothing written."""
    capsys.readouterr()
    out = tmp_path / "refused"
    assert cli("eval", "fusion", "--scores", *map(str, dirs), "--out", str(out),
               "--set", f"weights=[{', '.join('1' for _ in dirs)}]", *sets) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: runs: "), err
    assert not out.exists()
    return err


def test_cli_fusion_refuses_runs_of_other_rows_tasks_or_one_stream(tmp_path, capsys):
    """A random-init or raw-input joint run beside pretrained bone and motion, a linear beside an
    occlusion run, two runs of one stream, a bone-pretrained encoder evaluated on joint clips, a
    fusion folder: all fused with exit 0 and labelled a 3s fusion. Each is refused, naming the
    folders and what differs; the runs of one row (any kind) still fuse."""
    runs, y = constructed(60)
    idx = np.arange(60)

    def make(name, stream, s=0, **kw):
        fake_run(tmp_path / name, runs[s], idx, y, stream, **kw)
        return tmp_path / name

    bone, motion = make("bone", "bone", 1), make("motion", "motion", 2)
    for kind in ("random_init", "raw_input"):
        joint = make(f"joint_{kind}", "joint", encoder={"kind": kind})
        err = _refused(capsys, tmp_path, [joint, bone, motion])
        assert f"{joint} and {bone} differ in encoder kind ({kind} vs pretrained)" in err, err
    occ = make("occlusion", "joint", task="occlusion")
    err = _refused(capsys, tmp_path, [bone, occ, motion])
    assert f"{bone} and {occ} differ in task (linear vs occlusion)" in err, err
    # semi scores of one fraction and seed fuse with semi folders only
    prefix = "frac0.1_seed0_"
    semi = make("semi_joint", "joint", task="semi", prefixes=(prefix,))
    lin = make("lin_prefixed", "bone", 1, prefixes=(prefix,))
    err = _refused(capsys, tmp_path, [semi, lin], "--set", f"prefix={prefix}")
    assert f"{semi} and {lin} differ in task (semi vs linear)" in err, err
    # two runs of one stream are no multi-stream fusion
    joint, joint2 = make("joint", "joint"), make("joint2", "joint", 1)
    err = _refused(capsys, tmp_path, [joint, bone, joint2])
    assert f"{joint} and {joint2} both read the joint stream" in err, err
    # an encoder pretrained on bone evaluated on joint clips (--set stream=joint) is no joint run
    bone_as_joint = make("bone_as_joint", "joint", encoder={"kind": "pretrained", "stream": "bone"})
    err = _refused(capsys, tmp_path, [bone_as_joint, motion])
    assert f"{bone_as_joint}: its encoder was pretrained on the bone stream but evaluated on the joint" in err, err
    # fused scores are not fused again
    assert cli("eval", "fusion", "--scores", str(joint), str(bone), "--out", str(tmp_path / "f"),
               "--set", "weights=[1, 1]") == 0
    err = _refused(capsys, tmp_path, [tmp_path / "f", motion])
    assert f"{tmp_path / 'f'} is a fusion folder (task fusion)" in err, err
    # one row's streams fuse, whatever the row: a random-init joint built from a bone encoder
    # (its input stream chosen with --set stream=joint) beside a random-init bone run
    ri_joint = make("ri_joint", "joint", encoder={"kind": "random_init", "stream": "bone"})
    ri_bone = make("ri_bone", "bone", 1, encoder={"kind": "random_init", "stream": "bone"})
    assert cli("eval", "fusion", "--scores", str(ri_joint), str(ri_bone), "--out", str(tmp_path / "g"),
               "--set", "weights=[1, 1]") == 0
    g = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert g["encoder"]["kind"] == "random_init" and g["streams"] == ["joint", "bone"]


def test_cli_fusion_says_what_it_fused_and_records_the_scores_hashes(tmp_path, capsys):
    """The CLI line said ``fusion (none)`` and results.md ``encoder: none`` for pretrained runs;
    metrics.json recorded only the folders' paths, so a run re-evaluated since went unnoticed."""
    import hashlib

    from pcm3.outputs import list_entries, write_marker

    runs, y = constructed(60)
    idx = np.arange(60)
    dirs = []
    for s, name in enumerate(("joint", "bone", "motion")):
        fake_run(tmp_path / name, runs[s], idx, y, name, encoder={"kind": "pretrained", "stream": name,
                                                                   "path": f"{name}.pt", "config_hash": f"h{s}"})
        dirs.append(tmp_path / name)
    capsys.readouterr()
    assert cli("eval", "fusion", "--scores", *map(str, dirs), "--out", str(tmp_path / "f"),
               "--set", "weights=[1, 1, 1]") == 0
    assert capsys.readouterr().out.startswith("fusion (pretrained): top1")
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert m["encoder"]["kind"] == "pretrained" and m["run_kinds"] == ["pretrained"] * 3
    assert [e["stream"] for e in m["encoder"]["fused"]] == ["joint", "bone", "motion"]
    assert [e["path"] for e in m["encoder"]["fused"]] == ["joint.pt", "bone.pt", "motion.pt"]
    assert m["scores_sha256"] == [hashlib.sha256((d / "scores.npy").read_bytes()).hexdigest() for d in dirs]
    assert m["prefix"] == "" and len(set(m["scores_sha256"])) == 3
    md = (tmp_path / "f" / "results.md").read_text()
    assert "- encoder: pretrained" in md and "fused the pretrained linear scores.npy of joint, bone, motion" in md
    # semi scores: the hashes are those of the chosen fraction's files, and the prefix is recorded
    prefix = "frac0.1_seed0_"
    semi = []
    for s, name in enumerate(("joint", "bone")):
        fake_run(tmp_path / f"semi_{name}", runs[s], idx, y, name, task="semi",
                 prefixes=("frac0.01_seed0_", prefix))
        semi.append(tmp_path / f"semi_{name}")
    np.save(semi[0] / f"{prefix}scores.npy", runs[2].astype(np.float32))  # the other fraction's file differs
    assert cli("eval", "fusion", "--scores", *map(str, semi), "--out", str(tmp_path / "g"),
               "--set", f"prefix={prefix}", "--set", "weights=[1, 1]") == 0
    g = json.loads((tmp_path / "g" / "metrics.json").read_text())
    assert g["prefix"] == prefix and g["scores_sha256"] == [
        hashlib.sha256((d / f"{prefix}scores.npy").read_bytes()).hexdigest() for d in semi]
    assert g["scores_sha256"][0] != hashlib.sha256((semi[0] / "frac0.01_seed0_scores.npy").read_bytes()).hexdigest()


@pytest.mark.parametrize("step", [0.7, 0.3, 0.15, 0.4])
def test_a_grid_step_that_does_not_divide_one_is_refused(tmp_path, capsys, step):
    """``grid_step=0.7`` searched single-run weights only (a grid of step 1.0) while metrics.json
    said 0.7."""
    from pcm3.errors import ConfigError
    from pcm3.evaluation.fusion import FusionProtocol

    with pytest.raises(ConfigError, match="^grid_step: .*whole number"):
        FusionProtocol(runs=["a", "b"], grid_step=step)
    runs, y = constructed(60)
    vruns, vy = constructed(30, seed=1)
    for s, name in enumerate(("joint", "bone")):
        fake_run(tmp_path / name, runs[s], np.arange(60), y, name, val=(vruns[s], np.arange(30) + 100, vy))
    dirs = [str(tmp_path / "joint"), str(tmp_path / "bone")]
    capsys.readouterr()
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f"), "--set", f"grid_step={step}") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "grid_step: " in err, err
    assert f"got {step} " in err and "whole number" in err, err
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("step, points", [(0.5, 3), (0.25, 5), (0.1, 11), (1 / 3, 4), (0.333, 4), (1.0, 2)])
def test_grid_steps_that_divide_one_are_kept(step, points):
    from pcm3.evaluation.fusion import FusionProtocol

    FusionProtocol(runs=["a", "b"], grid_step=step)
    grid = list(simplex_grid(2, step))
    assert len(grid) == points and all(abs(w.sum() - 1) < 1e-12 for w in grid)


def test_cli_fusion_never_writes_over_a_folder_it_reads(tmp_path, capsys):
    """`--out fA --overwrite` with fA among --scores replaced the linear run fA (its layer and
    features gone) with the fusion, exit 0; --data/--benchmark were accepted and ignored."""
    from pcm3.outputs import list_entries, write_marker

    runs, y = constructed(60)
    idx = np.arange(60)
    dirs = []
    for s, name in enumerate(("joint", "bone")):
        fake_run(tmp_path / name, runs[s], idx, y, name)
        write_marker(tmp_path / name, "eval", list_entries(tmp_path / name))   # as pcm3 eval writes them
        dirs.append(str(tmp_path / name))
    before = sorted(p.name for p in (tmp_path / "joint").iterdir())
    assert cli("eval", "fusion", "--scores", *dirs, "--out", dirs[0], "--overwrite", "--set", "weights=[1, 1]") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err
    assert sorted(p.name for p in (tmp_path / "joint").iterdir()) == before
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f"), "--benchmark", "xview",
               "--set", "weights=[1, 1]") == 2
    assert "--benchmark: eval fusion takes the data and benchmark of its --scores folders" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_cli_fusion_refuses_damaged_scores(tmp_path, capsys):
    """A NaN in one run's scores.npy still gave a fused top-1; a truncated one a traceback. Now
    one line naming the file, and no fusion folder."""
    import os

    from tests.cli_errors import one_line_error

    runs, y = constructed(60)
    vruns, vy = constructed(30, seed=1)
    idx, vidx = np.arange(60), np.arange(30) + 1000
    fake_run(tmp_path / "joint", runs[0], idx, y, "joint", val=(vruns[0], vidx, vy))
    nan = runs[1].copy()
    nan[7, 2] = np.nan
    fake_run(tmp_path / "bone", nan, idx, y, "bone", val=(vruns[1], vidx, vy))
    dirs = [str(tmp_path / "joint"), str(tmp_path / "bone")]
    capsys.readouterr()
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f"), "--set", "weights=[1, 1]") == 2
    one_line_error(capsys, str(tmp_path / "bone" / "scores.npy"), "non-finite score")
    save_scores(tmp_path / "bone", runs[1], idx, y)
    vnan = vruns[1].copy()
    vnan[0, 0] = np.inf
    save_scores(tmp_path / "bone", vnan, vidx, vy, prefix="val_")
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f")) == 2  # weights searched
    one_line_error(capsys, str(tmp_path / "bone" / "val_scores.npy"), "non-finite score")
    save_scores(tmp_path / "bone", vruns[1], vidx, vy, prefix="val_")
    os.truncate(tmp_path / "bone" / "scores.npy", 300)
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f"), "--set", "weights=[1, 1]") == 2
    one_line_error(capsys, str(tmp_path / "bone" / "scores.npy"), "truncated: 300 of the")
    assert not (tmp_path / "f").exists()
    save_scores(tmp_path / "bone", runs[1], idx, y)
    assert cli("eval", "fusion", "--scores", *dirs, "--out", str(tmp_path / "f"), "--set", "weights=[1, 1]") == 0
