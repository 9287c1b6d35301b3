"""Occlusion robustness (Table 4): the linear classifier trained on clean data, tested occluded.

Protocol (method doc section 3, paper Table 4): the linear evaluation of
:mod:`pcm3.evaluation.linear` (same protocol fields, clean training crops), then the test split
with

- ``spatial`` occlusion: random whole body parts zeroed in every frame for both persons, the
  occluded share of joints near ``r ~ U(ratio_range)`` per sample
  (:func:`pcm3.masking.spatial_occlusion`);
- ``temporal`` occlusion: one random block of ``round(r * length)`` consecutive valid frames
  zeroed, ``r ~ U(ratio_range)`` per sample (:func:`pcm3.masking.temporal_occlusion`);
- ``fixed_part`` (optional, RA-GCN's setting): one named body part (``left_arm``...) zeroed
  in every test sample.

Occlusion is applied to the raw padded clip (before the centre crop and the stream), seeded per
batch from ``seed``. Reports clean, occluded top-1 and the drop (clean - occluded), and accuracy
per bin of the realised ratio. Files: ``occlusion_<kind>_mask.npy`` (spatial: ``(N, V)`` bool,
the same in every frame and for both persons; temporal: ``(N, T)`` bool over the padded frames),
``occlusion_<kind>_ratio.npy`` ``(N,)`` realised share (joints of V, frames of the valid length),
``occlusion_<kind>_correct.npy`` and ``clean_correct.npy`` ``(N,)`` bool, in the order of
``scores_index.npy``; ``scores.npy``... of the clean test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.common import (EvalContext, check_compatible, check_recognition_data, encode_kwargs,
                                    feature_module, input_spec, open_split, save_scores, topk_accuracy)
from pcm3.evaluation.features import encode, make_clips
from pcm3.evaluation.linear import LinearProtocol, fit_linear, predict, prepare_linear, write_history
from pcm3.masking import apply_mask, spatial_occlusion, temporal_occlusion
from pcm3.skeleton import get_layout

DEFAULT_CONFIG = "eval_occlusion"
KINDS = ("spatial", "temporal")


@dataclass
class OcclusionProtocol(LinearProtocol):
    """Linear protocol fields plus the occlusion.

    Attributes:
        kinds: which random occlusions to test (``spatial``, ``temporal``).
        ratio_range: per-sample ratio ``U(ratio_range)`` ((0.3, 0.7), Table 4).
        fixed_part: a body part of the layout zeroed in every test sample (RA-GCN), or None.
        ratio_bins: bins of the realised ratio for accuracy-vs-ratio.
        linear_run: a ``pcm3 eval linear`` folder of the same encoder, data and benchmark whose
            trained layer (``linear_head.pt``) is used instead of training one here (the linear
            fields of this protocol are then unused); None = train with this protocol.
    """

    kinds: Tuple[str, ...] = KINDS
    ratio_range: Tuple[float, float] = (0.3, 0.7)
    fixed_part: Optional[str] = None
    ratio_bins: int = 4
    linear_run: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ConfigError(f"kinds: {bad[0]!r} is not one of {', '.join(KINDS)}")
        if not 0 <= self.ratio_range[0] <= self.ratio_range[1] <= 1:
            raise ConfigError(f"ratio_range: must satisfy 0 <= low <= high <= 1, got {tuple(self.ratio_range)}")
        if not self.kinds and self.fixed_part is None:
            raise ConfigError("kinds: empty and no fixed_part: nothing to occlude")
        if self.ratio_bins < 1:
            raise ConfigError("ratio_bins: must be >= 1")


PROTOCOL = OcclusionProtocol


def check_inputs(data, benchmark, protocol: OcclusionProtocol, kind: str) -> None:
    """Before anything is written: the parts it reads (:func:`pcm3.evaluation.common.check_recognition_data`):
    training and test, or only test when the layer comes from ``linear_run`` (the supervised row
    still trains on the training part)."""
    reuse = protocol.linear_run is not None and kind != "supervised"
    check_recognition_data(data, benchmark, ("test",) if reuse else ("train", "test"))


def occlude(x: torch.Tensor, lengths: torch.Tensor, kind: str, *, layout: str, ratio_range, generator=None,
            part: Optional[str] = None):
    """Occlude a raw batch ``(N, C, T, V, M)``.

    Returns:
        the occluded batch, the compact mask (spatial/part: ``(N, V)``; temporal: ``(N, T)``; bool,
        True = occluded) and the realised ratio ``(N,)`` (float64).
    """
    n, _, t, v, m = x.shape
    if kind == "spatial":
        out, mask = spatial_occlusion(x, layout, tuple(ratio_range), generator=generator, return_mask=True)
        joints = mask[:, 0, :, 0]
        return out, joints, joints.sum(1).double() / v
    if kind == "temporal":
        out, mask = temporal_occlusion(x, lengths, tuple(ratio_range), generator=generator, return_mask=True)
        frames = mask[:, :, 0, 0]
        return out, frames, frames.sum(1).double() / lengths.clamp(1, t).double()
    if kind == "part":
        lay = get_layout(layout)
        joints = torch.zeros(v, dtype=torch.bool, device=x.device)
        joints[list(lay.parts[part])] = True
        joints = joints.expand(n, v)
        full = joints.view(n, 1, v, 1).expand(n, t, v, m)
        return apply_mask(x, full), joints, joints.sum(1).double() / v
    raise ValueError(kind)


@torch.no_grad()
def occluded_features(module, dataset, kind: str, *, spec: dict, ratio_range, seed: int, batch_size: int,
                      device: torch.device, num_workers: int = 0, part: Optional[str] = None):
    """Features ``(N, D)`` of the occluded centre crops, the masks, realised ratios, labels."""
    module.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, masks, ratios, labels = [], [], [], []
    salt = {"spatial": 1, "temporal": 2, "part": 3}[kind]
    for b, (x, lengths, y, _) in enumerate(loader):
        x, lengths = x.to(device), lengths.to(device)
        g = torch.Generator(device=device).manual_seed((seed * 1_000_003 + salt * 7_919 + b) % (2 ** 63 - 1))
        xo, mask, ratio = occlude(x, lengths, kind, layout=spec["layout"], ratio_range=ratio_range, generator=g,
                                  part=part)
        clip = make_clips(xo, lengths, clip_len=spec["clip_len"], stream=spec["stream"], layout=spec["layout"],
                          crop=spec["test_crop"])
        feats.append(module(clip).float().cpu())
        masks.append(mask.cpu())
        ratios.append(ratio.cpu())
        labels.append(y)
    return (torch.cat(feats).numpy(), torch.cat(masks).numpy(), torch.cat(ratios).numpy(), torch.cat(labels).numpy())


def accuracy_by_ratio(correct: np.ndarray, ratio: np.ndarray, bins: int, ratio_range) -> list:
    """Accuracy (percent) per equal-width bin of the realised ratio over ``ratio_range``."""
    lo, hi = float(ratio_range[0]), float(ratio_range[1])
    if hi <= lo:
        hi = lo + 1e-9
    edges = np.linspace(lo, hi, bins + 1)
    which = np.clip(np.searchsorted(edges, ratio, side="right") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        sel = which == i
        out.append({"low": float(edges[i]), "high": float(edges[i + 1]), "samples": int(sel.sum()),
                    "top1": 100.0 * float(correct[sel].mean()) if sel.any() else None})
    return out


def prepare_test_only(ctx: EvalContext, p: OcclusionProtocol) -> dict:
    """The test split, the feature module and the feature settings (no training features)."""
    check_recognition_data(ctx.data, ctx.benchmark, ("test",))
    test = open_split(ctx.data, ctx.benchmark, "test")
    check_compatible(ctx.encoder, test.prepared, ctx.encoder_info.get("path", "--encoder"))
    spec = input_spec(ctx)
    common = encode_kwargs(ctx, spec, p)
    return {"module": feature_module(ctx), "spec": spec, "test": test, "common": common,
            "splits": {"test": len(test)}}


def load_linear_head(folder, ctx: EvalContext, spec: dict, test=None,
                     features: Optional[int] = None) -> torch.nn.Linear:
    """The linear layer of a ``pcm3 eval linear`` folder, checked against this run's inputs: the
    encoder, benchmark, input settings and the data (its data set and, given ``test``, this run's
    test split, the samples of the run's ``scores_index.npy``, and its classes: one output per
    class), and given ``features``, the feature size D (one input per feature).

    ``linear_head.pt`` must be what ``pcm3 eval linear`` saved: ``weight`` ``(K, D)`` and ``bias``
    ``(K,)``, finite; anything else (truncated, not a torch file, keys or shapes that differ) is a
    one-line DataError naming it.
    """
    from pcm3.evaluation.common import load_array, read_metrics
    from pcm3.io import unreadable_checkpoint

    folder = Path(folder)
    m = read_metrics(folder)
    if m.get("task") != "linear":
        raise DataError(folder, f"linear_run: a {m.get('task')} folder, not a linear one")
    same = {"benchmark": (m.get("benchmark"), ctx.benchmark), "kind": (m["encoder"].get("kind"), ctx.encoder_kind),
            **{k: ((m.get("input") or {}).get(k), spec[k]) for k in ("stream", "clip_len", "test_crop", "layout")}}
    for key in ("file_hash", "config_hash", "weights"):  # the same encoder (file, pretraining, seed of the weights)
        if key in m["encoder"] or key in ctx.encoder_info:
            same[f"encoder {key}"] = (m["encoder"].get(key), ctx.encoder_info.get(key))
    if test is not None:  # the same data: data set and test samples (paths may differ between runs)
        same["data set"] = (m.get("dataset"), test.prepared.meta.get("dataset"))
    for key, (theirs, ours) in same.items():
        if theirs != ours:
            raise DataError(folder, f"linear_run: its {key} is {theirs!r}, this run's is {ours!r}")
    if test is not None:
        index = folder / "scores_index.npy"
        theirs = load_array(index) if index.exists() else None
        if theirs is None or not np.array_equal(np.sort(theirs), np.sort(np.asarray(test.indices))):
            raise DataError(folder, f"linear_run: its test samples ({'unknown' if theirs is None else len(theirs)}) "
                                    f"are not this run's {len(test)} test samples of {ctx.data} ({ctx.benchmark}); "
                                    "the layer must come from a linear run on the same data")
    path = folder / "linear_head.pt"
    if not path.exists():
        raise DataError(path, "missing: the linear run saved no layer")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, pickled objects: torch's many errors
        raise DataError(path, unreadable_checkpoint(path, e, "the linear layer `pcm3 eval linear` saves")) from None
    classes = None
    if test is not None:  # as linear sized it: the class names, or its training labels where the folder names none
        labels = np.asarray(test.prepared.labels)[test.prepared.split(ctx.benchmark, "train")]
        classes = max(int(test.num_classes), int(labels.max()) + 1 if labels.size else 0) or None
    return _check_head(path, state, classes=classes, features=features)


def _check_head(path, state, *, classes: Optional[int] = None, features: Optional[int] = None) -> torch.nn.Linear:
    """The ``torch.nn.Linear`` of a loaded ``linear_head.pt`` ``state``: ``weight`` ``(K, D)`` and
    ``bias`` ``(K,)`` finite tensors, ``K == classes`` and ``D == features`` where given; else a
    one-line DataError naming ``path``."""
    if not isinstance(state, dict) or sorted(state) != ["bias", "weight"]:
        from pcm3.io import PCM3_FILES, pcm3_file_format

        found = pcm3_file_format(path)
        if found is not None:
            raise DataError(path, f"is {PCM3_FILES[found]}; expected the linear layer `pcm3 eval linear` saves")
        keys = list(map(str, state)) if isinstance(state, dict) else None
        held = (f"a {type(state).__name__}" if keys is None else
                "keys " + ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "") if keys else "an empty dict")
        raise DataError(path, f"not the linear layer `pcm3 eval linear` saves (keys weight and bias): it holds {held}")
    weight, bias = state["weight"], state["bias"]
    if not (isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor) and weight.is_floating_point()
            and bias.is_floating_point() and weight.dim() == 2 and bias.shape == (weight.shape[0],)
            and weight.numel() > 0):
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (weight, bias)]
        raise DataError(path, f"weight {shapes[0]} and bias {shapes[1]} are not a linear layer's "
                              "(weight (classes, features) and bias (classes,), floating point)")
    k, d = weight.shape
    if classes is not None and k != classes:
        raise DataError(path, f"a layer of {k} classes; this run's data has {classes}")
    if features is not None and d != features:
        raise DataError(path, f"a layer of {d} input features; this run's encoder gives {features}")
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise DataError(path, "its weights hold NaN or inf: a damaged layer")
    head = torch.nn.Linear(d, k)
    head.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return head.eval()


def run(ctx: EvalContext) -> dict:
    """Clean and occluded linear accuracy (percent) and the drops."""
    p: OcclusionProtocol = ctx.protocol
    spec = input_spec(ctx)
    selected = None
    if p.fixed_part is not None and p.fixed_part not in get_layout(spec["layout"]).parts:
        raise ConfigError(f"fixed_part: {p.fixed_part!r} is not a body part of layout {spec['layout']} "
                          f"({', '.join(get_layout(spec['layout']).parts)})")
    if p.linear_run is not None:
        prep = prepare_test_only(ctx, p)
        features = getattr(prep["module"], "feature_dim", None)
        head = load_linear_head(p.linear_run, ctx, spec, prep["test"],
                                features=features if isinstance(features, int) else None).to(ctx.device)
    else:
        prep = prepare_linear(ctx, p)
        # the linear protocol's validation split (val_fraction, select: val) as in `pcm3 eval linear`
        val = (torch.from_numpy(prep["val_feats"]), prep["val_labels"]) if prep["val"] is not None else None
        head, history = fit_linear(prep["epoch_features"], prep["train_labels"], prep["num_classes"], p,
                                   device=ctx.device, seed=ctx.seed, val=val, progress=ctx.progress)
        write_history(ctx.out / "history.csv", history)
        selected = next((r["epoch"] for r in reversed(history) if r.get("selected")), history[-1]["epoch"])
    module = prep["module"]
    feats, tey, tei = encode(module, prep["test"], desc="test features", **prep["common"])
    if p.linear_run is not None and feats.shape[1] != head.in_features:  # a module without feature_dim: now
        raise DataError(Path(p.linear_run) / "linear_head.pt",
                        f"a layer of {head.in_features} input features; this run's features have {feats.shape[1]}")
    logits = predict(head, feats, ctx.device)
    clean = topk_accuracy(logits, tey, (1,))["top1"]
    clean_correct = logits.argmax(1) == tey
    save_scores(ctx.out, torch.softmax(torch.from_numpy(logits), 1).numpy(), tei, tey)
    np.save(ctx.out / "clean_correct.npy", clean_correct)
    if p.save_features:  # the clean test features, as `linear` writes them
        np.save(ctx.out / "test_features.npy", feats.astype(np.float16))
    figures = {"clean_top1": clean}
    by_ratio = {}
    tests = [(k, k, None) for k in p.kinds]
    if p.fixed_part is not None:
        tests.append((f"part_{p.fixed_part}", "part", p.fixed_part))
    for name, kind, part in tests:
        of, mask, ratio, labels = occluded_features(module, prep["test"], kind, spec=spec, ratio_range=p.ratio_range,
                                                    seed=ctx.seed, batch_size=p.feature_batch_size,
                                                    device=ctx.device, num_workers=p.num_workers, part=part)
        ol = predict(head, of, ctx.device)
        correct = ol.argmax(1) == labels
        acc = 100.0 * float(correct.mean())
        figures[f"{name}_top1"] = acc
        figures[f"{name}_drop"] = clean - acc
        np.save(ctx.out / f"occlusion_{name}_mask.npy", mask)
        np.save(ctx.out / f"occlusion_{name}_ratio.npy", ratio)
        np.save(ctx.out / f"occlusion_{name}_correct.npy", correct)
        if kind != "part":
            by_ratio[name] = accuracy_by_ratio(correct, ratio, p.ratio_bins, p.ratio_range)
            figures[f"{name}_ratio_mean"] = 100.0 * float(ratio.mean())
    return {"figures": figures, "by_ratio": by_ratio, "splits": prep["splits"], "input": spec,
            "linear_head": str(p.linear_run) if p.linear_run else "trained here",
            **({"selected_epoch": selected} if selected is not None else {}),
            "notes": ["drop = clean top-1 - occluded top-1 (points); *_ratio_mean: mean occluded share of joints "
                      "(spatial) or valid frames (temporal), percent"]}
