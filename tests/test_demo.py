"""``pcm3 demo`` end to end on tiny data: every step, resume, the folder rules."""

import json

import pytest

from pcm3.cli import main
from pcm3.data.synthetic import prepare_synthetic

FAST = ["--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--set", "train.batch_size=16",
        "--supervised-epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo") / "data"
    prepare_synthetic(data, seed=0, samples_per_class=4, num_subjects=4, progress=False)
    return data


def test_every_step_then_a_rerun_continues(tiny, tmp_path, capsys, monkeypatch):
    from pcm3.commands import demo

    # the suite and dense protocols at a few epochs: this test checks the wiring, not the figures
    monkeypatch.setitem(demo.SUITE_OVERRIDES, "linear", ["batch_size=16", "epochs=3", "milestones=[2]", "crops=2"])
    monkeypatch.setitem(demo.SUITE_OVERRIDES, "occlusion", ["batch_size=16", "epochs=3", "milestones=[2]", "crops=2"])
    monkeypatch.setitem(demo.SUITE_OVERRIDES, "semi", ["seeds=1", "epochs=2", "milestones=[1]", "fractions=[0.5]"])
    monkeypatch.setitem(demo.DENSE_OVERRIDES, "motion", ["observed=20", "predicted=5", "epochs=1", "milestones=[1]",
                                                        "max_train=32", "max_test=32"])
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(tiny), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    for row in ("raw_input", "random_init", "pretrained", "supervised (upper bound)"):
        assert row in printed
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["suite"]) == {"pretrained", "random_init", "raw_input", "supervised"}
    assert set(m["suite"]["pretrained"]) == {"linear", "knn", "occlusion", "semi"}
    assert "motion" in m["dense"] and "detection" not in m["dense"]  # --data: no untrimmed videos
    report = (out / "report.md").read_text()
    assert "Table 1" in report and "Table 6" in report and (out / "report.html").exists()
    assert json.loads((out / ".pcm3").read_text())["kind"] == "demo"
    # a rerun continues: pretraining and finished eval folders are reused
    before = (out / "eval" / "pretrained" / "linear" / "metrics.json").stat().st_mtime_ns
    assert main(["demo", "--data", str(tiny), "--out", str(out), *FAST, "--steps", "suite,report"]) == 0
    assert (out / "eval" / "pretrained" / "linear" / "metrics.json").stat().st_mtime_ns == before


def test_refuses_a_folder_it_did_not_make(tiny, tmp_path, capsys):
    box = tmp_path / "thesis"
    box.mkdir()
    (box / "thesis.tex").write_text("mine")
    assert main(["demo", "--data", str(tiny), "--out", str(box), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not create" in err
    assert sorted(p.name for p in box.iterdir()) == ["thesis.tex"]
    assert main(["demo", "--data", str(tiny), "--out", str(tmp_path / "d"), "--steps", "probe,plots", *FAST]) == 2
    assert "--steps" in capsys.readouterr().err
