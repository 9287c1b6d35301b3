"""Multi-stream fusion (3s- rows of Table 1): weighted sum of the test class scores of runs.

Each ``linear``/``semi``/``occlusion`` eval folder saves its test scores (softmax
probabilities, ``scores.npy`` with the prepared-folder index of each row). Fusion aligns the
rows by sample index and adds ``sum_i w_i * scores_i``. The weights are given (``weights``),
or searched on a grid over the simplex (step ``grid_step``) on the validation scores that
``linear`` saves when it carves a validation split from training subjects
(``--set val_fraction=0.2``); never on the test split. Equal weights need ``weights: [1, 1, 1]``.

The runs must hold the same test samples (same data and benchmark); a weight search also needs
the same validation samples (the same ``val_fraction``, ``val_by`` and ``--seed`` in every
``linear`` run), given weights do not. A ``semi`` folder saves one set of test scores per
labelled fraction and seed (``frac0.1_seed0_scores.npy``...) and no validation scores: choose
one with ``--set prefix=frac0.1_seed0_`` (the same prefix in every folder) and give the
weights. Each folder may be given once.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.common import EvalContext, load_scores, read_metrics, save_scores, topk_accuracy

DEFAULT_CONFIG = "eval_fusion"


@dataclass
class FusionProtocol:
    """Fusion settings.

    Attributes:
        runs: eval folders whose scores are fused (``--scores DIR...``), e.g. joint, bone, motion.
        weights: one weight per run; None = search on the validation scores.
        prefix: score files' prefix inside each folder (``""``; semi: ``frac<fraction>_seed<seed>_``,
            e.g. ``frac0.1_seed0_``, one of the fractions and seeds the semi runs saved).
        grid_step: step of the weight grid on the simplex when searching.
    """

    runs: List[str] = field(default_factory=list)
    weights: Optional[List[float]] = None
    prefix: str = ""
    grid_step: float = 0.1

    def __post_init__(self):
        if len(self.runs) < 2:
            raise ConfigError(f"runs: fusion needs at least two eval folders (--scores DIR DIR ...), got {len(self.runs)}")
        seen = {}
        for r in self.runs:  # the same folder twice (perhaps spelled differently) fuses a run with itself
            key = os.path.realpath(str(r))
            if key in seen:
                same = "" if str(seen[key]) == str(r) else f" (as {seen[key]})"
                raise ConfigError(f"runs: {r} given twice{same}: give each eval folder once "
                                  "(--scores JOINT BONE MOTION: one folder per stream)")
            seen[key] = r
        if self.weights is not None and (len(self.weights) != len(self.runs) or min(self.weights) < 0
                                         or sum(self.weights) <= 0):
            raise ConfigError(f"weights: need {len(self.runs)} non-negative weights, not all zero; got {self.weights}")
        if not 0 < self.grid_step <= 1:
            raise ConfigError(f"grid_step: must be in (0, 1], got {self.grid_step}")


PROTOCOL = FusionProtocol


def align(scores: List[np.ndarray], indices: List[np.ndarray], labels: List[np.ndarray], names: List[str],
          part: str = "test"):
    """Reorder every run's rows to the first run's sample order; DataError when samples differ
    (``part``: which scores, for the message)."""
    ref = indices[0]
    order0 = np.argsort(ref)
    out = [scores[0]]
    for s, i, y, name in zip(scores[1:], indices[1:], labels[1:], names[1:]):
        if s.shape[1] != scores[0].shape[1]:
            raise DataError(name, f"{s.shape[1]} classes, {names[0]} has {scores[0].shape[1]}")
        if len(i) != len(ref) or not np.array_equal(np.sort(i), ref[order0]):
            raise DataError(name, f"its {part} scores cover other samples than {names[0]}'s "
                                  f"({_sample_difference(ref, i)}; same data and benchmark needed)")
        pos = np.argsort(i)[np.argsort(order0)]  # row of run k holding ref's sample j
        out.append(s[pos])
        if not np.array_equal(y[pos], labels[0]):
            raise DataError(name, "labels disagree with the first run for the same samples")
    return out


def _sample_difference(ref: np.ndarray, other: np.ndarray) -> str:
    """``"273 samples vs 273, 271 in common"``: how two runs' sample sets differ."""
    common = len(np.intersect1d(ref, other))
    return f"{len(other)} samples vs {len(ref)}, {common} in common"


def same_samples(a: np.ndarray, b: np.ndarray) -> bool:
    return len(a) == len(b) and np.array_equal(np.sort(a), np.sort(b))


def _setting(meta: dict, key: str):
    return (meta.get("protocol") or {}).get(key) if key != "seed" else meta.get("seed")


def _validation_mismatch(name: str, first: str, metas, k: int, ref: np.ndarray, other: np.ndarray,
                         n: int) -> DataError:
    """Run ``k`` validated on other samples than run 0: what differs, and the two ways out."""
    diffs = [f"{key} {_setting(metas[k], key)} vs {_setting(metas[0], key)}"
             for key in ("val_fraction", "val_by", "seed") if _setting(metas[k], key) != _setting(metas[0], key)]
    what = ", ".join(diffs) or _sample_difference(ref, other)
    ones = ", ".join("1" for _ in range(n))
    return DataError(name, f"its validation samples differ from {first}'s ({what}; the test samples are the same): "
                           "the weights are searched on validation scores, so rerun with the same val_fraction and "
                           f"--seed, or give the weights (--set 'weights=[{ones}]')")


