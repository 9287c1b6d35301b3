"""``pcm3 report`` (src/pcm3/commands/report.py): where the report may be written. The report's
contents are tested in tests/evaluation/test_report.py."""

from __future__ import annotations

import pytest

from pcm3.cli import main

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
