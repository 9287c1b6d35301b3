"""k-NN: the blocked top-k search against a brute-force reference, the vote, a CLI run."""

import json

import numpy as np
import pytest
import torch

from pcm3.evaluation.knn import knn_accuracies, knn_topk, knn_vote

from .tiny import cli, encoder_file, tiny_data


def brute_force(train_x, train_y, test_x, k, num_classes):
    """Full similarity matrix, stable sort, majority vote, ties to the class of the nearest."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    sim = b @ a.T
    preds = []
    for row in sim:
        order = np.argsort(-row, kind="stable")[:k]
        counts = np.bincount(train_y[order], minlength=num_classes)
        tied = np.flatnonzero(counts == counts.max())
        preds.append(next(train_y[j] for j in order if train_y[j] in tied))  # nearest among tied classes
    return np.array(preds)


@pytest.mark.parametrize("block", [1, 7, 1000])
def test_blocked_topk_equals_brute_force(block):
    rng = np.random.default_rng(block)
    gallery, queries = rng.normal(size=(120, 12)), rng.normal(size=(33, 12))
    sims, idx = knn_topk(gallery, queries, 20, block_size=block)
    a = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    b = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    full = b @ a.T
    ref = np.argsort(-full, axis=1)[:, :20]
    assert np.array_equal(idx.numpy(), ref)
    assert np.allclose(sims.numpy(), np.take_along_axis(full, ref, 1), atol=1e-5)


def test_accuracies_for_every_k_equal_brute_force():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 1.5
    ytr, yte = rng.integers(0, 5, 200), rng.integers(0, 5, 60)
    xtr, xte = centres[ytr] + rng.normal(size=(200, 16)), centres[yte] + rng.normal(size=(60, 16))
    acc, preds = knn_accuracies(xtr, ytr, xte, yte, (1, 5, 20), block_size=16)
    for k in (1, 5, 20):
        ref = brute_force(xtr, ytr, xte, k, 5)
        assert np.array_equal(preds[k], ref), k
        assert acc[f"knn{k}"] == pytest.approx(100 * (ref == yte).mean())
    assert acc["knn1"] > 50  # separable clusters: far above chance (20%)


def test_vote_majority_then_nearest():
    sims = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    lab = torch.tensor([[1, 2, 2, 1]])
    assert knn_vote(sims, lab, 1, 3).tolist() == [1]
    assert knn_vote(sims, lab, 3, 3).tolist() == [2]   # 2 votes against 1
    assert knn_vote(sims, lab, 4, 3).tolist() == [1]   # 2 - 2: class 1 holds the nearest


def test_cli_knn_on_tiny_data(tmp_path_factory, tmp_path):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    out = tmp_path / "knn"
    assert cli("eval", "knn", "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub", "--out", str(out)) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["task"] == "knn" and m["splits"] == {"train": 96, "test": 96}
    assert set(m["figures"]) == {"top1", "knn1", "knn5", "knn20"} and m["figures"]["top1"] == m["figures"]["knn1"]
    assert m["encoder"]["kind"] == "pretrained" and m["encoder"]["config_hash"]
    assert m["protocol"]["ks"] == [1, 5, 20] and m["input"]["clip_len"] == 16
    assert np.load(out / "predictions.npy").shape == (3, 96)


def test_cli_knn_raw_input_equals_brute_force(tmp_path_factory, tmp_path):
    """``--raw-input``: the training split is the gallery (a test gallery finds each query itself,
    100%) and the labels are the prepared folder's, looked up by sample index."""
    from pcm3.evaluation.baselines import RawInput
    from pcm3.evaluation.common import open_split
    from pcm3.evaluation.features import encode

    from .tiny import CLIP

    data = tiny_data(tmp_path_factory)
    out = tmp_path / "knn"
    assert cli("eval", "knn", "--raw-input", "--data", str(data), "--benchmark", "xsub", "--out", str(out),
               "--set", f"clip_len={CLIP}") == 0
    figures = json.loads((out / "metrics.json").read_text())["figures"]
    train, test = open_split(data, "xsub", "train"), open_split(data, "xsub", "test")
    module = RawInput("ntu25", "joint", CLIP)
    kw = dict(clip_len=CLIP, stream="joint", layout="ntu25")
    xtr, _, itr = encode(module, train, **kw)
    xte, _, ite = encode(module, test, **kw)
    labels = train.prepared.labels                       # from the folder, not from encode
    assert set(itr).isdisjoint(ite)
    pred = brute_force(xtr, labels[itr], xte, 1, 16)
    assert figures["knn1"] == pytest.approx(100 * (pred == labels[ite]).mean())
    assert np.array_equal(np.load(out / "predictions.npy")[0], pred)
    assert 15 < figures["knn1"] < 95                     # far above chance (6%), not a leak (100%)


def test_k_beyond_the_gallery_is_refused(tmp_path_factory, tmp_path, capsys):
    """The tiny data's gallery holds 96 clips: k = 97 voted among all of them, reported as knn97."""
    from pcm3.errors import ConfigError
    from pcm3.evaluation.knn import KnnProtocol, check_k

    check_k(KnnProtocol(k=96, ks=(1, 96)), 96, "g")
    with pytest.raises(ConfigError, match="^k: 97 neighbours, but the gallery \\(g\\) holds 96 clips"):
        check_k(KnnProtocol(k=97), 96, "g")
    with pytest.raises(ConfigError, match=r"ks: 200 .* --set ks=\[1,5\]"):
        check_k(KnnProtocol(ks=(1, 5, 200)), 96, "g")
    data = tiny_data(tmp_path_factory)
    out = tmp_path / "knn"
    assert cli("eval", "knn", "--raw-input", "--data", str(data), "--benchmark", "xsub", "--out", str(out),
               "--set", "k=500") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: k: 500") and "96 clips" in err
    assert not out.exists()
