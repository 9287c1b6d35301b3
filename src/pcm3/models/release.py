"""Import of the authors' released PCM3 checkpoints into our modules.

The release saves ``{"epoch", "state_dict", "optimizer"}`` (keys prefixed ``module.`` when
the model was wrapped). Key map (release -> ours):

=====================================================  =========================================
``encoder_{q,k}.input_norm.*``                         ``encoder_{q,k}.input_norm.*``
``encoder_{q,k}.encoder.gru.*``                        ``encoder_{q,k}.gru.*`` (same GRU names)
``encoder_{q,k}.fc.{0,2}.*``                           ``projector_{q,k}.net.{0,2}.*``
``linear.{0,1,3}.*`` (Linear, BatchNorm, -, Linear)    ``decoder.frame_mlp.{0,1,3}.*``
``recons_decoder.<gru>.*_l{k}`` (2-layer GRU)          ``decoder.gru.*``
``recons_decoder.<linear>.{weight,bias}``              ``decoder.head.*``
``queue`` ``(proj_dim, K)``, ``queue_ptr``             ``queue`` ``(K, proj_dim)``, ``queue_ptr``
``cl_prompt``, ``mp_prompt`` ``(1, 2r)``               ``task_prompts.prompts.{cl,mp}`` ``(2r,)``
``base_prompt``, ``mix_prompt``, ``mask_prompt``,      ``domain_prompts.prompts.{intra,inter,
``recons_prompt`` ``(1, 1, F)``                        mask,predict}`` ``(F,)``
=====================================================  =========================================

Sizes come from the tensors; ``F = V * C * M`` is split with ``channels`` and ``persons``
(3 and 2 by default). The imported encoder is the ``stepwise`` variant, the only one that
computes the released function. Parts missing from a checkpoint switch the matching
:class:`LossConfig` options off. Note: the release registers the six prompts whenever it
pretrains, so its bone and motion checkpoints (trained without prompts) hold them too, untrained
at their Xavier initialisation; the key names cannot tell, so the whole-model import switches
the prompts on when they are present unless ``prompts=False`` is given (do so for those two).
The query encoder does not depend on them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from pcm3.errors import DataError
from pcm3.io import PCM3_FILES, pcm3_file_format, unreadable_checkpoint
from pcm3.models.encoder import Encoder, EncoderConfig
from pcm3.models.pcm3 import PCM3, LossConfig, ModelConfig, Positives

_DOMAIN = {"base_prompt": "intra", "mix_prompt": "inter", "mask_prompt": "mask", "recons_prompt": "predict"}
_TASK = {"cl_prompt": "cl", "mp_prompt": "mp"}
_GRU_KEY = re.compile(r"^(weight|bias)_(ih|hh)_l(\d+)(_reverse)?$")
_ANCHOR = "encoder_q.encoder.gru.weight_ih_l0"

Source = Union[str, os.PathLike, Mapping[str, Any]]


def _read(source: Source) -> Tuple[Dict[str, Tensor], str]:
    """The raw state dict and a name for error messages."""
    state, where, _ = read_release(source)
    return state, where


def read_release(source: Source) -> Tuple[Dict[str, Tensor], str, Any]:
    """The release's state dict (``module.`` prefix removed), a name for error messages, and
    the checkpoint's ``epoch`` entry (None when absent)."""
    if isinstance(source, Mapping):
        where, obj = "<state dict>", source
    else:
        where = os.fspath(source)
        if os.path.isdir(where):
            raise DataError(where, "a folder, not a checkpoint file (the release's .pth.tar)")
        if not os.path.isfile(where):
            raise DataError(where, "no such checkpoint file")
        try:
            obj = torch.load(where, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle, zip and torch errors alike: not a checkpoint we can read
            raise DataError(where, unreadable_checkpoint(where, err, "the authors' release checkpoint (.pth.tar)")) \
                from None
        found = pcm3_file_format(where)
        if found is not None:  # readable, but pcm3's own file (an exported encoder)
            raise DataError(where, f"is {PCM3_FILES[found]}; expected the authors' release checkpoint (.pth.tar)")
    epoch = obj.get("epoch") if isinstance(obj, Mapping) else None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise DataError(where, "not a PCM3 release checkpoint: expected a state dict of tensors "
                               "(or a dict with one under 'state_dict')")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}
    if _ANCHOR not in state or "encoder_q.input_norm.weight" not in state:
        raise DataError(where, f"not a PCM3 release checkpoint: no '{_ANCHOR}' / 'encoder_q.input_norm.weight' key")
    return state, where, (epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None)


