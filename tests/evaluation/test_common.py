"""Shared evaluation pieces: top-k, protocols, validation carving, scores, results files."""

import json

import numpy as np
import pytest

from pcm3.errors import ConfigError, DataError
from pcm3.evaluation.common import (carve_validation, check_compatible, check_parts, check_recognition_data,
                                    confusion_matrix, load_protocol, load_scores, open_split, per_class_accuracy,
                                    save_scores, topk_accuracy, topk_correct, write_results)
from pcm3.evaluation.linear import LinearProtocol, lr_at_epoch

from .tiny import tiny_data


def test_topk_on_a_constructed_case():
    scores = np.array([[0.1, 0.5, 0.4, 0.0],    # true 1: top-1 hit
                       [0.7, 0.1, 0.2, 0.0],    # true 2: second best -> top-2 hit only
                       [0.1, 0.2, 0.3, 0.4],    # true 0: last -> no hit below k=4
                       [0.0, 0.0, 0.9, 0.1]])   # true 3: second best
    labels = np.array([1, 2, 0, 3])
    acc = topk_accuracy(scores, labels, (1, 2, 4, 5))
    assert acc == {"top1": 25.0, "top2": 75.0, "top4": 100.0, "top5": 100.0}
    assert topk_correct(scores, labels, (1,))[1].tolist() == [True, False, False, False]


def test_confusion_and_per_class():
    pred, y = np.array([0, 1, 1, 2, 2]), np.array([0, 1, 2, 2, 2])
    cm = confusion_matrix(pred, y, 4)
    assert cm[2].tolist() == [0, 1, 2, 0] and cm.sum() == 5
    acc = per_class_accuracy(pred, y, 4)
    assert acc[:3] == [100.0, 100.0, pytest.approx(200 / 3)] and acc[3] is None


def test_protocol_yaml_overrides_and_unknown_keys():
    p = load_protocol(LinearProtocol, "eval_linear", ["epochs=7", "milestones=[3, 5]"])
    assert p.epochs == 7 and p.milestones == (3, 5) and p.lr == 0.1 and p.batch_size == 1024
    assert [lr_at_epoch(p, e) for e in (0, 3, 5)] == pytest.approx([0.1, 0.01, 0.001])
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        load_protocol(LinearProtocol, "eval_linear", ["epoch=3"])
    with pytest.raises(ConfigError, match="select"):
        load_protocol(LinearProtocol, "eval_linear", ["select=val"])  # no validation split
    # the key after the source, as pretraining configs name it (it read "eval_linear (with --set).epochs")
    with pytest.raises(ConfigError, match=r"^eval_linear \(with --set\): epochs: expected an integer"):
        load_protocol(LinearProtocol, "eval_linear", ["epochs=x"])


def test_validation_carved_from_whole_training_subjects(tmp_path_factory):
    data = tiny_data(tmp_path_factory)
    train = open_split(data, "xsub", "train")
    test = open_split(data, "xsub", "test")
    tr, va = carve_validation(train, 0.5, seed=0)
    assert len(tr) + len(va) == len(train) and not set(tr) & set(va)
    assert not (set(tr) | set(va)) & set(test.indices.tolist())
    rows = train.prepared.rows
    assert not {rows[i]["subject"] for i in tr} & {rows[i]["subject"] for i in va}
    assert np.array_equal(carve_validation(train, 0.5, seed=0)[1], va)
    with pytest.raises(DataError, match="no column 'nope'"):
        carve_validation(train, 0.5, 0, by="nope")


def test_missing_split_and_foreign_layout(tmp_path_factory):
    data = tiny_data(tmp_path_factory)
    with pytest.raises(DataError, match="no benchmark 'xset'"):
        open_split(data, "xset", "train")
    from pcm3.evaluation.baselines import RawInput

    enc = RawInput(layout="kinect_v1")
    with pytest.raises(DataError, match="layout 'kinect_v1'"):
        check_compatible(enc, open_split(data, "xsub", "train").prepared, "enc.pt")


def test_scores_round_trip_and_results_files(tmp_path):
    s = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    save_scores(tmp_path, s, np.arange(5) + 10, np.array([0, 1, 2, 0, 1]), prefix="val_")
    s2, idx, y = load_scores(tmp_path, "val_")
    assert np.array_equal(s, s2) and idx.tolist() == [10, 11, 12, 13, 14] and y.tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(DataError, match="missing"):
        load_scores(tmp_path)
    write_results(tmp_path, {"task": "knn", "figures": {"top1": 12.5, "bad": float("nan")}, "encoder": {"kind": "raw_input"},
                             "wall_seconds": 1.0})
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["figures"] == {"top1": 12.5, "bad": None}
    md = (tmp_path / "results.md").read_text()
    assert "| top1 | 12.50% |" in md and "raw_input" in md


