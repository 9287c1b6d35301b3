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

The runs must be one row of one protocol, one stream each: the same ``task`` and encoder
``kind`` (pretrained, random_init, raw_input, supervised), different input streams, and no
pretrained encoder evaluated on another stream than the one it was pretrained on; a fusion
folder is not fused again. Anything else is refused (one-line ConfigError naming the folders).
``metrics.json`` records the fused runs' common encoder kind (``encoder``), the ``prefix`` and
the SHA-256 of each run's ``{prefix}scores.npy`` (``scores_sha256``, runs order), so that a
fusion whose runs were re-evaluated since can be told. Damaged scores (a truncated or
unreadable ``.npy``, a NaN or infinite score: :func:`pcm3.evaluation.common.load_scores`) are
refused with a one-line DataError naming the file: a fusion is never computed from them.
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
from pcm3.io import file_sha256

DEFAULT_CONFIG = "eval_fusion"


@dataclass
class FusionProtocol:
    """Fusion settings.

    Attributes:
        runs: eval folders whose scores are fused (``--scores DIR...``), e.g. joint, bone, motion.
        weights: one weight per run; None = search on the validation scores.
        prefix: score files' prefix inside each folder (``""``; semi: ``frac<fraction>_seed<seed>_``,
            e.g. ``frac0.1_seed0_``, one of the fractions and seeds the semi runs saved).
        grid_step: step of the weight grid on the simplex when searching; 1/grid_step must be a
            whole number (0.1: weights 0, 0.1, ..., 1), others are refused.
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
        if abs(1 / grid_divisions(self.grid_step) - self.grid_step) > 0.01 * self.grid_step:
            raise ConfigError(f"grid_step: the weights are multiples of grid_step summing to 1, so 1/grid_step must be "
                              f"a whole number (0.5, 0.25, 0.1, 0.05...); got {self.grid_step} "
                              f"(1/{self.grid_step} = {1 / self.grid_step:.4g})")


def grid_divisions(step: float) -> int:
    """``round(1 / step)``, at least 1: the number of steps of size ``step`` in 1 (the grid's
    weights are multiples of ``1 / grid_divisions(step)``; the protocol refuses steps for which
    that is not ``step`` within 1%)."""
    return max(1, int(round(1 / step)))


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


def _encoder_kind(meta: dict) -> Optional[str]:
    return (meta.get("encoder") or {}).get("kind")


def _input_stream(meta: dict) -> Optional[str]:
    return (meta.get("input") or {}).get("stream")


def check_runs(names: List[str], metas: List[dict]) -> None:
    """Refuse (one-line ConfigError) runs that are not one row's streams of one protocol.

    - a fusion folder (``task: fusion``): its scores are already fused;
    - a pretrained run whose encoder was pretrained on another stream than its input stream
      (``encoder.stream`` vs ``input.stream``: ``pcm3 eval --set stream=...`` of an older
      pcm3); the random-init, raw-input and supervised rows take their input stream as theirs;
    - two runs of other ``task`` (linear, semi, occlusion: other protocols) or of another
      encoder ``kind`` (a random-init joint beside pretrained bone and motion is no 3s row);
    - two runs of one input stream (``input.stream``): a fusion combines streams.

    A key a folder's ``metrics.json`` lacks (written by hand or an older pcm3) is not compared.
    """
    for name, meta in zip(names, metas):
        if meta.get("task") == "fusion":
            raise ConfigError(f"runs: {name} is a fusion folder (task fusion): its scores are fused already; "
                              f"give the eval folders it fused (its metrics.json `runs`)")
        enc_stream, stream = (meta.get("encoder") or {}).get("stream"), _input_stream(meta)
        if _encoder_kind(meta) == "pretrained" and enc_stream and stream and enc_stream != stream:
            raise ConfigError(f"runs: {name}: its encoder was pretrained on the {enc_stream} stream but evaluated on "
                              f"the {stream} stream (--set stream={stream}): not a {stream}-stream run; evaluate an "
                              f"encoder pretrained on the {stream} stream")
    for what, key in (("task", lambda m: m.get("task")), ("encoder kind", _encoder_kind)):
        for k in range(1, len(metas)):
            first, other = key(metas[0]), key(metas[k])
            if first and other and first != other:
                raise ConfigError(f"runs: {names[0]} and {names[k]} differ in {what} ({first} vs {other}): fusion "
                                  "combines the streams of one row (pretrained, random_init, raw_input or "
                                  "supervised) evaluated with one task")
    seen = {}
    for name, meta in zip(names, metas):
        stream = _input_stream(meta)
        if stream and stream in seen:
            raise ConfigError(f"runs: {seen[stream]} and {name} both read the {stream} stream: fusion combines "
                              "different streams (joint, bone, motion), one folder per stream")
        seen.setdefault(stream, name)


def scores_sha256(folder: str | os.PathLike, prefix: str = "") -> str:
    """Hex SHA-256 of the bytes of ``folder/{prefix}scores.npy`` (what a fusion fused)."""
    return file_sha256(Path(folder) / f"{prefix}scores.npy")


def fuse(scores: List[np.ndarray], weights) -> np.ndarray:
    """``sum_i w_i * scores_i``, scores ``(N, K)`` each."""
    return sum(float(w) * s for w, s in zip(weights, scores))


def simplex_grid(n: int, step: float):
    """Weight vectors with entries multiples of ``step`` summing to 1 (every run weight > 0 allowed 0)."""
    m = grid_divisions(step)
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
    """Fused top-1/top-5 (percent), each run's own top-1 (``<stream>_top1``), the weights, the
    runs' common ``encoder`` kind, and ``scores_sha256`` / ``prefix``: what was fused."""
    p: FusionProtocol = ctx.protocol
    names = [str(r) for r in p.runs]
    metas = [read_metrics(r) for r in p.runs]
    for r, meta in zip(p.runs, metas):
        _scores_present(r, p.prefix, meta)
    check_runs(names, metas)
    hashes = [scores_sha256(r, p.prefix) for r in p.runs]
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
    streams = [_input_stream(m) for m in metas]
    for k, (stream, s) in enumerate(zip(streams, scores)):  # the streams differ (check_runs)
        figures[f"{stream or f'run{k + 1}'}_top1"] = topk_accuracy(s, labels, (1,))["top1"]
    if searched:
        figures["val_top1"] = val_top1
    save_scores(ctx.out, fused, index, labels)
    kind = next((k for k in map(_encoder_kind, metas) if k), None) or "none"  # one kind (check_runs)
    task = next((m.get("task") for m in metas if m.get("task")), None) or "eval"
    fused_what = ", ".join(s or f"run {k + 1} (stream unknown)" for k, s in enumerate(streams))
    return {"figures": figures, "weights": [float(w) for w in weights], "weights_searched": searched,
            "runs": names, "streams": streams, "run_kinds": [_encoder_kind(m) for m in metas],
            "scores_sha256": hashes, "prefix": p.prefix,
            # the fused row: the runs' common kind and, in runs order, each one's stream and encoder
            # (no run folder here: `runs` names them, and pcm3 benchmark renames them there)
            "encoder": {"kind": kind, "fused": [{"stream": s, **{key: (m.get("encoder") or {}).get(key)
                                                                 for key in ("path", "config_hash")}}
                                                for s, m in zip(streams, metas)]},
            "data": metas[0].get("data"), "dataset": metas[0].get("dataset"),
            "class_names": metas[0].get("class_names"), "benchmark": metas[0].get("benchmark"),
            "splits": {"test": int(len(labels))},
            "notes": [f"fused the {kind} {task} {p.prefix}scores.npy of {fused_what}",
                      f"weights {', '.join(f'{w:.2f}' for w in weights)} "
                      + ("searched on validation scores" if searched else "as given (normalised to sum 1)")]}
