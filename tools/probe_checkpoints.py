"""Probe the query encoder of pretraining checkpoints (linear probe and 1-NN, the demo's probe).

Used by the small-data study (docs/learning-small-data.md) to follow representation quality
over a run, on a validation benchmark (``<benchmark>-val``: held-out training subjects).

    python tools/probe_checkpoints.py --data msr --benchmark xsub-val RUN/checkpoint_epoch004.pt ...
    python tools/probe_checkpoints.py ... --pool mean   # read the same weights out with another pooling
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _validation import run_main, require_validation, validation_parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", required=True)
    p.add_argument("--benchmark", default="xsub-val")
    p.add_argument("--pool", choices=("last", "mean", "ends"), help="override the encoder's read-out")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--key", action="store_true", help="probe the momentum (key) encoder instead of the query encoder")
    args = p.parse_args(argv)
    require_validation(p, args.benchmark)

    import torch

    from pcm3.evaluation.features import extract_features
    from pcm3.evaluation.probe import probe
    from pcm3.export import export_encoder, load_encoder

    torch.set_num_threads(args.threads)
    train, test = validation_parts(args.data, args.benchmark)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.checkpoints:
            ck = name
            path = Path(tmp) / "enc.pt"
            if path.exists():
                path.unlink()
            if args.key:  # the key encoder's weights under the query encoder's names
                state = torch.load(ck, map_location="cpu", weights_only=False)
                model = state["model"]
                for key in [k for k in model if k.startswith("encoder_k.")]:
                    model["encoder_q." + key[len("encoder_k."):]] = model[key]
                ck = Path(tmp) / "key.pt"
                torch.save(state, ck)
            export_encoder(ck, path)
            enc = load_encoder(path)
            if args.pool:
                enc.config.pool = args.pool
            kw = dict(stream=enc.stream, layout=enc.layout, clip_len=enc.clip_len, crop=enc.test_crop)
            a, ya = extract_features(enc, train, **kw)
            b, yb = extract_features(enc, test, **kw)
            r = probe(a, ya, b, yb)
            print(f"{name}{' (key encoder)' if args.key else ''}\tlinear {100 * r['linear']:.1f}\t1-NN {100 * r['knn1']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