def test_check_parts_names_an_empty_part_and_the_benchmarks_that_have_both(tmp_path_factory, tmp_path, resplit):
    data = tiny_data(tmp_path_factory)
    parts = check_parts(data, "xsub")
    assert sorted(parts) == ["test", "train"] and len(parts["train"]) == 96

    def empty_test(splits):
        splits["xsub"]["test"] = []
        return splits

    bad = resplit(data, tmp_path / "empty", empty_test)
    with pytest.raises(DataError, match=r"empty: benchmark 'xsub' has no test clips .*'test' part is empty.*: xview"):
        check_recognition_data(bad, "xsub")
    assert len(check_parts(bad, "xsub", ("train",))["train"]) == 96  # a task reading the training part alone
    with pytest.raises(ConfigError, match="--benchmark: required"):
        check_recognition_data(data, None)


def test_check_parts_labelled_or_not(tmp_path_factory, tmp_path):
    """-1 (no label) is refused where a task trains or tests on labels, allowed elsewhere."""
    import shutil

    bad = tmp_path / "nolabel"
    shutil.copytree(tiny_data(tmp_path_factory), bad)
    labels = np.load(bad / "labels.npy")
    j = int(open_split(bad, "xsub", "test").indices[0])
    labels[j] = -1
    np.save(bad / "labels.npy", labels)
    check_parts(bad, "xsub", labelled=False)
    with pytest.raises(DataError, match=f"labels.npy: sample {j} .* no label"):
        check_parts(bad, "xsub", labelled=True)


@pytest.mark.parametrize("task, item, needle", [
    ("linear", "epochs=-1", "linear.epochs: must be >= 1, got -1"),
    ("linear", "lr=0", "linear.lr: must be > 0, got 0"),
    ("semi", "encoder_lr_factor=-1", "semi.encoder_lr_factor: must be >= 0, got -1"),
    ("detection", "momentum=1", "detection.momentum: must be in [0, 1), got 1"),
    ("motion", "weight_decay=-1", "motion.weight_decay: must be >= 0, got -1"),
    ("detection", "milestones=[-5]", "detection.milestones: each must be an epoch >= 0"),
    ("motion", "milestones=[-5]", "motion.milestones: each must be an epoch >= 0"),
])
def test_a_protocol_value_out_of_range_names_its_key(task, item, needle):
    """It said `linear: epochs >= 1, batch_size >= 1, lr > 0 and crops >= 0 required`, naming no key."""
    from pcm3.evaluation.runner import task_module

    module = task_module(task)
    with pytest.raises(ConfigError) as e:
        load_protocol(module.PROTOCOL, module.DEFAULT_CONFIG, [item])
    assert needle in str(e.value) and "--set" in str(e.value)


def test_test_classes_without_training_clips_are_a_warning(tmp_path):
    """On the 5-file NTU sample no test class appears in training: linear and k-NN gave 0% silently."""
    from types import SimpleNamespace

    from pcm3.data.prepared import PreparedWriter
    from pcm3.evaluation.common import assemble_metrics

    with PreparedWriter(tmp_path / "d", kind="clips", shape=(4, 3, 4, 25, 1), dataset="toy", layout="ntu25",
                        class_names=["a", "b", "c"]) as w:
        for i, label in enumerate([0, 1, 0, 2]):
            w.set(i, np.ones((3, 4, 25, 1), np.float32), label=label, length=4, name=f"s{i}")
        w.set_splits({"xsub": {"train": [0, 1], "test": [2, 3]}})
    ctx = SimpleNamespace(task="knn", data=tmp_path / "d", benchmark="xsub", encoder=None, encoder_kind="raw_input",
                          encoder_info={}, protocol=LinearProtocol(), seed=0, device="cpu")
    m = assemble_metrics(ctx, {"figures": {"top1": 50.0}}, wall_seconds=0.0)
    text = "1 of the 2 test clips belong to 1 class(es) with no training clip (c): they cannot be classified correctly"
    assert m["warnings"] == [text] and text in m["notes"]
    ctx.task = "motion"  # no classes predicted there
    assert "warnings" not in assemble_metrics(ctx, {"figures": {}}, wall_seconds=0.0)


def test_pretraining_overlap_needs_the_same_data_set(tmp_path_factory):
    from pcm3.evaluation.common import pretraining_overlap

    from pcm3.data.prepared import Prepared
    from pcm3.data.synthetic import prepare_synthetic

    data = tiny_data(tmp_path_factory)  # synthetic: xview's test shares clips with xsub's training part
    seen = {"dataset": "synthetic", "benchmark": "xsub", "part": "train", "fingerprint": Prepared(data).fingerprint()}
    assert "were pretraining clips of this encoder (synthetic xsub/train)" in pretraining_overlap(seen, data, "xview")
    assert pretraining_overlap({**seen, "dataset": "ntu60"}, data, "xview") is None  # other data, same names
    assert pretraining_overlap(seen, data, "xsub") is None
    assert pretraining_overlap(None, data, "xview") is None  # an encoder file of an older version
    other = tmp_path_factory.mktemp("other") / "syn7"  # the same names, another seed: other clips
    prepare_synthetic(other, seed=7, num_subjects=4, repetitions=1, progress=False)
    assert pretraining_overlap(seen, other, "xview") is None
    copy = tmp_path_factory.mktemp("copy") / "data"  # the same clips elsewhere: still the same
    import shutil
    shutil.copytree(data, copy)
    assert pretraining_overlap(seen, copy, "xview") is not None
    # without a fingerprint (an export of earlier today): the same folder only
    legacy = {k: v for k, v in seen.items() if k != "fingerprint"}
    assert pretraining_overlap({**legacy, "data": str(data)}, data, "xview") is not None
    assert pretraining_overlap({**legacy, "data": str(data)}, copy, "xview") is None


