"""Temporal action detection metrics: mAP_a (per action class) and mAP_v (per video).

Three definitions, all reported and named as such:

``official``
    What PKU-MMD's ``evaluate.py`` (github.com/ECHO960/PKU-MMD, the script behind the paper's
    Table 5 and every comparison in this field) computes, quirks included:

    1. **Frames.** The script reads the data set's label convention: 1-based frames, end
       inclusive, and takes ``overlap = (min(e1, e2) - max(s1, s2)) / (max(e1, e2) - min(s1, s2))``
       on those numbers. Intervals here are 0-based, end exclusive (``[s, e)``), so they are
       converted to ``(s + 1, e)`` first; the overlap is then ``(I - 1) / (U - 1)`` with ``I``,
       ``U`` the intersection and hull in frames (a little below the frame IoU). Two identical
       one-frame intervals (where the script divides by zero) count as overlap 1.
    2. **No one-to-one matching.** A detection's overlap is its best overlap with *any* ground
       truth of its class in its video; every detection at or above the threshold is a hit, so
       duplicates of one ground truth all count as hits (recall is capped at 1).
    3. **AP by removal.** Detections are sorted by confidence, ascending, and removed from the
       lowest up; after each removed hit, precision = hits left / detections left, the running
       maximum of that precision times the drop in recall is added, and after the loop the
       maximum times the recall left. The loop stops when the last detection is removed,
       *before* taking its precision. So the most confident detection's own precision never
       enters: a list whose only hit is its most confident detection scores **AP 0** (a video
       with one perfect detection and nothing else included).
    4. **52 label slots.** mAP_a is the sum of the per-class APs over ``num_classes + 1`` slots
       (slot 0, background, is never a class; PKU-MMD: 51 + 1 = 52), so a class without ground
       truth scores 0 and still counts, and perfect detections give ``51 / 52``.
    5. mAP_v is the mean of the per-video APs (the script averages over the videos that have a
       proposal file; here every video given is averaged, as if an empty file were written for
       each video without detections).

``voc``
    The usual definition: per class, detections sorted by confidence (descending); each is a
    true positive if the *unmatched* ground truth of its class in its video with the highest
    IoU (frame IoU of ``[s, e)`` intervals) reaches the threshold, and that ground truth is
    then matched; all-point interpolated AP (the area under the monotone precision envelope).
    mAP_a averages over the classes present in the ground truth; mAP_v averages the per-video
    AP (all classes of the video pooled, matching still within a class) over the videos with
    ground truth.

``authors``
    What the PCM3 authors' detection code computes (github.com/JHang2020/Simple-Skeleton-Detection,
    ``processor/evaluate_metrics.py``, the code behind the group's skeleton detection results):
    **mAP_a** is the Pascal VOC devkit's rule: per class, detections by descending confidence,
    each compared with the ground truth of its class in its video that it overlaps most; a true
    positive if that overlap reaches the threshold and that ground truth is not matched yet,
    otherwise a false positive (``voc`` instead tries the best *unmatched* ground truth, as
    ActivityNet's evaluation does, on the plain IoU; besides the overlap below, the two differ
    only when a detection's best ground truth is taken and another one also passes the
    threshold); all-point AP, averaged over the classes
    present in the ground truth. The overlap is the devkit's ``iou_ratio``, written for inclusive
    ends (``+ 1`` on widths and intersection), which their code applies to the end-exclusive
    numbers of its segments and labels as they stand: :func:`authors_iou`, the frame IoU of
    ``[s, e + 1)``, a little above ``iou`` (a perfect detection still scores 1; intervals that
    only touch score ``1 / (L1 + L2 + 1)``). **mAP_v** is a per-video AP with many-to-one
    matching in which duplicates count once:

    1. each detection is assigned the ground truth of its class in its video with the highest
       ``official`` overlap (``evaluate.py``'s formula on the raw numbers, here the frame IoU of
       ``[s, e)`` intervals) at or above the threshold; ``hits`` = ground truths assigned at
       least once;
    2. AP by removal, as ``official``, but precision and recall count *ground truths still
       hit* (a ground truth stops counting when its last assigned detection is removed), the
       running maximum of the precision starts at the list's overall precision, and the loop
       runs to the end (a list with one correct detection scores AP 1);
    3. mAP_v is the mean over every video given (a video without detections scores 0).

    This matches the protocol of ``method-and-protocols.md`` (a detection is correct with an
    *unmatched* ground truth of its class) for mAP_a; PCM3's Table 5 does not name its
    definition, and its authors' code is the closest evidence, so the report puts the paper's
    figures under these columns.

Inputs are plain lists of dicts: ground truth ``{"video", "label", "start", "end"}`` and
detections ``{"video", "label", "start", "end", "confidence"}``, labels being class numbers
``1..num_classes`` (0 = background, never a detection), frames 0-based with ``end`` exclusive.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np

METRICS = ("authors", "official", "voc")
DEFAULT_THRESHOLDS = (0.1, 0.3, 0.5)


# --------------------------------------------------------------------------- official

def official_overlap(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    """evaluate.py's overlap of two 0-based, end-exclusive intervals (converted to its 1-based,
    end-inclusive frames); 0 when they do not overlap."""
    s1, e1, s2, e2 = a_start + 1, a_end, b_start + 1, b_end
    hull = max(e1, e2) - min(s1, s2)
    if hull <= 0:
        return 1.0 if (s1, e1) == (s2, e2) else 0.0
    return max(0.0, (min(e1, e2) - max(s1, s2)) / hull)


def official_ap(overlaps: Sequence[float], confidences: Sequence[float], num_ground: int, threshold: float) -> float:
    """evaluate.py's ``ap``: AP of detections with best overlaps ``overlaps`` against
    ``num_ground`` ground truths (see the module docstring, points 2 and 3)."""
    if num_ground == 0:
        return 0.0
    order = sorted(range(len(confidences)), key=lambda i: confidences[i])  # ascending, stable
    hit = [overlaps[i] >= threshold for i in order]
    pos = float(sum(hit))
    number = float(len(hit))
    old_precision = 0.0
    old_recall = min(pos / num_ground, 1.0)
    score = 0.0
    for h in hit:
        number -= 1
        if not h:
            continue
        pos -= 1
        if number == 0:
            break  # the most confident hit: its precision is never taken
        precision = pos / number
        recall = min(pos / num_ground, 1.0)
        old_precision = max(old_precision, precision)
        score += old_precision * (old_recall - recall)
        old_recall = recall
    return score + old_precision * old_recall


def _best_overlaps(detections: Sequence[Mapping], gt_index: Mapping) -> List[float]:
    out = []
    for d in detections:
        best = 0.0
        for g in gt_index.get((d["video"], int(d["label"])), ()):
            best = max(best, official_overlap(d["start"], d["end"], g["start"], g["end"]))
        out.append(best)
    return out


def official_metrics(ground_truth: Sequence[Mapping], detections: Sequence[Mapping], videos: Sequence[str],
                     num_classes: int, threshold: float) -> dict:
    """mAP_a, mAP_v and per-class / per-video AP as PKU-MMD's evaluate.py computes them."""
    gt_index = defaultdict(list)
    for g in ground_truth:
        gt_index[(g["video"], int(g["label"]))].append(g)
    overlaps = _best_overlaps(detections, gt_index)
    per_class = {}
    for c in range(1, num_classes + 1):
        idx = [i for i, d in enumerate(detections) if int(d["label"]) == c]
        n_gt = sum(1 for g in ground_truth if int(g["label"]) == c)
        per_class[c] = official_ap([overlaps[i] for i in idx], [detections[i]["confidence"] for i in idx], n_gt, threshold)
    per_video = {}
    for v in videos:
        idx = [i for i, d in enumerate(detections) if d["video"] == v]
        n_gt = sum(1 for g in ground_truth if g["video"] == v)
        per_video[v] = official_ap([overlaps[i] for i in idx], [detections[i]["confidence"] for i in idx], n_gt, threshold)
    slots = num_classes + 1  # slot 0 (background) scores 0 and counts, as in evaluate.py
    return {"mAP_a": sum(per_class.values()) / slots,
            "mAP_v": float(np.mean(list(per_video.values()))) if per_video else 0.0,
            "per_class": per_class, "per_video": per_video}