def _map_key(key: str, value: Tensor) -> Tuple[str, Tensor]:
    """Our name and tensor for release ``key``; ``("", value)`` when unknown."""
    for side in ("q", "k"):
        enc = f"encoder_{side}."
        if key.startswith(enc + "input_norm."):
            return key, value
        if key.startswith(enc + "encoder.gru."):
            return f"encoder_{side}.gru." + key[len(enc + "encoder.gru."):], value
        m = re.match(rf"^encoder_{side}\.fc\.([02])\.(weight|bias)$", key)
        if m:
            return f"projector_{side}.net.{m.group(1)}.{m.group(2)}", value
    m = re.match(r"^linear\.([013])\.(.+)$", key)
    if m:
        return f"decoder.frame_mlp.{m.group(1)}.{m.group(2)}", value
    if key.startswith("recons_decoder."):
        leaf = key.rsplit(".", 1)[-1]
        if _GRU_KEY.match(leaf):
            return "decoder.gru." + leaf, value
        if leaf in ("weight", "bias"):
            return "decoder.head." + leaf, value
    if key == "queue":
        return "queue", value.t().contiguous()  # release: (proj_dim, K)
    if key == "queue_ptr":
        return "queue_ptr", value.reshape(1).long()
    if key in _DOMAIN:
        return f"domain_prompts.prompts.{_DOMAIN[key]}", value.reshape(-1)
    if key in _TASK:
        return f"task_prompts.prompts.{_TASK[key]}", value.reshape(-1)
    return "", value


def _encoder_config(mapped: Mapping[str, Tensor], prefix: str, where: str, channels: int,
                    persons: int) -> EncoderConfig:
    needed = [prefix + "input_norm.weight", prefix + "gru.weight_hh_l0"]
    if any(k not in mapped for k in needed):
        raise DataError(where, "missing keys of a PCM3 release checkpoint: "
                               + ", ".join(_release_name(k) for k in needed if k not in mapped))
    feats = mapped[prefix + "input_norm.weight"].numel()
    if feats % (channels * persons):
        raise DataError(where, f"{feats} input features are not joints x {channels} coordinates x {persons} persons")
    layers = len([k for k in mapped if re.match(rf"^{re.escape(prefix)}gru\.weight_ih_l\d+$", k)])
    return EncoderConfig(in_channels=channels, num_joints=feats // (channels * persons), num_persons=persons,
                         hidden=mapped[prefix + "gru.weight_hh_l0"].shape[1], layers=layers, variant="stepwise")


def _map_all(state: Mapping[str, Tensor], where: str, strict: bool) -> Dict[str, Tensor]:
    mapped: Dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        name, tensor = _map_key(key, value)
        if name:
            mapped[name] = tensor
        else:
            unknown.append(key)
    if unknown and strict:
        raise DataError(where, f"unexpected keys for a PCM3 release checkpoint: {', '.join(sorted(unknown)[:8])}"
                               + (" ..." if len(unknown) > 8 else ""))
    return mapped


def convert_release_state_dict(source: Source, channels: int = 3, persons: int = 2, strict: bool = True,
                               prompts: Optional[bool] = None) -> Tuple[Dict[str, Tensor], ModelConfig, LossConfig]:
    """Map a release checkpoint onto our names.

    Args:
        source: path of a release ``.pth.tar`` or its (inner or outer) state dict.
        channels, persons: C and M used to split ``F = V * C * M``.
        strict: unknown release keys are an error (else ignored).
        prompts: None: the prompts are on when the checkpoint holds them; False: off and their
            tensors dropped (the release's bone and motion checkpoints hold the six prompts
            untrained: their recipes did not use them); True: on, and they must be there.

    Returns:
        ``(state_dict, model_config, loss_config)`` for :class:`~pcm3.models.pcm3.PCM3`.

    Raises:
        DataError: naming the file, when it is not such a checkpoint.
    """
    return _convert(*_read(source), channels, persons, strict, prompts)


