"""Training on several processes (GPUs, machines) with ``torchrun`` and DistributedDataParallel.

``torchrun --nproc_per_node=G [--nnodes N ...] -m pcm3 pretrain ...`` starts one process per
device; each reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address from its
environment (:func:`init_from_env`). Without those variables (a plain ``pcm3 pretrain``)
nothing here is used and a run is the single-process run, bit for bit.

Semantics under ``G`` processes:

- ``train.batch_size`` is the effective (global) batch: each rank takes ``batch_size / G``
  samples per step from its own share of the epoch's permutation (:class:`RankSampler`); the
  learning rate applies to that global batch, so changing ``G`` changes nothing else, and a run
  can be resumed with another ``G``.
- Gradients are averaged by DDP, so the step is the one of a single process on the global
  batch (up to BatchNorm statistics, see ``model.sync_bn`` / ``model.key_bn``).
- The keys (and their sample indices) of every rank are gathered in rank order before they are
  enqueued: the queue is the same on every rank, and the same as one process's queue.
- The key encoder's BatchNorm: MoCo's shuffle BN (``model.key_bn: shuffle``), synchronised
  statistics (``sync``) or per rank (``local``); the query encoder's and the decoder's:
  synchronised with ``model.sync_bn``.
- Rank 0 alone writes the run folder (log, metrics, checkpoints) and shows progress; the other
  ranks' per-epoch figures are not averaged in (the loss terms logged are rank 0's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pcm3.errors import ConfigError
from pcm3.models.encoder import chunked_batch_norm


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True when started by ``torchrun`` (or another launcher setting ``WORLD_SIZE``) with > 1 process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def info() -> DistInfo:
    """This process's rank and the world size (0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def is_main() -> bool:
    """Rank 0, or not distributed: the process that writes files and prints."""
    return info().is_main


def init_from_env(device: torch.device) -> Tuple[DistInfo, torch.device]:
    """Join the process group of a ``torchrun`` launch; returns ``(info, this rank's device)``.

    Backend ``nccl`` for CUDA, ``gloo`` for CPU. On CUDA each process takes ``cuda:LOCAL_RANK``.
    Not launched: ``(DistInfo(), device)`` unchanged.
    """
    if not launched():
        return DistInfo(), device
    if not dist.is_available():
        raise ConfigError("torchrun launch, but this PyTorch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices on this machine")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info(), device


def local_batch(batch_size: int, world_size: int) -> int:
    """Per-process batch of a global ``train.batch_size``; it must split evenly."""
    if batch_size % world_size:
        raise ConfigError(f"train.batch_size {batch_size} does not split over {world_size} processes "
                          f"(the effective batch is train.batch_size; make it a multiple of {world_size})")
    return batch_size // world_size


