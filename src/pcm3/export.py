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

#: The newest ``version`` of the encoder file this pcm3 writes and reads.
ENCODER_VERSION = 1


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
        "format": ENCODER_FORMAT, "version": ENCODER_VERSION, "encoder_config": enc_cfg,
        "state_dict": encoder.state_dict(),
        "layout": ckpt["data"]["layout"], "stream": cfg["data"]["stream"],
        "clip_len": cfg["views"]["out_len"], "test_crop": cfg["views"]["test_crop_ratio"],
        "pretrain_epochs": ckpt["epoch"], "pretrain_epochs_planned": cfg["train"]["epochs"], "source": str(source),
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
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, unreadable: torch's many errors
        raise DataError(path, f"not a readable encoder file: {_load_error(e)}") from None
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        raise DataError(path, "not a pcm3 encoder (make one with `pcm3 export RUN --out FILE`)")
    missing = [k for k in ("encoder_config", "state_dict", "layout", "stream", "clip_len", "test_crop")
               if k not in payload]
    if missing:
        raise DataError(path, f"incomplete encoder file: no {', '.join(missing)} (export it again with `pcm3 export`)")
    meta = check_metadata(path, payload)
    try:
        encoder = Encoder(EncoderConfig(**payload["encoder_config"]))
        encoder.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError, Pcm3Error) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(path, f"damaged encoder file: its weights do not fit its config ({first[:200]})") from None
    encoder.eval()
    for key in ("layout", "stream", "clip_len", "test_crop"):
        setattr(encoder, key, meta[key])
    encoder.pretrained_on = payload.get("pretrained_on")  # None for files of older versions
    return encoder


def _load_error(error: BaseException) -> str:
    """Why ``torch.load`` refused a file, in a few words on one line: the exception's first line,
    without torch's advice; "truncated or not a torch file" for torch's long messages about a
    damaged zip archive (``PytorchStreamReader failed ... central directory``)."""
    import errno
    import pickle
    import re

    from pcm3.io import first_line

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    if "PytorchStreamReader" in text or "central directory" in text or "not a ZIP archive" in text:
        return "truncated or not a torch file"
    if isinstance(error, pickle.UnpicklingError):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return f"not a torch file (UnpicklingError: {lines[0][:120] if lines else 'unreadable'})"
    if isinstance(error, EOFError):
        return "empty or truncated (it ended early)"
    if isinstance(error, OSError) and error.strerror:
        if error.errno == errno.EINVAL:  # a zip archive cut short, read by the legacy loader
            return f"truncated or not a torch file ({error.strerror})"
        return error.strerror
    first = first_line(text, 160, sentence=True)
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def check_metadata(path: str | Path, payload: dict) -> dict:
    """The input facts of an encoder file (``layout``, ``stream``, ``clip_len``, ``test_crop``),
    checked: ``version`` (absent: 1) a whole number this pcm3 reads (<= :data:`ENCODER_VERSION`),
    ``clip_len`` a whole number >= 1, ``test_crop`` a number in (0, 1], ``layout`` a registered
    skeleton layout, ``stream`` one of joint, bone, motion. A one-line DataError naming the file
    and the key otherwise (an edited or damaged file), before any clip is made from them."""
    import math
    import numbers

    from pcm3.skeleton import LAYOUTS, STREAMS

    def whole(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    version = payload.get("version", 1)
    if not whole(version) or version < 1:
        raise DataError(path, f"encoder file 'version' is {version!r}, expected a whole number >= 1 (damaged or "
                              "edited file; export it again with `pcm3 export`)")
    if version > ENCODER_VERSION:
        raise DataError(path, f"encoder file version {version} is newer than this pcm3 reads ({ENCODER_VERSION}); "
                              "update pcm3, or export the encoder with this one")
    clip_len, crop, layout, stream = (payload[k] for k in ("clip_len", "test_crop", "layout", "stream"))
    if not whole(clip_len) or clip_len < 1:
        raise DataError(path, f"encoder file 'clip_len' is {clip_len!r}, expected a whole number of frames >= 1 "
                              "(damaged or edited file)")
    if (not isinstance(crop, numbers.Real) or isinstance(crop, bool) or not math.isfinite(float(crop))
            or not 0 < float(crop) <= 1):
        raise DataError(path, f"encoder file 'test_crop' is {crop!r}, expected a number in (0, 1] "
                              "(damaged or edited file)")
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise DataError(path, f"encoder file 'layout' is {layout!r}, not a registered skeleton layout (known: "
                              f"{', '.join(sorted(LAYOUTS))}; others: pcm3.skeleton.register_layout before loading)")
    if stream not in STREAMS:
        raise DataError(path, f"encoder file 'stream' is {stream!r}, expected one of {', '.join(STREAMS)}")
    return {"layout": layout, "stream": stream, "clip_len": int(clip_len), "test_crop": float(crop),
            "version": int(version)}
