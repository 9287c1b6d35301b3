"""``pcm3 report`` on real eval folders of tiny data: tables, images, HTML, file rules."""

import json
from pathlib import Path

import pytest

from pcm3.cli import main
from pcm3.errors import DataError
from pcm3.evaluation import report

from .test_report_tables import _rec
from .tiny import cli, encoder_file, fast, tiny_data


def test_report_from_eval_folders(tmp_path_factory, tmp_path, capsys, monkeypatch):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    base = ["--data", str(data), "--benchmark", "xsub"]
    runs = tmp_path / "runs"
    assert cli("eval", "linear", "--encoder", str(enc), "--out", str(runs / "lin"), *base, *fast()) == 0
    assert cli("eval", "linear", "--random-init", "--encoder", str(enc), "--seed", "5", "--out", str(runs / "lin_rnd"),
               *base, *fast()) == 0
    assert cli("eval", "occlusion", "--encoder", str(enc), "--out", str(runs / "occ"), *base, *fast()) == 0
    assert cli("eval", "knn", "--raw-input", "--out", str(runs / "knn_raw"), *base, "--set", "clip_len=16") == 0
    out = tmp_path / "rep" / "report.md"
    assert main(["report", str(runs), "--out", str(out), "--max-points", "60"]) == 0
    md = out.read_text()
    for text in ("Table 1: linear evaluation", "Table 3: k-NN", "Table 4: occlusion", "| pretrained |",
                 "random init", "raw input", "synthetic xsub", "![Confusion matrix](report_images/confusion.png)"):
        assert text in md, text
    images = {p.name for p in (tmp_path / "rep" / "report_images").iterdir()}
    assert {"confusion.png", "per_class.png", "features_2d.png", "occlusion.png"} <= images
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html
    # the same report again: refused without --overwrite, replaced with it; a foreign file is never replaced
    assert main(["report", str(runs), "--out", str(out), "--embedding", "pca"]) == 2
    assert main(["report", str(runs), "--out", str(out), "--embedding", "pca", "--overwrite"]) == 0
    foreign = tmp_path / "notes.md"
    foreign.write_text("mine\n")
    assert main(["report", str(runs), "--out", str(foreign), "--overwrite"]) == 2 and foreign.read_text() == "mine\n"
    assert main(["report", str(tmp_path / "rep" / "report_images"), "--out", str(tmp_path / "r2.md")]) == 2
    err = capsys.readouterr().err
    assert "not written by pcm3 report" in err and "holds no eval results" in err
    assert json.loads((runs / "lin" / "metrics.json").read_text())["encoder"]["kind"] == "pretrained"
    # an error after the images are drawn leaves no part of the report, and an old report as it was
    before = {p.name: p.read_bytes() for p in (tmp_path / "rep").rglob("*") if p.is_file()}

    def broken(md, images):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "to_html", broken)
    for target, overwrite in ((tmp_path / "rep3" / "report.md", False), (out, True)):
        with pytest.raises(DataError, match="disk full"):
            report.write_report([runs], target, overwrite=overwrite, embedding="pca")
    assert not (tmp_path / "rep3").exists() or not any((tmp_path / "rep3").iterdir())
    assert {p.name: p.read_bytes() for p in (tmp_path / "rep").rglob("*") if p.is_file()} == before


def test_same_folder_names_from_two_benchmark_outputs_both_shown(tmp_path):
    """Two `pcm3 benchmark` outputs (seeds 0 and 1) hold `joint_pretrained/linear` each: both rows
    are kept, told apart by their paths; a folder reached twice counts once."""
    from pcm3.evaluation.report import find_runs
    from pcm3.evaluation.report_tables import recognition_tables

    runs = [_rec("linear", "ntu60", {"top1": 80.0}, folder="/b0/joint_pretrained/linear", seed=0),
            _rec("linear", "ntu60", {"top1": 70.0}, folder="/b1/joint_pretrained/linear", seed=1)]
    md = "\n".join(recognition_tables(runs))
    assert "| pretrained (`b0/joint_pretrained/linear`) | joint | 80.0 |" in md
    assert "| pretrained (`b1/joint_pretrained/linear`) | joint | 70.0 |" in md
    lin = tmp_path / "b0" / "lin"
    lin.mkdir(parents=True)
    (lin / "metrics.json").write_text(json.dumps(runs[0]))
    assert find_runs([tmp_path / "b0", lin]) == [lin]


def test_report_on_no_usable_folder_is_a_one_line_error(tmp_path, capsys):
    for name, metrics in (("tsne", {"task": "tsne", "figures": {}}), ("bare", {"task": "linear"})):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.json").write_text(json.dumps(metrics))
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep" / "report.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no usable eval results" in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "rep" / "report.md").exists()
    (tmp_path / "notes.txt").write_text("mine")   # a file was "no such folder"
    assert main(["report", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "rep" / "report.md")]) == 2
    assert "notes.txt: a file, not a folder" in capsys.readouterr().err


