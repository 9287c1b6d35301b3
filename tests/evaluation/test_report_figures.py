"""``pcm3 report``'s pictures (src/pcm3/evaluation/report_figures.py) from saved scores and features."""

from pcm3.evaluation import report_figures

from tests.mpl_backend import pdf_backend


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
        made = [report_figures.plot_confusion(runs[0], tmp_path / "c.png"),
                report_figures.plot_per_class(runs, tmp_path / "p.png"),
                report_figures.plot_feature_maps(runs, tmp_path / "f.png", method="pca"),
                report_figures.plot_occlusion(occ, tmp_path / "o.png")]
        unchanged()
    for path in made:
        assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
