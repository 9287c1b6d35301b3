"""Detection metrics on hand-computed cases (values worked out by hand in the comments).

Fixture: two videos ``a`` and ``b``, each with ground truth class 1 on [0, 100) and class 2 on
[200, 300) (0-based, end exclusive); three classes, so the official mAP_a has 4 slots and
class 3 is absent from the ground truth.
"""

import pytest

from pcm3.evaluation.detection_metrics import (authors_iou, authors_metrics, authors_video_ap, detection_metrics, iou,
                                               official_ap, official_metrics, official_overlap, voc_ap, voc_metrics)

VIDEOS = ["a", "b"]
GT = [{"video": v, "label": c, "start": s, "end": e}
      for v in VIDEOS for c, s, e in ((1, 0, 100), (2, 200, 300))]
CONF = {("a", 1): 0.9, ("a", 2): 0.8, ("b", 1): 0.7, ("b", 2): 0.6}


def det(video, label, start, end, conf):
    return {"video": video, "label": label, "start": start, "end": end, "confidence": conf}


def perfect():
    return [det(g["video"], g["label"], g["start"], g["end"], CONF[(g["video"], g["label"])]) for g in GT]


def both(dets, threshold=0.5, gt=GT, videos=VIDEOS, classes=3):
    return (official_metrics(gt, dets, videos, classes, threshold), voc_metrics(gt, dets, videos, classes, threshold))


def close(a, b):
    return a == pytest.approx(b, abs=1e-9)


def test_overlaps():
    # official: (s + 1, e) in 1-based inclusive frames: (100 - 31) / (130 - 1)
    assert close(official_overlap(0, 100, 30, 130), 69 / 129)
    assert close(official_overlap(0, 100, 0, 100), 1.0)
    assert official_overlap(0, 10, 20, 30) == 0.0
    assert close(official_overlap(5, 6, 5, 6), 1.0)  # evaluate.py would divide by zero here
    assert close(iou(0, 100, 30, 130), 70 / 130)
    assert iou(0, 10, 10, 20) == 0.0


def test_perfect():
    off, voc = both(perfect())
    # official: each class has two hits (AP 1); class 3 has no ground truth (AP 0); 4 slots
    assert close(off["per_class"][1], 1.0) and close(off["per_class"][2], 1.0) and off["per_class"][3] == 0.0
    assert close(off["mAP_a"], 2 / 4)
    assert close(off["mAP_v"], 1.0)
    assert close(voc["mAP_a"], 1.0) and close(voc["mAP_v"], 1.0)
    assert 3 not in voc["per_class"]  # absent class: left out of the voc mean


def test_shifted():
    dets = [dict(d, start=d["start"] + 40, end=d["end"] + 40) for d in perfect()]
    # IoU 60/140 = 0.43, official 59/139 = 0.42: misses at 0.5, hits at 0.3
    off, voc = both(dets, 0.5)
    assert off["mAP_a"] == 0.0 and off["mAP_v"] == 0.0 and voc["mAP_a"] == 0.0 and voc["mAP_v"] == 0.0
    off, voc = both(dets, 0.3)
    assert close(off["mAP_a"], 0.5) and close(off["mAP_v"], 1.0) and close(voc["mAP_a"], 1.0)


def test_one_shifted_most_confident_detection():
    dets = perfect()
    dets[0] = dict(dets[0], start=40, end=140)  # a/class 1 (conf 0.9) misses at 0.5
    off, voc = both(dets)
    # official class 1, ascending [b .7 hit, a .9 miss]: after removing the hit, precision 0/1 -> AP 0
    assert close(off["per_class"][1], 0.0) and close(off["mAP_a"], 1 / 4)
    # official video a, ascending [.8 hit, .9 miss] -> 0; video b -> 1
    assert close(off["per_video"]["a"], 0.0) and close(off["mAP_v"], 0.5)
    # voc class 1, descending [miss, hit]: precision 1/2 at recall 1/2 -> 0.25
    assert close(voc["per_class"][1], 0.25) and close(voc["mAP_a"], (0.25 + 1) / 2)
    assert close(voc["mAP_v"], (0.25 + 1) / 2)


def test_split():
    dets = perfect()[1:] + [det("a", 1, 0, 50, 0.9), det("a", 1, 50, 100, 0.85)]
    # halves: IoU 0.5, official 49/99 = 0.495; at 0.3 both halves are hits
    off, voc = both(dets, 0.3)
    # official class 1: 3 hits for 2 ground truths (recall capped at 1):
    # remove .7 -> P 2/2, R 1 (adds 0); remove .85 -> P 1/1, R 1/2 (adds 1/2); then 1 x 1/2 -> 1
    assert close(off["per_class"][1], 1.0) and close(off["mAP_a"], 2 / 4) and close(off["mAP_v"], 1.0)
    # voc class 1: [hit, duplicate, hit] -> 1/2 x 1 + 1/2 x 2/3
    assert close(voc["per_class"][1], 0.5 + 0.5 * 2 / 3)
    assert close(voc["mAP_a"], (0.5 + 1 / 3 + 1) / 2) and close(voc["mAP_v"], (0.5 + 1 / 3 + 1) / 2)
    # at 0.5 the halves differ between the definitions: voc IoU 0.5 is a hit, official 0.495 is not
    off, voc = both(dets, 0.5)
    assert close(off["per_class"][1], 0.0)  # one hit left (b, .7), below the misses in confidence
    assert close(voc["per_class"][1], 0.5 + 0.5 * 2 / 3)


