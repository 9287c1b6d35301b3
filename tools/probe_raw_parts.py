"""Probe simple functions of the raw input on a validation benchmark (study, finding 8).

The raw-input row's features (valid frames resampled to 64, centred, flattened) reduced to:
the whole sequence, the mean pose over the clip, the sequence minus its mean pose (motion
only), and the frame-to-frame velocity; each with the demo's linear probe and 1-NN.

    python tools/probe_raw_parts.py --data syn            # xsub-val
    python tools/probe_raw_parts.py --data msr
"""

import argparse
import sys

from _validation import run_main, require_validation, validation_parts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--benchmark", default="xsub-val")
    args = p.parse_args(argv)
    require_validation(p, args.benchmark)

    import numpy as np
    import torch

    from pcm3.evaluation.baselines import raw_input_features
    from pcm3.evaluation.probe import probe

    torch.set_num_threads(1)
    train, test = validation_parts(args.data, args.benchmark)
    a, ya = raw_input_features(train)
    b, yb = raw_input_features(test)
    a, b = a.reshape(len(a), 3, 64, -1), b.reshape(len(b), 3, 64, -1)  # N x C x T x (V M)
    parts = {
        "whole sequence (raw input)": lambda x: x,
        "mean pose": lambda x: x.mean(2),
        "motion only (minus the mean pose)": lambda x: x - x.mean(2, keepdims=True),
        "velocity": lambda x: np.diff(x, axis=2),
    }
    for name, f in parts.items():
        fa, fb = f(a), f(b)
        r = probe(fa.reshape(len(fa), -1), ya, fb.reshape(len(fb), -1), yb)
        print(f"{name}\tlinear {100 * r['linear']:.1f}\t1-NN {100 * r['knn1']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
