"""The command line: every subcommand has --help; user errors are one line and exit 2."""

import pytest

from pcm3.cli import build_parser, main

PREPARE = ["ntu60", "ntu120", "pku1", "pku2", "nwucla", "msr3d", "convert", "synthetic"]
COMMANDS = ["info", "pretrain", "export", "embed", "demo", "eval", "benchmark", "report", "visualize", "import-release"]


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS] + [["prepare", t] for t in PREPARE] + [["prepare"], []])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: pcm3" in capsys.readouterr().out


@pytest.mark.parametrize("task", ["linear", "semi", "knn", "occlusion", "fusion", "detection", "motion"])
def test_eval_task_help_lists_every_protocol_key(task, capsys):
    """`pcm3 eval linear --help` printed the generic help: a user had to read the packaged YAML
    (which lacks keys such as supervised.epochs) to learn what --set can change. Every key of the
    task's protocol is listed with its packaged value and a description."""
    import dataclasses
    import importlib

    from pcm3.evaluation.common import protocol_keys
    from pcm3.evaluation.runner import TASK_MODULES

    with pytest.raises(SystemExit) as e:
        main(["eval", task, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage: pcm3 eval" in out and f"protocol of {task}" in out
    module = importlib.import_module(TASK_MODULES[task])
    keys = protocol_keys(module.PROTOCOL, module.DEFAULT_CONFIG)
    top = {f.name for f in dataclasses.fields(module.PROTOCOL)}
    assert top <= {k.split(".")[0] for k, _, _ in keys}
    for key, _, doc in keys:
        assert f"  {key} = " in out and doc, key   # each key printed, each documented
    if task == "linear":
        assert "  batch_size = 1024" in out and "  supervised.epochs = 60" in out and "  min_len = null" in out


def test_every_target_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(COMMANDS) | {"prepare"} <= set(sub.choices)
    prep = next(a for a in sub.choices["prepare"]._actions if a.dest == "target")
    assert set(PREPARE) <= set(prep.choices)


@pytest.mark.parametrize("target", ["ntu60", "pku1", "nwucla", "msr3d"])
def test_missing_raw_folder_is_one_line(target, tmp_path, capsys):
    assert main(["prepare", target, "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    assert not (tmp_path / "out").exists()


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    """`kill` (SIGTERM) during a command raises KeyboardInterrupt inside it: its temporary
    output is removed and the exit is 130 (in a child process: without the handler SIGTERM
    would end it on the spot)."""
    import subprocess
    import sys

    script = (
        "import os, signal, sys\n"
        "from pcm3.data import synthetic\n"
        "from pcm3.cli import main\n"
        "real = synthetic._generate_class\n"
        "def killed(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # `kill` while the first class is generated\n"
        "    return real(*a, **k)\n"
        "synthetic._generate_class = killed\n"
        "code = main(['prepare', 'synthetic', '--out', sys.argv[1], '--quiet'])\n"
        "assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the default handler is back\n"
        "sys.exit(code)\n")
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "syn")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 130, (res.returncode, res.stderr[-500:])
    assert "interrupted" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder


@pytest.mark.parametrize("argv, needle", [
    (["prepare", "msr3d", "--out", "x"], "pcm3 prepare msr3d: the following arguments are required: --raw"),
    (["eval", "linear", "--encoder"], "argument --encoder: expected one argument"),
    (["nosuch"], "invalid choice: 'nosuch'"),
    (["info", "d", "--bogus"], "unrecognized arguments: --bogus"),
    # --help used to show [--benchmark BENCHMARK] as optional
    (["benchmark", "--encoders", "e.pt", "--data", "d", "--out", "o"], "the following arguments are required: --benchmark"),
])
def test_argument_mistakes_are_one_line(argv, needle, capsys):
    """argparse's mistakes follow the one-line rule too (its default prints the usage block)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: pcm3") and needle in lines[0], captured.err
    assert "--help" in lines[0] and captured.out == ""


def test_under_torchrun_rank_0_alone_prints_a_user_error(tmp_path, capsys, monkeypatch):
    """Every rank runs the same checks: the same line once per rank was noise."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, printed in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        assert main(["info", str(tmp_path / "nope")]) == 2
        err = capsys.readouterr().err
        assert (err.startswith("error: ") and "nope" in err) if printed else err == "", (rank, err)


def test_a_lost_peer_is_one_line_not_a_traceback(capsys, monkeypatch):
    def dies(args):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                           "[10.0.0.1]:1234")

    import pcm3.commands.info

    monkeypatch.setattr(pcm3.commands.info, "run", dies)  # the parser is built after this
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["info", "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: rank 0: another process of this torchrun job stopped")
    assert "--resume" in err[0]
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: a RuntimeError is a bug, shown as such
    with pytest.raises(RuntimeError):
        main(["info", "x"])


def test_an_error_of_one_rank_during_the_work_is_printed_by_that_rank(tmp_path, capsys, monkeypatch):
    """After the shared checks each rank works on its own share: a rank's own error (a NaN clip
    its loader reads) must not be swallowed because it is not rank 0."""
    import pcm3.commands.info
    from pcm3.errors import DataError, rank_specific_from_here

    def fails_in_the_work(args):
        rank_specific_from_here()
        raise DataError("data.npy", "sample 7 (x) holds non-finite values")

    monkeypatch.setattr(pcm3.commands.info, "run", fails_in_the_work)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        assert main(["info", "x"]) == 2
        err = capsys.readouterr().err
        assert err == f"error: rank {rank}: data.npy: sample 7 (x) holds non-finite values\n", err
