"""``pcm3 export`` (the encoder of a run) and ``pcm3 embed`` (features of a prepared split)."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export the pretrained encoder of a run",
                       description="Write the query encoder of a run (no prompts, no projector, no "
                                   "decoder) with its config; load it with pcm3.load_encoder(path).")
    p.add_argument("run", help="run folder (uses checkpoint_last.pt) or a checkpoint file")
    p.add_argument("--out", required=True, help="output file, e.g. encoder.pt")
    p.set_defaults(func=run_export)

    e = sub.add_parser("embed", help="write encoder features of a prepared split to .npy",
                       description="Encode every sample of a split (centre crop of the valid frames, "
                                   "resized to the clip length) and write features (N, D) to OUT and "
                                   "labels (N,) to OUT with .labels.npy.")
    e.add_argument("encoder", help="file written by `pcm3 export`")
    e.add_argument("--data", required=True, help="prepared data folder")
    e.add_argument("--benchmark", default=None, help="benchmark (xsub, xview, ...); default: all samples")
    e.add_argument("--part", default="test", help="train or test (default test)")
    e.add_argument("--out", required=True, help="features .npy file")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    e.add_argument("--batch-size", type=int, default=256)
    e.set_defaults(func=run_embed)


def run_export(args) -> int:
    from pcm3.export import export_encoder

    path = export_encoder(args.run, args.out)
    print(f"wrote {path}")
    return 0


def run_embed(args) -> int:
    import numpy as np

    from pcm3.data.dataset import SkeletonDataset
    from pcm3.evaluation.features import extract_features
    from pcm3.export import load_encoder
    from pcm3.io import atomic_path
    from pcm3.pretrain import resolve_device

    encoder = load_encoder(args.encoder)
    dataset = SkeletonDataset(args.data, args.benchmark, args.part)
    feats, labels = extract_features(encoder, dataset, batch_size=args.batch_size,
                                     device=resolve_device(args.device))
    out = Path(args.out)
    labels_path = out.with_name(out.name[:-4] + ".labels.npy" if out.name.endswith(".npy") else out.name + ".labels.npy")
    for path, arr in ((out, feats), (labels_path, labels)):
        with atomic_path(path, suffix=".npy") as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
    print(f"wrote {out} {feats.shape} and {labels_path}")
    return 0
