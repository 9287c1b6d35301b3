"""``pcm3 report`` on real eval folders of tiny data: tables, images, HTML, file rules."""

import json

import pytest

from pcm3.cli import main
from pcm3.errors import DataError
from pcm3.evaluation import report

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
