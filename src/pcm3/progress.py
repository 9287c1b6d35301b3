"""Progress output that reads well in a terminal and in a log file.

:func:`progress_bar` returns an object with tqdm's small API (``update``, ``set_postfix``,
``close``, context manager):

- on a terminal: a tqdm bar, redrawn at most a few times a second, cleared when it closes;
- anywhere else (a pipe, a file, CI): no carriage returns and no redraws; a plain line every
  ``every_s`` seconds (default 30) while the work lasts, and, if asked (``final_line``), one line
  when it ends;
- disabled: nothing.

``PCM3_PROGRESS=bar|lines|off`` forces a mode. Bars still open when an error is reported are
closed first (:func:`close_all`, called by ``pcm3.cli``), so the message starts on a fresh line.
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from typing import Any, Dict, Optional, TextIO

_OPEN: "weakref.WeakSet[Bar]" = weakref.WeakSet()

EVERY_S = 30.0


def _mode(stream: TextIO) -> str:
    forced = os.environ.get("PCM3_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


class Bar:
    """See the module doc; make one with :func:`progress_bar`."""

    def __init__(self, total: Optional[int] = None, desc: str = "", unit: str = "it", disable: bool = False,
                 stream: Optional[TextIO] = None, every_s: float = EVERY_S, final_line: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.mode = "off" if disable else _mode(self.stream)
        self.total, self.desc, self.unit = total, desc, unit
        self.every_s, self.final_line = every_s, final_line
        self.n = 0
        self.postfix: Dict[str, Any] = {}
        self.start = self.last_line = time.monotonic()
        self.closed = False
        self._tqdm = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True,
                              leave=False, mininterval=0.5)
        if self.mode != "off":
            _OPEN.add(self)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.mode == "lines" and time.monotonic() - self.last_line >= self.every_s:
            self._line()

    def set_postfix(self, postfix: Optional[Dict[str, Any]] = None, refresh: bool = False, **kw) -> None:
        self.postfix = {**(postfix or {}), **kw}
        if self._tqdm is not None:
            self._tqdm.set_postfix(self.postfix, refresh=refresh)

    def _line(self) -> None:
        self.last_line = time.monotonic()
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        try:
            print(f"{self.desc}: {done} {plural(self.unit, self.total or self.n)} "
              f"({self.last_line - self.start:.0f}s{extra})",
                  file=self.stream, flush=True)
        except (BrokenPipeError, ValueError):  # the reader went away; the command goes on
            self.mode = "off"

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _OPEN.discard(self)
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.mode == "lines" and self.final_line:
            self._line()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:
            self.final_line = False
        self.close()


def plural(unit: str, n: int) -> str:
    """``557 files``, ``16 classes``, ``1 video``; ``it`` (tqdm's "iterations") as it is."""
    if n == 1 or unit == "it" or not unit.isalpha():
        return unit
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def progress_bar(total: Optional[int] = None, desc: str = "", unit: str = "it", disable: bool = False,
                 every_s: float = EVERY_S, final_line: bool = False, stream: Optional[TextIO] = None) -> Bar:
    """A progress display for ``total`` units of work (see the module doc)."""
    return Bar(total=total, desc=desc, unit=unit, disable=disable, stream=stream, every_s=every_s,
               final_line=final_line)


def close_all() -> None:
    """Close every open bar (before an error message, so that it starts on a fresh line)."""
    for bar in list(_OPEN):
        bar.final_line = False
        try:
            bar.close()
        except Exception:  # pragma: no cover (never hide the error being reported)
            pass


def track(iterable, total: Optional[int] = None, desc: str = "", unit: str = "it", disable: bool = False,
          final_line: bool = False):
    """Iterate ``iterable`` with a :func:`progress_bar` (closed however the loop ends)."""
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    bar = progress_bar(total=total, desc=desc, unit=unit, disable=disable, final_line=final_line)
    try:
        for item in iterable:
            yield item
            bar.update(1)
    except BaseException:
        bar.final_line = False
        raise
    finally:
        bar.close()
