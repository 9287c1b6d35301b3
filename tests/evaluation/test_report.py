"""``pcm3 report`` on real eval folders of tiny data: tables, images, HTML, file rules."""

import json
from pathlib import Path

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
    assert "| encoder | stream | ntu60 xsub | ntu120 xsub |" in md  # the paper's column order
    assert "| pretrained (`lin_a`) | joint | 80.0 | - |" in md and "| pretrained (`lin_b`) | joint | 70.0 | - |" in md
    assert "| pretrained | joint | - | 60.0 |" in md


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


def _section(md: str, title: str) -> str:
    """The part of ``md`` from the heading containing ``title`` to the next heading."""
    start = md.index(title)
    end = md.find("\n### ", start)
    return md[start:] if end < 0 else md[start:end]


def test_rows_that_differ_in_settings_are_footnoted_and_fusion_weights_shown():
    """Runs of 3 and 5 linear epochs, one trained on 768 clips (val_fraction 0.2) instead of 960,
    sat side by side told apart by folder alone; a searched fusion that gave 0.5/0/0.5 (really
    two streams) showed no weights."""
    from pcm3.evaluation.report import recognition_tables

    def lin(folder, epochs, val, train, stream="joint"):
        return _rec("linear", "ntu60", {"top1": 80.0}, folder=f"/runs/{folder}", seed=0,
                    protocol={"epochs": epochs, "val_fraction": val, "lr": 0.1, "num_workers": 4 if val else 0},
                    splits={"train": train, "test": 500}, input={"stream": stream})

    runs = [lin("e3", 3, 0.0, 960), lin("e5", 5, 0.2, 768), lin("bone", 3, 0.0, 960, "bone"),
            _rec("fusion", "ntu60", {"top1": 85.0}, runs=["a", "b", "c"], streams=["joint", "bone", "motion"],
                 run_kinds=["pretrained"] * 3, weights=[0.5, 0.0, 0.5], weights_searched=True)]
    table1 = _section("\n".join(recognition_tables(runs)), "Table 1")
    assert ("Settings differ between rows: epochs 5 (pretrained (`e5`) joint) vs 3 (the other linear rows); "
            "val_fraction 0.2 (pretrained (`e5`) joint) vs 0 (the other linear rows); training split 768 clips "
            "(pretrained (`e5`) joint) vs 960 clips (the other linear rows).") in table1
    assert "num_workers" not in table1 and "lr " not in table1   # no effect on figures / the same everywhere
    assert ("| pretrained | 3s fusion | 85.0 (weights joint 0.50, bone 0.00, motion 0.50, searched; "
            "bone unused: 2 of 3 in effect) |") in table1
    # rows of the same settings: no footnote
    same = _section("\n".join(recognition_tables([lin("e3", 3, 0.0, 960), lin("bone", 3, 0.0, 960, "bone")])),
                    "Table 1")
    assert "Settings differ" not in same


def test_notes_of_the_runs_and_the_papers_caveat_are_in_the_report():
    """Detection's notes ("a smoke test, not an evaluation", "encoder frozen; the paper fine-tunes")
    were in the folder's results.md only; the paper's rows stood beside runs of other settings
    without a word."""
    from pcm3.evaluation.report import detection_tables, recognition_tables, to_html

    def det(kind, folder, notes):
        f = {"mAP_a@0.5 (authors)": 10.0, "mAP_v@0.5 (authors)": 9.0}
        return {"task": "detection", "dataset": "pku1", "benchmark": "xsub", "encoder": {"kind": kind},
                "figures": f, "stream": "joint", "seed": 0, "_dir": f"/runs/{folder}", "notes": notes,
                "splits": {"train": 3, "test": 3}, "protocol": {"epochs": 1}}

    frozen = "encoder frozen; the paper fine-tunes"
    smoke = "train and test share 3 videos: a smoke test, not an evaluation"
    md = "\n".join(detection_tables([det("pretrained", "det", [smoke, frozen]), det("random_init", "rnd", [frozen])]))
    assert md.count(frozen) == 1 and f"- {frozen}\n" in md               # deduplicated, both rows have it
    assert f"- {smoke} (pretrained joint)" in md                         # one row's: named
    assert ("> **Warning: a smoke test, not an evaluation.** pretrained joint: " + smoke) in md
    assert "not comparable with the paper's rows" in md
    assert "Caveat: the paper's rows come from the authors' settings" in md and "training split 3 videos" in md
    html = to_html(md, Path("."))
    assert "<blockquote" in html and "<strong>Warning: a smoke test, not an evaluation.</strong>" in html
    lin = _rec("linear", "ntu60", {"top1": 20.0}, protocol={"epochs": 2}, splits={"train": 960},
               encoder={"kind": "pretrained", "pretrain_epochs": 1}, notes=["model of epoch 2 of 2"])
    table1 = _section("\n".join(recognition_tables([lin])), "Table 1")
    assert "| paper: PCM3 | joint | 83.9 |" in table1 and "- model of epoch 2 of 2" in table1
    assert "(here: pretraining epochs 1; epochs 2; training split 960 clips)" in table1
    assert "Warning" not in table1   # no smoke test: the caveat alone


