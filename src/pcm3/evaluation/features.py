"""Frozen-encoder features of a prepared split (test-time view: centre crop, resize)."""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcm3.augment import center_crop_resize
from pcm3.data.dataset import SkeletonDataset
from pcm3.skeleton import to_stream


@torch.no_grad()
def extract_features(encoder: torch.nn.Module, dataset: SkeletonDataset, *, batch_size: int = 256,
                     device: str | torch.device = "cpu", stream: str | None = None, layout: str | None = None,
                     clip_len: int | None = None, crop: float | None = None, num_workers: int = 0
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Encode every sample: centre crop of ``crop`` of the valid frames, resized to ``clip_len``.

    Defaults come from the encoder's export attributes (stream, layout, clip_len, test_crop).

    Returns:
        features ``(N, D)`` float32 and labels ``(N,)`` int64, in dataset order.
    """
    stream = stream or getattr(encoder, "stream", "joint")
    layout = layout or getattr(encoder, "layout", "ntu25")
    clip_len = clip_len or getattr(encoder, "clip_len", 64)
    crop = crop or getattr(encoder, "test_crop", 0.95)
    device = torch.device(device)
    was_training = encoder.training
    encoder.eval().to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    for x, lengths, y, _ in loader:
        x = center_crop_resize(x.to(device), lengths.to(device), ratio=crop, out_len=clip_len)
        feats.append(encoder(to_stream(x, stream, layout)).float().cpu())
        labels.append(y)
    encoder.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()
