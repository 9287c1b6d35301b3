"""``pcm3 export`` (the encoder of a run) and ``pcm3 embed`` (features of a prepared split)."""

from __future__ import annotations

import os
from pathlib import Path

from pcm3.errors import DataError


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export the pretrained encoder of a run",
                       description="Write the query encoder of a run (no prompts, no projector, no "
                                   "decoder) with its config; load it with pcm3.load_encoder(path).")
    p.add_argument("run", help="run folder (uses checkpoint_last.pt) or a checkpoint file")
    p.add_argument("--out", required=True, help="output file, e.g. encoder.pt")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run_export)

    e = sub.add_parser("embed", help="write encoder features of a prepared split to .npy",
                       description="Encode every sample of a split (centre crop of the valid frames, "
                                   "resized to the clip length) and write features (N, D) to OUT and "
                                   "labels (N,) to OUT with .labels.npy, and beside them the hidden record "
                                   ".OUT.pcm3 (their names and checksums): --overwrite replaces only files "
                                   "it proves embed's.")
    e.add_argument("encoder", help="file written by `pcm3 export`")
    e.add_argument("--data", required=True, help="prepared data folder")
    e.add_argument("--benchmark", default=None, help="benchmark (xsub, xview, ...); default: all samples")
    e.add_argument("--part", default=None, help="train or test of --benchmark (default test)")
    e.add_argument("--out", required=True, help="features .npy file")
    e.add_argument("--overwrite", action="store_true",
                   help="replace output files written before by pcm3 embed (as their record proves)")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads (default 0: 1 for small GRU encoders, else the physical cores)")
    e.set_defaults(func=run_embed)



def is_encoder_file(path: Path) -> bool:
    """True for a file written by ``pcm3 export`` / ``pcm3 import-release`` (an exported encoder)."""
    import torch

    from pcm3.export import ENCODER_FORMAT

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a torch file, or not one of ours
        return False
    return isinstance(payload, dict) and payload.get("format") == ENCODER_FORMAT


#: The kind in the record (``.FEATURES.pcm3``) that ``embed`` writes beside its two files.
FEATURES_KIND = "features"


def run_export(args) -> int:
    from pcm3.export import export_encoder

    from pcm3.outputs import check_out_file, overlaps

    out = Path(args.out)
    if os.path.lexists(out) and overlaps(out, Path(args.run)):  # a new file beside the run's is fine
        raise DataError(out, f"--out is a file of the input {args.run}; choose another file")
    check_out_file(out, args.overwrite, ours=is_encoder_file, what="pcm3 export")
    path = export_encoder(args.run, out)
    print(f"wrote {path}")
    return 0


def labels_path_for(out: Path) -> Path:
    """``feats.npy`` -> ``feats.labels.npy`` (any other name gets ``.labels.npy`` appended)."""
    return out.with_name(out.name[:-4] + ".labels.npy" if out.name.endswith(".npy") else out.name + ".labels.npy")


def check_encoder_fits(encoder, prepared, encoder_path) -> None:
    """The data must have the layout and the input size the encoder was pretrained on."""
    cfg = getattr(encoder, "cfg", None) or getattr(encoder, "config", None)
    want = {"layout": getattr(encoder, "layout", None)}
    have = {"layout": prepared.layout}
    if cfg is not None:
        want.update(coordinates=cfg.in_channels, joints=cfg.num_joints, persons=cfg.num_persons)
        have.update(zip(("coordinates", "joints", "persons"), prepared.input_size))
    diff = [k for k in want if want[k] is not None and want[k] != have[k]]
    if diff:
        w = ", ".join(f"{k} {want[k]}" for k in want if want[k] is not None)
        h = ", ".join(f"{k} {have[k]}" for k in want if want[k] is not None)
        raise DataError(encoder_path, f"made for data with {w}, but {prepared.root} has {h}; "
                                      "use an encoder pretrained on this layout")


def run_embed(args) -> int:
    import numpy as np
    import torch

    from pcm3.checks import check_clips
    from pcm3.config import resolve_threads
    from pcm3.data.dataset import SkeletonDataset
    from pcm3.data.prepared import Prepared
    from pcm3.evaluation.features import extract_features
    from pcm3.evaluation.runner import resolve_device
    from pcm3.export import load_encoder
    from pcm3.outputs import check_recorded_output, recorded_output, write_error

    if args.batch_size < 1:
        raise DataError("--batch-size", f"must be at least 1, got {args.batch_size}")
    if args.part is not None and args.benchmark is None:  # it was ignored: every sample was embedded
        raise DataError("--part", "needs --benchmark (without one every sample of --data is embedded)")
    args.part = args.part or "test"
    if args.threads < 0:
        raise DataError("--threads", f"must be 0 (automatic) or more, got {args.threads}")
    device = resolve_device(args.device)  # names --device (the pretraining one names train.device)
    out = Path(args.out)
    labels_path = labels_path_for(out)
    # replaced only while the record beside them proves both files embed's and unchanged
    check_recorded_output([out, labels_path], FEATURES_KIND, args.overwrite, what="pcm3 embed",
                          protect=(args.encoder, args.data))
    encoder = load_encoder(args.encoder)
    prepared = Prepared(args.data)
    check_clips(prepared, "embedding")
    check_encoder_fits(encoder, prepared, args.encoder)
    from pcm3.evaluation.common import check_parts  # an empty part, bad labels or lengths, NaN: one line

    check_parts(prepared, args.benchmark, (args.part,), labelled=False, command="embedding")
    cfg = getattr(encoder, "cfg", None) or getattr(encoder, "config", None)
    torch.set_num_threads(resolve_threads(args.threads, getattr(cfg, "hidden", 1024)))
    dataset = SkeletonDataset(prepared, args.benchmark, args.part)
    feats, labels = extract_features(encoder, dataset, batch_size=args.batch_size, device=device)
    finite = np.isfinite(feats).all(axis=1)
    if not finite.all():
        j = int(dataset.indices[int(np.argmin(finite))])
        raise DataError(args.encoder, f"{int((~finite).sum())} of {len(finite)} feature vectors are not finite "
                                      f"(first: sample {j}); the encoder's weights are damaged or diverged; "
                                      "nothing was written")
    try:
        with recorded_output([out, labels_path], FEATURES_KIND) as tmps:  # both files or neither
            for tmp, arr in zip(tmps, (feats, labels)):
                with open(tmp, "wb") as f:
                    np.save(f, arr)
    except OSError as e:
        raise write_error(out, e, "the features") from None
    print(f"wrote {out} {feats.shape} and {labels_path}")
    return 0