def test_report_names_folders_as_shown(tmp_path):
    """`pcm3 benchmark` writes its report inside a temporary folder: the text names the final one."""
    tmp = tmp_path / ".bench.x.tmp"
    (tmp / "lin").mkdir(parents=True)
    (tmp / "lin" / "metrics.json").write_text(json.dumps(_rec("linear", "synthetic", {"top1": 10.0})))
    report.write_report([tmp], tmp / "report.md", embedding="pca", shown_as=(tmp, tmp_path / "bench"))
    md = (tmp / "report.md").read_text()
    assert f"`{tmp_path / 'bench' / 'lin'}`" in md and ".tmp" not in md


def test_find_runs_looks_inside_a_demo_folder(tmp_path):
    """A demo folder's own metrics.json (the probe summary) stopped the search: `pcm3 report
    pcm3-demo` found no eval results and a mix skipped the demo's 16 eval folders."""
    import json as _json

    from pcm3.evaluation.report import find_runs

    demo = tmp_path / "pcm3-demo"
    for sub in ("eval/pretrained/linear", "eval/random_init/knn"):
        (demo / sub).mkdir(parents=True)
        (demo / sub / "metrics.json").write_text(_json.dumps({"task": sub.rsplit("/", 1)[1]}))
    (demo / "metrics.json").write_text(_json.dumps({"pretrained": {"linear": 70.0}}))
    (demo / ".pcm3").write_text(_json.dumps({"kind": "demo", "version": 1}))
    assert sorted(p.relative_to(demo).as_posix() for p in find_runs([demo])) == [
        "eval/pretrained/linear", "eval/random_init/knn"]


def test_report_names_the_tables_it_lacks(tmp_path):
    runs = tmp_path / "runs"
    (runs / "lin").mkdir(parents=True)
    (runs / "lin" / "metrics.json").write_text(json.dumps(_rec("linear", "ntu60", {"top1": 80.0})))
    md = report.write_report([runs], tmp_path / "r" / "report.md", embedding="pca")["markdown"].read_text()
    assert ("Not in this report (no eval folders of these tasks): semi-supervised (pcm3 eval semi); k-NN retrieval "
            "(pcm3 eval knn); occlusion (pcm3 eval occlusion); temporal action detection (pcm3 eval detection); "
            "motion prediction (pcm3 eval motion).") in md


def _scored_folder(folder: Path, task: str = "linear", stream: str = "joint", shift: float = 0.0, **extra) -> Path:
    import numpy as np

    from pcm3.evaluation.common import save_scores

    folder.mkdir(parents=True)
    labels = np.arange(30) % 3
    save_scores(folder, np.random.default_rng(0).random((30, 3)) + shift, np.arange(30), labels)
    (folder / "metrics.json").write_text(json.dumps({
        "task": task, "dataset": "tiny", "benchmark": "xsub", "encoder": {"kind": "pretrained"},
        "input": {"stream": stream}, "figures": {"top1": 40.0}, "seed": 0, **extra}))
    return folder


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_fusion_of_recomputed_or_removed_scores_is_marked_stale(tmp_path, monkeypatch):
    """A fusion folder kept its fused top-1 after one of its runs was evaluated again: the report
    showed a figure of scores that no longer exist."""
    import numpy as np

    ev = tmp_path / "ev"
    runs = [_scored_folder(ev / s, stream=s) for s in ("joint", "bone", "motion")]
    names = ["ev/joint", "ev/bone", str(runs[2])]    # as given to pcm3 eval fusion: relative, or absolute
    fus = ev / "fus"
    fus.mkdir()
    metrics = {"task": "fusion", "dataset": "tiny", "benchmark": "xsub", "figures": {"top1": 50.0}, "runs": names,
               "streams": ["joint", "bone", "motion"], "run_kinds": ["pretrained"] * 3, "weights": [0.4, 0.3, 0.3],
               "weights_searched": False, "prefix": "", "scores_sha256": [_sha(r / "scores.npy") for r in runs]}
    (fus / "metrics.json").write_text(json.dumps(metrics))
    old = tmp_path / "old_fus"   # a fusion of an older pcm3: no checksums, no check
    old.mkdir()
    (old / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "scores_sha256"}))
    monkeypatch.chdir(tmp_path / "ev")   # not where the fusion ran: relative names found below its folders

    def table(n):
        out = tmp_path / f"r{n}" / "report.md"
        return report.write_report([ev, old], out, embedding="pca", max_points=30)["markdown"].read_text()

    assert "stale" not in table(1)
    np.save(runs[1] / "scores.npy", np.ones((30, 3), dtype=np.float32))   # bone evaluated again
    md = table(2)
    assert md.count("⚠ stale |") == 1   # the older fusion (no checksums) is not marked
    assert ("| pretrained (`ev/fus`) | 3s fusion | 50.0 (weights joint 0.40, bone 0.30, motion 0.30, given) ⚠ stale |"
            in md)
    assert ("> **⚠ stale**: pretrained (`ev/fus`) 3s fusion: `ev/bone`: scores.npy recomputed after this fusion; "
            "rerun pcm3 eval fusion.") in md
    assert f"- `{fus}`: fusion, pretrained, 3s fusion, 0 s, ⚠ stale" in md
    import shutil

    shutil.rmtree(runs[2])
    md = table(3)
    assert f"`{runs[2]}`: scores.npy is gone" in md and "`ev/bone`: scores.npy recomputed" in md
    # semi fusions: the scores of their prefix
    semi = [_scored_folder(tmp_path / "semi" / s, task="semi", stream=s) for s in ("joint", "bone")]
    for r in semi:
        (r / "scores.npy").rename(r / "frac0.1_seed0_scores.npy")
    sf = tmp_path / "semi" / "fus"
    sf.mkdir()
    (sf / "metrics.json").write_text(json.dumps({
        **metrics, "runs": [str(r) for r in semi], "streams": ["joint", "bone"], "prefix": "frac0.1_seed0_",
        "protocol": {"prefix": "frac0.1_seed0_"},
        "scores_sha256": [_sha(r / "frac0.1_seed0_scores.npy") for r in semi]}))
    md = report.write_report([sf], tmp_path / "r4" / "report.md", embedding="pca")["markdown"].read_text()
    assert "stale" not in md and "| pretrained | 2s fusion, semi 10% seed 0 | 10%: 50.0 (weights" in md


