"""The PCM3 pretraining module: MoCo v2 contrast + masked motion prediction + dual prompts.

One :meth:`PCM3.forward` computes every term of paper Eq. 7 that the :class:`LossConfig`
switches on (Tables 7-9) and returns them by name. The views, the mask and the mixing come
ready-made from the data pipeline (``pcm3.augment``, ``pcm3.masking``).

Gradient of the predicted view (paper section 3.3, "High-Level Semantic Guidance"):

- ``predict_grad_to_decoder=True`` (default), ``predict_grad_to_masked_encoder=False``
  (default): as released. The decoder is run a second time on the masked branch's features
  with the gradient stopped, so the contrastive loss of the predicted view trains the decoder
  (and the encoder through its own pass over the predicted view) but does not flow back into
  the masked branch's encoder features or the ``mp`` task prompt. In training mode the decoder
  BatchNorm then sees the same batch twice (same outputs; its running statistics move twice).
- ``predict_grad_to_masked_encoder=True``: one decoder pass whose graph the predicted view
  keeps; the gradient also reaches the masked branch's features.
- ``predict_grad_to_decoder=False``: the decoder output is detached ("80.0 without gradient",
  section 4.4); the decoder learns from the MSE term only.

Prompts act where they are added: domain prompts after the encoder's input BatchNorm (see
:mod:`pcm3.models.encoder`), task prompts at a channel offset drawn per sample (the release
draws one per call, which makes ``p_mp`` a constant that the decoder's BatchNorm cancels; see
:class:`~pcm3.models.prompts.TaskPrompts`). ``encoder.domain_prompt_position="before"`` and
``loss.task_prompt_offset="batch"`` reproduce the release.

Kernels per step: the query encoder runs once on the concatenation of the intra, inter and
masked views (each with its domain prompt, per sample; input BatchNorm statistics per view
chunk by default, ``encoder.bn_stats``) and once on the predicted view, which needs the
decoder's output; the projector runs once on every query view; the release's two decoder
passes are one decoder call on ``[dec_in, dec_in.detach()]`` with BatchNorm statistics per
half. All of it computes exactly what one call per view in the order intra, inter, masked,
predicted (:func:`pcm3.models.release.release_style`) computes; tests check it. The release
calls the views in the order intra, masked, predicted, inter: the loss and gradients are the
same, only the input BatchNorm's running statistics (an exponential average with one step per
view) weigh the views in other proportions (21-29% each either way).

Own keys: with ``exclude_own`` (default, not in the paper), a query's own older key in the
queue, and for the mixed view its partner's, is no negative (Eq. 1) and leaves both
distillation softmaxes (Eq. 3); ``exclude_own=False`` sums over the whole queue as the paper
and the release do.

MoCo bookkeeping follows MoCo v2 and the release: in training mode the key encoder is
momentum-updated before it computes the keys; after the loss, the plain keys ``k`` are
enqueued. Nothing is updated in eval mode.
"""

from __future__ import annotations

import contextlib
import copy
import math
import dataclasses
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcm3.errors import ConfigError
from pcm3.losses import info_nce, masked_mse, mix_key, nearest_neighbours, relational_kl, variance_covariance
from pcm3.models.encoder import Encoder, EncoderConfig, _check_int, chunked_batch_norm, unflatten_frames
from pcm3.models.heads import Projector, ReconstructionDecoder
from pcm3.models.prompts import DomainPrompts, TaskPrompts

POSITIVES = ("intra", "inter", "mask", "predict")
TASK_PROMPT_OFFSETS = ("sample", "batch")
MOMENTUM_SCHEDULES = ("constant", "cosine")
KEY_BN = ("shuffle", "sync", "local")


