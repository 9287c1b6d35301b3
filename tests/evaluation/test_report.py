"""``pcm3 report`` on real eval folders of tiny data: tables, images, HTML, file rules."""

import json

import pytest

from pcm3.cli import main
from pcm3.errors import DataError
from pcm3.evaluation import report

from tests.mpl_backend import pdf_backend

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


def test_tables_put_the_paper_beside_matching_data_only():
    from pcm3.evaluation.report import recognition_tables

    def run(task, dataset, figures, kind="pretrained", **extra):
        return {"task": task, "dataset": dataset, "benchmark": "xsub", "encoder": {"kind": kind},
                "input": {"stream": "joint"}, "figures": figures, **extra}

    runs = [run("linear", "ntu60", {"top1": 80.0}), run("linear", "synthetic", {"top1": 40.0}, kind="random_init"),
            run("fusion", "ntu60", {"top1": 85.0}, run_kinds=["pretrained"] * 3, runs=[1, 2, 3]),
            run("knn", "synthetic", {"top1": 30.0, "knn1": 30.0, "knn5": 31.0})]
    md = "\n".join(recognition_tables(runs))
    assert "| encoder | stream | ntu60 xsub | synthetic xsub |" in md
    assert "| pretrained | joint | 80.0 | - |" in md and "| random init | joint | - | 40.0 |" in md
    assert "| paper: PCM3 | joint | 83.9 | - |" in md and "| paper: 3s-PCM3 | 3s fusion | 87.4 | - |" in md
    knn = md[md.index("Table 3"):]
    assert "paper" not in knn.split("\n\n")[1]   # no NTU k-NN run: no paper row in Table 3


def test_occlusion_in_the_papers_shape():
    """Table 4 as the paper lays it out: spatial xsub, xview, Δ, temporal xsub, xview, Δ, Δ the
    mean drop over the two benchmarks; the paper's row (with its Δ) beside NTU 60 only."""
    from pcm3.evaluation.report import recognition_tables

    def occ(dataset, bench, s, t, clean=80.0):
        return {"task": "occlusion", "dataset": dataset, "benchmark": bench, "encoder": {"kind": "pretrained"},
                "input": {"stream": "joint"}, "figures": {"clean_top1": clean, "spatial_top1": s, "temporal_top1": t,
                                                          "spatial_drop": clean - s, "temporal_drop": clean - t}}

    md = "\n".join(recognition_tables([occ("ntu60", "xsub", 70.0, 74.0), occ("ntu60", "xview", 76.0, 78.0, clean=84.0),
                                        occ("synthetic", "xsub", 40.0, 30.0, clean=60.0)]))
    assert "| encoder | stream | spatial xsub | spatial xview | spatial Δ | temporal xsub | temporal xview | temporal Δ |" in md
    assert "| pretrained | joint | 70.0 | 76.0 | 9.0 | 74.0 | 78.0 | 6.0 |" in md
    assert "| paper: PCM3 | joint | 80.8 | 87.0 | 3.3 | 77.6 | 86.1 | 5.4 |" in md
    synthetic = md[md.index("paper's shape, synthetic"):]
    assert "| pretrained | joint | 40.0 | 20.0 | 30.0 | 30.0 |" in synthetic and "paper" not in synthetic.split("\n\n")[1]


def test_runs_that_share_a_cell_each_get_a_row():
    """Two pretrained joint encoders (seeds, ablation variants) on the same data: both shown,
    labelled by folder, neither overwriting the other; a lone run keeps the plain label."""
    from pcm3.evaluation.report import recognition_tables

    def run(folder, top1, dataset="ntu60"):
        return {"task": "linear", "dataset": dataset, "benchmark": "xsub", "encoder": {"kind": "pretrained"},
                "input": {"stream": "joint"}, "figures": {"top1": top1}, "_dir": f"/runs/{folder}"}

    md = "\n".join(recognition_tables([run("lin_a", 80.0), run("lin_b", 70.0), run("lin_c", 60.0, "ntu120")]))
    assert "| encoder | stream | ntu120 xsub | ntu60 xsub |" in md
    assert "| pretrained (`lin_a`) | joint | - | 80.0 |" in md and "| pretrained (`lin_b`) | joint | - | 70.0 |" in md
    assert "| pretrained | joint | 60.0 | - |" in md