def test_a_benchmark_report_finds_its_fused_runs_in_its_temporary_folder(tmp_path):
    """``pcm3 benchmark`` names the fused runs where they will be; its report, written before the
    rename, looks for them in the temporary folder (else every fusion there was "gone")."""
    tmp, final = tmp_path / ".bench.tmp", tmp_path / "bench"
    runs = [_scored_folder(tmp / f"{s}_pretrained" / "linear", stream=s) for s in ("joint", "bone")]
    fus = tmp / "fusion_pretrained"
    fus.mkdir()
    (fus / "metrics.json").write_text(json.dumps({
        "task": "fusion", "dataset": "tiny", "benchmark": "xsub", "figures": {"top1": 50.0},
        "runs": [str(final / r.relative_to(tmp)) for r in runs], "streams": ["joint", "bone"],
        "scores_sha256": [_sha(r / "scores.npy") for r in runs], "prefix": ""}))
    report.write_report([tmp], tmp / "report.md", embedding="pca", shown_as=(tmp, final))
    assert "stale" not in (tmp / "report.md").read_text()


def test_a_moved_benchmark_folder_keeps_its_fusions_checked(tmp_path):
    """The fused runs are recorded by absolute path: a moved or copied benchmark folder marked
    every fusion stale ("scores.npy is gone"); a changed score there still is."""
    old = tmp_path / "bench"
    runs = [_scored_folder(old / f"{s}_pretrained" / "linear", stream=s) for s in ("joint", "bone")]
    fus = old / "fusion_pretrained"
    fus.mkdir()
    (fus / "metrics.json").write_text(json.dumps({
        "task": "fusion", "dataset": "tiny", "benchmark": "xsub", "figures": {"top1": 50.0},
        "runs": [str(r) for r in runs], "streams": ["joint", "bone"],
        "scores_sha256": [_sha(r / "scores.npy") for r in runs], "prefix": ""}))
    moved = tmp_path / "elsewhere" / "bench_moved"
    moved.parent.mkdir()
    old.rename(moved)
    report.write_report([moved], tmp_path / "r1" / "report.md", embedding="pca")
    assert "stale" not in (tmp_path / "r1" / "report.md").read_text()
    import numpy as np

    from pcm3.evaluation.common import save_scores

    save_scores(moved / "bone_pretrained" / "linear", np.random.default_rng(0).random((30, 3)) + 1.0, np.arange(30),
                np.arange(30) % 3)  # recomputed since
    report.write_report([moved], tmp_path / "r2" / "report.md", embedding="pca")
    assert "recomputed after this fusion" in (tmp_path / "r2" / "report.md").read_text()


