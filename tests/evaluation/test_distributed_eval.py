"""``pcm3 eval linear|semi`` under torchrun: 2 CPU processes with gloo give one process's result.

Each worker sets torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, the
rendezvous address) and calls the ``pcm3`` command in-process, as ``torchrun -m pcm3 eval``
would; batch sizes are chosen so that the global batches and the feature batches split
unevenly over the 2 ranks and the last batch is smaller.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pcm3.distributed import free_port

from ..ranks import run_two_ranks
from .tiny import encoder_file, tiny_data

LINEAR = ["epochs=4", "milestones=[2]", "crops=2", "min_len=8", "batch_size=15", "feature_batch_size=20",
          "val_fraction=0.5", "select=val"]
SEMI = ["fractions=[0.5]", "seeds=1", "epochs=2", "lr=0.1", "batch_size=10", "min_len=8", "feature_batch_size=20"]


def _args(task, data, enc, out, sets):
    args = ["eval", task, "--encoder", str(enc), "--data", str(data), "--benchmark", "xsub", "--out", str(out),
            "--quiet", "--device", "cpu", "--threads", "1"]
    for item in sets:
        args += ["--set", item]
    return args


def _worker(rank, ports, data, enc, root):
    import contextlib
    import io

    from pcm3.cli import main

    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    root = Path(root)
    codes = {"rows": _count_rows()}
    runs = [("refused", "linear", root / "foreign", LINEAR), ("linear", "linear", root / "linear2", LINEAR),
            ("semi", "semi", root / "semi2", SEMI), ("knn", "knn", root / "knn2", [])]
    for (name, task, out, sets), port in zip(runs, ports):
        os.environ["MASTER_PORT"] = str(port)
        err, std = io.StringIO(), io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
            code = main(_args(task, data, enc, out, sets))
        codes[name] = (code, err.getvalue(), std.getvalue(), time.perf_counter() - start)
    (root / f"codes{rank}.json").write_text(json.dumps(codes))


def _count_rows() -> dict:
    """Count, in this process, the samples it encodes and trains on (the work is shared out)."""
    import pcm3.evaluation.features as features
    import pcm3.evaluation.linear as linear
    import pcm3.evaluation.semi as semi
    from pcm3 import distributed

    rows = {"encoded": 0, "linear_steps": 0, "semi_steps": 0}
    iter_batches, rank_step, forward = features.iter_batches, linear._rank_step, semi._Classifier.forward

    def counted_batches(dataset, *args, **kwargs):
        for batch in iter_batches(dataset, *args, **kwargs):
            rows["encoded"] += len(batch[0])
            yield batch

    def counted_step(step_head, opt, feats, y, b, world, *args):
        rows["linear_steps"] += len(distributed.split_batch(b, world, distributed.info().rank))
        return rank_step(step_head, opt, feats, y, b, world, *args)

    def counted_forward(self, clip):
        rows["semi_steps"] += clip.shape[0]
        return forward(self, clip)

    features.iter_batches, linear._rank_step, semi._Classifier.forward = counted_batches, counted_step, counted_forward
    return rows


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    data, enc = tiny_data(tmp_path_factory), encoder_file(tmp_path_factory)
    root = tmp_path_factory.mktemp("dist_eval")
    (root / "foreign").mkdir()
    (root / "foreign" / "mine.txt").write_text("not pcm3's")
    run_two_ranks(_worker, ([free_port() for _ in range(4)], str(data), str(enc), str(root)), 120)
    codes = [json.loads((root / f"codes{r}.json").read_text()) for r in (0, 1)]
    return data, enc, root, codes


def test_linear_two_ranks_equal_one_process(two_ranks, tmp_path):
    from pcm3.cli import main

    data, enc, root, codes = two_ranks
    assert codes[0]["linear"][0] == codes[1]["linear"][0] == 0, codes
    assert "linear (pretrained): top1" in codes[0]["linear"][2] and codes[1]["linear"][2] == ""  # rank 0 prints
    torch.set_num_threads(1)
    assert main(_args("linear", data, enc, tmp_path / "linear1", LINEAR)) == 0
    one, two = tmp_path / "linear1", root / "linear2"
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m2["processes"] == 2 and "processes" not in m1
    assert m1["splits"] == m2["splits"] == {"train": 48, "val": 48, "test": 96}
    for k, v in m1["figures"].items():
        assert m2["figures"][k] == pytest.approx(v, abs=1e-6), k
    assert m1["selected_epoch"] == m2["selected_epoch"]
    h1, h2 = (torch.load(d / "linear_head.pt") for d in (one, two))
    torch.testing.assert_close(h2["weight"], h1["weight"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(h2["bias"], h1["bias"], rtol=1e-4, atol=1e-6)
    assert (h1["weight"].abs() > 0.02).any()  # the layer trained (initialised N(0, 0.01))
    np.testing.assert_array_equal(np.load(two / "test_features.npy"), np.load(one / "test_features.npy"))
    np.testing.assert_array_equal(np.load(two / "scores_index.npy"), np.load(one / "scores_index.npy"))
    np.testing.assert_allclose(np.load(two / "scores.npy"), np.load(one / "scores.npy"), rtol=1e-4, atol=1e-6)
    assert (two / "history.csv").read_text().count("\n") == 5
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_semi_two_ranks_equal_one_process(two_ranks, tmp_path):
    from pcm3.cli import main

    data, enc, root, codes = two_ranks
    assert codes[0]["semi"][0] == codes[1]["semi"][0] == 0, codes
    torch.set_num_threads(1)
    assert main(_args("semi", data, enc, tmp_path / "semi1", SEMI)) == 0
    one, two = tmp_path / "semi1", root / "semi2"
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    for k, v in m1["figures"].items():
        assert m2["figures"][k] == pytest.approx(v, abs=1e-6), k
    s1, s2 = (np.load(d / "frac0.5_seed0_scores.npy") for d in (one, two))
    np.testing.assert_allclose(s2, s1, rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(np.load(two / "subset_frac0.5_seed0.npy"), np.load(one / "subset_frac0.5_seed0.npy"))


def test_the_work_is_shared_out(two_ranks):
    rows = [two_ranks[3][r]["rows"] for r in (0, 1)]
    # features: linear's train (48, crops together), val (48), test (96); semi's test (96);
    # in feature batches of 20: 3 + 3 + 5 + 5 batches, each rank a contiguous run of each pass
    assert [r["encoded"] for r in rows] == [20 + 20 + 40 + 40, 28 + 28 + 56 + 56]
    # linear: 4 epochs x 48 samples in global batches of 15 (15, 15, 15, 3), split 7/8 ... 1/2
    assert [r["linear_steps"] for r in rows] == [4 * (7 + 7 + 7 + 1), 4 * (8 + 8 + 8 + 2)]
    # semi: 2 epochs x 48 labelled samples in global batches of 10 (10 x 4, 8), split 5/5, 4/4
    assert [r["semi_steps"] for r in rows] == [2 * 24, 2 * 24]


def test_refusals_reach_every_rank(two_ranks):
    _, _, root, codes = two_ranks
    # rank 0 refuses a folder it did not write: both ranks stop (exit 2, no hang), rank 0 alone
    # prints the one-line error
    (c0, e0, _, t0), (c1, e1, _, t1) = codes[0]["refused"], codes[1]["refused"]
    assert c0 == c1 == 2 and e1 == "" and e0.startswith("error: ") and e0.count("\n") == 1, (e0, e1)
    assert "foreign" in e0 and max(t0, t1) < 20
    assert sorted(p.name for p in (root / "foreign").iterdir()) == ["mine.txt"]
    # a task that does not train a network runs in one process only
    for rank in (0, 1):
        code, err, _, _ = codes[rank]["knn"]
        assert code == 2 and (("eval knn: runs in one process; under torchrun: linear, semi" in err) if rank == 0
                              else err == "")
    assert not (root / "knn2").exists() and not (root / "linear2" / ".." / "semi2" / "missing").exists()


def test_every_option_passes_through_torchrun():
    """torchrun parses its own options out of the whole command line, prefixes included: an
    option of `pcm3 pretrain` / `pcm3 eval` that is a prefix of one of torchrun's never reaches
    pcm3 (`--run` is taken for torchrun's `--run-path`; the README's torchrun lines use
    `--run-dir`). Every other long option must pass through unchanged."""
    from torch.distributed.run import get_args_parser

    from pcm3.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = {"pretrain": ["pretrain"], "eval": ["eval", "semi"]}
    torchrun = get_args_parser()
    checked = 0
    for name, words in commands.items():
        for opt in (o for a in sub.choices[name]._actions for o in a.option_strings if o.startswith("--")):
            if opt in ("--run", "--help"):
                continue
            args = torchrun.parse_args(["--nproc_per_node=2", "-m", "pcm3", *words, opt, "x"])
            assert args.training_script_args == [*words, opt, "x"], (name, opt)
            checked += 1
    assert checked > 20
    with pytest.raises(SystemExit):  # the documented reason for --run-dir
        torchrun.parse_args(["--nproc_per_node=2", "-m", "pcm3", "eval", "semi", "--run", "r"])
