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
- Rank 0 alone writes the run folder (log, metrics, checkpoints) and shows progress. The
  per-epoch figures it logs (every loss term and the collapse monitor's ``pos_cos``,
  ``queue_cos``, ``emb_std``, ``inst_top1``) are the means over all ranks, weighted by their
  samples (:func:`mean_over_ranks`): the loss terms are those of the global batch;
  ``emb_std`` and ``inst_top1`` are per-rank-batch statistics averaged over the ranks (chance
  for ``inst_top1`` is ``1 / (batch_size / G)``). The divergence guard reads these figures,
  identical on every rank, so every rank decides alike. The progress bar shows rank 0's own.
- A NaN or infinite loss on any rank stops every rank at the same step, before the backward
  pass, with the same one-line error (:func:`nonfinite_ranks`: one small all-reduce per step);
  the last good checkpoint is kept, as in one process.
- Warnings are printed by rank 0 alone.

The fine-tuning evaluations ``pcm3 eval linear`` and ``pcm3 eval semi`` run under ``torchrun``
too (:mod:`pcm3.evaluation.linear`, :mod:`pcm3.evaluation.semi`): features are computed on a
share of the batches per rank and gathered (:func:`all_gather_rows`), the training steps take
each rank's share of the global batch with DDP, and rank 0 alone writes the output folder;
errors found by rank 0 alone reach every rank (:func:`raise_from_main`).
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


#: What gloo and NCCL say when another process of the job went away.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
              "ProcessGroupNCCL", "DistNetworkError", "Socket Timeout", "Timed out")


def lost_peer(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another process of a torchrun job
    (``WORLD_SIZE`` > 1) stopped: gloo's and NCCL's errors for a peer that went away."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False
    text = f"{type(e).__name__}: {e}"
    return type(e).__name__ in ("DistBackendError", "DistNetworkError") or any(s in text for s in _PEER_GONE)


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
    the run's seed, the same on every rank); of global batch ``k`` (positions ``[k G b, (k + 1) G b)``
    of the permutation, ``b`` the per-rank batch) rank ``r`` takes the contiguous slice
    ``[k G b + r b, k G b + (r + 1) b)``, so that the ranks step in lockstep and their ``k``-th
    batches together hold the same samples as the ``k``-th global batch of one process (an
    incomplete last global batch is dropped, as one process drops it).
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


def ranges(n: int, world_size: int, rank: int) -> Tuple[int, int]:
    """Rank ``rank``'s contiguous share ``[lo, hi)`` of ``n`` items (sizes differ by at most 1)."""
    return rank * n // world_size, (rank + 1) * n // world_size


def split_batch(batch: Tensor, world_size: int, rank: int) -> Tensor:
    """Rank ``rank``'s contiguous part of a global batch (of indices or samples) along dim 0."""
    lo, hi = ranges(batch.shape[0], world_size, rank)
    return batch[lo:hi]


# --------------------------------------------------------------------------- collectives

def _comm_device(t: Tensor) -> torch.device:
    """Where a collective's tensors must live: CUDA for ``nccl``, else the tensor's device."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device if t.device.type == "cpu" else torch.device("cpu")


def all_gather_cat(t: Tensor) -> Tensor:
    """Concatenate the same-shaped ``t`` of every rank along dim 0, in rank order (no gradient)."""
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


def all_gather_rows(t: Tensor) -> Tensor:
    """Concatenate every rank's ``t`` along dim 0 in rank order; the ranks' ``t`` may have
    different lengths (the other dimensions and the dtype must agree). The result is on
    ``t``'s device; the collective runs on the backend's device (CUDA for ``nccl``)."""
    dev = _comm_device(t)
    x = t.detach().to(dev).contiguous()
    sizes = all_gather_cat(torch.tensor([x.shape[0]], device=dev)).tolist()
    longest = max(sizes)
    if x.shape[0] < longest:
        x = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = all_gather_cat(x).view(len(sizes), longest, *x.shape[1:])
    return torch.cat([parts[r, :n] for r, n in enumerate(sizes)]).to(t.device)


def nonfinite_ranks(loss: Tensor) -> list:
    """The ranks whose 0-dim ``loss`` is NaN or infinite, the same list on every rank.

    One all-reduce of a ``world_size``-long flag vector; every rank must call it at the same
    step (before the backward pass, so that no rank is left waiting in DDP's gradient
    all-reduce when another stops).
    """
    dev = _comm_device(loss)
    flags = torch.zeros(dist.get_world_size(), device=dev)
    flags[dist.get_rank()] = (~torch.isfinite(loss.detach().to(dev))).any().float()  # no host sync before the reduce
    dist.all_reduce(flags)
    return [r for r, f in enumerate(flags.tolist()) if f]


def rank_values(values) -> list:
    """Every rank's list of floats ``values`` (the same length on every rank), by rank."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dev = _comm_device(t)
    return all_gather_cat(t.to(dev)[None]).cpu().tolist()


def sum_over_ranks(values) -> list:
    """The sums over ranks of a list of floats (the same length on every rank), as floats,
    identical on every rank (float64 all-reduce, then rank 0's result broadcast)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    t = t.to(_comm_device(t))
    dist.all_reduce(t)
    dist.broadcast(t, 0)
    return t.cpu().tolist()


def mean_over_ranks(means, weight: float) -> dict:
    """Per-rank means ``{name: value}`` -> their mean over ranks weighted by ``weight`` (each
    rank's number of samples): the figures of all ranks' samples together.

    Every rank passes the same names in the same order; every rank gets the same floats (the
    sums are broadcast from rank 0 after the all-reduce).
    """
    names = list(means)
    sums = sum_over_ranks([float(means[k]) * weight for k in names] + [float(weight)])
    return {k: v / sums[-1] for k, v in zip(names, sums[:-1])}


def raise_from_main(error: "BaseException | None") -> None:
    """Make rank 0's outcome every rank's: rank 0 passes the :class:`~pcm3.errors.Pcm3Error` it
    caught (or None); every rank raises it (the same one-line message) or returns.

    For checks that only rank 0 makes (its output folder), so that the other ranks do not go on
    and wait in a collective for a rank that stopped.
    """
    from pcm3.errors import Pcm3Error

    box = [None if error is None else str(error)]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if box[0] is None:
        return
    if error is not None:
        raise error
    raise Pcm3Error(box[0])


def broadcast_module(module: nn.Module, src: int = 0) -> nn.Module:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank, in place."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dev = _comm_device(t)
            buf = t.data.to(dev)
            dist.broadcast(buf, src)
            if buf.data_ptr() != t.data_ptr():  # broadcast on another device: copy back
                t.data.copy_(buf)
    return module


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

    def state_dict(self) -> dict:
        """The shuffle generator's state (the same on every rank): a checkpoint keeps it so that
        a resumed run draws the permutations an uninterrupted one would."""
        return {"shuffle_rng": self._gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._gen.set_state(state["shuffle_rng"])

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


__all__ = ["DistInfo", "launched", "info", "is_main", "init_from_env", "local_batch", "RankSampler", "ranges",
           "split_batch", "all_gather_cat", "all_gather_rows", "nonfinite_ranks", "rank_values", "sum_over_ranks",
           "mean_over_ranks", "raise_from_main", "broadcast_module", "all_reduce_sum", "Comm", "SyncBatchNorm1d",
           "convert_sync_batchnorm",
           "prepare_model", "DDP", "wrap", "unwrap", "barrier", "shutdown", "free_port"]