def test_duplicated():
    dets = perfect() + [det("a", 1, 0, 100, 0.95)]
    off, voc = both(dets)
    assert close(off["per_class"][1], 1.0)  # duplicates are hits in evaluate.py
    assert close(voc["per_class"][1], 0.5 + 0.5 * 2 / 3)  # one-to-one: the copy is a false positive


def test_merged():
    gt = [{"video": "m", "label": 1, "start": 0, "end": 100}, {"video": "m", "label": 1, "start": 150, "end": 250}]
    dets = [det("m", 1, 0, 250, 0.9)]  # IoU 100/250 = 0.4 with each, official 99/249
    off, voc = both(dets, 0.3, gt=gt, videos=["m"], classes=1)
    assert close(voc["mAP_a"], 0.5)  # one of two matched, precision 1
    assert off["mAP_a"] == 0.0 and off["mAP_v"] == 0.0  # its only hit is its most confident detection
    off, voc = both(dets, 0.5, gt=gt, videos=["m"], classes=1)
    assert voc["mAP_a"] == 0.0 and off["mAP_a"] == 0.0


def test_missed():
    dets = perfect()[:3]  # b/class 2 not detected
    off, voc = both(dets)
    # official class 2: one hit, the most confident -> 0; video b: one hit of two -> 0
    assert close(off["per_class"][2], 0.0) and close(off["mAP_a"], 1 / 4) and close(off["mAP_v"], 0.5)
    assert close(voc["per_class"][2], 0.5) and close(voc["mAP_a"], 0.75) and close(voc["mAP_v"], 0.75)


def test_wrong_class():
    dets = perfect()
    dets[3] = dict(dets[3], label=3)  # b/class 2 reported as class 3 (absent from the ground truth)
    off, voc = both(dets)
    assert off["per_class"][3] == 0.0 and close(off["mAP_a"], 1 / 4) and close(off["mAP_v"], 0.5)
    assert 3 not in voc["per_class"] and close(voc["mAP_a"], 0.75)
    assert close(voc["per_video"]["b"], 0.5) and close(voc["mAP_v"], 0.75)


def test_empty_predictions():
    off, voc = both([])
    assert off["mAP_a"] == 0.0 and off["mAP_v"] == 0.0 and voc["mAP_a"] == 0.0 and voc["mAP_v"] == 0.0


def test_single_correct_detection():
    gt = [{"video": "s", "label": 1, "start": 10, "end": 20}]
    off, voc = both([det("s", 1, 10, 20, 0.9)], gt=gt, videos=["s"], classes=1)
    assert off["per_video"]["s"] == 0.0 and off["per_class"][1] == 0.0  # the documented quirk
    assert close(voc["mAP_a"], 1.0) and close(voc["mAP_v"], 1.0)


def test_official_ap_and_voc_ap_directly():
    # ascending confidences .1 (miss), .2 (hit), .3 (hit); 2 ground truths
    # remove .1: skipped; remove .2: P 1/1, R 1/2 -> adds 1 x 1/2; remove .3: stop; + 1 x 1/2
    assert close(official_ap([0.0, 0.9, 0.9], [0.1, 0.2, 0.3], 2, 0.5), 1.0)
    assert official_ap([0.9], [0.5], 0, 0.5) == 0.0
    assert close(voc_ap([True, False, True], 2), 0.5 + 0.5 * 2 / 3)
    assert voc_ap([], 3) == 0.0


def test_voc_ap_uses_the_precision_envelope():
    # hit, miss, hit, hit of 3 ground truths: precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1.
    # The envelope (max precision at any higher recall) gives recall 2/3 the precision 3/4, not 2/3.
    assert close(voc_ap([True, False, True, True], 3), (1 + 3 / 4 + 3 / 4) / 3)


def test_detection_metrics_keys():
    out = detection_metrics(GT, perfect(), VIDEOS, 3)
    assert set(out) == {"authors", "official", "voc"} and set(out["voc"]) == {"0.1", "0.3", "0.5"}
    with pytest.raises(ValueError):
        detection_metrics(GT, [], VIDEOS, 3, metrics=["coco"])


# --------------------------------------------------------------------------- authors (PCM3 authors' detection code)

def authors(dets, threshold=0.5, gt=GT, videos=VIDEOS, classes=3):
    return authors_metrics(gt, dets, videos, classes, threshold)


def test_authors_single_and_perfect():
    gt = [{"video": "s", "label": 1, "start": 10, "end": 20}]
    a = authors([det("s", 1, 10, 20, 0.9)], gt=gt, videos=["s"], classes=1)
    assert close(a["mAP_a"], 1.0) and close(a["mAP_v"], 1.0)  # unlike official's quirk (AP 0)
    a = authors(perfect())
    assert close(a["mAP_a"], 1.0) and close(a["mAP_v"], 1.0) and 3 not in a["per_class"]  # classes present only


