"""k-NN retrieval (Table 3): cosine similarity of L2-normalised features, train as gallery.

Protocol (paper section 4.3, following [40]): the frozen encoder's features of the centre test
crop, training split as the gallery, test split as queries, k = 1 (headline). k = 1, 5 and 20
come from one pass: the top-``max(ks)`` neighbours of each query are found in blocks of queries
on the device (``block_size x N_gallery`` similarities at a time, never an ``N x N`` matrix),
then each k votes among its first k neighbours: majority class, ties broken by the most
similar neighbour among the tied classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from pcm3.errors import ConfigError
from pcm3.evaluation.common import (EvalContext, InputProtocol, check_recognition_data, encode_kwargs,
                                    feature_module, input_spec, open_splits)
from pcm3.evaluation.features import encode

DEFAULT_CONFIG = "eval_knn"


@dataclass
class KnnProtocol(InputProtocol):
    """k-NN settings.

    Attributes:
        k: the headline k (1, as the paper).
        ks: every k reported, from one top-k search ((1, 5, 20)).
        block_size: queries per similarity block on the device.
    """

    k: int = 1
    ks: Tuple[int, ...] = (1, 5, 20)
    block_size: int = 1024

    def __post_init__(self):
        super().__post_init__()
        if self.k < 1 or not self.ks or min(self.ks) < 1 or self.block_size < 1:
            raise ConfigError("knn: k, every value of ks and block_size must be >= 1")


PROTOCOL = KnnProtocol


def check_inputs(data, benchmark, protocol: KnnProtocol, kind: str) -> None:
    """Before anything is written: the gallery (training part) and the queries (test part)
    (:func:`pcm3.evaluation.common.check_recognition_data`), and every k within the gallery."""
    parts = check_recognition_data(data, benchmark, ("train", "test"))
    check_k(protocol, len(parts["train"]), f"the training part of {benchmark!r} in {data}")


def check_k(p: KnnProtocol, gallery: int, where: str) -> None:
    """A k larger than the gallery would silently vote among all of it (and be reported as
    ``knn<k>``): a one-line ConfigError naming the setting instead."""
    if p.k > gallery:
        raise ConfigError(f"k: {p.k} neighbours, but the gallery ({where}) holds {gallery} clips; use k <= {gallery}")
    big = [k for k in p.ks if k > gallery]
    if big:
        fit = [k for k in p.ks if k <= gallery] or [1]
        raise ConfigError(f"ks: {big[0]} neighbours, but the gallery ({where}) holds {gallery} clips; use values "
                          f"up to {gallery} (e.g. --set ks=[{','.join(str(k) for k in fit)}]; in pcm3 benchmark "
                          f"--set knn.ks=[{','.join(str(k) for k in fit)}])")


@torch.no_grad()
def knn_topk(gallery, queries, k: int, *, block_size: int = 1024, device: str | torch.device = "cpu"
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most cosine-similar gallery items of every query, in blocks of queries.

    Shape:
        gallery ``(N, D)``, queries ``(M, D)`` -> similarities ``(M, k)`` (descending) and
        gallery indices ``(M, k)``, both on the CPU. ``k`` is capped at ``N``.
    """
    device = torch.device(device)
    g = F.normalize(torch.as_tensor(gallery, dtype=torch.float32).to(device), dim=1)
    k = min(k, g.shape[0])
    q_all = torch.as_tensor(queries, dtype=torch.float32)
    sims, idx = [], []
    for s in range(0, q_all.shape[0], block_size):
        q = F.normalize(q_all[s:s + block_size].to(device), dim=1)
        top = (q @ g.T).topk(k, dim=1)  # block x N similarities -> block x k
        sims.append(top.values.cpu())
        idx.append(top.indices.cpu())
    if not sims:
        return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.long)
    return torch.cat(sims), torch.cat(idx)


def knn_vote(sims: torch.Tensor, neighbour_labels: torch.Tensor, k: int, num_classes: int) -> torch.Tensor:
    """Predicted class of each query from its first ``k`` neighbours.

    Majority vote; among tied classes the one holding the most similar neighbour wins.

    Shape:
        sims ``(M, K)`` descending, neighbour_labels ``(M, K)`` -> ``(M,)``.
    """
    lab = neighbour_labels[:, :k]
    one_hot = F.one_hot(lab, num_classes).to(torch.float64)  # M x k x C
    counts = one_hot.sum(1)
    # tie-break in [0, 0.5): the best similarity of each class among the k (sims in [-1, 1])
    best = torch.where(one_hot.bool(), sims[:, :k, None].to(torch.float64), torch.tensor(-2.0, dtype=torch.float64))
    tie = (best.max(1).values.clamp(min=-1.0) + 1.0) / 4.0
    return (counts + tie).argmax(1)


def knn_accuracies(train_x, train_y, test_x, test_y, ks: Sequence[int] = (1, 5, 20), *, block_size: int = 1024,
                   device: str | torch.device = "cpu", num_classes: int | None = None
                   ) -> Tuple[Dict[str, float], Dict[int, np.ndarray]]:
    """Top-1 accuracy (percent) of k-NN for every k in ``ks`` from one blocked top-k search.

    Returns:
        ``{"knn1": ..., "knn5": ..., ...}`` and the predictions ``{k: (M,)}``.
    """
    train_y = torch.as_tensor(np.asarray(train_y), dtype=torch.long)
    test_y = np.asarray(test_y)
    c = num_classes or int(max(train_y.max().item(), test_y.max() if test_y.size else 0)) + 1
    sims, idx = knn_topk(train_x, test_x, max(ks), block_size=block_size, device=device)
    lab = train_y[idx]
    acc, preds = {}, {}
    for k in ks:
        pred = knn_vote(sims, lab, min(k, lab.shape[1]), c).numpy()
        preds[k] = pred
        acc[f"knn{k}"] = 100.0 * float((pred == test_y).mean()) if test_y.size else float("nan")
    return acc, preds


def run(ctx: EvalContext) -> dict:
    """k-NN accuracy of the frozen features (percent) for every k of the protocol."""
    p: KnnProtocol = ctx.protocol
    train, test = open_splits(ctx)
    check_k(p, len(train), f"the training part of {ctx.benchmark!r} in {ctx.data}")
    spec = input_spec(ctx)
    module = feature_module(ctx)
    kw = encode_kwargs(ctx, spec, p)
    trx, try_, _ = encode(module, train, desc="gallery features", **kw)
    tex, tey, tei = encode(module, test, desc="query features", **kw)
    ks = tuple(sorted(set(p.ks) | {p.k}))
    acc, preds = knn_accuracies(trx, try_, tex, tey, ks, block_size=p.block_size, device=ctx.device,
                                num_classes=max(train.num_classes, int(try_.max()) + 1))
    np.save(ctx.out / "predictions.npy", np.stack([preds[k] for k in ks]).astype(np.int64))
    np.save(ctx.out / "predictions_index.npy", tei)
    figures = {"top1": acc[f"knn{p.k}"], **acc}
    return {"figures": figures, "splits": {"train": len(train), "test": len(test)}, "input": spec, "ks": list(ks),
            "notes": [f"top1 = {p.k}-NN; predictions.npy rows follow ks {list(ks)}"]}
