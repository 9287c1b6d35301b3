"""The baseline rows of every table: raw input (no network), random init, supervised.

- **Raw input**: the valid frames, centre-cropped (95%), resized to the clip length (64 by
  default), centred, flattened: issue 6's definition ("the valid frames resampled to 64,
  centred, flattened") with the encoders' test-time centre crop, so that every row of a table
  reads the same frames of each clip. :class:`RawInput` is that mapping as a
  module, so it goes through the same feature code as an encoder.
- **Random init**: the encoder architecture with fresh weights (:func:`random_init_encoder`).
- **Supervised**: the same encoder trained with labels on the training split
  (:func:`train_supervised`: Adam, crop-resize augmentation), an upper bound.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pcm3.data.dataset import SkeletonDataset
from pcm3.errors import ConfigError
from pcm3.evaluation.features import encode, make_clips
from pcm3.models import Encoder, EncoderConfig
from pcm3.skeleton import get_layout


class RawInput(torch.nn.Module):
    """Raw-input "encoder": ``(N, C, T, V, M)`` -> ``(N, C * T * V * M)``, no parameters.

    For the joint stream the clip is centred: the mean position of the layout's centre joint of
    the first person over the clip's frames is subtracted from every present person (an absent
    person, all zeros in a frame, stays zero). Bone and motion streams are translation-invariant
    and only flattened. Attributes ``layout``, ``stream``, ``clip_len``, ``test_crop`` as an
    exported encoder.
    """

    def __init__(self, layout: str = "ntu25", stream: str = "joint", clip_len: int = 64, test_crop: float = 0.95):
        super().__init__()
        self.layout, self.stream, self.clip_len, self.test_crop = layout, stream, int(clip_len), float(test_crop)
        self.center = get_layout(layout).center

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stream == "joint":
            origin = x[:, :, :, self.center, 0].mean(dim=2)  # N x C
            present = (x.abs().sum(dim=(1, 3), keepdim=True) > 0).to(x.dtype)  # N x 1 x T x 1 x M
            x = (x - origin.view(*origin.shape, 1, 1, 1)) * present
        return x.flatten(1)


def raw_input_features(dataset: SkeletonDataset, *, clip_len: int = 64, crop: float = 0.95, stream: str = "joint",
                       layout: Optional[str] = None, batch_size: int = 256, device: str | torch.device = "cpu",
                       num_workers: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Raw-input features of every sample (see :class:`RawInput`).

    Returns:
        ``X`` ``(N, C * clip_len * V * M)`` float32 and labels ``y`` ``(N,)`` int64, dataset order.
    """
    layout = layout or dataset.prepared.layout
    module = RawInput(layout, stream, clip_len, crop)
    x, y, _ = encode(module, dataset, clip_len=clip_len, stream=stream, layout=layout, test_crop=crop,
                     batch_size=batch_size, device=device, num_workers=num_workers)
    return x, y


def random_init_encoder(encoder_config: EncoderConfig | dict, seed: int = 0, *, layout: str = "ntu25",
                        stream: str = "joint", clip_len: int = 64, test_crop: float = 0.95) -> Encoder:
    """A freshly initialised encoder (weights from ``seed``) in eval mode, with input attributes.

    ``encoder_config`` must hold the data's input size (``num_joints``, ``num_persons``,
    ``in_channels``): a packaged config's are NTU's until pretraining takes them from the data
    (:func:`pcm3.pretrain.data_shape_into_config`); a ``num_joints`` other than ``layout``'s is a
    :class:`~pcm3.errors.ConfigError`."""
    cfg = encoder_config if isinstance(encoder_config, EncoderConfig) else EncoderConfig(**dict(encoder_config))
    joints = get_layout(layout).num_joints
    if cfg.num_joints != joints:
        raise ConfigError(f"random_init_encoder: the encoder config reads {cfg.num_joints} joints, layout {layout} has "
                          f"{joints}; set encoder_config.num_joints (and num_persons) to the data's")
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: CUDA's is left alone
        torch.default_generator.manual_seed(seed)
        encoder = Encoder(cfg).eval()
    for key, value in (("layout", layout), ("stream", stream), ("clip_len", clip_len), ("test_crop", test_crop)):
        setattr(encoder, key, value)
    return encoder


def _sized_to(encoder_config: EncoderConfig | dict, dataset: SkeletonDataset) -> EncoderConfig:
    """``encoder_config`` with the input size (coordinates, joints, persons) of ``dataset``'s
    clips ``(C, T, V, M)``, as pretraining takes it from the data."""
    import dataclasses

    cfg = encoder_config if isinstance(encoder_config, EncoderConfig) else EncoderConfig(**dict(encoder_config))
    c, v, m = dataset.prepared.input_size
    return dataclasses.replace(cfg, in_channels=c, num_joints=v, num_persons=m)


