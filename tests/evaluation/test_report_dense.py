"""``pcm3 report`` with detection and motion folders (Tables 5 and 6, their images), on
hand-written ``metrics.json`` files and tiny PNGs: no training."""

import json
import struct
import zlib

from pcm3.cli import main
from pcm3.evaluation.report import write_report
from pcm3.evaluation.report_tables import detection_tables, motion_tables


def tiny_png(path, shade=0):
    """A valid 1 x 1 grey PNG."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(bytes([0, shade]))) + chunk(b"IEND", b""))


def det_metrics(kind, dataset="pku1", benchmark="xsub", a5=50.0, seed=0, voc=True, authors=True):
    f = {}
    for i, t in enumerate(("0.1", "0.3", "0.5")):
        if authors:
            f[f"mAP_a@{t} (authors)"] = a5 + 10 - 10 * i
            f[f"mAP_v@{t} (authors)"] = a5 + 9 - 10 * i
        f[f"mAP_a@{t} (official)"] = a5 + 20 - 10 * i
        f[f"mAP_v@{t} (official)"] = a5 + 19 - 10 * i
        if voc:
            f[f"mAP_a@{t} (voc)"] = a5 - 5 + 1 - i
            f[f"mAP_v@{t} (voc)"] = a5 - 6
    f["frame accuracy"] = 70.25
    return {"task": "detection", "data": f"/d/{dataset}", "dataset": dataset, "benchmark": benchmark,
            "encoder": {"kind": kind, "stream": "joint"}, "figures": f, "stream": "joint", "seed": seed,
            "benchmark_used": benchmark, "wall_seconds": 3.0}


def mot_metrics(kind, dataset="ntu60", per_frame=True):
    label = {"pretrained": "encoder", "random_init": "random init"}[kind]
    model = [40.0, 80.0, 120.0, 160.0] if kind == "pretrained" else [50.0, 90.0, 130.0, 170.0]
    zero = [16.0, 19.0, 26.0, 33.0]
    f = {f"MPJPE ({label})": sum(model) / 4, "MPJPE (zero-velocity)": sum(zero) / 4}
    for t in (0, 1, 3):
        f[f"MPJPE@{t + 1} ({label})"] = model[t]
        f[f"MPJPE@{t + 1} (zero-velocity)"] = zero[t]
    m = {"task": "motion", "data": f"/d/{dataset}", "dataset": dataset, "benchmark": "xsub",
         "encoder": {"kind": kind, "stream": "joint"}, "protocol": {"observed": 20, "predicted": 4},
         "figures": f, "units": {k: "mm" for k in f}, "fps": 30.0, "stream": "joint", "seed": 0}
    if per_frame:
        m["mpjpe_per_horizon"] = {label: model, "zero_velocity": zero}
    return m


def folder(root, name, metrics, images=()):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    for i, img in enumerate(images):
        tiny_png(d / img, shade=40 * i)
    return d


def test_report_with_dense_and_recognition_folders(tmp_path):
    runs = tmp_path / "runs"
    folder(runs, "det", det_metrics("pretrained", a5=60.0), ["timeline.png"])
    folder(runs, "det_rnd", det_metrics("random_init", a5=30.0), ["timeline.png"])
    folder(runs, "mot", mot_metrics("pretrained"), ["mpjpe.png", "prediction.png"])
    folder(runs, "mot_rnd", mot_metrics("random_init", per_frame=False), ["mpjpe.png"])  # no prediction.png
    folder(runs, "lin", {"task": "linear", "dataset": "ntu60", "benchmark": "xsub", "encoder": {"kind": "pretrained"},
                         "input": {"stream": "joint"}, "figures": {"top1": 81.5}})
    folder(runs, "future", {"task": "segmentation", "figures": {"miou": 1.0}})
    out = tmp_path / "rep" / "report.md"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    md = out.read_text()
    # Table 1 still there, with the paper beside ntu60 xsub
    assert "| pretrained | joint | 81.5 |" in md and "| paper: PCM3 | joint | 83.9 |" in md
    # Table 5: authors 0.1/0.3/0.5 (a, v), official and voc at 0.5, frame accuracy; paper rows for pku1 xsub
    assert "### Temporal action detection (Table 5): mAP (%), pku1 xsub" in md
    assert ("| encoder | stream | mAP_a@0.1 | mAP_v@0.1 | mAP_a@0.3 | mAP_v@0.3 | mAP_a@0.5 | mAP_v@0.5 "
            "| official mAP_a@0.5 | official mAP_v@0.5 | voc mAP_a@0.5 | voc mAP_v@0.5 | frame accuracy |") in md
    assert "| pretrained | joint | 70.0 | 69.0 | 60.0 | 59.0 | 50.0 | 49.0 | 60.0 | 59.0 | 54.0 | 54.0 | 70.2 |" in md
    assert "| random init | joint | 40.0 | 39.0 | 30.0 | 29.0 | 20.0 | 19.0 | 30.0 | 29.0 | 24.0 | 24.0 | 70.2 |" in md
    assert "| paper: random init | joint | - | - | - | - | 29.6 | 28.2 | - | - | - | - | - |" in md
    assert "| paper: PCM3 | joint | - | - | - | - | 61.8 | 61.3 | - | - | - | - | - |" in md
    assert "PCM3 paper (Zhang, Lin, Liu, ACM MM 2023), Table 5 (PKU-MMD Part I xsub" in md
    assert "stand under the authors columns (its authors' code computes these)" in md
    det = md[md.index("Table 5"):]
    assert det.index("| random init | joint | 40.0") < det.index("| pretrained | joint | 70.0")
    # Table 6: zero-velocity once, per frame (ms at 30 fps) and mean; the figures-only run has gaps
    assert "### Motion prediction (Table 6): MPJPE (mm), ntu60 xsub, 20 observed -> 4 predicted frames at 30 fps" in md
    assert "| method | stream | +1 (33 ms) | +2 (67 ms) | +3 (100 ms) | +4 (133 ms) | mean |" in md
    assert md.count("| zero-velocity |") == 1 and "| zero-velocity | joint | 16.0 | 19.0 | 26.0 | 33.0 | 23.5 |" in md
    assert "| pretrained | joint | 40.0 | 80.0 | 120.0 | 160.0 | 100.0 |" in md
    assert "| random init | joint | 50.0 | 90.0 | - | 170.0 | 110.0 |" in md
    assert "| paper: random init | joint | - | - | - | - | 108.5 |" in md
    assert "| paper: PCM3 | joint | - | - | - | - | 101.7 |" in md and "Table 6, one MPJPE per method" in md
    # the unknown task is skipped with a note
    assert "Skipped 1 folder(s)" in md and "'segmentation'" in md
    # the dense images: copied, referenced from the markdown, inline in the HTML
    images = sorted(p.name for p in (tmp_path / "rep" / "report_images").glob("*.png"))
    assert images == ["detection_1_random_init_timeline.png", "detection_2_pretrained_timeline.png",
                      "motion_1_random_init_mpjpe.png", "motion_2_pretrained_mpjpe.png",
                      "motion_2_pretrained_prediction.png"]
    for name in images:
        assert f"](report_images/{name})" in md, name
    copied = (tmp_path / "rep" / "report_images" / "motion_2_pretrained_prediction.png").read_bytes()
    assert copied == (runs / "mot" / "prediction.png").read_bytes()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "Temporal action detection (Table 5)" in html


def test_paper_rows_only_where_the_data_set_matches():
    runs = [det_metrics("pretrained", dataset="synthetic_untrimmed"), det_metrics("pretrained", benchmark="xview"),
            mot_metrics("pretrained", dataset="synthetic"), mot_metrics("random_init", dataset="ntu120")]
    for m in runs:
        m["_dir"] = "x"
    md = "\n".join(detection_tables(runs) + motion_tables(runs))
    assert "synthetic_untrimmed xsub" in md and "pku1 xview" in md and "ntu120 xsub" in md
    assert "paper" not in md.lower()
    synthetic = "\n".join(detection_tables([dict(det_metrics("pretrained", dataset="synthetic_untrimmed"), _dir="x")]))
    assert "pku1 xsub" not in synthetic  # the paper's benchmark is not "missing" from a report on other data
    assert "benchmark pku1 xsub." in md  # beside PKU-MMD data it is
    # a folder written before the authors metric: official is the headline; without voc figures
    # there is no voc column
    md = "\n".join(detection_tables([dict(det_metrics("random_init", voc=False, authors=False), _dir="x")]))
    assert "voc mAP_a" not in md and "| paper: random init | joint | - | - | - | - | 29.6 | 28.2 | - |" in md
    assert "the official metric at IoU t" in md and "stand under the official columns." in md


def test_dense_only_and_recognition_only_reports(tmp_path):
    dense = tmp_path / "dense"
    folder(dense, "det", det_metrics("pretrained"))            # no timeline.png: no image, no crash
    folder(dense, "mot", mot_metrics("random_init"), ["mpjpe.png"])
    paths = write_report([dense], tmp_path / "d" / "report.md")
    md = paths["markdown"].read_text()
    assert "Table 5" in md and "Table 6" in md and "Table 1" not in md
    assert [p.name for p in paths["images"].glob("*.png")] == ["motion_1_random_init_mpjpe.png"]
    rec = tmp_path / "rec"
    folder(rec, "knn", {"task": "knn", "dataset": "ntu60", "benchmark": "xsub", "encoder": {"kind": "pretrained"},
                        "input": {"stream": "joint"}, "figures": {"top1": 70.0, "knn1": 70.0}})
    paths = write_report([rec], tmp_path / "r" / "report.md")
    md = paths["markdown"].read_text()
    assert "Table 3: k-NN" in md and "Table 5" not in md and "Table 6" not in md and "## Figures" not in md


def test_dense_rows_of_two_encoders_with_one_seed_are_told_apart():
    from pcm3.evaluation.report_tables import _labels

    def run(folder, seed=0):
        return {"task": "motion", "encoder": {"kind": "pretrained"}, "stream": "joint", "seed": seed, "_dir": folder}

    assert _labels([run("/r/enc_a"), run("/r/enc_b"), run("/r/enc_c", 1)]) == [
        "pretrained, seed 0 (`enc_a`)", "pretrained, seed 0 (`enc_b`)", "pretrained, seed 1"]
