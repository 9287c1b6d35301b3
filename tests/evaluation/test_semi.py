"""Semi-supervised: subset sampling (sizes, balance, determinism, disjoint from test), CLI runs, errors."""

import json

import numpy as np
import pytest
import torch

from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.common import open_split
from pcm3.evaluation.semi import sample_subset

from .tiny import cli, encoder_file, tiny_data

LABELS = np.repeat(np.arange(4), [10, 20, 40, 130])  # unbalanced: 200 samples, 4 classes


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.5, 1.0])
def test_per_class_sizes_and_balance(fraction):
    pos = sample_subset(LABELS, fraction, "per_class", seed=0, num_classes=4)
    counts = np.bincount(LABELS[pos], minlength=4)
    expected = [max(1, round(fraction * n)) for n in (10, 20, 40, 130)]
    assert counts.tolist() == expected
    assert len(np.unique(pos)) == len(pos) and np.all(np.diff(pos) > 0)


def test_uniform_size_and_determinism():
    a = sample_subset(LABELS, 0.2, "uniform", seed=3, num_classes=4)
    assert len(a) == 40 and set(LABELS[a]) == {0, 1, 2, 3}
    assert np.array_equal(a, sample_subset(LABELS, 0.2, "uniform", seed=3, num_classes=4))
    assert not np.array_equal(a, sample_subset(LABELS, 0.2, "uniform", seed=4, num_classes=4))
    b = sample_subset(LABELS, 0.1, "per_class", seed=1, num_classes=4)
    assert np.array_equal(b, sample_subset(LABELS, 0.1, "per_class", seed=1, num_classes=4))
    assert not np.array_equal(b, sample_subset(LABELS, 0.1, "per_class", seed=2, num_classes=4))


def test_uniform_fraction_that_empties_a_class_is_an_error():
    with pytest.raises(ConfigError, match="leaves class"):
        sample_subset(LABELS, 0.01, "uniform", seed=0, num_classes=4)   # 2 samples for 4 classes
    with pytest.raises(DataError, match="class 4 has no training sample"):
        sample_subset(LABELS, 0.5, "per_class", seed=0, num_classes=5)


def test_frozen_encoder_keeps_its_batchnorm_statistics(tmp_path_factory):
    """encoder_lr_factor 0 freezes the encoder: its input BatchNorm must stay in eval mode (its running
    statistics not re-estimated on the labelled subset); with factor 1 the encoder is fine-tuned."""
    import torch

    from pcm3.evaluation.semi import SemiProtocol, finetune
    from pcm3.export import load_encoder

    from .tiny import CLIP

    data, enc = tiny_data(tmp_path_factory), load_encoder(encoder_file(tmp_path_factory))
    train = open_split(data, "xsub", "train")
    sub = open_split(data, "xsub", "train", indices=train.indices[:32])
    spec = {"clip_len": CLIP, "stream": "joint", "layout": "ntu25", "test_crop": 0.95}
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    frozen, _ = finetune(enc, sub, 16, SemiProtocol(epochs=1, batch_size=16, min_len=8, encoder_lr_factor=0.0),
                         spec, device=torch.device("cpu"), seed=0)
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, before[k]), k
    tuned, _ = finetune(enc, sub, 16, SemiProtocol(epochs=1, batch_size=16, min_len=8), spec,
                        device=torch.device("cpu"), seed=0)
    assert not torch.equal(tuned.state_dict()["input_norm.running_var"], before["input_norm.running_var"])


def test_cli_semi_writes_subsets_disjoint_from_test(tmp_path_factory, tmp_path):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    out = tmp_path / "semi"
    code = cli("eval", "semi", "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub", "--out", str(out),
               "--set", "fractions=[0.1, 0.5]", "--set", "seeds=2", "--set", "epochs=2", "--set", "min_len=8")
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert {"10%_top1_mean", "10%_top1_std", "50%_top5_mean"} <= set(m["figures"])
    assert len(m["per_seed"]) == 4 and m["seeds"] == [0, 1]
    test = set(open_split(data, "xsub", "test").indices.tolist())
    train = set(open_split(data, "xsub", "train").indices.tolist())
    sub = np.load(out / "subset_frac0.1_seed1.npy")
    assert len(sub) == 16 and set(sub.tolist()) <= train and not set(sub.tolist()) & test   # 1 of 6 per class
    assert len(np.load(out / "subset_frac0.5_seed0.npy")) == 48
    scores = np.load(out / "frac0.5_seed1_scores.npy")
    assert scores.shape == (96, 16) and np.allclose(scores.sum(1), 1, atol=1e-4)
    # the labelled clips actually used: 16 of 96 at "10%" (one per class at least), said in a note
    assert m["figures"]["10%_labelled"] == 16 and m["figures"]["50%_labelled"] == 48
    assert m["units"]["10%_labelled"] == "clips"
    assert any("10%: 16 labelled clips of 96 (16.7%, not 10%" in n for n in m["notes"])
    assert not any(n.startswith("50%:") for n in m["notes"])
    assert m["figures"]["10%_top1_std"] is not None


