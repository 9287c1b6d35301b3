"""Shared assertion of the tests: a command's user error is one line."""


def one_line_error(capsys, *needles) -> str:
    """The one ``error: ...`` line on stderr (no traceback), containing every needle."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