class RankSampler(torch.utils.data.Sampler):
    """Rank ``rank``'s share of an epoch permutation, every rank the same length.

    ``sampler`` is the single-process sampler (an ``EpochSampler``: a permutation per epoch from
    the run's seed, the same on every rank); rank ``r`` of ``G`` takes positions ``r, r + G, ...``
    of the first ``G * (n // G)``, so that the ranks step in lockstep, and the ``k``-th batch of
    the ranks together holds the same samples as the ``k``-th global batch of one process.
    """

    def __init__(self, sampler, rank: int, world_size: int, batch: int):
        self.sampler, self.rank, self.world_size, self.batch = sampler, rank, world_size, batch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(iter(self.sampler))
        g, b = self.world_size, self.batch
        steps = len(order) // (g * b)
        for s in range(steps):  # global batch s: positions [s*g*b, (s+1)*g*b), rank r's slice of it
            start = s * g * b + self.rank * b
            yield from order[start:start + b]

    def __len__(self) -> int:
        return (len(self.sampler) // (self.world_size * self.batch)) * self.batch


# --------------------------------------------------------------------------- collectives

def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate the same-shaped ``t`` of every rank along dim 0, in rank order (no gradient)."""
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum over ranks, differentiable (the gradient is summed over ranks as well)."""
    import warnings

    from torch.distributed.nn.functional import all_reduce  # the autograd-aware one

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(t)


class Comm:
    """What :class:`~pcm3.models.pcm3.PCM3` calls across ranks (its ``comm`` attribute).

    Args:
        shuffle_keys: MoCo's shuffle BN for the key encoder.
        seed: seeds the shuffles (the same permutation on every rank without a broadcast).
    """

    def __init__(self, shuffle_keys: bool, seed: int = 0):
        self.shuffle_keys = shuffle_keys
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._gen = torch.Generator().manual_seed(seed)

    def all_gather(self, t: Tensor) -> Tensor:
        return all_gather_cat(t.detach())

    def shuffle(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """This rank's part of the globally shuffled batch ``x`` ``(B, ...)``, and the order to undo it."""
        everything = all_gather_cat(x)
        perm = torch.randperm(everything.shape[0], generator=self._gen).to(x.device)
        mine = perm.view(self.world_size, -1)[self.rank]
        return everything[mine], torch.argsort(perm)

    def unshuffle(self, y: Tensor, undo: Tensor) -> Tensor:
        """Keys ``(B, D)`` computed on the shuffled part back to this rank's own samples."""
        everything = all_gather_cat(y)
        return everything[undo.view(self.world_size, -1)[self.rank]]


class SyncBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training statistics are summed over all ranks (CPU and CUDA,
    any backend; same parameter and buffer names, so checkpoints do not change).

    Shape: ``(N, F)`` or ``(N, F, L)``."""

    #: read by code that normalises chunks itself (``PCM3._decode_pair``)
    stats_reduce = staticmethod(all_reduce_sum)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        if x.dim() == 3:  # N x F x L -> 1 x (N L) x F
            flat = x.transpose(1, 2).reshape(1, -1, x.shape[1])
            y = chunked_batch_norm(flat, self, all_reduce_sum)
            return y.reshape(x.shape[0], x.shape[2], x.shape[1]).transpose(1, 2)
        return chunked_batch_norm(x.unsqueeze(0), self, all_reduce_sum).squeeze(0)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm1d`` inside ``module`` by :class:`SyncBatchNorm1d`, in place."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            child.__class__ = SyncBatchNorm1d
        else:
            convert_sync_batchnorm(child)
    return module


def prepare_model(model, key_bn: str, sync_bn: bool, seed: int = 0):
    """Give ``model`` (a :class:`~pcm3.models.pcm3.PCM3`) its cross-rank behaviour, in place:
    the key gathering, the key encoder's BatchNorm mode and synchronised BatchNorm."""
    model.comm = Comm(shuffle_keys=key_bn == "shuffle", seed=seed)
    if sync_bn:
        model.encoder_q.stats_reduce = all_reduce_sum
        if model.decoder is not None:
            convert_sync_batchnorm(model.decoder)
    if key_bn == "sync" and model.encoder_k is not None:
        model.encoder_k.stats_reduce = all_reduce_sum
    return model


class DDP(DistributedDataParallel):
    """DistributedDataParallel that also answers the wrapped module's attributes
    (``set_momentum``, ``momentum``, ``queue``...), so the training loop needs no change."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def wrap(model: nn.Module, device: torch.device) -> DDP:
    """The DDP wrapper of ``model`` (already on ``device``). Buffers are not broadcast: the
    queue is kept identical by the gathered keys, BatchNorm statistics are per rank (or synced)."""
    import warnings

    # a domain prompt used by the key encoder alone (no intra positive) gets no gradient
    loss = getattr(model, "loss_config", None)
    prompts = getattr(model, "domain_prompts", None)
    unused = bool(loss is not None and prompts is not None and "intra" in prompts.prompts
                  and "intra" not in loss.active_positives)
    with warnings.catch_warnings():  # broadcast_buffers=False: no buffer sync at init or forward
        warnings.simplefilter("ignore", FutureWarning)
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
                   find_unused_parameters=unused)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for tests and single-machine launches)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = ["DistInfo", "launched", "info", "is_main", "init_from_env", "local_batch", "RankSampler",
           "all_gather_cat", "all_reduce_sum", "Comm", "SyncBatchNorm1d", "convert_sync_batchnorm",
           "prepare_model", "DDP", "wrap", "unwrap", "barrier", "shutdown", "free_port"]
