"""Progress output: plain lines in a pipe (no carriage returns), a bar on a terminal, PCM3_PROGRESS."""

import io
import os

import pytest

from pcm3.progress import progress_bar, track


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_bar(stream, **kw):
    with progress_bar(total=3, desc="work", unit="clip", every_s=0, final_line=True, stream=stream, **kw) as bar:
        for _ in range(3):
            bar.update(1)
        bar.set_postfix({"loss": "0.5"})


@pytest.fixture(autouse=True)
def no_forced_mode(monkeypatch):
    monkeypatch.delenv("PCM3_PROGRESS", raising=False)


def test_a_pipe_gets_plain_lines():
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as pipe:
        run_bar(pipe)
    with os.fdopen(read_fd) as f:
        text = f.read()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # the unit in the plural of the total ("1/3 clip" read as one clip)
    assert [line.split(" (")[0] for line in lines] == ["work: 1/3 clips", "work: 2/3 clips", "work: 3/3 clips",
                                                       "work: 3/3 clips"]
    assert lines[-1].endswith(", loss 0.5)")                 # the final line, with the postfix


def test_a_terminal_gets_a_redrawn_bar():
    term = Terminal()
    run_bar(term)
    assert "\r" in term.getvalue() and "work" in term.getvalue()


@pytest.mark.parametrize("stream", [io.StringIO, Terminal])
def test_forced_modes(monkeypatch, stream):
    monkeypatch.setenv("PCM3_PROGRESS", "off")
    out = stream()
    run_bar(out)
    assert out.getvalue() == ""
    monkeypatch.setenv("PCM3_PROGRESS", "lines")
    out = stream()
    run_bar(out)
    assert "\r" not in out.getvalue() and out.getvalue().count("\n") == 4


def test_track_is_silent_when_off_and_disabled(monkeypatch, capsys):
    monkeypatch.setenv("PCM3_PROGRESS", "off")
    assert list(track(range(3), desc="t", final_line=True)) == [0, 1, 2]
    monkeypatch.delenv("PCM3_PROGRESS")
    assert list(track(range(3), desc="t", final_line=True, disable=True)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    assert list(track(range(3), desc="t", final_line=True)) == [0, 1, 2]   # captured stderr: not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err and err.startswith("t: 3/3 it (") and err.count("\n") == 1


def test_plural_units():
    from pcm3.progress import plural

    assert [plural(u, 2) for u in ("file", "class", "video", "it", "samples/s")] == \
        ["files", "classes", "videos", "it", "samples/s"]
    assert plural("file", 1) == "file"