def test_damaged_saved_scores_are_one_line_errors_naming_the_file(tmp_path):
    """A truncated scores.npy gave `ValueError: EOF...` (or was read as a pickle); NaN scores were
    used as they were. Now: a DataError naming the file and what is wrong with it."""
    import os

    from pcm3.evaluation.common import load_array

    good = np.random.default_rng(0).random((16, 4)).astype(np.float32)
    save_scores(tmp_path, good, np.arange(16), np.arange(16) % 4)
    scores = tmp_path / "scores.npy"
    size = scores.stat().st_size
    for cut, why in ((50, "truncated or damaged .npy header"), (size - 20, f"truncated: {size - 20} of the {size}"),
                     (0, "empty")):
        save_scores(tmp_path, good, np.arange(16), np.arange(16) % 4)
        os.truncate(scores, cut)
        with pytest.raises(DataError, match="scores.npy: " + why.replace(".", r"\.")) as e:
            load_scores(tmp_path)
        assert str(scores) in str(e.value) and "\n" not in str(e.value)
    scores.write_bytes(b"not an array at all")
    with pytest.raises(DataError, match="scores.npy: not a .npy array file"):
        load_scores(tmp_path)
    bad = good.copy()
    bad[3, 1], bad[5, 0] = np.nan, np.inf
    save_scores(tmp_path, bad, np.arange(16), np.arange(16) % 4)
    with pytest.raises(DataError, match=r"scores.npy: 2 non-finite score\(s\) \(NaN or inf\) in 2 of its 16 rows"):
        load_scores(tmp_path)
    save_scores(tmp_path, good, np.arange(16), np.arange(16) % 4)
    np.save(tmp_path / "scores_index.npy", np.arange(16.0))
    with pytest.raises(DataError, match="scores_index.npy: holds float64 values, not whole numbers"):
        load_scores(tmp_path)
    save_scores(tmp_path, good, np.arange(16), np.arange(16) % 4)
    np.save(tmp_path / "scores_labels.npy", (np.arange(16) % 4).astype(np.float64))
    with pytest.raises(DataError, match="scores_labels.npy: holds float64 values, not whole numbers"):
        load_scores(tmp_path)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy: holds Python objects"):
        load_array(tmp_path / "obj.npy")
    with pytest.raises(DataError, match="nope.npy: missing"):
        load_array(tmp_path / "nope.npy")
    # a header numpy's parser fails on with a tokenize error (an unbalanced parenthesis): one line too
    np.save(tmp_path / "tok.npy", np.arange(5))
    raw = (tmp_path / "tok.npy").read_bytes().replace(b"'shape': (", b"'shape': ((", 1).replace(b" \n", b"\n", 1)
    (tmp_path / "tok.npy").write_bytes(raw)
    with pytest.raises(DataError, match="tok.npy: truncated or damaged .npy header"):
        load_array(tmp_path / "tok.npy")


@pytest.mark.parametrize("override, message", [
    ("milestones=[-5]", "milestones: each must be an epoch >= 0 (0-based), got [-5]"),
    ("milestones=[3, -1]", "milestones: each must be an epoch >= 0"),
    ("min_len=0", "min_len: must be a whole number of frames >= 1 (or null: the clip length), got 0"),
    ("min_len=-4", "min_len: must be a whole number of frames >= 1"),
    ("supervised.min_len=0", "supervised.min_len: must be a whole number of frames >= 1"),
])
def test_negative_milestones_and_min_len_below_one_are_refused(override, message):
    """`milestones=[-5]` and `min_len=0` were accepted (0 silently meant the clip length); a
    min_len longer than the clips stays allowed (its crops are clamped to the valid frames)."""
    from pcm3.evaluation.occlusion import OcclusionProtocol
    from pcm3.evaluation.semi import SemiProtocol

    for cls, config in ((LinearProtocol, "eval_linear"), (SemiProtocol, "eval_semi"),
                        (OcclusionProtocol, "eval_occlusion")):
        with pytest.raises(ConfigError) as e:
            load_protocol(cls, config, [override])
        assert message in str(e.value), (cls, str(e.value))
    p = load_protocol(LinearProtocol, "eval_linear", ["min_len=100000", "milestones=[0]", "supervised.min_len=1"])
    assert p.min_len == 100000 and p.milestones == (0,) and p.supervised.min_len == 1
    assert load_protocol(SemiProtocol, "eval_semi", ["min_len=100000"]).min_len == 100000
