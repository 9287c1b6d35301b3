"""``pcm3 import-release CKPT --out encoder.pt``: the authors' released weights as our encoder.

Reads a checkpoint of the authors' release (``{"epoch", "state_dict", "optimizer"}`` or a bare
state dict; keys with or without the ``module.`` prefix; joint, bone or motion stream, with or
without prompts) and writes the query encoder in the format of ``pcm3 export``
(:func:`pcm3.export.load_encoder` reads it) with the ``stepwise`` semantics, the only one that
computes the released function. The release's key encoder, projector, decoder, queue and
prompts are checked (every key must be one of the release's) and dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Union

from pcm3.errors import ConfigError, DataError

STREAMS = ("joint", "bone", "motion")


def import_release(checkpoint: Union[str, os.PathLike, Mapping[str, Any]], out: Union[str, os.PathLike], *,
                   stream: str = "joint", layout: str = "ntu25", channels: int = 3, persons: int = 2,
                   clip_len: int = 64, test_crop: float = 0.95, overwrite: bool = False) -> Path:
    """Convert a release checkpoint into an exported encoder file.

    Args:
        checkpoint: path of the release's ``.pth.tar`` (or its state dict).
        out: the encoder file to write (atomically).
        stream: the stream the checkpoint was trained on (the file does not say): ``joint``,
            ``bone`` or ``motion``; features of other streams are meaningless.
        layout: skeleton layout of the inputs (``ntu25`` for the release's NTU weights).
        channels, persons: C and M, to split the release's ``F = V * C * M`` input features.
        clip_len, test_crop: the release's test-time input (64 frames, centre crop of 95%).
        overwrite: replace ``out`` if it exists (else an error).

    Returns:
        ``out`` as a Path.

    Raises:
        DataError: the checkpoint is unreadable, not the release's, or has unknown, missing or
            mis-shaped keys (one line listing them).
        ConfigError: a bad ``stream`` or an ``out`` that is the checkpoint itself.
        DataError: also for an ``out`` that exists (without ``overwrite``) or cannot be written.
    """
    import torch

    from pcm3.commands.export import is_encoder_file
    from pcm3.outputs import check_out_file
    from pcm3.export import ENCODER_FORMAT, ENCODER_VERSION
    from pcm3.io import atomic_path
    from pcm3.models.release import load_release_encoder
    from pcm3.skeleton import get_layout

    if stream not in STREAMS:
        raise ConfigError(f"--stream must be one of {', '.join(STREAMS)}; got {stream!r}")
    joints = get_layout(layout).num_joints  # an unknown layout is a user error raised there
    if not isinstance(checkpoint, Mapping):
        src = Path(checkpoint)
        if Path(out).exists() and src.exists() and Path(out).resolve() == src.resolve():
            raise ConfigError(f"{out}: --out is the checkpoint itself; choose another file")
    check_out_file(Path(out), overwrite, ours=is_encoder_file, what="pcm3 export or import-release")
    encoder, epoch = load_release_encoder(checkpoint, channels, persons)  # every key checked
    enc_cfg = encoder.config
    if enc_cfg.num_joints != joints:
        where = "<state dict>" if isinstance(checkpoint, Mapping) else checkpoint
        raise DataError(where, f"its encoder reads {enc_cfg.num_joints} joints x {channels} coordinates x {persons} "
                               f"persons per frame, but --layout {layout} has {joints} joints; give the layout it "
                               "was trained on")
    payload = {
        "format": ENCODER_FORMAT, "version": ENCODER_VERSION,
        "encoder_config": {f: getattr(enc_cfg, f) for f in enc_cfg.__dataclass_fields__},
        "state_dict": encoder.state_dict(), "layout": layout, "stream": stream, "clip_len": clip_len,
        "test_crop": test_crop, "pretrain_epochs": epoch,
        "source": "<state dict>" if isinstance(checkpoint, Mapping) else str(checkpoint),
    }
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    return Path(out)


def add_parser(sub) -> None:
    p = sub.add_parser("import-release", help="convert the authors' released weights into a pcm3 encoder",
                       description="Read a checkpoint of the authors' PCM3 release (with or without the "
                                   "'module.' prefix; joint, bone or motion) and write its query encoder "
                                   "in the `pcm3 export` format (stepwise semantics); load it with "
                                   "pcm3.load_encoder(path) or use it with `pcm3 embed`.")
    p.add_argument("checkpoint", help="the release's checkpoint, e.g. checkpoint_0450.pth.tar")
    p.add_argument("--out", required=True, help="encoder file to write, e.g. encoder.pt")
    p.add_argument("--stream", default="joint", choices=STREAMS,
                   help="the stream the checkpoint was trained on (default joint)")
    p.add_argument("--layout", default="ntu25", help="skeleton layout of the inputs (default ntu25)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def run(args) -> int:
    path = import_release(args.checkpoint, args.out, stream=args.stream, layout=args.layout,
                          overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
