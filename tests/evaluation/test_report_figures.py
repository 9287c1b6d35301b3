"""``pcm3 report``'s pictures (src/pcm3/evaluation/report_figures.py) from saved scores and features: the
matplotlib backend left alone; several runs of one row each named, one colour per occlusion run,
legends beside or below the plots and inside the saved image; the dense images' captions."""

import struct

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from pcm3.evaluation import report_figures
from pcm3.evaluation.common import save_scores

from tests.mpl_backend import pdf_backend


def test_pictures_leave_the_matplotlib_backend_alone(tmp_path):
    """``matplotlib.use("Agg")`` stopped a notebook's inline plots after a report."""
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


# ---- several runs of one row (a user's report folder: four pretrained-joint occlusion runs of
# different encoders, two linear runs, two motion horizons): every run named, nothing cut off

@pytest.fixture
def drawn(monkeypatch):
    """The figures the ``plot_*`` functions draw, in order (``_figure`` recorded)."""
    made = []
    real = report_figures._figure

    def record(**kwargs):
        made.append(real(**kwargs))
        return made[-1]

    monkeypatch.setattr(report_figures, "_figure", record)
    return made


def png_size(path):
    """``(width, height)`` in pixels from a PNG's IHDR."""
    return struct.unpack(">II", path.read_bytes()[16:24])


def inside(box, outer, tol=1.0):
    return (box.x0 >= outer.x0 - tol and box.y0 >= outer.y0 - tol and box.x1 <= outer.x1 + tol
            and box.y1 <= outer.y1 + tol)


def legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def linear_run(folder, kind="pretrained", *, dataset="tiny", k=3, names=None, seed=0, features=False):
    folder.mkdir(parents=True)
    g = np.random.default_rng(seed)
    labels = np.arange(12 * k) % k
    save_scores(folder, g.random((len(labels), k)), np.arange(len(labels)), labels)
    if features:
        np.save(folder / "test_features.npy", g.normal(size=(len(labels), 5)).astype(np.float32))
    return {"_dir": str(folder), "task": "linear", "encoder": {"kind": kind}, "input": {"stream": "joint"},
            "dataset": dataset, "benchmark": "xsub", "class_names": names or [f"c{i}" for i in range(k)]}


def occlusion_run(folder, top=50.0, kinds=("spatial", "temporal"), dataset="tiny"):
    bins = [{"low": 0.1 * i, "high": 0.1 * (i + 1), "top1": top - 5 * i} for i in range(5)]
    return {"_dir": str(folder), "task": "occlusion", "encoder": {"kind": "pretrained"}, "input": {"stream": "joint"},
            "dataset": dataset, "benchmark": "xsub", "by_ratio": {k: bins for k in kinds},
            "figures": {"clean_top1": top + 5}}


def test_occlusion_one_colour_per_run_one_style_per_kind_and_the_legend_outside(tmp_path, drawn):
    """Four pretrained-joint runs: one colour, "pretrained (joint), spatial" four times, and a legend
    over the lines that ran past the figure's bottom edge."""
    runs = [occlusion_run(tmp_path / f"enc{i}" / "joint_pretrained" / "occlusion", top=60 - 5 * i) for i in range(4)]
    path = report_figures.plot_occlusion(runs, tmp_path / "o.png")
    fig = drawn[-1]
    texts = legend_texts(fig)
    assert len(texts) == len(set(texts))                                      # no entry twice
    for i in range(4):                                                        # each run named by its folder
        assert [t for t in texts if f"enc{i}/joint_pretrained/occlusion" in t and t.startswith("pretrained (joint)")]
    assert {"spatial occlusion", "temporal occlusion", "clean (no occlusion)"} <= set(texts)
    ax = fig.axes[0]
    data = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]     # the binned lines, not the clean ones
    assert len(data) == 8
    colours = {}
    for line in data:
        colours.setdefault(to_rgba(line.get_color()), set()).add(line.get_linestyle())
    assert len(colours) == 4                                                  # a colour per run
    assert all(styles == {"-", "--"} for styles in colours.values())          # a line style per kind
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert inside(legend, fig.bbox)                                           # not cut off
    assert legend.x0 >= ax.get_window_extent().x1                             # beside the axes, not over the lines
    width, height = png_size(path)
    assert width >= legend.x1 * 110 / fig.dpi - 2 and width > 6.4 * 110      # the image holds the legend


def test_occlusion_labels_name_columns_and_folders_only_where_needed(tmp_path):
    a = occlusion_run(tmp_path / "a" / "occ")
    b = occlusion_run(tmp_path / "b" / "occ", kinds=("spatial",))
    alone = occlusion_run(tmp_path / "c" / "occ", dataset="other")
    labels, styles, one_column = report_figures.occlusion_legend([a, b])
    assert labels == ["pretrained (joint), a/occ", "pretrained (joint), b/occ"] and one_column
    assert styles == {"spatial": ("-", "o"), "temporal": ("--", "s")}
    labels, _, one_column = report_figures.occlusion_legend([a, alone])
    assert labels == ["pretrained (joint), tiny xsub", "pretrained (joint), other xsub"] and not one_column
    # the same tags as the tables give the rows (report_tables._distinct_tags)
    assert report_figures._tags([a, b, alone]) == ["a/occ", "b/occ", ""]


