"""A quick probe of frozen features: a linear classifier and 1-nearest-neighbour retrieval.

This is the demo's simple check of representation quality on cached features (one centre
crop per sample). The paper's full linear protocol (random training crops, 100 epochs of
SGD on the encoder's outputs) is a separate evaluation.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 1) -> float:
    """Top-1 accuracy of k-NN (cosine similarity of L2-normalised features, majority vote).

    Computed by the blocked top-k search of :mod:`pcm3.evaluation.knn` (ties of the vote go to
    the class of the most similar neighbour).

    Shape:
        train_x ``(N, D)``, train_y ``(N,)``, test_x ``(M, D)``, test_y ``(M,)``.
    """
    from pcm3.evaluation.knn import knn_accuracies

    acc, _ = knn_accuracies(train_x, train_y, test_x, test_y, (k,))
    return acc[f"knn{k}"] / 100.0 if len(test_y) else 0.0


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, *,
                 epochs: int = 200, lr: float = 0.01, weight_decay: float = 1e-4, seed: int = 0) -> Dict[str, float]:
    """Train a linear classifier on standardised frozen features (full-batch Adam).

    Returns:
        ``{"train_acc", "test_acc"}``, fractions in [0, 1].
    """
    g = torch.Generator().manual_seed(seed)
    xtr = torch.as_tensor(train_x, dtype=torch.float32)
    xte = torch.as_tensor(test_x, dtype=torch.float32)
    mean, std = xtr.mean(0, keepdim=True), xtr.std(0, keepdim=True).clamp_min(1e-6)
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    ytr = torch.as_tensor(train_y, dtype=torch.long)
    yte = torch.as_tensor(test_y, dtype=torch.long)
    classes = int(max(ytr.max(), yte.max())) + 1
    head = torch.nn.Linear(xtr.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.01)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(xtr), ytr).backward()
        opt.step()
    with torch.no_grad():
        train_acc = (head(xtr).argmax(1) == ytr).float().mean().item()
        test_acc = (head(xte).argmax(1) == yte).float().mean().item()
    return {"train_acc": train_acc, "test_acc": test_acc}


def probe(train_x, train_y, test_x, test_y, seed: int = 0) -> Dict[str, float]:
    """Linear-probe and 1-NN test accuracy of one set of features."""
    lin = linear_probe(train_x, train_y, test_x, test_y, seed=seed)
    return {"linear": lin["test_acc"], "linear_train": lin["train_acc"],
            "knn1": knn_accuracy(train_x, train_y, test_x, test_y, k=1)}
