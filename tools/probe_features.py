"""Where the 1-NN errors of an exported encoder come from (docs/learning-small-data.md, round 3).

On a VALIDATION benchmark (``<benchmark>-val``; the test split is never read) prints, for the
encoder and for the same architecture randomly initialised:

- 1-NN (cosine) on the features as they are, centred, standardised, PCA-whitened and with the
  top principal components removed, and the share of variance in the top 5 components: does
  the features' geometry (a few dominant directions) hide neighbours that are there?
- 1-NN after re-estimating the input BatchNorm's running statistics on the clean training
  clips (pretraining estimates them on augmented and masked views);
- with ``--confusion``, the encoder's per-class 1-NN accuracy and the classes it takes for
  each (class names from the prepared folder's ``meta.json``).

    pcm3 export RUN --out enc.pt
    python tools/probe_features.py enc.pt --data syn --confusion
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from _validation import require_validation, validation_parts


def nn1(train_x, train_y, test_x, test_y) -> float:
    """Cosine 1-NN top-1 accuracy (fraction), the probe's own (:func:`pcm3.evaluation.probe.knn_accuracy`)."""
    from pcm3.evaluation.probe import knn_accuracy

    return knn_accuracy(np.ascontiguousarray(train_x, np.float32), train_y,
                        np.ascontiguousarray(test_x, np.float32), test_y, k=1)


def geometry_rows(xa, ya, xb, yb) -> dict:
    """1-NN on the features under changes of geometry fitted on the training part only."""
    mu, sd = xa.mean(0), xa.std(0) + 1e-6
    _, s, vt = np.linalg.svd(xa - mu, full_matrices=False)
    rows = {"as is": nn1(xa, ya, xb, yb), "centred": nn1(xa - mu, ya, xb - mu, yb),
            "standardised": nn1((xa - mu) / sd, ya, (xb - mu) / sd, yb),
            "whitened": nn1((xa - mu) @ vt.T / s, ya, (xb - mu) @ vt.T / s, yb)}
    for k in (1, 3, 5):
        rows[f"top {k} PCs removed"] = nn1((xa - mu) @ vt[k:].T, ya, (xb - mu) @ vt[k:].T, yb)
    rows["variance in top 5 PCs"] = float((s[:5] ** 2).sum() / (s ** 2).sum())
    return rows


def recalibrated(encoder, dataset):
    """The encoder with its input BatchNorm's running statistics re-estimated (cumulative
    average) on the clean clips of ``dataset``, prepared as :func:`extract_features` prepares
    them: the encoder stays in eval mode, only the BatchNorm collects statistics."""
    import torch

    from pcm3.evaluation.features import iter_batches, make_clips

    bn = encoder.input_norm
    if not isinstance(bn, torch.nn.BatchNorm1d):
        return encoder
    bn.reset_running_stats()
    bn.momentum = None
    encoder.eval()
    bn.train()
    with torch.no_grad():
        for x, lengths, _, _ in iter_batches(dataset, 256):
            encoder(make_clips(x, lengths, clip_len=encoder.clip_len, stream=encoder.stream, layout=encoder.layout,
                               crop=encoder.test_crop))
    return encoder.eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("encoder", help="a file written by `pcm3 export`")
    p.add_argument("--data", required=True)
    p.add_argument("--benchmark", default="xsub-val", help="a validation benchmark, <benchmark>-val or -val<K> (default xsub-val)")
    p.add_argument("--confusion", action="store_true", help="per-class 1-NN accuracy and confusions")
    args = p.parse_args(argv)
    require_validation(p, args.benchmark)

    import torch

    from pcm3.evaluation.baselines import random_init_encoder
    from pcm3.evaluation.features import extract_features
    from pcm3.evaluation.knn import knn_accuracies
    from pcm3.export import load_encoder

    torch.set_num_threads(1)
    train, test = validation_parts(args.data, args.benchmark)
    enc = load_encoder(args.encoder)
    rnd = random_init_encoder(dataclasses.asdict(enc.config), 0, layout=enc.layout, stream=enc.stream,
                              clip_len=enc.clip_len, test_crop=enc.test_crop)
    feats = {}
    for name, e in (("encoder", enc), ("random init", rnd)):
        feats[name] = (*extract_features(e, train), *extract_features(e, test))
        rows = geometry_rows(*feats[name])
        recal = recalibrated(e, train)
        rows["input BN re-estimated"] = nn1(*extract_features(recal, train), *extract_features(recal, test))
        print(f"{name}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in rows.items()))
    if args.confusion:
        xa, ya, xb, yb = feats["encoder"]
        names = train.prepared.meta.get("class_names") or [str(c) for c in range(int(ya.max()) + 1)]
        pred = knn_accuracies(xa, ya, xb, yb, (1,))[1][1]  # the probe's 1-NN predictions
        for c, cname in enumerate(names):
            sel = yb == c
            if not sel.any():
                continue
            wrong = np.bincount(pred[sel & (pred != c)], minlength=len(names))
            top = ", ".join(f"{names[j]} {wrong[j]}" for j in np.argsort(-wrong)[:2] if wrong[j])
            print(f"  {cname:20s} {100 * (pred[sel] == c).mean():5.1f}%  taken for: {top or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