def _convert(state: Mapping[str, Tensor], where: str, channels: int, persons: int,
             strict: bool, prompts: Optional[bool] = None) -> Tuple[Dict[str, Tensor], ModelConfig, LossConfig]:
    mapped = _map_all(state, where, strict)
    has = any(k.startswith(("domain_prompts.", "task_prompts.")) for k in mapped)
    if prompts is True and not has:
        raise DataError(where, "prompts=True, but the checkpoint holds no prompts")
    if prompts is False:
        mapped = {k: v for k, v in mapped.items() if not k.startswith(("domain_prompts.", "task_prompts."))}
    model: Dict[str, Any] = {"encoder": _encoder_config(mapped, "encoder_q.", where, channels, persons)}
    contrast = all(k in mapped for k in ("encoder_k.gru.weight_ih_l0", "projector_q.net.2.weight", "queue"))
    masked = "decoder.frame_mlp.0.weight" in mapped and "decoder.head.weight" in mapped
    if not (contrast or masked):
        raise DataError(where, "checkpoint holds an encoder only (no key encoder, queue or decoder); "
                               "load it with what='encoder'")
    if contrast:
        model.update(proj_dim=mapped["projector_q.net.2.weight"].shape[0], queue_size=mapped["queue"].shape[0])
    if masked:
        model.update(decoder_hidden=mapped["decoder.frame_mlp.0.weight"].shape[0],
                     decoder_layers=len([k for k in mapped if re.match(r"^decoder\.gru\.weight_ih_l\d+$", k)]))
    task = [v for k, v in mapped.items() if k.startswith("task_prompts.")]
    if task:
        model["prompt_dim"] = task[0].numel() // 2
    loss = LossConfig(contrast=contrast, masked_prediction=masked,
                      domain_prompts=any(k.startswith("domain_prompts.") for k in mapped),
                      task_prompts=bool(task), positives=Positives(mask=masked, predict=masked))
    return mapped, ModelConfig(**model), loss


def load_release_encoder(source: Source, channels: int = 3, persons: int = 2) -> Tuple[Encoder, Any]:
    """The query encoder of a whole release checkpoint, every part of it checked.

    The checkpoint must hold what the release saves (both encoders, projectors, decoder, queue;
    prompts optional); every key must be one of the release's and fit the sizes read from
    the tensors.

    Returns:
        ``(encoder, epoch)``: the stepwise :class:`Encoder` (training mode as built) and the
        checkpoint's ``epoch`` (None when absent).

    Raises:
        DataError: one line naming the file and the unknown, missing or mis-shaped keys.
    """
    state, where, epoch = read_release(source)
    mapped, config, loss = _convert(state, where, channels, persons, strict=True)
    parts = {"encoder_k.*, encoder_{q,k}.fc.*, queue": loss.contrast,
             "linear.*, recons_decoder.*": loss.masked_prediction}
    absent = [name for name, present in parts.items() if not present]
    if absent:
        raise DataError(where, f"missing keys of a PCM3 release checkpoint: {'; '.join(absent)}")
    model = PCM3(config, loss)
    _load(model, mapped, where, strict=True)
    return model.encoder_q, epoch


