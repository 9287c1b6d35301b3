"""Frozen-encoder features of a prepared split (test-time view: centre crop, resize).

Also what every task needs to leave the caller's objects as they were: :func:`pcm3.rng.preserved_rng`
(the global random states) and :func:`kept_mode_and_device` (a module's train/eval modes and
device), and the checks of a module's output (:func:`check_features`, :func:`feature_dim`).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from pcm3.augment import center_crop_resize
from pcm3.checks import refuse_non_finite
from pcm3.data.dataset import SkeletonDataset
from pcm3.errors import ConfigError, DataError
from pcm3.skeleton import to_stream

#: What an encoder module's input attributes default to when it has none (or ``None``): the
#: layout falls back to the data's (``None`` here), the rest to these values.
INPUT_ATTRIBUTES = {"layout": None, "stream": "joint", "clip_len": 64, "test_crop": 0.95}


def input_attribute(encoder, name: str):
    """``encoder.<name>`` (``layout``, ``stream``, ``clip_len``, ``test_crop``), or its default
    (:data:`INPUT_ATTRIBUTES`) when the module has none or holds ``None``."""
    value = getattr(encoder, name, None) if encoder is not None else None
    return INPUT_ATTRIBUTES[name] if value is None else value


# --------------------------------------------------------------------------- the caller's state

def _device_of(module: torch.nn.Module):
    """The one device of ``module``'s parameters and buffers; None when it has none or several."""
    devices = {t.device for t in (*module.parameters(), *module.buffers())}
    return devices.pop() if len(devices) == 1 else None


@contextlib.contextmanager
def kept_mode_and_device(module: torch.nn.Module | None) -> Iterator[None]:
    """Put ``module`` back on exit as it was on entry, however the block ends: the train/eval
    mode of each of its submodules, and its device when the block moved it (a module whose
    tensors lie on several devices is moved back only if they were on one). ``None``: nothing."""
    if module is None:
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    device = _device_of(module)
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
        if device is not None and _device_of(module) != device:
            module.to(device)


def _module_name(module: torch.nn.Module) -> str:
    file = getattr(module, "file", None)  # set by the runner's loaders
    return type(module).__name__ + (f" ({file})" if file else "")


def check_features(module: torch.nn.Module, clip: torch.Tensor, out) -> None:
    """A one-line :class:`ConfigError` unless ``out`` (``module(clip)``) is ``(N, D)``, one feature
    vector per clip of ``clip`` ``(N, C, T, V, M)``: a per-frame output ``(N, T, D)`` or a tuple
    would otherwise fail deep inside a task (a size mismatch in k-NN, an unpacking error...)."""
    n = clip.shape[0]
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == n:
        return
    got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
    raise ConfigError(f"encoder {_module_name(module)}: returned {got} for {n} clips of shape "
                      f"{tuple(clip.shape[1:])} (C, T, V, M); evaluation needs one feature vector per clip, "
                      f"(N, D) = ({n}, D)")


@torch.no_grad()
def feature_dim(module: torch.nn.Module, make_clip: Callable[[], torch.Tensor]) -> int:
    """D, the size of ``module``'s features: its ``feature_dim`` (or ``config.feature_dim``, a pcm3
    :class:`~pcm3.models.Encoder`), else the width of one forward pass in eval mode (its modes
    are kept) on the clip ``(1, C, T, V, M)`` that ``make_clip()`` gives (called only then),
    checked ``(N, D)`` by :func:`check_features`."""
    dim = getattr(module, "feature_dim", None) or getattr(getattr(module, "config", None), "feature_dim", None)
    if dim:
        return int(dim)
    clip = make_clip()
    with kept_mode_and_device(module):
        out = module.eval()(clip)
    check_features(module, clip, out)
    return int(out.shape[1])


# --------------------------------------------------------------------------- features