def _rec(task, dataset, figures, kind="pretrained", folder="/runs/x", **extra):
    return {"task": task, "dataset": dataset, "benchmark": "xsub", "encoder": {"kind": kind},
            "input": {"stream": "joint"}, "figures": figures, "_dir": folder, **extra}


def test_paper_3s_figure_only_beside_a_joint_bone_motion_linear_fusion():
    """Table 1's 3s-PCM3 figure stands beside a fusion of the joint, bone and motion linear scores
    on the same data only: not beside a 2-stream or 3-joint fusion, a joint-only NTU column, or
    fused semi-supervised scores (those go to Table 2)."""
    from pcm3.evaluation.report import recognition_tables

    fus = dict(run_kinds=["pretrained"] * 3, runs=["a", "b", "c"])
    cases = [
        [_rec("linear", "ntu60", {"top1": 80.0}),
         _rec("fusion", "ntu60", {"top1": 85.0, "joint_top1": 80.0, "bone_top1": 79.0},
              run_kinds=["pretrained"] * 2, runs=["a", "b"])],
        [_rec("linear", "ntu60", {"top1": 80.0}), _rec("fusion", "synthetic", {"top1": 85.0}, **fus)],
        [_rec("fusion", "ntu60", {"top1": 55.0, "run1_joint_top1": 1.0, "run2_joint_top1": 1.0,
                                  "run3_joint_top1": 1.0}, **fus)],
        [_rec("fusion", "ntu60", {"top1": 55.0}, protocol={"prefix": "frac0.01_seed0_"}, **fus)],
    ]
    for runs in cases:
        md = "\n".join(recognition_tables(runs))
        assert "3s-PCM3" not in md and "87.4" not in md, md
    md = "\n".join(recognition_tables(cases[2]))
    assert "| pretrained | 3-run fusion (joint, joint, joint) | 55.0 |" in md
    md = "\n".join(recognition_tables(cases[3]))
    assert "Table 1" not in md and "| pretrained | 3s fusion, semi 1% seed 0 | 1%: 55.0 |" in md
    md = "\n".join(recognition_tables([_rec("fusion", "ntu60", {"top1": 86.0}, streams=["joint", "bone", "motion"],
                                            **fus)]))
    assert "| pretrained | 3s fusion | 86.0 |" in md and "| paper: 3s-PCM3 | 3s fusion | 87.4 |" in md


def test_same_folder_names_from_two_benchmark_outputs_both_shown(tmp_path):
    """Two `pcm3 benchmark` outputs (seeds 0 and 1) hold `joint_pretrained/linear` each: both rows
    are kept, told apart by their paths; a folder reached twice counts once."""
    from pcm3.evaluation.report import find_runs, recognition_tables

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


def test_pictures_leave_the_matplotlib_backend_alone(tmp_path):
    """``matplotlib.use("Agg")`` stopped a notebook's inline plots after a report."""
    import numpy as np

    from pcm3.evaluation.common import save_scores

    g = np.random.default_rng(0)
    runs = []
    for kind in ("pretrained", "random_init"):
        folder = tmp_path / kind
        folder.mkdir()
        labels = np.arange(30) % 3
        save_scores(folder, g.random((30, 3)), np.arange(30), labels)
        np.save(folder / "test_features.npy", g.normal(size=(30, 5)).astype(np.float32))
        runs.append({"_dir": str(folder), "task": "linear", "encoder": {"kind": kind}, "input": {"stream": "joint"},
                     "dataset": "tiny", "benchmark": "xsub", "class_names": ["a", "b", "c"]})
    bins = [{"low": 0.0, "high": 0.2, "top1": 50.0}, {"low": 0.2, "high": 0.4, "top1": 40.0}]
    occ = [{**runs[0], "task": "occlusion", "by_ratio": {"spatial": bins}, "figures": {"clean_top1": 60.0}}]
    with pdf_backend() as unchanged:
        made = [report.plot_confusion(runs[0], tmp_path / "c.png"), report.plot_per_class(runs, tmp_path / "p.png"),
                report.plot_feature_maps(runs, tmp_path / "f.png", method="pca"),
                report.plot_occlusion(occ, tmp_path / "o.png")]
        unchanged()
    for path in made:
        assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
