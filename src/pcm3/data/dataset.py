"""PyTorch datasets over prepared folders.

Samples come out raw (joints, padded, as stored); views, streams and masks are made on
whole batches on the training device (``pcm3.augment``, ``pcm3.masking``, ``pcm3.skeleton``).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pcm3.data.prepared import Prepared
from pcm3.errors import DataError


class SkeletonDataset(Dataset):
    """Clips of a prepared folder (``kind="clips"``), one benchmark part.

    Args:
        data: a prepared folder or an open :class:`Prepared`.
        benchmark: e.g. ``"xsub"``; ``None`` or ``"all"`` for every sample.
        part: ``"train"`` or ``"test"``.
        indices: an explicit subset of sample indices (overrides benchmark/part).

    Returns per item ``(x, length, label, index)``: ``x`` ``(C, T, V, M)`` float32,
    ``length`` the true number of frames, ``label`` 0-based (-1 when unlabeled),
    ``index`` the sample's index in the prepared folder. A sample holding NaN or inf raises
    :class:`pcm3.errors.DataError` naming it (also from a DataLoader worker). A ``samples.csv``
    that is not one row per sample (damaged, truncated) is refused here, before any training
    (:attr:`Prepared.rows`): messages name samples by it, validation splits group by its subjects.
    """

    def __init__(self, data: str | os.PathLike | Prepared, benchmark: Optional[str] = None,
                 part: str = "train", indices: Optional[Sequence[int]] = None):
        self.prepared = data if isinstance(data, Prepared) else Prepared(data)
        if self.prepared.kind != "clips":
            raise DataError(self.prepared.root, f"holds untrimmed videos ({self.prepared.kind}); this needs "
                                                "--trimmed clips (`pcm3 prepare ... --kind clips`)")
        self.prepared.rows  # read now: a samples.csv that is not one row per sample is a one-line DataError
        self.indices = (np.asarray(indices, dtype=np.int64) if indices is not None
                        else self.prepared.split(benchmark, part))

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def labels(self) -> np.ndarray:
        return self.prepared.labels[self.indices]

    @property
    def lengths(self) -> np.ndarray:
        return self.prepared.lengths[self.indices]

    @property
    def num_classes(self) -> int:
        return self.prepared.num_classes

    def __getitem__(self, i: int):
        j = int(self.indices[i])
        arr = np.array(self.prepared.data[j], dtype=np.float32)
        if not np.isfinite(arr).all():  # ~20 us a clip; a NaN would otherwise surface as a "diverged" loss
            raise DataError(self.prepared.root / "data.npy", f"sample {j} ({self.prepared.sample_name(j)}) holds non-finite "
                                                             "values (NaN or inf); `pcm3 info` lists them")
        x = torch.from_numpy(arr)
        return (x, torch.tensor(int(self.prepared.lengths[j])), torch.tensor(int(self.prepared.labels[j])),
                torch.tensor(j))