@torch.no_grad()
def extract_features(encoder: torch.nn.Module, dataset: SkeletonDataset, *, batch_size: int = 256,
                     device: str | torch.device = "cpu", stream: str | None = None, layout: str | None = None,
                     clip_len: int | None = None, crop: float | None = None, num_workers: int = 0
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Encode every sample: centre crop of ``crop`` of the valid frames, resized to ``clip_len``.

    Defaults come from the encoder's export attributes (stream, layout, clip_len, test_crop);
    where the module has none: the joint stream, the data's layout, 64 frames, crop 0.95. The
    module's modes and device are put back on return.

    Returns:
        features ``(N, D)`` float32 and labels ``(N,)`` int64, in dataset order.
    """
    stream = stream or input_attribute(encoder, "stream")
    layout = layout or input_attribute(encoder, "layout") or dataset.prepared.layout
    clip_len = clip_len or input_attribute(encoder, "clip_len")
    crop = crop or input_attribute(encoder, "test_crop")
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    with kept_mode_and_device(encoder):
        encoder.eval().to(device)
        for x, lengths, y, _ in loader:
            x = to_stream(center_crop_resize(x.to(device), lengths.to(device), ratio=crop, out_len=clip_len), stream,
                          layout)
            out = encoder(x)
            if not feats:
                check_features(encoder, x, out)
            feats.append(out.float().cpu())
            labels.append(y)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def make_clips(x: torch.Tensor, lengths: torch.Tensor, *, clip_len: int, stream: str, layout: str,
               crop: float | None = 0.95, crop_range: Tuple[float, float] | None = None, min_len: int = 64,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Encoder input from a raw padded batch: a crop of the valid frames, resized, as a stream.

    With ``crop_range`` a random crop ``U(crop_range)`` of the valid frames (at least ``min_len``
    frames where the clip is longer: the field's ``valid_crop_resize``), else the centre ``crop``.

    Args:
        x: ``(N, C, T, V, M)`` joints (metres), frames beyond ``lengths`` are padding.
        lengths: ``(N,)`` true number of frames.

    Returns:
        ``(N, C, clip_len, V, M)`` of ``stream`` (``joint``, ``bone`` or ``motion``).
    """
    from pcm3.augment import crop_resize

    if crop_range is not None:
        x = crop_resize(x, lengths, out_len=clip_len, ratio=tuple(crop_range), min_len=min_len, generator=generator)
    else:
        x = center_crop_resize(x, lengths, ratio=crop if crop is not None else 0.95, out_len=clip_len)
    return to_stream(x, stream, layout)


@torch.no_grad()
def encode(module: torch.nn.Module, dataset: SkeletonDataset, *, clip_len: int, stream: str, layout: str,
           test_crop: float = 0.95, crops: int = 0, crop_range: Tuple[float, float] = (0.5, 1.0),
           min_len: int = 64, seed: int = 0, batch_size: int = 256, device: str | torch.device = "cpu",
           num_workers: int = 0, progress: bool = False, desc: str = "features",
           dtype: torch.dtype = torch.float32, first_batch: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features of every sample of ``dataset``: the centre crop, or ``crops`` random crops each.

    The module runs in eval mode under ``torch.no_grad`` in batches on ``device`` (its modes and
    device are put back on return); the data is read from the memory-mapped prepared folder
    (``num_workers`` loader processes).

    Args:
        module: ``(N, C, clip_len, V, M) -> (N, D)``; any other output is a one-line
            :class:`ConfigError` naming the module and the shape it returned.
        crops: 0 for the deterministic centre crop of ``test_crop``; ``K > 0`` for K random
            crops ``U(crop_range)`` per sample, drawn from ``seed`` (crop ``k`` of batch ``b``
            from its own generator, so the result does not depend on ``num_workers``).
        first_batch: the number ``b`` of ``dataset``'s first batch, when ``dataset`` is a run
            of a larger data set's batches (:func:`pcm3.evaluation.linear.encode_shared`): its
            crops are then the ones the whole data set's call draws for those batches.

        dtype: storage type of the features (``torch.float16`` halves the memory of a crop pool).

    Returns:
        features ``(N, D)`` (``crops == 0``) or ``(K, N, D)`` of ``dtype``, labels ``(N,)`` int64 and
        the samples' indices in the prepared folder ``(N,)`` int64, in dataset order.
    """
    from pcm3.progress import progress_bar

    device = torch.device(device)
    loader = iter_batches(dataset, batch_size, num_workers)
    passes = max(1, crops)
    feats = [[] for _ in range(passes)]
    labels, index = [], []
    bar = progress_bar(total=len(dataset), desc=desc, disable=not progress)
    with kept_mode_and_device(module):
        module.eval().to(device)
        for b, (x, lengths, y, idx) in enumerate(loader, start=first_batch):
            x, lengths = x.to(device, non_blocking=True), lengths.to(device)
            for k in range(passes):
                if crops:
                    g = torch.Generator(device=device).manual_seed((seed * 1_000_003 + k * 7_919 + b) % (2 ** 63 - 1))
                    clip = make_clips(x, lengths, clip_len=clip_len, stream=stream, layout=layout,
                                      crop_range=crop_range, min_len=min_len, generator=g)
                else:
                    clip = make_clips(x, lengths, clip_len=clip_len, stream=stream, layout=layout, crop=test_crop)
                out = module(clip)
                if not labels and k == 0:  # the first batch: a module that does not give (N, D) is named
                    check_features(module, clip, out)
                feats[k].append(out.to(dtype).cpu())
            labels.append(y)
            index.append(idx)
            bar.update(len(y))
    bar.close()
    out = [torch.cat(f).numpy() for f in feats]
    features = np.stack(out) if crops else out[0]
    index_np = torch.cat(index).numpy().astype(np.int64)
    _refuse_non_finite_features(features, index_np, dataset, module)
    return features, torch.cat(labels).numpy().astype(np.int64), index_np


def _refuse_non_finite_features(features: np.ndarray, index: np.ndarray, dataset: SkeletonDataset,
                                module: torch.nn.Module) -> None:
    """A one-line :class:`DataError` when a feature is NaN/inf (the clips are checked finite
    first, so the encoder made it: NaN weights, or an overflow), instead of a wrong figure."""
    flat = features.reshape(-1, features.shape[-1]) if features.ndim == 3 else features
    finite = np.isfinite(flat).all(axis=1)
    if finite.all():
        return
    j = int(index[int(np.argmin(finite)) % len(index)])
    where = getattr(module, "file", None) or "the encoder"  # set by the runner's loaders
    raise DataError(where, f"gives non-finite features (NaN or inf) for {int((~finite).sum())} of {len(finite)} "
                           f"clips, the first sample {j} ({dataset.prepared.sample_name(j)}), whose clip is "
                           "finite: its weights hold NaN/inf or overflow on this data")


def iter_batches(dataset: SkeletonDataset, batch_size: int, num_workers: int = 0):
    """Batches ``(x, lengths, labels, indices)`` of ``dataset`` in order.

    With ``num_workers == 0`` the clips are read straight from the memory-mapped array, each
    only up to the longest valid length of its batch (the padding beyond is never read by the
    crops); otherwise a :class:`DataLoader` with worker processes reads whole padded clips.
    Either way a clip holding NaN or inf raises a one-line :class:`pcm3.errors.DataError`
    naming it (:func:`pcm3.checks.refuse_non_finite`, :class:`SkeletonDataset`).

    Yields:
        ``x`` ``(B, C, T_b, V, M)`` float32, ``lengths``, ``labels``, ``indices`` ``(B,)`` int64.
    """
    if num_workers > 0:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        return
    prepared = dataset.prepared
    data, all_lengths, all_labels = prepared.data, prepared.lengths, prepared.labels
    t = data.shape[2]
    for s in range(0, len(dataset), batch_size):
        idx = np.asarray(dataset.indices[s:s + batch_size], dtype=np.int64)
        lengths = np.clip(all_lengths[idx], 1, t)
        frames = int(lengths.max())
        x = np.stack([np.asarray(data[j, :, :frames], dtype=np.float32) for j in idx])
        refuse_non_finite(prepared, idx, x)  # as SkeletonDataset: a NaN clip is named, never a wrong figure
        yield (torch.from_numpy(x), torch.from_numpy(lengths.astype(np.int64)),
               torch.from_numpy(all_labels[idx].astype(np.int64)), torch.from_numpy(idx))