def test_authors_video_ap_duplicates_count_once():
    # video a: ground truths class 1 and 2; two copies of the class-1 detection, class 2 missed.
    # Start: 1 ground truth hit of 2, 2 detections -> precision 1/2, recall 1/2. Ascending removal:
    # the .8 copy (its ground truth still hit by the .9 one): precision 1/1, recall 1/2, +1 x 0;
    # the .9 copy: nothing left -> recall 0, + 1 x 1/2. AP = 1/2 (official would count 2 hits).
    dets = [det("a", 1, 0, 100, 0.9), det("a", 1, 0, 100, 0.8)]
    gt_a = [g for g in GT if g["video"] == "a"]
    assert close(authors_video_ap(dets, gt_a, 0.5), 0.5)
    assert close(official_metrics(gt_a, dets, ["a"], 3, 0.5)["per_video"]["a"], 1.0)


def test_authors_video_ap_false_positive_between_hits():
    # video a, descending: hit (.95, class 1), false positive (.9, class 3), hit (.8, class 2).
    # Start: 2 hits, 3 detections -> precision 2/3, recall 1. Ascending removal: the .8 hit ->
    # 1/2, recall 1/2, + 2/3 x 1/2; the miss is skipped (its removal never raises the precision
    # taken); the .95 hit -> nothing left, recall 0, + 2/3 x 1/2. AP = 2/3, where VOC's
    # all-point AP is 1/2 x 1 + 1/2 x 2/3 = 5/6.
    dets = [det("a", 1, 0, 100, 0.95), det("a", 3, 0, 100, 0.9), det("a", 2, 200, 300, 0.8)]
    gt_a = [g for g in GT if g["video"] == "a"]
    assert close(authors_video_ap(dets, gt_a, 0.5), 2 / 3)
    assert close(voc_metrics(gt_a, dets, ["a"], 3, 0.5)["per_video"]["a"], 5 / 6)


def test_authors_mAP_v_counts_videos_without_detections():
    a = authors([d for d in perfect() if d["video"] == "a"])
    assert close(a["per_video"]["a"], 1.0) and a["per_video"]["b"] == 0.0 and close(a["mAP_v"], 0.5)


def test_authors_mAP_a_devkit_matching():
    # Two ground truths of class 1: [0, 100) and [60, 160). Detections by confidence: D1 = [0, 100)
    # (IoU 1 with G1), D2 = [10, 110) (IoU 90/110 = .82 with G1, 50/150 = .33 with G2).
    # At 0.3 the devkit takes D2's best ground truth G1, already matched -> false positive: AP 1/2.
    # voc (best unmatched) gives D2 to G2 (.33 >= .3) -> both matched: AP 1.
    gt = [{"video": "m", "label": 1, "start": 0, "end": 100}, {"video": "m", "label": 1, "start": 60, "end": 160}]
    dets = [det("m", 1, 0, 100, 0.9), det("m", 1, 10, 110, 0.8)]
    assert close(authors(dets, 0.3, gt=gt, videos=["m"], classes=1)["mAP_a"], 0.5)
    assert close(voc_metrics(gt, dets, ["m"], 1, 0.3)["mAP_a"], 1.0)



def test_authors_mAP_a_overlap_is_the_devkit_formula_on_exclusive_ends():
    # Their evaluate_metrics.py: mAP_a's iou_ratio adds 1 to widths and intersection (the devkit's
    # inclusive ends) but is given get_segments' end-exclusive segments and the label numbers as
    # they stand; mAP_v's match() takes (min e - max s) / (max e - min s), no + 1.
    # G = [0, 10), D = [5, 15): iou_ratio = (10 - 5 + 1) / (11 + 11 - 6) = 6/16 = .375; the frame
    # IoU (and mAP_v's overlap) is 5/15 = .333. At 0.35: mAP_a hit (AP 1), mAP_v miss (AP 0).
    assert close(authors_iou(5, 15, 0, 10), 6 / 16) and close(authors_iou(0, 10, 0, 10), 1.0)
    assert close(authors_iou(0, 1, 1, 2), 1 / 3) and authors_iou(0, 10, 11, 20) == 0.0  # touching: 1/3
    gt = [{"video": "x", "label": 1, "start": 0, "end": 10}]
    a = authors([det("x", 1, 5, 15, 0.9)], 0.35, gt=gt, videos=["x"], classes=1)
    assert close(a["mAP_a"], 1.0) and a["mAP_v"] == 0.0
    assert voc_metrics(gt, [det("x", 1, 5, 15, 0.9)], ["x"], 1, 0.35)["mAP_a"] == 0.0
    # one-frame intervals that only touch: iou_ratio 1/3 >= .3, a hit for mAP_a
    gt = [{"video": "t", "label": 1, "start": 0, "end": 1}]
    a = authors([det("t", 1, 1, 2, 0.9)], 0.3, gt=gt, videos=["t"], classes=1)
    assert close(a["mAP_a"], 1.0) and a["mAP_v"] == 0.0