def test_one_seed_has_no_standard_deviation(tmp_path_factory, tmp_path):
    """With one seed the spread is unknown: null and 'n/a', not '± 0.0'."""
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    out = tmp_path / "semi1"
    assert cli("eval", "semi", "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub", "--out", str(out),
               "--set", "fractions=[0.5]", "--set", "seeds=1", "--set", "epochs=1", "--set", "min_len=8") == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["figures"]["50%_top1_std"] is None and m["figures"]["50%_top1_mean"] is not None
    assert "| 50%_top1_std | n/a |" in (out / "results.md").read_text()


def test_fine_tuning_sees_only_the_labelled_subset(tmp_path_factory, tmp_path, monkeypatch):
    from pcm3.evaluation import semi

    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    seen, real_finetune = [], semi.finetune

    def spy(module, train_ds, *args, **kwargs):
        seen.append(np.asarray(train_ds.indices).copy())
        return real_finetune(module, train_ds, *args, **kwargs)

    monkeypatch.setattr(semi, "finetune", spy)
    out = tmp_path / "semi"
    assert cli("eval", "semi", "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub", "--out", str(out),
               "--set", "fractions=[0.25]", "--set", "seeds=2", "--set", "epochs=1", "--set", "min_len=8") == 0
    train = open_split(data, "xsub", "train")
    assert len(seen) == 2
    for indices, seed in zip(seen, (0, 1)):
        subset = np.load(out / f"subset_frac0.25_seed{seed}.npy")
        assert len(subset) == 32 and np.array_equal(np.sort(indices), np.sort(subset))   # 2 of 6 per class
        assert set(subset.tolist()) < set(train.indices.tolist())
        labels = train.prepared.labels[subset]
        assert np.bincount(labels, minlength=16).tolist() == [2] * 16
    assert not np.array_equal(seen[0], seen[1])


def test_cli_semi_bad_fraction_is_one_line(tmp_path_factory, tmp_path, capsys):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    code = cli("eval", "semi", "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub",
               "--out", str(tmp_path / "s"), "--set", "sampling=uniform", "--set", "fractions=[0.05]")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "leaves class" in err and "0.05" in err
    assert not (tmp_path / "s").exists()


def test_the_new_layer_is_not_the_initial_layer_of_a_supervised_encoder():
    """An encoder trained with labels stays aligned with its layer's initial weights; a "new"
    layer drawn from the same seed scored 88% after one step (the supervised row, seed 1) where
    the other seeds scored 9%. The semi layers come from a stream of their own."""
    from pcm3.evaluation.semi import new_head

    heads = [new_head(32, 16, s).weight for s in range(4)]
    assert all(not torch.equal(a, b) for i, a in enumerate(heads) for b in heads[i + 1:])
    torch.testing.assert_close(new_head(32, 16, 2).weight, heads[2])  # seeded
    for s in range(5):  # train_supervised draws its layer after torch.manual_seed(seed + 1)
        torch.manual_seed(s)
        supervised = torch.nn.Linear(32, 16).weight
        assert all(not torch.equal(h, supervised) for h in heads)


def test_a_class_without_training_samples_is_named_before_anything_is_written(tmp_path_factory, tmp_path, capsys,
                                                                              resplit):
    """``pcm3 prepare pku2`` on a few recordings: 8 of 51 classes present; the subsets cannot
    hold every class. One line naming the folder, benchmark and class, no output folder."""
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    labels = np.load(data / "labels.npy")

    def without_class_3(splits):
        splits["xsub"]["train"] = [i for i in splits["xsub"]["train"] if labels[i] != 3]
        return splits

    bad = resplit(data, tmp_path / "no3", without_class_3)
    out = tmp_path / "s"
    code = cli("eval", "semi", "--encoder", str(enc), "--data", str(bad), "--benchmark", "xsub", "--out", str(out))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "no3: benchmark 'xsub': 1 of 16 classes have no training sample (first: 3" in err
    assert not out.exists()