def load_release_checkpoint(source: Source, what: str = "model", channels: int = 3, persons: int = 2,
                            strict: bool = True, prompts: Optional[bool] = None) -> Union[PCM3, Encoder]:
    """Build our module from a release checkpoint and load its weights.

    Args:
        source: path of a release ``.pth.tar`` or its state dict.
        what: ``"model"`` for the whole :class:`~pcm3.models.pcm3.PCM3` (key encoder, queue,
            decoder and prompts as present) or ``"encoder"`` for the query encoder alone.
        channels, persons: C and M (``F = V * C * M``).
        strict: unknown or missing keys are an error.
        prompts: for ``what="model"``, as in :func:`convert_release_state_dict` (pass False for
            the bone and motion checkpoints, whose prompts were never trained).

    Returns:
        The module, in training mode as built; call ``.eval()`` for features.

    Raises:
        DataError: naming the file, when it is not such a checkpoint or does not fit.
    """
    if what not in ("model", "encoder"):
        raise ValueError(f"what must be 'model' or 'encoder', got {what!r}")
    state, where = _read(source)
    if what == "encoder":
        mapped = _map_all(state, where, strict)
        enc_state = {k[len("encoder_q."):]: v for k, v in mapped.items() if k.startswith("encoder_q.")}
        encoder = Encoder(_encoder_config(mapped, "encoder_q.", where, channels, persons))
        _load(encoder, enc_state, where, strict)
        return encoder
    mapped, config, loss = _convert(state, where, channels, persons, strict, prompts)
    model = PCM3(config, loss)
    _load(model, mapped, where, strict)
    return model


def _release_name(ours: str) -> str:
    """The release's name of one of our keys (for error messages)."""
    rules = [(r"^encoder_([qk])\.gru\.", r"encoder_\1.encoder.gru."), (r"^projector_([qk])\.net\.", r"encoder_\1.fc."),
             (r"^decoder\.frame_mlp\.", "linear."), (r"^decoder\.gru\.", "recons_decoder.<gru>."),
             (r"^decoder\.head\.", "recons_decoder.<linear>.")]
    for pattern, repl in rules:
        if re.match(pattern, ours):
            return re.sub(pattern, repl, ours)
    back = {f"domain_prompts.prompts.{v}": k for k, v in _DOMAIN.items()}
    back.update({f"task_prompts.prompts.{v}": k for k, v in _TASK.items()})
    return back.get(ours, ours)


def _names(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")


def _load(module: torch.nn.Module, state: Mapping[str, Tensor], where: str, strict: bool) -> None:
    """Load ``state`` into ``module``; a one-line DataError naming missing, unexpected or
    mis-shaped keys (names in our convention) otherwise."""
    own = module.state_dict()
    filled = {"queue_index"} if "queue" in state else set()  # filled in by PCM3's load hook (-1: unknown)
    missing = [k for k in own if k not in state and k not in filled]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{_release_name(k)} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing and strict:
        problems.append(f"missing keys: {_names(_release_name(k) for k in missing)}")
    if unexpected and strict:
        problems.append(f"unexpected keys: {_names(_release_name(k) for k in unexpected)}")
    if shapes:
        problems.append(f"wrong shapes: {_names(shapes)}")
    if problems:
        raise DataError(where, "checkpoint does not fit the model built from its sizes: " + "; ".join(problems))
    module.load_state_dict(state, strict=strict)


class FrameLoopEncoder(Encoder):
    """The release's way of computing the ``stepwise`` encoder: the bidirectional ``nn.GRU``
    called on one frame at a time with its state carried over (both directions then run
    forward in time). The same function and parameters as :class:`Encoder` (stepwise), many
    more kernel launches; kept for benchmarks (``benchmarks/bench_step.py``) and comparisons.
    """

    def _stepwise(self, seq: Tensor) -> Tensor:
        outs, hidden = [], None
        for t in range(seq.shape[1]):
            out, hidden = self.gru(seq[:, t:t + 1], hidden)  # N x 1 x 2H
            outs.append(out)
        return torch.cat(outs, dim=1)  # N x T x 2H


def release_style(model: PCM3) -> PCM3:
    """Make ``model`` compute its step the release's way, in place: one query-encoder call per
    view, two decoder calls for the predicted view's second pass, and the frame-by-frame GRU
    loop in every encoder (same function, same parameters). The views are called in the order
    intra, inter, masked, predicted (the project's); the release's own order, intra, masked,
    predicted, inter, differs only in the input BatchNorm's running statistics.

    Only for stepwise encoders (the release's function). Returns ``model``.
    """
    for enc in (model.encoder_q, model.encoder_k):
        if enc is not None:
            if enc.config.variant != "stepwise":
                raise ValueError("release_style needs the stepwise encoder (the release's function)")
            enc.__class__ = FrameLoopEncoder
    model.one_call = False
    return model
