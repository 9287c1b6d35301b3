"""Where the 1-NN errors of an exported encoder come from (docs/learning-small-data.md, round 3).

On a VALIDATION benchmark (``<benchmark>-val``; the test split is never read) prints, for the
encoder and for the same architecture randomly initialised:

- 1-NN (cosine) on the features as they are, centred, standardised, PCA-whitened and with the
  top principal components removed, and the share of variance in the top 5 components: does
  the features' geometry (a few dominant directions) hide neighbours that are there?
- 1-NN after re-estimating the input BatchNorm's running statistics on the clean training
  clips (pretraining estimates them on augmented and masked views);
- with ``--confusion``, the encoder's per-class 1-NN accuracy and the classes it takes for
  each (class names from the prepared folder's ``meta.json``);
- with ``--readouts``, the linear probe and 1-NN of other read-outs of the same GRU (each
  layer's mean over time, all layers, the top layer's standard deviation or maximum over time,
  mean and standard deviation together) for the encoder and random init side by side: does
  the margin over random init depend on how the feature is read out?

    pcm3 export RUN --out enc.pt
    python tools/probe_features.py enc.pt --data syn --confusion
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from _validation import run_main, require_validation, validation_parts


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
    """A copy of the encoder with its input BatchNorm's running statistics re-estimated
    (cumulative average) on the clean clips of ``dataset``, prepared as :func:`extract_features`
    prepares them: the copy stays in eval mode, only the BatchNorm collects statistics."""
    import copy

    import torch

    from pcm3.evaluation.features import iter_batches, make_clips

    encoder = copy.deepcopy(encoder)
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


def layer_outputs(encoder, clip):
    """Per-frame outputs ``(N, T, 2H)`` of every GRU layer of ``encoder`` on ``clip``
    ``(N, C, T, V, M)``: the encoder's own input (:meth:`~pcm3.models.encoder.Encoder.input_sequence`),
    then its GRU layer by layer, eval mode, no prompts."""
    import torch

    cfg = encoder.config
    out, outs = encoder.input_sequence(clip), []
    for layer in range(cfg.layers):
        fwd, bwd = encoder._direction_weights(layer, ""), encoder._direction_weights(layer, "_reverse")
        if cfg.variant == "bigru":
            h0 = out.new_zeros(2, out.shape[0], cfg.hidden)
            out = torch._VF.gru(out, h0, fwd + bwd, True, 1, 0.0, False, True, True)[0]
        else:  # stepwise: two causal GRUs per layer
            h0 = out.new_zeros(1, out.shape[0], cfg.hidden)
            out = torch.cat([torch._VF.gru(out, h0, w, True, 1, 0.0, False, False, True)[0] for w in (fwd, bwd)], 2)
        outs.append(out)
    return outs


def readout_features(encoder, dataset) -> tuple:
    """``({read-out name: (N, D) features}, labels)`` of :func:`layer_outputs` on the test-time
    clips of ``dataset`` (centre crop, resized, as :func:`extract_features` prepares them)."""
    import torch

    from pcm3.evaluation.features import iter_batches, make_clips

    encoder.eval()
    parts, labels = {}, []
    with torch.no_grad():
        for x, lengths, y, _ in iter_batches(dataset, 256):
            layers = layer_outputs(encoder, make_clips(x, lengths, clip_len=encoder.clip_len, stream=encoder.stream,
                                                       layout=encoder.layout, crop=encoder.test_crop))
            top = layers[-1]
            feats = {"top mean (the encoder's)": top.mean(1), "top std": top.std(1), "top max": top.amax(1),
                     "top mean + std": torch.cat([top.mean(1), top.std(1)], 1),
                     "all layers mean": torch.cat([h.mean(1) for h in layers], 1)}
            feats.update({f"layer {k + 1} mean": h.mean(1) for k, h in enumerate(layers[:-1])})
            for k, v in feats.items():
                parts.setdefault(k, []).append(v)
            labels.append(y)
    return {k: torch.cat(v).numpy() for k, v in parts.items()}, torch.cat(labels).numpy()


def readout_rows(encoders: dict, train, test) -> None:
    """Print linear / 1-NN of every read-out for each encoder, and the margin of the first over
    the second (the probe of ``pcm3 demo``)."""
    from pcm3.evaluation.probe import probe

    res = {}
    for name, e in encoders.items():
        (fa, ya), (fb, yb) = readout_features(e, train), readout_features(e, test)
        res[name] = {k: probe(fa[k], ya, fb[k], yb) for k in fa}
    (a, ra), (b, rb) = list(res.items())
    print(f"read-outs (linear / 1-NN): {a} | {b} | margin")
    for k in ra:
        p, q = ra[k], rb[k]
        print(f"  {k:26s} {100 * p['linear']:5.1f} / {100 * p['knn1']:5.1f} | {100 * q['linear']:5.1f} / "
              f"{100 * q['knn1']:5.1f} | {100 * (p['linear'] - q['linear']):+5.1f} / {100 * (p['knn1'] - q['knn1']):+5.1f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("encoder", help="a file written by `pcm3 export`")
    p.add_argument("--data", required=True)
    p.add_argument("--benchmark", default="xsub-val", help="a validation benchmark, <benchmark>-val or -val<K> (default xsub-val)")
    p.add_argument("--confusion", action="store_true", help="per-class 1-NN accuracy and confusions")
    p.add_argument("--readouts", action="store_true", help="other read-outs of the GRU, encoder vs random init")
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
    if args.readouts:
        readout_rows({"encoder": enc, "random init": rnd}, train, test)
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
    raise SystemExit(run_main(main))
