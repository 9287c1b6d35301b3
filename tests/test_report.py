"""``pcm3 report`` (src/pcm3/commands/report.py): where the report may be written. The report's
contents are tested in tests/evaluation/test_report.py, test_report_tables.py, test_report_figures.py
and test_report_dense.py."""

from __future__ import annotations

import pytest

from pcm3.cli import main
from pcm3.outputs import record_path

from tests.evaluation.tiny import cli, tiny_data
from tests.test_bad_input import tree


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """A k-NN eval folder of tiny data (raw input: no encoder, a second), and that data."""
    data = tiny_data(tmp_path_factory)
    runs = tmp_path_factory.mktemp("report_cmd") / "runs"
    assert cli("eval", "knn", "--raw-input", "--data", str(data), "--benchmark", "xsub", "--out", str(runs / "knn"),
               "--set", "clip_len=16") == 0
    return runs, data


def test_report_is_not_written_inside_a_pcm3_folder(evals, tmp_path, capsys):
    """``--out DATA/r.md`` wrote the report, its HTML and images into a prepared folder, after which
    ``pcm3 prepare --overwrite`` refused it (files it did not write); likewise inside an eval
    folder being reported on."""
    runs, data = evals
    before = {"data": tree(data), "runs": tree(runs)}
    for out, kind in ((data / "r.md", "prepared"), (runs / "knn" / "r.md", "eval"),
                      (runs / "knn" / "notes" / "r.md", "eval")):
        assert main(["report", str(runs), "--out", str(out), "--embedding", "pca"]) == 2
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
        assert "r.md" in lines[0] and f"pcm3 {kind} folder" in lines[0], lines[0]
    assert {"data": tree(data), "runs": tree(runs)} == before
    # beside them (the folder holding the eval folders is the user's) it is written
    assert main(["report", str(runs), "--out", str(tmp_path / "r.md"), "--embedding", "pca"]) == 0
    assert (tmp_path / "r.md").is_file() and tree(runs) == before["runs"]
    capsys.readouterr()


@pytest.fixture()
def drawn(tmp_path):
    """A linear eval folder with saved test scores and features (the report draws images of it)."""
    import json

    import numpy as np

    from pcm3.evaluation.common import save_scores

    lin = tmp_path / "runs" / "lin"
    lin.mkdir(parents=True)
    g = np.random.default_rng(0)
    save_scores(lin, g.random((30, 3)), np.arange(30), np.arange(30) % 3)
    np.save(lin / "test_features.npy", g.normal(size=(30, 4)).astype(np.float32))
    (lin / "metrics.json").write_text(json.dumps({
        "task": "linear", "dataset": "tiny", "benchmark": "xsub", "encoder": {"kind": "pretrained"},
        "input": {"stream": "joint"}, "figures": {"top1": 40.0}, "seed": 0}))
    return tmp_path / "runs"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_overwrite_never_loses_a_changed_report(drawn, tmp_path, capsys):
    """``--overwrite`` replaced report.md whatever the user had written into it since (only its
    first-line marker was looked at); likewise an image replaced by the user's own."""
    out = tmp_path / "rep" / "report.md"
    report = ["report", str(drawn), "--out", str(out), "--embedding", "pca", "--max-points", "30"]
    assert main(report) == 0
    assert (tmp_path / "rep" / ".report.md.pcm3").is_file()        # what pcm3 wrote, with checksums
    assert main([*report, "--overwrite"]) == 0                         # unchanged: replaced
    capsys.readouterr()
    with open(out, "a") as f:
        f.write("\nMy conclusions: ...\n")
    before = tree(tmp_path / "rep")
    assert main([*report, "--overwrite"]) == 2
    line = _one_line_error(capsys)
    assert "report.md" in line and "changed since pcm3 wrote it" in line
    assert tree(tmp_path / "rep") == before
    # an image the user replaced (report.md and report.html unchanged)
    out2 = tmp_path / "rep2" / "report.md"
    assert main([*report[:3], str(out2), *report[4:]]) == 0
    image = tmp_path / "rep2" / "report_images" / "confusion.png"
    image.write_bytes((tmp_path / "rep2" / "report_images" / "per_class.png").read_bytes())
    capsys.readouterr()
    before = tree(tmp_path / "rep2")
    assert main([*report[:3], str(out2), *report[4:], "--overwrite"]) == 2
    line = _one_line_error(capsys)
    assert "report_images/confusion.png was changed since pcm3 wrote it" in line and "nothing was changed" in line
    assert tree(tmp_path / "rep2") == before


def test_overwrite_of_a_report_without_a_record(drawn, tmp_path, capsys):
    """Reports of older versions kept no record: one is replaced only while its markdown, HTML
    and images still match one another as pcm3 wrote them (and the user is told); an edited one
    is refused."""
    out = tmp_path / "rep" / "report.md"
    report = ["report", str(drawn), "--out", str(out), "--embedding", "pca", "--max-points", "30"]
    assert main(report) == 0
    record = tmp_path / "rep" / ".report.md.pcm3"
    record.unlink()                                                  # as an older pcm3 left it
    capsys.readouterr()
    assert main([*report, "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("note: ") and "older pcm3 that kept no record" in err and "replaced" in err
    assert record.is_file()
    for change in ("edit", "no html"):
        out = tmp_path / change / "report.md"
        assert main([*report[:3], str(out), *report[4:]]) == 0
        record_path(out).unlink()
        if change == "edit":
            out.write_text(out.read_text().replace("| pretrained |", "| pretrained (mine) |"))
        else:
            out.with_suffix(".html").unlink()
        capsys.readouterr()
        before = tree(tmp_path / change)
        assert main([*report[:3], str(out), *report[4:], "--overwrite"]) == 2
        line = _one_line_error(capsys)
        assert "older pcm3" in line and "nothing was changed" in line, line
        assert tree(tmp_path / change) == before