def test_runs_list_shows_every_seed_of_a_semi_run(tmp_path):
    """A semi run of seeds [0, 1] was listed as "seed 0"."""
    folder = tmp_path / "runs" / "semi"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(_rec("semi", "ntu60", {"10%_top1_mean": 60.0}, seed=0,
                                                         seeds=[0, 1])))
    md = report.write_report([tmp_path / "runs"], tmp_path / "r" / "report.md")["markdown"].read_text()
    assert f"- `{folder}`: semi, pretrained, joint, seeds 0, 1, 0 s" in md


def test_the_confusion_matrix_names_its_run_among_several(tmp_path, monkeypatch):
    """Of two pretrained joint linear runs, the report's confusion matrix showed one without
    saying which: write_report passes the linear runs it chose from."""
    from pcm3.evaluation import report_figures

    _scored_folder(tmp_path / "runs" / "a" / "linear")
    _scored_folder(tmp_path / "runs" / "b" / "linear", shift=0.1)
    titles = []
    real = report_figures._figure

    def capture(**kwargs):
        fig = real(**kwargs)
        titles.append(fig)
        return fig

    monkeypatch.setattr(report_figures, "_figure", capture)
    report.write_report([tmp_path / "runs"], tmp_path / "r" / "report.md", embedding="pca")
    texts = [t.get_text() for fig in titles for ax in fig.axes for t in [ax.title]]
    confusion = [t for t in texts if t.startswith("Confusion matrix")]
    assert len(confusion) == 1 and confusion[0].endswith("\nrun a/linear"), confusion


def _pngs(folder: Path) -> set:
    return {p.name for p in (folder / "report_images").glob("*.png")}


def test_damaged_scores_or_features_leave_their_figures_out_with_a_warning(tmp_path, capsys):
    """A truncated test_features.npy crashed `pcm3 report` (`ValueError: EOF`); a truncated
    scores.npy silently left every figure out. Now the report is written, each damaged file is
    named once in a warning on stderr and in the report, with the figures it left out."""
    import os

    import numpy as np

    runs = tmp_path / "runs"
    joint = _scored_folder(runs / "joint")
    rnd = _scored_folder(runs / "rnd", encoder={"kind": "random_init"})
    for folder in (joint, rnd):
        np.save(folder / "test_features.npy", np.random.default_rng(1).normal(size=(30, 5)).astype(np.float16))
    os.truncate(joint / "test_features.npy", 100)
    out = tmp_path / "rep" / "report.md"
    capsys.readouterr()
    assert main(["report", str(runs), "--out", str(out), "--embedding", "pca"]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "Traceback" not in err, err
    assert warnings[0].startswith(f"warning: {joint / 'test_features.npy'}: truncated")
    assert warnings[0].endswith('; its run left out of figure "Test features in 2-D"'), warnings[0]
    md = out.read_text()
    assert f"> **left out**: {joint / 'test_features.npy'}: truncated" in md
    assert _pngs(tmp_path / "rep") == {"confusion.png", "per_class.png", "features_2d.png"}
    # the pretrained run's scores damaged: the figures of it alone are left out, named once
    size = (joint / "scores.npy").stat().st_size
    os.truncate(joint / "scores.npy", 300)
    out2 = tmp_path / "rep2" / "report.md"
    assert main(["report", str(runs), "--out", str(out2), "--embedding", "pca"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings == [f"warning: {joint / 'scores.npy'}: truncated: 300 of the {size} bytes its header announces "
                        "(cut short while written or copied; rerun what wrote it); figure \"Confusion matrix\" left "
                        "out; its run left out of figures \"Per-class accuracy\", \"Test features in 2-D\""], warnings
    assert _pngs(tmp_path / "rep2") == {"per_class.png", "features_2d.png"}
    assert "figure \"Confusion matrix\" left out" in out2.read_text()
    # NaN scores: never drawn
    save = np.random.default_rng(0).random((30, 3))
    save[0, 0] = np.nan
    from pcm3.evaluation.common import save_scores

    save_scores(joint, save, np.arange(30), np.arange(30) % 3)
    save_scores(rnd, save, np.arange(30), np.arange(30) % 3)
    out3 = tmp_path / "rep3" / "report.md"
    assert main(["report", str(runs), "--out", str(out3), "--embedding", "pca"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2 and all("non-finite score" in w for w in warnings), warnings
    assert _pngs(tmp_path / "rep3") == set()
    assert "| pretrained |" in out3.read_text()  # the tables are still there


def test_report_threads_below_one_is_refused(tmp_path, capsys):
    from tests.cli_errors import one_line_error

    _scored_folder(tmp_path / "runs" / "joint")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep" / "r.md"), "--threads", "-1"]) == 2
    one_line_error(capsys, "--threads: must be >= 1, got -1")
    assert not (tmp_path / "rep").exists()