def _scores_present(folder: str, prefix: str, meta: dict) -> None:
    """A one-line DataError when ``folder`` holds no ``{prefix}scores.npy``, saying what it holds
    (a semi folder: one set of scores per fraction and seed, chosen with ``--set prefix=...``)."""
    path = Path(folder)
    if (path / f"{prefix}scores.npy").exists():
        return
    task = meta.get("task") or "this"
    held = sorted(f.name[:-len("scores.npy")] for f in path.glob("*scores.npy")
                  if not f.name.startswith("val_"))
    if not held:
        raise DataError(folder, f"a {task} eval folder without class scores: fusion takes the test scores that "
                                "`pcm3 eval linear`, `semi` or `occlusion` save")
    files = ", ".join(h + "scores.npy" for h in held)
    if task == "semi" and not prefix:
        raise DataError(folder, f"a semi eval folder: its test scores are saved per labelled fraction and seed "
                                f"({files}); choose one with --set prefix={held[-1]} (the same in every folder; "
                                "semi saves no validation scores, so give the weights too)")
    raise DataError(folder, f"no {prefix}scores.npy: this {task} folder holds {files} "
                            f"(--set prefix={prefix} applies to every folder given)")


def fuse(scores: List[np.ndarray], weights) -> np.ndarray:
    """``sum_i w_i * scores_i``, scores ``(N, K)`` each."""
    return sum(float(w) * s for w, s in zip(weights, scores))


def simplex_grid(n: int, step: float):
    """Weight vectors with entries multiples of ``step`` summing to 1 (every run weight > 0 allowed 0)."""
    m = int(round(1 / step))
    for combo in itertools.product(range(m + 1), repeat=n - 1):
        if sum(combo) <= m:
            yield np.array([*combo, m - sum(combo)], dtype=np.float64) / m


def search_weights(scores: List[np.ndarray], labels: np.ndarray, step: float) -> np.ndarray:
    """The grid weights with the best top-1 on (validation) ``scores``; ties: the first found, then
    the closest to equal weights."""
    best, best_acc, best_dist = None, -1.0, np.inf
    equal = np.full(len(scores), 1 / len(scores))
    for w in simplex_grid(len(scores), step):
        acc = float((fuse(scores, w).argmax(1) == labels).mean())
        dist = float(np.abs(w - equal).sum())
        if acc > best_acc + 1e-12 or (abs(acc - best_acc) <= 1e-12 and dist < best_dist):
            best, best_acc, best_dist = w, acc, dist
    return best


def run(ctx: EvalContext) -> dict:
    """Fused top-1/top-5 (percent), each run's own top-1, and the weights."""
    p: FusionProtocol = ctx.protocol
    names = [str(r) for r in p.runs]
    metas = [read_metrics(r) for r in p.runs]
    for r, meta in zip(p.runs, metas):
        _scores_present(r, p.prefix, meta)
    test = [load_scores(r, p.prefix) for r in p.runs]
    scores = align([t[0] for t in test], [t[1] for t in test], [t[2] for t in test], names)
    labels, index = test[0][2], test[0][1]
    searched = p.weights is None
    if searched:
        ones = ", ".join("1" for _ in p.runs)
        missing = [(r, m) for r, m in zip(p.runs, metas) if not (Path(r) / f"val_{p.prefix}scores.npy").exists()]
        if missing:
            r, m = missing[0]
            how = ("`pcm3 eval semi` saves none" if m.get("task") == "semi"
                   else "run `pcm3 eval linear ... --set val_fraction=0.2`")
            raise ConfigError(f"weights: not given, and {r} has no validation scores to search them on "
                              f"({how}), or give --set 'weights=[{ones}]'")
        val = [load_scores(r, f"val_{p.prefix}") for r in p.runs]
        for k in range(1, len(val)):  # the test samples agree (aligned above); the validation ones must too
            if not same_samples(val[0][1], val[k][1]):
                raise _validation_mismatch(names[k], names[0], metas, k, val[0][1], val[k][1], len(p.runs))
        vscores = align([v[0] for v in val], [v[1] for v in val], [v[2] for v in val], names, "validation")
        weights = search_weights(vscores, val[0][2], p.grid_step)
        val_top1 = 100.0 * float((fuse(vscores, weights).argmax(1) == val[0][2]).mean())
    else:
        weights = np.asarray(p.weights, dtype=np.float64)
        weights = weights / weights.sum()
    fused = fuse(scores, weights)
    figures = topk_accuracy(fused, labels, (1, 5))
    labels_of = [(meta.get("input") or {}).get("stream") or f"run{k + 1}" for k, meta in enumerate(metas)]
    for k, (label, s) in enumerate(zip(labels_of, scores)):
        if labels_of.count(label) > 1:  # two runs of one stream (a pretrained and a random-init joint...)
            label = f"run{k + 1}_{label}"
        figures[f"{label}_top1"] = topk_accuracy(s, labels, (1,))["top1"]
    if searched:
        figures["val_top1"] = val_top1
    save_scores(ctx.out, fused, index, labels)
    return {"figures": figures, "weights": [float(w) for w in weights], "weights_searched": searched,
            "runs": names, "streams": [(m.get("input") or {}).get("stream") for m in metas],
            "run_kinds": [(m.get("encoder") or {}).get("kind") for m in metas],
            "data": metas[0].get("data"), "dataset": metas[0].get("dataset"),
            "class_names": metas[0].get("class_names"), "benchmark": metas[0].get("benchmark"),
            "splits": {"test": int(len(labels))},
            "notes": [f"weights {', '.join(f'{w:.2f}' for w in weights)} "
                      + ("searched on validation scores" if searched else "as given (normalised to sum 1)")]}
