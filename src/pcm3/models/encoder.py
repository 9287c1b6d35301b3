"""The sequence encoder: input BatchNorm, a stacked GRU, a pooled ``2 * hidden`` feature.

Every frame is one vector of ``F = V * C * M`` values, flattened as the authors' release does
(method doc, section 1): ``x.permute(0, 2, 3, 1, 4).reshape(N, T, V * C * M)``, so feature
``v * C * M + c * M + m`` is joint ``v``, coordinate ``c``, person ``m``. Released weights only
make sense in that order.

Two recurrent cores share one parameter container, ``gru`` (an ``nn.GRU(bidirectional=True)``,
whose names ``weight_ih_l{k}[_reverse]`` are the release's ``encoder.gru.*`` keys):

``stepwise`` (default, the release's function)
    The release calls its bidirectional GRU on one frame at a time and carries the state over,
    so the "reverse" direction also runs forward in time: each layer is two causal GRUs over
    the layer's input, their outputs concatenated (``2 * hidden``) and fed to the next layer.
    Here each direction of each layer is ONE whole-sequence call (``torch._VF.gru``, the
    cuDNN-backed op behind ``nn.GRU``) with that direction's weights, which computes the same
    function without a Python loop over frames. Feature: the top layer at the last frame.
``bigru``
    A true bidirectional GRU in one call. Its last-frame output holds only one frame of the
    backward pass, so the default pooling is ``"ends"``: forward half at the last frame and
    backward half at frame 0 (the final states of both directions); ``"mean"`` averages over
    time. A different function from ``stepwise``: released weights do not transfer to it.

Domain prompts (paper Eq. 6) are added to the normalised input (``domain_prompt_position=
"after"``, the default). The release adds them before the input BatchNorm, which in training
mode removes any per-feature constant exactly; ``"before"`` reproduces that for comparison.
A prompt is one ``(F,)`` vector for the whole batch or one row per sample ``(N, F)``, so
several views with different prompts can go through the encoder in one call.

Several views in one call (``chunks = G``, the batch is G equal view chunks): the input
BatchNorm takes its training statistics per chunk (``bn_stats="per_view"``, the release's
semantics, where every view is a separate call; the running statistics are updated once per
chunk, in chunk order) or over the whole concatenation (``"joint"``). The GRU is per sample,
so it is one call either way.

Across processes (``torch.distributed``), :attr:`Encoder.stats_reduce` (set by
:mod:`pcm3.distributed`) sums the per-chunk BatchNorm moments over all ranks with a
differentiable all-reduce: synchronised BatchNorm with the same semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, _VF, nn

from pcm3.errors import ConfigError

VARIANTS = ("stepwise", "bigru")
POOLS = ("last", "mean", "ends")
INPUT_NORMS = ("batch", "none")
PROMPT_POSITIONS = ("after", "before")
BN_STATS = ("per_view", "joint")


def _check_int(owner: str, name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


def _check_choice(owner: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class EncoderConfig:
    """Encoder hyper-parameters (defaults: the paper / release, NTU joint stream).

    Attributes:
        in_channels: C, coordinates per joint (3).
        num_joints: V (25 for Kinect v2).
        num_persons: M (2).
        hidden: GRU hidden size per direction, ``d`` in the paper (1024).
        layers: stacked GRU layers (3).
        variant: ``"stepwise"`` (two causal GRUs per layer, the release's function) or
            ``"bigru"`` (a true bidirectional GRU).
        pool: how the sequence feature is taken: ``"last"`` frame, ``"mean"`` over time, or
            ``"ends"`` (bigru only: forward half at the last frame, backward half at frame 0).
            ``None`` picks the variant's default: ``"last"`` for stepwise, ``"ends"`` for bigru.
        domain_prompt_position: ``"after"`` the input BatchNorm (where a prompt acts) or
            ``"before"`` it (the release; BatchNorm cancels the prompt in training mode).
        bn_stats: input-BatchNorm training statistics when several views share one call:
            ``"per_view"`` (one set per view chunk, the release's semantics) or ``"joint"``
            (one set over all views). No effect in eval mode or on a single view.
        input_norm: ``"batch"`` (the release: a BatchNorm over the ``F`` input features) or
            ``"none"`` (coordinates enter the GRU as they are, in metres). Per-feature
            standardisation gives nearly static joints the weight of moving ones; on small data
            sets the unnormalised input keeps the GRU near its linear regime at the start, where
            its features preserve the input's geometry (see docs/learning-small-data.md).
        center_time: NOT in the paper (False = off): subtract each sample's mean over the clip's
            frames from every input feature before the input norm, so the GRU reads the motion
            about the clip's mean pose and not the pose itself (see docs/learning-small-data.md).
        mean_pose_weight: with ``center_time``, the share of the mean pose left in the input
            (0: none; 1: the input unchanged), for classes told apart by a held posture.
    """

    in_channels: int = 3
    num_joints: int = 25
    num_persons: int = 2
    hidden: int = 1024
    layers: int = 3
    variant: str = "stepwise"
    pool: Optional[str] = None
    domain_prompt_position: str = "after"
    bn_stats: str = "per_view"
    input_norm: str = "batch"
    center_time: bool = False
    mean_pose_weight: float = 0.0

    def __post_init__(self):
        owner = "encoder"
        for name in ("in_channels", "num_joints", "num_persons", "hidden", "layers"):
            _check_int(owner, name, getattr(self, name))
        _check_choice(owner, "variant", self.variant, VARIANTS)
        if self.pool is None:
            self.pool = "last" if self.variant == "stepwise" else "ends"
        _check_choice(owner, "pool", self.pool, POOLS)
        if self.pool == "ends" and self.variant != "bigru":
            raise ConfigError("encoder.pool 'ends' needs variant 'bigru': in the stepwise encoder both "
                              "halves run forward in time, so frame 0 has seen one frame only")
        _check_choice(owner, "domain_prompt_position", self.domain_prompt_position, PROMPT_POSITIONS)
        _check_choice(owner, "bn_stats", self.bn_stats, BN_STATS)
        _check_choice(owner, "input_norm", self.input_norm, INPUT_NORMS)
        w = self.mean_pose_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w <= 1:
            raise ConfigError(f"encoder.mean_pose_weight must be in [0, 1]; got {w!r}")

    @property
    def in_features(self) -> int:
        """F = V * C * M, the values of one frame."""
        return self.num_joints * self.in_channels * self.num_persons

    @property
    def feature_dim(self) -> int:
        """D = 2 * hidden, the size of the sequence feature."""
        return 2 * self.hidden


def flatten_frames(x: Tensor) -> Tensor:
    """``(N, C, T, V, M)`` -> ``(N, T, V * C * M)``; feature ``v*C*M + c*M + m``."""
    n, c, t, v, m = x.shape
    return x.permute(0, 2, 3, 1, 4).reshape(n, t, v * c * m)


def unflatten_frames(y: Tensor, channels: int, joints: int, persons: int) -> Tensor:
    """Inverse of :func:`flatten_frames`: ``(N, T, V * C * M)`` -> ``(N, C, T, V, M)``."""
    n, t, _ = y.shape
    return y.reshape(n, t, joints, channels, persons).permute(0, 3, 1, 2, 4)


class Encoder(nn.Module):
    """Input BatchNorm + stacked GRU: ``(N, C, T, V, M)`` -> ``(N, 2 * hidden)``.

    Args:
        config: an :class:`EncoderConfig`.

    Shape:
        - x: ``(N, C, T, V, M)``; with ``chunks = G``, G views of ``N / G`` samples each,
          concatenated along N.
        - domain_prompt: ``(F,)`` or per sample ``(N, F)`` with ``F = V * C * M``, or ``None``.
        - output: ``(N, D)`` with ``D = 2 * hidden``; with ``return_sequence`` the pair
          ``(feature (N, D), per-frame outputs of the top layer (N, T, D))``.
    """

    #: Set by :mod:`pcm3.distributed` for synchronised BatchNorm: a differentiable sum over
    #: ranks of a tensor (the per-chunk BatchNorm moments). ``None``: local statistics.
    stats_reduce: Optional[Callable[[Tensor], Tensor]] = None

    def __init__(self, config: Optional[EncoderConfig] = None):
        super().__init__()
        self.config = config = config or EncoderConfig()
        self.input_norm = nn.BatchNorm1d(config.in_features) if config.input_norm == "batch" else nn.Identity()
        # One container for both variants; its names are the release's `encoder.gru.*` keys.
        self.gru = nn.GRU(config.in_features, config.hidden, num_layers=config.layers,
                          bidirectional=True, batch_first=True)
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(p)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def forward(self, x: Tensor, domain_prompt: Optional[Tensor] = None,
                return_sequence: bool = False, chunks: int = 1) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        cfg = self.config
        expected = (cfg.in_channels, cfg.num_joints, cfg.num_persons)
        if x.dim() != 5 or (x.shape[1], x.shape[3], x.shape[4]) != expected:
            raise ValueError(f"encoder expects (N, {cfg.in_channels}, T, {cfg.num_joints}, {cfg.num_persons}), "
                             f"got {tuple(x.shape)}")
        if chunks < 1 or x.shape[0] % chunks:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {chunks} equal view chunks")
        seq = self.input_sequence(x, domain_prompt, chunks)  # N x T x F
        out = self._stepwise(seq) if cfg.variant == "stepwise" else self.gru(seq)[0]  # N x T x D
        feat = self.pool(out)  # N x D
        return (feat, out) if return_sequence else feat

    def input_sequence(self, x: Tensor, domain_prompt: Optional[Tensor] = None, chunks: int = 1) -> Tensor:
        """What the GRU reads: ``(N, C, T, V, M)`` -> frames ``(N, T, F)``, centred over time
        (``center_time``), through the input norm, with the domain prompt added where configured."""
        cfg = self.config
        if domain_prompt is not None and domain_prompt.dim() == 2:
            domain_prompt = domain_prompt.unsqueeze(1)  # N x 1 x F, broadcast over T
        seq = flatten_frames(x)  # N x T x F
        if cfg.center_time:
            seq = seq - (1.0 - cfg.mean_pose_weight) * seq.mean(dim=1, keepdim=True)  # motion about the mean pose
        if domain_prompt is not None and cfg.domain_prompt_position == "before":
            seq = seq + domain_prompt
        seq = self.normalize(seq, chunks)  # BatchNorm over F, stats over (chunk) samples and T
        if domain_prompt is not None and cfg.domain_prompt_position == "after":
            seq = seq + domain_prompt
        return seq

    def normalize(self, seq: Tensor, chunks: int = 1) -> Tensor:
        """The input BatchNorm of ``(N, T, F)`` frames, statistics per view chunk or joint.

        One chunk, eval mode, ``bn_stats="joint"`` without a cross-rank reduction: the plain
        ``nn.BatchNorm1d`` call. Otherwise the training statistics (biased variance for the
        normalisation, unbiased for the running variance) are computed per chunk (and summed
        over ranks when :attr:`stats_reduce` is set), and the running statistics take one
        momentum step per chunk, in order, as separate calls would.
        """
        bn = self.input_norm
        if isinstance(bn, nn.Identity):
            return seq
        if not self.training and bn.track_running_stats:
            return bn(seq.transpose(1, 2)).transpose(1, 2)
        if self.config.bn_stats == "joint":
            chunks = 1
        if chunks == 1 and self.stats_reduce is None:
            return bn(seq.transpose(1, 2)).transpose(1, 2)
        n, t, f = seq.shape
        groups = seq.reshape(chunks, (n // chunks) * t, f)  # G x (n T) x F
        y = chunked_batch_norm(groups, bn, self.stats_reduce)
        return y.reshape(n, t, f).to(seq.dtype)

    def pool(self, out: Tensor) -> Tensor:
        """Sequence feature from the top layer's per-frame outputs ``(N, T, D)`` -> ``(N, D)``."""
        if self.config.pool == "last":
            return out[:, -1]
        if self.config.pool == "mean":
            return out.mean(dim=1)
        h = self.config.hidden  # "ends": final state of each direction
        return torch.cat([out[:, -1, :h], out[:, 0, h:]], dim=1)

    def _direction_weights(self, layer: int, suffix: str) -> List[Tensor]:
        g = self.gru
        return [getattr(g, f"{kind}_l{layer}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    def _stepwise(self, seq: Tensor) -> Tensor:
        """Two causal GRUs per layer, as the release's frame-by-frame loop computes them.

        Both directions read the same input and start from a zero state; for each, one
        whole-sequence call (has_biases, 1 layer, no dropout, unidirectional, batch_first).
        """
        h0 = seq.new_zeros(1, seq.shape[0], self.config.hidden)
        out = seq
        for layer in range(self.config.layers):
            halves = [_VF.gru(out, h0, self._direction_weights(layer, suffix), True, 1, 0.0,
                              self.training, False, True)[0]
                      for suffix in ("", "_reverse")]
            out = torch.cat(halves, dim=2)  # N x T x 2H, input of the next layer
        return out


def chunked_batch_norm(groups: Tensor, bn: nn.BatchNorm1d,
                       stats_reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """Training-mode BatchNorm of ``G`` chunks with statistics per chunk, as G separate calls.

    The normalisation uses the biased variance; the running statistics take one momentum
    step per chunk, in chunk order, with the unbiased variance. With ``stats_reduce`` (a
    differentiable sum over ranks) the moments are those of the chunk on all ranks together
    (synchronised BatchNorm).

    Shape:
        groups ``(G, L, F)`` (L values per feature and chunk) -> the same shape, float32 or
        the input's dtype.
    """
    f = groups.shape[-1]
    x = groups.float()
    count = x.new_full((x.shape[0], 1), float(x.shape[1]))
    if stats_reduce is None:
        var, mean = torch.var_mean(x, dim=1, unbiased=False)  # G x F each
        total = count
    else:  # sums over all ranks: frames, sum, sum of squares (about a common shift, for precision)
        shift = x[:, :1].detach().mean(0, keepdim=True)  # 1 x 1 x F
        shift = stats_reduce(shift) / stats_reduce(shift.new_ones(()))
        centred = x - shift
        moments = stats_reduce(torch.cat([centred.sum(1), (centred * centred).sum(1), count], dim=1))
        total = moments[:, -1:]  # G x 1, values per chunk over all ranks
        mean_c = moments[:, :f] / total
        var = (moments[:, f:2 * f] / total - mean_c * mean_c).clamp_min(0.0)  # biased, G x F
        mean = mean_c + shift[0]
    y = (x - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + bn.eps)
    if bn.affine:
        y = y * bn.weight + bn.bias
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            for g in range(x.shape[0]):
                bn.num_batches_tracked.add_(1)
                mom = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
                unbiased = var[g] * (total[g] / (total[g] - 1).clamp_min(1))
                bn.running_mean.mul_(1 - mom).add_(mean[g].detach().to(bn.running_mean.dtype), alpha=mom)
                bn.running_var.mul_(1 - mom).add_(unbiased.detach().to(bn.running_var.dtype), alpha=mom)
    return y.to(groups.dtype)
