"""``benchmarks/bench_step.py gemm``: the matrix-product count behind the CPU speed bound."""

import copy

import pytest
import torch


@pytest.fixture(scope="module")
def bench_step(repo_script):
    return repo_script("benchmarks", "bench_step")


def test_both_variants_compute_the_same_products(bench_step):
    """The bound rests on this: the one-call step and the release's frame loop are one function,
    so their matrix products have the same FLOPs (the frame loop in many more, smaller calls)."""
    inputs = bench_step.make_inputs(4, 8)
    base = bench_step.build(16, 2, 32, False, "cpu")
    counts = {}
    for name in ("project", "frame-loop"):
        m = copy.deepcopy(base).train()
        if name == "frame-loop":
            bench_step.release_style(m)
        counts[name] = bench_step.step_flops(m, inputs)
    p, f = counts["project"], counts["frame-loop"]
    assert p["gflop"] > 0
    assert f["gflop"] == pytest.approx(p["gflop"], rel=0.02)
    assert f["calls"] > 2 * p["calls"]


def test_gemm_mode_reports_floor_and_bound(bench_step):
    torch.manual_seed(0)
    r = bench_step.bench_gemm(16, 2, 4, 8, 32, "cpu", rounds=1, steps=1, prompts=False)
    for name in ("project", "frame-loop"):
        v = r["variants"][name]
        assert v["floor_s"] == pytest.approx(v["gemm_gflop"] / r["reference_gflops_per_s"])
    assert r["bound"] == pytest.approx(r["variants"]["frame-loop"]["step_s"] / r["variants"]["project"]["floor_s"])
    assert "floor at the reference rate" in bench_step.gemm_table(r)
