"""Checks that pretraining (and the commands around it) run before anything is written.

Each raises a one-line :class:`pcm3.errors.DataError` / :class:`pcm3.errors.ConfigError`
naming the file or key, so that a mistake is reported before a run folder exists rather than
as a traceback (or a wrong message) after training started.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Optional

import numpy as np

from pcm3.data.prepared import Prepared
from pcm3.errors import DataError
from pcm3.outputs import ensure_free_space

# Parameters above which a CPU run is "far too large": the paper's model (about 100M) runs
# hours per epoch on a laptop CPU; the small configs have well under 2M.
CPU_PARAMS_WARNING = 20_000_000


def check_clips(prepared: Prepared, command: str = "pretraining") -> None:
    """Refuse a ``sequences`` (untrimmed video) folder where trimmed clips are needed."""
    if prepared.kind != "clips":
        dataset = prepared.meta.get("dataset", "this data set")
        hint = (f" (prepare it again with `pcm3 prepare {dataset} --trimmed` or `--kind clips`)"
                if str(dataset).startswith("pku") else " (prepare labelled clips of it)")
        raise DataError(prepared.root, f"holds untrimmed videos ({prepared.kind}); {command} needs "
                                       f"--trimmed clips{hint}")


def check_samples(prepared: Prepared, indices: np.ndarray, labelled: bool = False) -> None:
    """Labels and lengths of the samples ``indices`` are what the loaders rely on.

    Labels must be -1 (none) or below the number of classes; with ``labelled`` (an evaluation
    that trains or tests on the labels) -1 is refused too: labels 0..C-1. Lengths between 1
    and the clip length T. The sample is named in the message.
    """
    if indices.size == 0:
        return
    labels = prepared.labels[indices]
    lengths = prepared.lengths[indices]
    n_classes = prepared.num_classes
    low = 0 if labelled else -1
    bad = np.flatnonzero((labels < low) | ((labels >= n_classes) if n_classes else False))
    if bad.size:
        j = int(indices[bad[0]])
        label = int(prepared.labels[j])
        classes = f"0..{n_classes - 1} ({n_classes} classes in meta.json)" if n_classes else "0 or more"
        if labelled and label == -1:
            raise DataError(prepared.root / "labels.npy",
                            f"sample {j} ({prepared.sample_name(j)}) has no label (-1); this evaluation trains and tests "
                            f"on labels {classes}; {bad.size} such samples in the parts it reads")
        raise DataError(prepared.root / "labels.npy",
                        f"sample {j} ({prepared.sample_name(j)}) has label {label}, outside {classes}; "
                        f"{bad.size} such samples")
    t = int(prepared.shape[2]) if prepared.kind == "clips" else None
    bad = np.flatnonzero((lengths < 1) | ((lengths > t) if t else False))
    if bad.size:
        j = int(indices[bad[0]])
        raise DataError(prepared.root / "lengths.npy",
                        f"sample {j} ({prepared.sample_name(j)}) has length {int(prepared.lengths[j])}, outside "
                        f"1..{t}; {bad.size} such samples")


#: the most bytes of clips or frames scanned for NaN/inf before a command starts; larger data
#: sets are checked as they are read
SCAN_BYTES = 256 << 20


def check_finite(prepared: Prepared, indices: np.ndarray, max_bytes: int = SCAN_BYTES, chunk: int = 256) -> bool:
    """Scan the clips ``indices`` for NaN/inf when they hold at most ``max_bytes``; returns
    whether it scanned. Larger sets are checked sample by sample as they are loaded
    (:class:`pcm3.data.dataset.SkeletonDataset`, :func:`refuse_non_finite`)."""
    if prepared.kind != "clips" or indices.size == 0:
        return False
    per_sample = int(np.prod(prepared.shape[1:], dtype=np.int64)) * 4
    if per_sample * indices.size > max_bytes:
        return False
    order = np.sort(indices)
    for s in range(0, order.size, chunk):
        idx = order[s:s + chunk]
        refuse_non_finite(prepared, idx, np.asarray(prepared.data[idx]), scan=True)
    return True


def refuse_non_finite(prepared: Prepared, indices: np.ndarray, block: np.ndarray, scan: bool = False) -> None:
    """One-line :class:`DataError` naming the first sample of ``block`` (the clips ``indices``,
    ``(len(indices), ...)``, as read) that holds NaN or inf; nothing when all are finite.
    The loaders call it on what they read, so that a data set too large for
    :func:`check_finite`'s scan is still refused (never a wrong figure or a diverged loss)."""
    block = np.asarray(block)
    if block.size == 0 or np.isfinite(block).all():
        return
    ok = np.isfinite(block.reshape(block.shape[0], -1)).all(axis=1)
    if ok.all():
        return
    j = int(np.asarray(indices)[int(np.argmin(ok))])
    where = f"; {int((~ok).sum())} such samples in this block" if scan else ""
    raise DataError(prepared.root / "data.npy",
                    f"sample {j} ({prepared.sample_name(j)}) holds non-finite values (NaN or inf){where}; "
                    "`pcm3 info` lists them")


def size_warning(num_params: int, device) -> Optional[str]:
    """A warning line when a model of ``num_params`` is far too large for a CPU run."""
    if getattr(device, "type", str(device)) == "cpu" and num_params > CPU_PARAMS_WARNING:
        return (f"warning: {num_params / 1e6:.0f}M parameters on a CPU: each epoch may take hours. For a "
                "small run use --config demo (or a data set's small config such as msr3d_xsub_joint), "
                "or train on a GPU")
    return None


def ensure_checkpoint_space(run: Path, num_bytes: int) -> None:
    """Two checkpoints (the last one and its atomic replacement) must fit beside ``run``."""
    probe = Path(run)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    ensure_free_space(probe, 2 * num_bytes, "two checkpoints of this model", report=run)


def checkpoint_write_error(path: Path, e: BaseException) -> Optional[DataError]:
    """The one-line error for a failed checkpoint write, or None when it is not the disk's fault.

    ``torch.save`` reports a full disk as ``RuntimeError(... file write failed)``, other writes
    as ``OSError`` (ENOSPC, EDQUOT).
    """
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
    full = full or (isinstance(e, RuntimeError) and "write failed" in str(e))
    if full:
        return DataError(path, "disk full while writing the checkpoint; the previous checkpoint is kept "
                               "(free some space, then --resume)")
    if isinstance(e, OSError):
        return DataError(path, f"cannot write the checkpoint ({e.strerror or e})")
    return None
