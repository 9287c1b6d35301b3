"""Tests of pcm3.args: the shared argument types."""

import pytest

from pcm3.args import MAX_SEED, seed_arg
from pcm3.cli import main


def test_seed_arg_range():
    assert seed_arg("0") == 0 and seed_arg(str(MAX_SEED)) == MAX_SEED
    for bad in ("-3", str(MAX_SEED + 1), "99999999999999999999999", "1.5", "x"):
        with pytest.raises(Exception) as e:
            seed_arg(bad)
        assert type(e.value).__name__ == "ArgumentTypeError", bad


@pytest.mark.parametrize("argv", [
    ["eval", "knn", "--raw-input", "--data", "d", "--benchmark", "xsub", "--out", "o"],
    ["benchmark", "--encoders", "e.pt", "--data", "d", "--benchmark", "xsub", "--out", "o"],
    ["visualize", "d", "--sample", "0", "--out", "a.gif"],
    ["prepare", "synthetic", "--out", "o"],
])
def test_every_seed_option_is_checked_before_anything_runs(argv, tmp_path, capsys):
    assert main([*argv, "--seed", "99999999999999999999999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0] and "outside 0..2^63 - 1" in err[0]