def test_confusion_and_per_class_name_the_run_among_several(tmp_path, drawn):
    """Two pretrained-joint linear runs: the pictures did not say which one they show."""
    first = linear_run(tmp_path / "b0" / "joint_pretrained" / "linear")
    second = linear_run(tmp_path / "b1" / "joint_pretrained" / "linear", seed=1)
    rnd = linear_run(tmp_path / "b0" / "joint_random" / "linear", kind="random_init", seed=2)
    runs = [first, second, rnd]
    report_figures.plot_confusion(first, tmp_path / "c.png", among=runs)
    assert drawn[-1].axes[0].get_title().endswith("\nrun b0/joint_pretrained/linear")
    report_figures.plot_confusion(first, tmp_path / "c.png", among=[first, rnd])     # alone of its row
    assert "run " not in drawn[-1].axes[0].get_title()
    report_figures.plot_per_class(runs, tmp_path / "p.png")
    texts = legend_texts(drawn[-1])
    assert texts == ["pretrained (joint), b0/joint_pretrained/linear", "random init (joint)"]
    report_figures.plot_feature_maps([dict(m) for m in runs], tmp_path / "f.png", method="pca")  # no features
    assert len(drawn) == 3


def test_per_class_keeps_to_one_data_set(tmp_path, drawn):
    """A random-init run of another data set (4 classes) next to the pretrained one (3): bars of
    two class lists on one axis (a shape error)."""
    pre = linear_run(tmp_path / "a" / "linear", k=3)
    rnd = linear_run(tmp_path / "b" / "linear", kind="random_init", dataset="other", k=4)
    assert report_figures.plot_per_class([pre, rnd], tmp_path / "p.png") is not None
    assert legend_texts(drawn[-1]) == ["pretrained (joint)"]
    assert "tiny xsub" in drawn[-1].axes[0].get_title()


def test_feature_map_legend_of_long_class_names_is_inside_the_image(tmp_path, drawn):
    """"pick up and throw" and other long names ran past the right edge of a one-panel figure."""
    names = [f"pick up and throw, variant {i}" for i in range(12)]
    runs = [linear_run(tmp_path / "lin", k=12, names=names, features=True)]
    path = report_figures.plot_feature_maps(runs, tmp_path / "f.png", method="pca")
    fig = drawn[-1]
    assert legend_texts(fig) == names
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert inside(legend, fig.bbox)
    assert all(legend.y1 <= ax.get_window_extent().y0 for ax in fig.axes)    # below the panels
    assert png_size(path)[0] >= legend.width * 110 / fig.dpi


def test_dense_captions_name_the_horizon_and_the_folder(tmp_path):
    """Two motion runs of one row differing in horizon had the same caption, and so had two runs
    differing only in their folders."""
    def motion(name, observed, predicted):
        d = tmp_path / name / "motion"
        d.mkdir(parents=True)
        (d / "mpjpe.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        return {"_dir": str(d), "task": "motion", "encoder": {"kind": "pretrained"}, "stream": "joint",
                "dataset": "msr3d", "benchmark": "xsub", "fps": 15.0,
                "protocol": {"observed": observed, "predicted": predicted}}

    out = tmp_path / "images"
    out.mkdir()
    made = report_figures.copy_dense_images([motion("short", 20, 6), motion("long", 20, 10), motion("again", 20, 10)],
                                            out)
    captions = sorted(title for title, _ in made)
    assert len(set(captions)) == 3
    base = "Motion prediction: MPJPE per predicted frame, pretrained (joint), msr3d xsub"
    assert captions == [f"{base}, 20 observed -> 10 predicted frames at 15 fps, `again/motion`",
                        f"{base}, 20 observed -> 10 predicted frames at 15 fps, `long/motion`",
                        f"{base}, 20 observed -> 6 predicted frames at 15 fps"]


def test_a_dense_caption_leaves_out_an_fps_that_is_no_number():
    """A hand-edited motion metrics.json with "fps": "15" failed the whole report (format code 'g')."""
    from pcm3.evaluation.report_figures import _dense_caption

    m = {"task": "motion", "encoder": {"kind": "pretrained"}, "dataset": "d", "benchmark": "x",
         "protocol": {"observed": 20, "predicted": 6}}
    assert _dense_caption({**m, "fps": "15"}).endswith("20 observed -> 6 predicted frames")
    assert _dense_caption({**m, "fps": 15}).endswith("20 observed -> 6 predicted frames at 15 fps")
