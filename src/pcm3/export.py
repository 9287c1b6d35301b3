"""Export the pretrained query encoder alone, and load it back with one call.

An exported file (``torch.save`` of a dict, ``format = "pcm3-encoder"``) holds the encoder's
config and weights (no prompts, no projector, no decoder) and what its input must look like:
the layout, the stream, the clip length. :func:`load_encoder` returns the encoder in eval mode,
a module ``(N, C, T, V, M) -> (N, D)``, with those facts as attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from pcm3.errors import DataError, Pcm3Error
from pcm3.io import ENCODER_FORMAT, atomic_path
from pcm3.models import Encoder, EncoderConfig
from pcm3.outputs import check_writable

def _find_checkpoint(source: str | Path) -> Path:
    source = Path(source)
    if source.is_dir():
        path = source / "checkpoint_last.pt"
        if not path.exists():
            raise DataError(source, "no checkpoint_last.pt: not a pcm3 run folder (or no epoch finished yet)")
        return path
    if not source.exists():
        raise DataError(source, "no such run folder or checkpoint")
    return source


def export_encoder(source: str | Path, out: str | Path) -> Path:
    """Write the query encoder of a run folder (or checkpoint file) to ``out``."""
    from pcm3.pretrain import load_checkpoint

    ckpt_path = _find_checkpoint(source)
    out = Path(out)
    if out.is_dir():
        raise DataError(out, "is a folder; give the encoder file to write, e.g. --out encoder.pt")
    if out.exists() and out.resolve() == ckpt_path.resolve():
        raise DataError(out, "is the checkpoint being exported; choose another file")
    check_writable(out, "--out", file=True)
    ckpt = load_checkpoint(ckpt_path)
    cfg = ckpt["config"]
    enc_cfg = cfg["model"]["encoder"]
    prefix = "encoder_q."
    state = {k[len(prefix):]: v for k, v in ckpt["model"].items() if k.startswith(prefix)}
    encoder = Encoder(EncoderConfig(**enc_cfg))
    encoder.load_state_dict(state)  # strict: the exported encoder is exactly the query encoder
    payload = {
        "format": ENCODER_FORMAT, "version": 1, "encoder_config": enc_cfg, "state_dict": encoder.state_dict(),
        "layout": ckpt["data"]["layout"], "stream": cfg["data"]["stream"],
        "clip_len": cfg["views"]["out_len"], "test_crop": cfg["views"]["test_crop_ratio"],
        "pretrain_epochs": ckpt["epoch"], "source": str(source),
        # what it was pretrained on: evaluations warn when their test clips were among them
        "pretrained_on": {"dataset": ckpt["data"].get("dataset"), "data": ckpt["data"].get("path"),
                          "benchmark": cfg["data"].get("benchmark"), "part": cfg["data"].get("part"),
                          "samples": ckpt["data"].get("samples"), "fingerprint": ckpt["data"].get("fingerprint")},
    }
    try:
        with atomic_path(out) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as e:
        from pcm3.checks import checkpoint_write_error

        if checkpoint_write_error(out, e) is None:
            raise
        raise DataError(out, f"cannot write the encoder file (disk full or unwritable: {e}); nothing was written") from None
    return out


def load_encoder(path: str | Path, map_location: Optional[str] = "cpu") -> Encoder:
    """Load an exported encoder; returns it in eval mode.

    The module maps ``(N, C, T, V, M)`` clips (``clip_len`` frames of the ``stream``) to
    ``(N, D)`` features. Attributes ``layout``, ``stream``, ``clip_len``, ``test_crop`` say how
    inputs were made in pretraining (see :func:`pcm3.evaluation.features.extract_features`);
    ``pretrained_on`` (``dataset``, ``data``, ``benchmark``, ``part``, ``samples``, the folder's
    ``fingerprint``; ``None`` in files
    of older versions) what it was pretrained on.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such encoder file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise DataError(path, f"not a readable encoder file ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        raise DataError(path, "not a pcm3 encoder (make one with `pcm3 export RUN --out FILE`)")
    missing = [k for k in ("encoder_config", "state_dict", "layout", "stream", "clip_len", "test_crop")
               if k not in payload]
    if missing:
        raise DataError(path, f"incomplete encoder file: no {', '.join(missing)} (export it again with `pcm3 export`)")
    try:
        encoder = Encoder(EncoderConfig(**payload["encoder_config"]))
        encoder.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError, Pcm3Error) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(path, f"damaged encoder file: its weights do not fit its config ({first[:200]})") from None
    encoder.eval()
    for key in ("layout", "stream", "clip_len", "test_crop"):
        setattr(encoder, key, payload[key])
    encoder.pretrained_on = payload.get("pretrained_on")  # None for files of older versions
    return encoder