def _from_mapping(cls, value, owner: str):
    """Build dataclass ``cls`` from a mapping (YAML), unknown keys an error."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{owner} must be a mapping or {cls.__name__}, got {type(value).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) in {owner}: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**value)


def _check_bool(owner: str, name: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}.{name} must be true or false, got {value!r}")


def _check_positive(owner: str, name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"{owner}.{name} must be a number {'>= 0' if allow_zero else '> 0'}, got {value!r}")



def _autocast_off(device_type: str):
    """A context that turns autocast off on ``device_type``; nothing where torch has no autocast
    for it (``meta`` and other devices), where nothing was cast to begin with."""
    available = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4
    if available is not None:
        return torch.autocast(device_type, enabled=False) if available(device_type) else contextlib.nullcontext()
    if device_type in ("cpu", "cuda"):  # older torch: the devices it has autocast for
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()

@dataclass
class Positives:
    """Which positive pairs of paper Eq. 5 are used (Table 8)."""

    intra: bool = True  # (z_intra, z')
    inter: bool = True  # (z_inter, z'_inter), the mixed view
    mask: bool = True  # (z_mask, z')
    predict: bool = True  # (z_predict, z')

    def __post_init__(self):
        for name in POSITIVES:
            _check_bool("loss.positives", name, getattr(self, name))

    def enabled(self):
        return tuple(name for name in POSITIVES if getattr(self, name))


@dataclass
class LossConfig:
    """Switches and weights of the pretraining objective (paper Eq. 7, Tables 7-10).

    Attributes:
        contrast: the contrastive task (queue, key encoder, projector). Off: masked
            prediction only (Table 7); ``positives`` and ``distill`` are then not consulted.
        masked_prediction: the masked branch (decoder, Eq. 4).
        positives: the positive pairs of Eq. 5 (a :class:`Positives` or a mapping).
        distill: relational distillation (Eq. 3) for every positive pair.
        domain_prompts: input-wise prompts, one per view (Eq. 6).
        task_prompts: feature-wise prompts ``p_cl`` and ``p_mp``.
        predict_grad_to_decoder: the predicted view's contrastive gradient reaches the decoder.
        predict_grad_to_masked_encoder: ... and also the masked branch's encoder features
            (False: the release's stop-gradient; see the module docstring).
        task_prompt_offset: ``"sample"`` (a random channel offset per sample) or ``"batch"``
            (one per call, the release, under which the decoder's BatchNorm cancels ``p_mp``;
            see :class:`~pcm3.models.prompts.TaskPrompts`).
        temperature: InfoNCE ``tau`` (0.07).
        kl_tq, kl_tk: distillation temperatures of query / key (0.1, 0.05).
        w_con, w_mask, w_kl: weights of the InfoNCE sum, the MSE and the KL sum (1, 40, 1).
        w_var, w_cov, var_target: NOT in the paper (0 = off): VICReg's variance and covariance
            terms (:func:`pcm3.losses.variance_covariance`) on the encoder's feature of the
            query view, against dimensional collapse of that feature on small data sets.
        nn_positives: NOT in the paper (0 = off): each key's ``nn_positives`` most similar
            queue entries (its own sample's excluded, filled slots only) count as further
            positives of the pairs whose key is the plain key (intra, mask, predict), AimCLR's
            nearest-neighbour mining (:func:`pcm3.losses.nearest_neighbours`). On small data
            sets instance discrimination alone pulls apart clips of one class.
    """

    contrast: bool = True
    masked_prediction: bool = True
    positives: Positives = field(default_factory=Positives)
    distill: bool = True
    domain_prompts: bool = True
    task_prompts: bool = True
    predict_grad_to_decoder: bool = True
    predict_grad_to_masked_encoder: bool = False
    task_prompt_offset: str = "sample"
    temperature: float = 0.07
    kl_tq: float = 0.1
    kl_tk: float = 0.05
    w_mask: float = 40.0
    w_kl: float = 1.0
    w_con: float = 1.0
    w_var: float = 0.0
    w_cov: float = 0.0
    var_target: float = 0.5
    nn_positives: int = 0

    def __post_init__(self):
        owner = "loss"
        self.positives = _from_mapping(Positives, self.positives, "loss.positives")
        for name in ("contrast", "masked_prediction", "distill", "domain_prompts", "task_prompts",
                     "predict_grad_to_decoder", "predict_grad_to_masked_encoder"):
            _check_bool(owner, name, getattr(self, name))
        for name in ("temperature", "kl_tq", "kl_tk"):
            _check_positive(owner, name, getattr(self, name))
        for name in ("w_mask", "w_kl", "w_con", "w_var", "w_cov"):
            _check_positive(owner, name, getattr(self, name), allow_zero=True)
        n = self.nn_positives
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"loss.nn_positives must be an integer >= 0; got {n!r}")
        if self.task_prompt_offset not in TASK_PROMPT_OFFSETS:
            raise ConfigError(f"loss.task_prompt_offset must be one of {', '.join(TASK_PROMPT_OFFSETS)}; "
                              f"got {self.task_prompt_offset!r}")
        if not (self.contrast or self.masked_prediction):
            raise ConfigError("loss.contrast and loss.masked_prediction are both off: nothing to train")
        if self.contrast:
            if not self.positives.enabled():
                raise ConfigError("loss.contrast is on but every loss.positives switch is off")
            needs_mask = [p for p in ("mask", "predict") if getattr(self.positives, p)]
            if needs_mask and not self.masked_prediction:
                raise ConfigError(f"loss.positives {' and '.join(needs_mask)} need loss.masked_prediction "
                                  f"(set them false for contrastive learning only)")
        if self.predict_grad_to_masked_encoder and not self.predict_grad_to_decoder:
            raise ConfigError("loss.predict_grad_to_masked_encoder needs loss.predict_grad_to_decoder")

    @property
    def active_positives(self):
        """Positive pairs actually computed (none without ``contrast``)."""
        return self.positives.enabled() if self.contrast else ()


@dataclass
class ModelConfig:
    """Architecture of the pretraining model (defaults: paper section 4.2 / release).

    Attributes:
        encoder: an :class:`EncoderConfig` (or a mapping).
        proj_dim: embedding size of the projector (128).
        queue_size: K, negatives in the memory queue (16384).
        momentum: alpha of the key encoder's EMA (0.999), at the start of training.
        momentum_schedule: ``constant`` (MoCo, the release) or ``cosine`` (BYOL/DINO: from
            ``momentum`` at the first step to 1 at the last, ``1 - (1 - m) (cos(pi s / S) + 1) / 2``).
            In runs of a few hundred steps a constant 0.999 leaves the key encoder mostly at its
            random initialisation (0.999^300 = 74%); use a lower start with ``cosine`` there.
        exclude_own: leave a query's own sample (its older keys, and for the mixed view its
            partner's) out of the negatives and the distillation anchors. Matters when the queue
            holds a large part of the data set (small data sets); needs the sample indices in the
            inputs (``index``), else nothing is excluded. Not in the paper (Eq. 1 and 3 sum over
            the whole queue, as the release does: ``False``).
        decoder_hidden: width of the reconstruction decoder (512).
        decoder_layers: GRU layers of the decoder (2).
        prompt_dim: r, task-prompt channels per direction (128).
        key_bn: BatchNorm of the key encoder across processes (torchrun only): ``shuffle``
            (MoCo's shuffle BN: the key views are shuffled across all ranks before the key
            encoder and the keys put back, so no rank normalises keys with its own queries'
            statistics), ``sync`` (statistics over all ranks) or ``local`` (per rank).
        sync_bn: synchronised BatchNorm over all ranks for the query encoder's input norm and
            the decoder (torchrun only). Off: per-rank statistics, as one process of batch
            ``B / G`` would have.
        compile: ``torch.compile`` the non-recurrent parts in place (projectors, the decoder's
            frame MLP and output layer; the GRUs stay cuDNN calls). Parameter names and
            checkpoints do not change. Meant for CUDA; the first steps are slow (compilation).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    proj_dim: int = 128
    queue_size: int = 16384
    momentum: float = 0.999
    momentum_schedule: str = "constant"
    exclude_own: bool = True
    decoder_hidden: int = 512
    decoder_layers: int = 2
    prompt_dim: int = 128
    key_bn: str = "shuffle"
    sync_bn: bool = False
    compile: bool = False

    def __post_init__(self):
        owner = "model"
        if self.key_bn not in KEY_BN:
            raise ConfigError(f"model.key_bn must be one of {', '.join(KEY_BN)}; got {self.key_bn!r}")
        _check_bool(owner, "sync_bn", self.sync_bn)
        _check_bool(owner, "compile", self.compile)
        self.encoder = _from_mapping(EncoderConfig, self.encoder, "model.encoder")
        for name in ("proj_dim", "queue_size", "decoder_hidden", "decoder_layers", "prompt_dim"):
            _check_int(owner, name, getattr(self, name))
        m = self.momentum
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 <= m < 1:
            raise ConfigError(f"model.momentum must be in [0, 1), got {m!r}")
        if self.momentum_schedule not in MOMENTUM_SCHEDULES:
            raise ConfigError(f"model.momentum_schedule must be one of {', '.join(MOMENTUM_SCHEDULES)}; "
                              f"got {self.momentum_schedule!r}")
        _check_bool(owner, "exclude_own", self.exclude_own)

    def momentum_at(self, step: int, total_steps: int) -> float:
        """Key-encoder momentum at optimisation ``step`` (0-based) of ``total_steps``."""
        if self.momentum_schedule == "constant" or total_steps <= 1:
            return float(self.momentum)
        frac = min(max(step / (total_steps - 1), 0.0), 1.0)
        return 1.0 - (1.0 - self.momentum) * (math.cos(math.pi * frac) + 1.0) / 2.0
        # prompt_dim <= encoder.hidden is checked where task prompts are built (only if used)


class PCM3(nn.Module):
    """PCM3 pretraining model (paper Fig. 2).

    Modules: ``encoder_q``/``projector_q`` (trained), ``encoder_k``/``projector_k`` (momentum
    copies, no gradient) and the buffers ``queue`` ``(K, proj_dim)`` and ``queue_ptr`` when
    ``contrast`` is on; ``decoder`` when ``masked_prediction`` is on; ``domain_prompts`` and
    ``task_prompts`` when switched on (only the views / tasks in use get a prompt).

    Args:
        config: the :class:`ModelConfig`.
        loss: the :class:`LossConfig`.
    """

    def __init__(self, config: Optional[ModelConfig] = None, loss: Optional[LossConfig] = None):
        super().__init__()
        self.config = config = config or ModelConfig()
        self.loss_config = loss = loss or LossConfig()
        enc = config.encoder
        d = enc.feature_dim
        positives = loss.active_positives

        self.encoder_q = Encoder(enc)
        self.projector_q = Projector(d, config.proj_dim) if loss.contrast else None
        self.encoder_k = self.projector_k = None
        if loss.contrast:
            self.encoder_k = copy.deepcopy(self.encoder_q)
            self.projector_k = copy.deepcopy(self.projector_q)
            for p in chain(self.encoder_k.parameters(), self.projector_k.parameters()):
                p.requires_grad_(False)
            self.register_buffer("queue", F.normalize(torch.randn(config.queue_size, config.proj_dim), dim=1))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
            # the sample index of each queued key (-1: the random initial entries)
            self.register_buffer("queue_index", torch.full((config.queue_size,), -1, dtype=torch.long))
            self._register_load_state_dict_pre_hook(self._fill_queue_index)
        self.momentum = float(config.momentum)  # the current EMA momentum; see set_momentum
        # set by pcm3.distributed under torchrun: all_gather / shuffle of the keys across ranks
        self.comm = None
        # False: the query encoder is called once per view, as the release does (benchmarks)
        self.one_call = True
        self.decoder = None
        if loss.masked_prediction:
            self.decoder = ReconstructionDecoder(d, enc.in_channels, enc.num_joints, enc.num_persons,
                                                 config.decoder_hidden, config.decoder_layers)

        self.domain_prompts = self.task_prompts = None
        if loss.domain_prompts:
            views = [v for v in ("intra", "inter", "mask", "predict")
                     if v in positives or (v == "intra" and loss.contrast) or (v == "mask" and loss.masked_prediction)]
            self.domain_prompts = DomainPrompts(enc.in_features, views)
        if loss.task_prompts:
            tasks = [t for t, on in (("cl", loss.contrast), ("mp", loss.masked_prediction)) if on]
            self.task_prompts = TaskPrompts(d, config.prompt_dim, tasks, per_sample=loss.task_prompt_offset == "sample")
        if config.compile:
            self.compile_parts()

    def compile_parts(self) -> None:
        """``torch.compile`` the projectors and the decoder's per-frame layers, in place
        (``nn.Module.compile``: state-dict names unchanged). The frame MLP's compiled forward
        serves whole-decoder calls; :meth:`_decode_pair` calls its layers one by one.
        Checked on the CPU: same loss as without, the first forward about 40 s (compilation)."""
        parts = [self.projector_q, self.projector_k]
        if self.decoder is not None:
            parts += [self.decoder.frame_mlp, self.decoder.head]
        for part in parts:
            if part is not None:
                part.compile()

    @property
    def encoder(self) -> Encoder:
        """The query encoder, the network kept after pretraining."""
        return self.encoder_q

    # ---- MoCo bookkeeping -------------------------------------------------------------

    def _fill_queue_index(self, state_dict, prefix, *args) -> None:
        """Checkpoints without ``queue_index`` (older runs, the release) load with -1 (unknown)."""
        key = prefix + "queue_index"
        if key not in state_dict and prefix + "queue" in state_dict:
            state_dict[key] = torch.full((state_dict[prefix + "queue"].shape[0],), -1, dtype=torch.long)

    def set_momentum(self, momentum: float) -> None:
        """Set the EMA momentum used by the next :meth:`momentum_update` (the schedule's value)."""
        self.momentum = float(momentum)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``theta_k <- m * theta_k + (1 - m) * theta_q`` over encoder and projector parameters."""
        if self.encoder_k is None:
            return
        qs = [p.detach() for p in chain(self.encoder_q.parameters(), self.projector_q.parameters())]
        ks = list(chain(self.encoder_k.parameters(), self.projector_k.parameters()))
        torch._foreach_mul_(ks, self.momentum)
        torch._foreach_add_(ks, qs, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: Tensor, index: Optional[Tensor] = None) -> None:
        """First in, first out: write ``keys`` ``(N, proj_dim)`` at the pointer, wrapping around.

        ``index`` ``(N,)`` long: the data set index of each key's sample. ``queue_index`` holds
        -1 for a slot never filled (or loaded from a checkpoint without indices) and -2 for a key
        of unknown sample (``index`` None).
        """
        size = self.queue.shape[0]
        n = keys.shape[0]
        skip = max(n - size, 0)  # more keys than slots: only the last `size` survive
        idx = (self.queue_ptr + skip + torch.arange(n - skip, device=self.queue.device)) % size
        self.queue.index_copy_(0, idx, keys[skip:].detach().to(self.queue.dtype))
        if index is None:
            index = torch.full((n,), -2, dtype=torch.long, device=self.queue.device)
        self.queue_index.index_copy_(0, idx, index[skip:].to(self.queue_index.device, torch.long))
        self.queue_ptr.copy_((self.queue_ptr + n) % size)  # stays a tensor: no host sync

    def _excluded(self, index: Optional[Tensor], partner: Optional[Tensor] = None) -> Optional[Tensor]:
        """``(N, K)`` bool: queue entries that hold a key of the query's own sample (and of its
        mixing partner's sample when ``partner`` is given). None when not excluding."""
        if index is None or not self.config.exclude_own:
            return None
        own = self.queue_index.unsqueeze(0) == index.view(-1, 1)  # N x K
        if partner is not None:
            own = own | (self.queue_index.unsqueeze(0) == index[partner].view(-1, 1))
        return own

    # ---- pieces -----------------------------------------------------------------------

    def _domain(self, view: str) -> Optional[Tensor]:
        return self.domain_prompts(view) if self.domain_prompts is not None else None

    def _task(self, feat: Tensor, task: str, generator) -> Tensor:
        return self.task_prompts.add(feat, task, generator) if self.task_prompts is not None else feat

    def _encode(self, views: Mapping[str, Tensor]):
        """One query-encoder call on the concatenated ``views`` (name -> (N, C, T, V, M)), each
        with its domain prompt (per sample); returns ``{name: (N, D)}``, ``{name: (N, T, D)}``."""
        if not views:
            return {}, {}
        names = list(views)
        if not self.one_call:  # the release's structure: one call per view (benchmarks, comparisons)
            outs = {v: self.encoder_q(views[v], domain_prompt=self._domain(v), return_sequence=True) for v in names}
            return {v: o[0] for v, o in outs.items()}, {v: o[1] for v, o in outs.items()}
        x = torch.cat([views[v] for v in names]) if len(names) > 1 else views[names[0]]
        prompt = None
        if self.domain_prompts is not None:
            n = views[names[0]].shape[0]
            prompt = (torch.cat([self.domain_prompts(v).expand(n, -1) for v in names]) if len(names) > 1
                      else self.domain_prompts(names[0]))  # (G N) x F, or (F,)
        feat, seq = self.encoder_q(x, domain_prompt=prompt, return_sequence=True, chunks=len(names))
        return dict(zip(names, feat.chunk(len(names)))), dict(zip(names, seq.chunk(len(names))))

    def _decode_pair(self, dec_in: Tensor):
        """``decoder(dec_in)`` and ``decoder(dec_in.detach())`` in one call on the concatenation.

        Exactly the two passes: every layer is per frame or per sample except the frame MLP's
        BatchNorm, which takes its statistics per half (each half's gradient only through its
        own statistics; running statistics updated twice, in order). Returns two
        ``(N, C, T, V, M)`` tensors.
        """
        dec = self.decoder
        mlp = dec.frame_mlp
        if len(mlp) != 4 or not isinstance(mlp[1], nn.BatchNorm1d):  # another decoder: two calls
            return dec(dec_in), dec(dec_in.detach())
        n, t, d = dec_in.shape
        h = mlp[0](torch.cat([dec_in, dec_in.detach()]).reshape(2 * n * t, d))  # 2NT x hidden
        bn = mlp[1]
        if bn.training or not bn.track_running_stats:
            h = chunked_batch_norm(h.reshape(2, n * t, -1), bn, getattr(bn, "stats_reduce", None))
            h = h.reshape(2 * n * t, -1)
        else:
            h = bn(h)
        h = mlp[3](mlp[2](h)).reshape(2 * n, t, -1)
        h, _ = dec.gru(h)  # 2N x T x hidden
        out = unflatten_frames(dec.head(h), *dec.shape)
        return out[:n], out[n:]

    def _project(self, feats: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """The query projector once over every view's feature; L2-normalised ``z`` per view."""
        if not feats:
            return {}
        names = list(feats)
        z = F.normalize(self.projector_q(torch.cat([feats[v] for v in names])), dim=1)
        return dict(zip(names, z.chunk(len(names))))

    def _keys(self, view2: Tensor, generator) -> Tensor:
        """The keys ``(N, proj_dim)``; across ranks with shuffled or synchronised BatchNorm
        when :attr:`comm` says so (see :mod:`pcm3.distributed`)."""
        if self.comm is not None and self.comm.shuffle_keys:
            shuffled, undo = self.comm.shuffle(view2)
            return self.comm.unshuffle(self._embed(self.encoder_k, self.projector_k, shuffled, "intra", generator),
                                       undo)
        return self._embed(self.encoder_k, self.projector_k, view2, "intra", generator)

    def _embed(self, encoder: Encoder, projector: Projector, x: Tensor, view: str, generator) -> Tensor:
        """Encoder (+ domain prompt) -> feature (+ cl prompt) -> projector -> L2-normalised z."""
        feat = encoder(x, domain_prompt=self._domain(view))  # N x D
        return F.normalize(projector(self._task(feat, "cl", generator)), dim=1)  # N x proj_dim

    @staticmethod
    def _need(inputs: Mapping[str, Any], name: str, why: str):
        if name not in inputs or inputs[name] is None:
            raise KeyError(f"PCM3.forward needs inputs[{name!r}] for {why}")
        return inputs[name]

    # ---- the forward ------------------------------------------------------------------

    def forward(self, inputs: Mapping[str, Any], generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Compute the pretraining loss and its terms.

        Args:
            inputs: a mapping with (each needed only when its part is switched on)
                ``view1`` (N, C, T, V, M) the query view; ``view2`` the key view;
                ``view3`` the masked branch's input before masking; ``mask`` (N, T, V, M) bool,
                True = masked; ``mixed`` the mixed query view with ``lam`` (N,) float and
                ``partner`` (N,) long (mixed key = ``mix_key(k, lam, partner)``); optionally
                ``index`` (N,) long, the samples' data set indices (queue bookkeeping,
                ``model.exclude_own``), and ``generator``.
            generator: CPU ``torch.Generator`` for the task-prompt offsets (else the global RNG).

        Returns:
            ``loss`` (Eq. 7: ``w_con * sum con_* + w_mask * mask_mse + w_kl * sum kl_*``), the
            terms ``con_<pair>`` and ``kl_<pair>`` for each active pair of ``intra, inter,
            mask, predict`` and ``mask_mse``; with the masked branch also ``reconstruction``
            and ``predicted`` (both (N, C, T, V, M)); with contrast also ``z_query`` (the first
            active pair's query embeddings) and ``z_key`` (the keys), both (N, proj_dim),
            detached, for monitoring.
        """
        cfg = self.loss_config
        if generator is None:
            generator = inputs.get("generator")
        positives = cfg.active_positives
        pairs: Dict[str, tuple] = {}  # pair name -> (query z, key)
        index = inputs.get("index")
        if index is not None:
            index = torch.as_tensor(index, device=self.queue_ptr.device if cfg.contrast else None).long()
        excluded: Dict[str, Optional[Tensor]] = {}  # pair name -> (N, K) entries that are not negatives
        out: Dict[str, Tensor] = {}

        # the query views of the one first encoder call (order: module docstring)
        views: Dict[str, Tensor] = {}
        if cfg.contrast:
            view2 = self._need(inputs, "view2", "the key")
            if "intra" in positives:
                views["intra"] = self._need(inputs, "view1", "the intra positive")
            if "inter" in positives:
                views["inter"] = self._need(inputs, "mixed", "the inter positive")
                lam = self._need(inputs, "lam", "the inter positive")
                partner = self._need(inputs, "partner", "the inter positive")
        if cfg.masked_prediction:
            view3 = self._need(inputs, "view3", "the masked branch")
            mask = self._need(inputs, "mask", "the masked branch").to(torch.bool)
            where = mask.unsqueeze(1)  # N x 1 x T x V x M, broadcast over C
            views["mask"] = view3.masked_fill(where, 0.0)

        if cfg.contrast:
            if self.training:
                self.momentum_update()
            with torch.no_grad():
                k = self._keys(view2, generator)  # N x proj_dim
            queue = self.queue.clone().detach()  # K x proj_dim, the negatives before this batch

        feats, seqs = self._encode(views)  # name -> N x D, and N x T x D
        if cfg.w_var or cfg.w_cov:  # optional regulariser of the encoder feature (not the paper's)
            reg_feat = feats.get("intra", feats.get("mask"))
            if reg_feat is not None:
                out["feat_var"], out["feat_cov"] = variance_covariance(reg_feat, cfg.var_target)
        zs = {}  # the cl-prompted features, projected in one call below
        for name in ("intra", "inter"):
            if name in feats:
                zs[name] = self._task(feats[name], "cl", generator)
        if cfg.masked_prediction:
            dec_in = self._task(seqs["mask"], "mp", generator)  # N x T x D
            second = ("predict" in positives and cfg.predict_grad_to_decoder
                      and not cfg.predict_grad_to_masked_encoder)  # the release's second pass
            if second and self.one_call:
                recon, stopped = self._decode_pair(dec_in)  # both passes in one decoder call
            else:
                recon = self.decoder(dec_in)  # N x C x T x V x M
                stopped = self.decoder(dec_in.detach()) if second else None
            out["mask_mse"] = masked_mse(recon, view3, mask)
            if "mask" in positives:
                zs["mask"] = self._task(feats["mask"], "cl", generator)
        zs = self._project(zs)
        if "intra" in zs:
            pairs["intra"] = (zs["intra"], k)
        if "inter" in zs:
            pairs["inter"] = (zs["inter"], mix_key(k, lam, partner))
            excluded["inter"] = self._excluded(index, partner)
        if cfg.masked_prediction:
            if "mask" in zs:
                pairs["mask"] = (zs["mask"], k)
            if "predict" in positives:
                if not cfg.predict_grad_to_decoder:
                    filled = recon.detach()
                elif cfg.predict_grad_to_masked_encoder:
                    filled = recon
                else:  # the release: a second decoder pass, stopped at the encoder features
                    filled = stopped
                predicted = torch.where(where, filled, view3)
                pairs["predict"] = (self._embed(self.encoder_q, self.projector_q, predicted, "predict", generator), k)
            else:
                predicted = torch.where(where, recon.detach(), view3)
            out["reconstruction"] = recon
            out["predicted"] = predicted

        if pairs:  # for the collapse monitor (pcm3.pretrain): the first pair's queries and the keys
            first = next(iter(pairs.values()))
            out["z_query"], out["z_key"] = first[0].detach(), k.detach()
        own = self._excluded(index) if pairs else None
        mined = None
        if pairs and cfg.nn_positives:  # optional mined positives, chosen by the plain key
            mined = nearest_neighbours(k, queue, cfg.nn_positives, exclude=own, valid=self.queue_index != -1)
        for name, (z, key) in pairs.items():
            ex = excluded.get(name, own)
            extra = mined if name != "inter" else None
            # similarities in float32 also under bf16 autocast (train.amp): a cosine of 0.9 has
            # bf16 steps of 0.004, i.e. 0.06 in the logits at temperature 0.07
            with _autocast_off(z.device.type):
                zf, keyf = z.float(), key.float()
                out[f"con_{name}"] = info_nce(zf, keyf, queue, cfg.temperature, exclude=ex, extra_positives=extra)
                if cfg.distill:
                    out[f"kl_{name}"] = relational_kl(zf, keyf, queue, cfg.kl_tq, cfg.kl_tk, exclude=ex)

        loss = 0.0
        if pairs:
            loss = loss + cfg.w_con * sum(out[f"con_{n}"] for n in pairs)
            if cfg.distill:
                loss = loss + cfg.w_kl * sum(out[f"kl_{n}"] for n in pairs)
        if cfg.masked_prediction:
            loss = loss + cfg.w_mask * out["mask_mse"]
        if "feat_var" in out:
            loss = loss + cfg.w_var * out["feat_var"] + cfg.w_cov * out["feat_cov"]
        out["loss"] = loss

        if cfg.contrast and self.training:
            if self.comm is not None:  # every rank enqueues every rank's keys, in rank order
                if index is None:
                    index = torch.full((k.shape[0],), -2, dtype=torch.long, device=k.device)
                k, index = self.comm.all_gather(k), self.comm.all_gather(index)
            self.enqueue(k, index)  # only the plain key
        return out
