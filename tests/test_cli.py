"""The command line: every subcommand has --help; user errors are one line and exit 2."""

import pytest

from pcm3.cli import build_parser, main

PREPARE = ["ntu60", "ntu120", "pku1", "pku2", "nwucla", "msr3d", "convert", "synthetic"]
COMMANDS = ["info", "pretrain", "export", "embed", "demo"]


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS] + [["prepare", t] for t in PREPARE] + [["prepare"], []])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: pcm3" in capsys.readouterr().out


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