def test_columns_in_the_papers_order_and_what_is_missing_named():
    """Columns were sorted alphabetically (ntu120 before ntu60), and a report of one linear
    folder said nothing of the baselines, streams, fusion, benchmarks and tables it lacks."""
    from pcm3.evaluation.report import recognition_tables

    cols = [("synthetic", "xsub"), ("pku2", "xsub"), ("ntu120", "xset"), ("ntu60", "xview"), ("ntu120", "xsub")]
    runs = [dict(_rec("linear", d, {"top1": 50.0}), benchmark=b) for d, b in cols]
    md = "\n".join(recognition_tables(runs))
    assert "| encoder | stream | ntu60 xview | ntu120 xsub | ntu120 xset | pku2 xsub | synthetic xsub |" in md
    md = "\n".join(recognition_tables([_rec("linear", "ntu60", {"top1": 80.0})]))
    assert ("missing: rows random init, raw input, supervised; streams bone, motion; 3-stream fusion; "
            "benchmarks ntu60 xview, ntu120 xsub, ntu120 xset, pku2 xsub.") in md
    # a stream present in one column only is named with the column it lacks
    md = "\n".join(recognition_tables([_rec("linear", "ntu60", {"top1": 80.0}),
                                       dict(_rec("linear", "ntu60", {"top1": 70.0}), input={"stream": "bone"}),
                                       dict(_rec("linear", "ntu60", {"top1": 70.0}), benchmark="xview")]))
    assert "streams bone (ntu60 xview), motion;" in md
    semi = _rec("semi", "ntu60", {"10%_top1_mean": 60.0, "10%_top1_std": 1.0})
    md = "\n".join(recognition_tables([semi]))
    assert "missing: labelled fractions 1%; benchmarks ntu60 xview." in md


def test_what_is_missing_and_what_differs_only_where_it_applies():
    """A report on the built-in data listed the paper's NTU/PKU benchmarks as missing; the
    supervised row's training settings and occlusion's per-row linear_run folder were listed as
    settings that differ from the other rows'."""
    from pcm3.evaluation.report import recognition_tables

    def lin(kind, **protocol):
        return _rec("linear", "synthetic", {"top1": 50.0}, kind=kind, folder=f"/runs/{kind}",
                    protocol={"epochs": 3, **protocol})

    md = "\n".join(recognition_tables([lin("pretrained", supervised={"epochs": 60}),
                                       lin("supervised", supervised={"epochs": 1})]))
    table1 = _section(md, "Table 1")
    assert "benchmarks" not in table1 and "missing: rows random init, raw input;" in table1
    assert "Settings differ" not in table1  # supervised.epochs: the supervised row's own training
    occ = [_rec("occlusion", "synthetic", {"clean_top1": 50.0}, kind=k, folder=f"/runs/{k}",
                protocol={"linear_run": f"/runs/{k}/linear"}) for k in ("pretrained", "random_init")]
    assert "linear_run" not in "\n".join(recognition_tables(occ))
    two_sup = "\n".join(recognition_tables([lin("supervised", supervised={"epochs": 1}),
                                            dict(lin("supervised", supervised={"epochs": 5}), _dir="/runs/s5")]))
    assert "supervised.epochs 1" in two_sup or "supervised.epochs 5" in two_sup  # between supervised rows it counts


def test_report_names_the_tables_it_lacks(tmp_path):
    runs = tmp_path / "runs"
    (runs / "lin").mkdir(parents=True)
    (runs / "lin" / "metrics.json").write_text(json.dumps(_rec("linear", "ntu60", {"top1": 80.0})))
    md = report.write_report([runs], tmp_path / "r" / "report.md", embedding="pca")["markdown"].read_text()
    assert ("Not in this report (no eval folders of these tasks): semi-supervised (pcm3 eval semi); k-NN retrieval "
            "(pcm3 eval knn); occlusion (pcm3 eval occlusion); temporal action detection (pcm3 eval detection); "
            "motion prediction (pcm3 eval motion).") in md


def test_occlusion_delta_over_different_benchmarks_is_noted():
    """Table 4's Δ averages the drop over the benchmarks a row has: a row with xsub only sat
    beside rows (and the paper) averaging over xsub and xview without a word."""
    from pcm3.evaluation.report import recognition_tables

    def occ(bench, kind="pretrained"):
        return {"task": "occlusion", "dataset": "ntu60", "benchmark": bench, "encoder": {"kind": kind},
                "input": {"stream": "joint"}, "figures": {"clean_top1": 80.0, "spatial_top1": 70.0,
                                                          "temporal_top1": 75.0, "spatial_drop": 10.0,
                                                          "temporal_drop": 5.0}}

    md = "\n".join(recognition_tables([occ("xsub"), occ("xview"), occ("xsub", "random_init")]))
    shape = md[md.index("paper's shape"):]
    assert ("The Δ of these rows average over different benchmarks (a row lacks one), so they do not compare: "
            "spatial Δ over xsub (random init joint) vs xsub, xview (pretrained joint, paper: PCM3)") in shape
    md = "\n".join(recognition_tables([occ("xsub"), occ("xview"), occ("xsub", "random_init"),
                                       occ("xview", "random_init")]))
    assert "average over different benchmarks" not in md


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
