"""A real learning effect, measured against every baseline row of the demo.

This is the demo's pipeline (``pcm3.commands.demo.run_demo``, probe step) at a shorter
schedule: the built-in data set, the packaged ``demo`` config with 10 epochs, a linear probe
and 1-NN of frozen features on the cross-subject test split, for the pretrained encoder, the
same encoder randomly initialised and the raw input (the supervised bound is left out for
time). About a minute and a half on 2 CPU cores.

What it asserts is what was measured at this setting (seed 0, see the comments), with about
half of each measured gap kept as the margin for platform noise: pretraining beats random init
and the raw input on both probes. It does not assert the issue's "+15 over random init": at
this scale it is not reached (+11.5 / +5.0 here; see docs/learning-small-data.md).
"""

import pytest

from pcm3.commands.demo import run_demo
from pcm3.data.synthetic import prepare_synthetic


@pytest.mark.slow
def test_pretrained_beats_random_init_and_the_raw_input(tmp_path):
    data = tmp_path / "data"
    prepare_synthetic(data, seed=0, progress=False)
    m = run_demo(tmp_path, data, "demo", ["train.epochs=10", "optim.milestones=[100]"], progress=False,
                 rows=("pretrained", "random_init", "raw_input"))
    assert m["final_loss"] < 40  # finite and trained
    pre, rand, raw = m["pretrained"], m["random_init"], m["raw_input"]
    # measured at this setting (seed 0, 2026-11-30, demo config with encoder.center_time):
    # linear / 1-NN pretrained 76.9 / 63.6, random init 65.4 / 58.6, raw input 59.8 / 55.8
    # (95 s of pretraining)
    assert pre["linear"] > rand["linear"] + 0.06, m
    assert pre["knn1"] > rand["knn1"] + 0.025, m
    assert pre["linear"] > raw["linear"] + 0.08, m
    assert pre["knn1"] > raw["knn1"] + 0.04, m