def supervised_settings(train_samples: int, **kwargs) -> dict:
    """What :func:`train_supervised` records of a bound trained with ``kwargs`` (its arguments;
    those not given: its defaults) on ``train_samples`` clips: ``epochs``, ``batch_size``, ``lr``,
    ``weight_decay``, ``crop_range``, ``min_len``, ``clip_len``, ``stream``, ``seed``, ``train_samples``."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(train_supervised).parameters.items()
                if p.default is not inspect.Parameter.empty}
    a = {**defaults, **kwargs}
    return {"epochs": int(a["epochs"]), "batch_size": int(a["batch_size"]), "lr": float(a["lr"]),
            "weight_decay": float(a["weight_decay"]), "crop_range": [float(c) for c in a["crop_range"]],
            "min_len": int(a["min_len"]), "clip_len": int(a["clip_len"]), "stream": a["stream"],
            "seed": int(a["seed"]), "train_samples": int(train_samples)}


def train_supervised(encoder_config: EncoderConfig | dict, train_dataset: SkeletonDataset, *, epochs: int = 60,
                     batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.0, clip_len: int = 64,
                     stream: str = "joint", layout: Optional[str] = None,
                     crop_range: Tuple[float, float] = (0.5, 1.0), min_len: int = 64, test_crop: float = 0.95,
                     device: str | torch.device = "cpu", seed: int = 0, progress: bool = False,
                     num_workers: int = 0) -> Encoder:
    """The supervised upper bound: the encoder architecture trained with labels from scratch.

    Encoder + a linear layer trained with cross-entropy on ``train_dataset`` (Adam, ``lr``
    constant, random crops ``U(crop_range)`` of the valid frames resized to ``clip_len`` as the
    only augmentation), seeded. The classifier is dropped: the returned encoder (eval mode, with
    ``layout``/``stream``/``clip_len``/``test_crop`` attributes) is then evaluated exactly as a
    pretrained one.

    Args:
        encoder_config: the architecture (an :class:`EncoderConfig` or its dict); its input size
            (coordinates, joints, persons) is taken from ``train_dataset``, as pretraining does.
        train_dataset: labelled training clips ``(C, T, V, M)``.
        epochs: passes over the training set (issue 6: 60).
        device: where to train.
        seed: initial weights, data order and crops.

    Returns:
        the trained :class:`pcm3.models.Encoder`; its ``supervised_settings`` (a dict: the
        arguments above and ``train_samples``) say how.
    """
    from pcm3.progress import progress_bar

    device = torch.device(device)
    layout = layout or train_dataset.prepared.layout
    joints, data_joints = get_layout(layout).num_joints, train_dataset.prepared.input_size[1]
    if joints != data_joints:  # (it said "the encoder config reads 20 joints", the data's count, not the encoder's)
        raise ConfigError(f"supervised: the encoder's layout {layout} ({joints} joints) is not the data's "
                          f"{train_dataset.prepared.layout} ({data_joints} joints) in {train_dataset.prepared.root}")
    encoder_config = _sized_to(encoder_config, train_dataset)
    encoder = random_init_encoder(encoder_config, seed, layout=layout, stream=stream, clip_len=clip_len,
                                  test_crop=test_crop).to(device)
    labels = train_dataset.labels
    if labels.size == 0 or labels.min() < 0:
        raise ValueError("supervised training needs labelled training samples")
    classes = max(int(train_dataset.num_classes), int(labels.max()) + 1)
    with torch.random.fork_rng(devices=[]):  # the CPU generator only: CUDA's is left alone
        torch.default_generator.manual_seed(seed + 1)
        head = torch.nn.Linear(encoder.feature_dim, classes).to(device)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    order = torch.Generator().manual_seed(seed)
    crops = torch.Generator(device=device).manual_seed(seed + 2)
    loader = DataLoader(train_dataset, batch_size=batch_size, shuffle=True, generator=order, drop_last=False,
                        num_workers=num_workers)
    encoder.train()
    head.train()
    bar = progress_bar(total=epochs * len(loader), desc="supervised", disable=not progress)
    for _ in range(epochs):
        for x, lengths, y, _ in loader:
            if len(y) < 2:  # BatchNorm needs more than one sample
                continue
            x, lengths, y = x.to(device), lengths.to(device), y.to(device)
            clip = make_clips(x, lengths, clip_len=clip_len, stream=stream, layout=layout, crop_range=crop_range,
                              min_len=min_len, generator=crops)
            loss = F.cross_entropy(head(encoder(clip)), y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError("supervised training diverged (non-finite loss); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    encoder.supervised_trained = True  # evaluate() uses it as the supervised row without retraining
    # what it was trained with: recorded as the row's protocol.supervised by every evaluation of it
    encoder.supervised_settings = supervised_settings(len(train_dataset), epochs=epochs, batch_size=batch_size,
                                                      lr=lr, weight_decay=weight_decay, crop_range=crop_range,
                                                      min_len=min_len, clip_len=clip_len, stream=stream, seed=seed)
    return encoder.eval()