# --------------------------------------------------------------------------- voc

def iou(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    """Frame IoU of two 0-based, end-exclusive intervals."""
    inter = min(a_end, b_end) - max(a_start, b_start)
    if inter <= 0:
        return 0.0
    return inter / ((a_end - a_start) + (b_end - b_start) - inter)


def voc_ap(tp: Sequence[bool], num_ground: int) -> float:
    """All-point interpolated AP of detections already sorted by confidence (descending)."""
    if num_ground == 0 or len(tp) == 0:
        return 0.0
    tp = np.asarray(tp, dtype=np.float64)
    ctp = np.cumsum(tp)
    recall = ctp / num_ground
    precision = ctp / np.arange(1, len(tp) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def authors_iou(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    """The ``authors`` mAP_a overlap: the VOC devkit's inclusive-end IoU (``iou_ratio`` in their
    ``evaluate_metrics.py``) applied to end-exclusive intervals as their code does, i.e. the frame
    IoU of ``[start, end + 1)``; 0 when they do not overlap."""
    return iou(a_start, a_end + 1, b_start, b_end + 1)


def _voc_tp(ground_truth: Sequence[Mapping], detections: Sequence[Mapping], threshold: float,
            devkit: bool = False) -> List[bool]:
    """One-to-one matching of ``detections`` (sorted, descending confidence) within (video, class).

    ``devkit=False``: the best *unmatched* ground truth (ActivityNet); ``True``: the best ground
    truth, a false positive if it is already matched (Pascal VOC devkit, the ``authors`` mAP_a, with
    its overlap :func:`authors_iou`)."""
    overlap = authors_iou if devkit else iou
    gts = defaultdict(list)
    for g in ground_truth:
        gts[(g["video"], int(g["label"]))].append([g["start"], g["end"], False])
    tp = []
    for d in detections:
        best, best_iou = None, -1.0
        for g in gts.get((d["video"], int(d["label"])), ()):
            if g[2] and not devkit:
                continue
            o = overlap(d["start"], d["end"], g[0], g[1])
            if o > best_iou:
                best, best_iou = g, o
        ok = best is not None and best_iou >= threshold and not best[2]
        if ok:
            best[2] = True
        tp.append(ok)
    return tp


def _sorted_desc(dets: Iterable[Mapping]) -> List[Mapping]:
    return sorted(dets, key=lambda d: -d["confidence"])  # stable: ties keep the input order


def _class_aps(ground_truth: Sequence[Mapping], detections: Sequence[Mapping], num_classes: int, threshold: float,
               devkit: bool = False) -> Dict[int, float]:
    """All-point AP of every class present in the ground truth (:func:`_voc_tp` matching)."""
    per_class = {}
    for c in range(1, num_classes + 1):
        gt = [g for g in ground_truth if int(g["label"]) == c]
        if not gt:
            continue
        dets = _sorted_desc(d for d in detections if int(d["label"]) == c)
        per_class[c] = voc_ap(_voc_tp(gt, dets, threshold, devkit), len(gt))
    return per_class


def voc_metrics(ground_truth: Sequence[Mapping], detections: Sequence[Mapping], videos: Sequence[str],
                num_classes: int, threshold: float) -> dict:
    """mAP_a (classes present in the ground truth) and mAP_v (videos with ground truth), VOC-style."""
    per_class = _class_aps(ground_truth, detections, num_classes, threshold)
    per_video = {}
    for v in videos:
        gt = [g for g in ground_truth if g["video"] == v]
        if not gt:
            continue
        dets = _sorted_desc(d for d in detections if d["video"] == v)
        per_video[v] = voc_ap(_voc_tp(gt, dets, threshold), len(gt))
    return {"mAP_a": float(np.mean(list(per_class.values()))) if per_class else 0.0,
            "mAP_v": float(np.mean(list(per_video.values()))) if per_video else 0.0,
            "per_class": per_class, "per_video": per_video}


# --------------------------------------------------------------------------- authors

def authors_video_ap(detections: Sequence[Mapping], ground_truth: Sequence[Mapping], threshold: float) -> float:
    """The PCM3 authors' per-video AP (module docstring, ``authors`` points 1-2) of one video's
    ``detections`` against its ``ground_truth`` (plain dicts as :func:`detection_metrics`)."""
    num_ground = len(ground_truth)
    if not detections or num_ground == 0:
        return 0.0
    order = sorted(detections, key=lambda d: d["confidence"])  # ascending, stable
    assigned = []  # index of the ground truth each detection counts for, or -1
    for d in order:
        best, best_o = -1, -1.0
        for j, g in enumerate(ground_truth):
            if int(g["label"]) != int(d["label"]):
                continue
            o = iou(d["start"], d["end"], g["start"], g["end"])
            if o >= threshold and o >= best_o:  # ties: the later ground truth, as their loop
                best, best_o = j, o
        assigned.append(best)
    count = [0] * num_ground
    for j in assigned:
        if j >= 0:
            count[j] += 1
    hits = sum(1 for c in count if c > 0)
    left = len(order)
    old_precision, old_recall = hits / left, hits / num_ground
    score = 0.0
    for j in assigned:
        left -= 1
        if j < 0:
            continue
        count[j] -= 1
        if count[j] == 0:
            hits -= 1
        precision, recall = (hits / left, hits / num_ground) if left else (0.0, 0.0)
        old_precision = max(old_precision, precision)
        score += old_precision * (old_recall - recall)
        old_recall = recall
    return score


def authors_metrics(ground_truth: Sequence[Mapping], detections: Sequence[Mapping], videos: Sequence[str],
                    num_classes: int, threshold: float) -> dict:
    """mAP_a (VOC devkit matching, classes present) and mAP_v (:func:`authors_video_ap` averaged
    over ``videos``) as the PCM3 authors' detection code computes them."""
    per_class = _class_aps(ground_truth, detections, num_classes, threshold, devkit=True)
    per_video = {v: authors_video_ap([d for d in detections if d["video"] == v],
                                     [g for g in ground_truth if g["video"] == v], threshold) for v in videos}
    return {"mAP_a": float(np.mean(list(per_class.values()))) if per_class else 0.0,
            "mAP_v": float(np.mean(list(per_video.values()))) if per_video else 0.0,
            "per_class": per_class, "per_video": per_video}


# --------------------------------------------------------------------------- all

def detection_metrics(ground_truth: Sequence[Mapping], detections: Sequence[Mapping], videos: Sequence[str],
                      num_classes: int, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                      metrics: Sequence[str] = METRICS) -> Dict[str, Dict[str, dict]]:
    """``{metric: {"0.5": {"mAP_a", "mAP_v", "per_class", "per_video"}, ...}}`` for each metric
    (``authors``, ``official``, ``voc``) and IoU threshold."""
    fns = {"authors": authors_metrics, "official": official_metrics, "voc": voc_metrics}
    out: Dict[str, Dict[str, dict]] = {}
    for m in metrics:
        if m not in fns:
            raise ValueError(f"unknown detection metric {m!r} (known: {', '.join(METRICS)})")
        out[m] = {f"{t:g}": fns[m](ground_truth, detections, videos, num_classes, float(t)) for t in thresholds}
    return out
