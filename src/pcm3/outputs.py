"""One place for the folders that ``pcm3`` writes: prepared data, runs, evaluation results.

The promise to users: ``pcm3`` never removes or changes a file it did not create.

- Every folder ``pcm3`` creates holds a marker file, ``.pcm3`` (one line of JSON:
  ``{"kind": ..., "version": 1}``). ``kind`` is ``prepared``, ``run``, ``eval``, ``report``,
  ``demo``...
- An output folder may be written when it does not exist or is empty. A non-empty folder is
  refused unless it is a ``pcm3`` folder of the same kind *and* the user asked to overwrite.
  Prepared data folders written before the marker existed are recognised by their
  ``meta.json`` (format ``pcm3-prepared``).
- An output must never be, lie inside, or contain one of the inputs (``protect``).
- :func:`output_dir` writes into a hidden temporary folder beside the destination and renames
  it into place only when the block succeeded; the previous ``pcm3`` folder (``overwrite``) is
  removed only after the new one is complete. On any failure the temporary folder is removed
  and the destination is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence

from pcm3.errors import DataError

MARKER = ".pcm3"


def write_marker(folder: str | os.PathLike, kind: str) -> None:
    """Mark ``folder`` as created by ``pcm3`` with the given ``kind``."""
    Path(folder, MARKER).write_text(json.dumps({"kind": kind, "version": 1}) + "\n")


def folder_kind(folder: str | os.PathLike) -> Optional[str]:
    """The ``kind`` of a folder made by ``pcm3``, or None (not a pcm3 folder, or absent)."""
    folder = Path(folder)
    marker = folder / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text()).get("kind"))
        except (OSError, ValueError, AttributeError):
            return None
    meta = folder / "meta.json"  # prepared folders from before the marker
    if meta.is_file():
        try:
            if json.loads(meta.read_text()).get("format") == "pcm3-prepared":
                return "prepared"
        except (OSError, ValueError, AttributeError):
            return None
    return None


def _overlaps(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b``, inside ``b``, or contains ``b`` (resolved paths)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents or a in b.parents


def check_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                     protect: Sequence[str | os.PathLike] = (), option: str = "--out") -> Path:
    """Refuse an output folder that would destroy anything ``pcm3`` did not create.

    Args:
        path: the folder to be written.
        kind: what ``pcm3`` will write there (``prepared``, ``run``, ``eval``...).
        overwrite: an existing ``pcm3`` folder of the same kind may be replaced.
        protect: inputs of the command; the output may not be, lie in, or contain any of them.
        option: the flag that named ``path``, for the message.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        DataError: one line naming the folder and the problem.
    """
    path = Path(path)
    for p in protect:
        if p is not None and str(p) != "" and _overlaps(path, Path(p)):
            raise DataError(path, f"{option} is, lies inside, or contains the input {p}; choose another folder")
    if path.exists() and not path.is_dir():
        raise DataError(path, f"{option} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        found = folder_kind(path)
        if found is None:
            raise DataError(path, f"{option} is a non-empty folder that pcm3 did not create; "
                                  "choose a new or empty folder (nothing was changed)")
        if found != kind:
            raise DataError(path, f"{option} holds a pcm3 {found} folder, not a {kind} folder; choose another folder")
        if not overwrite:
            raise DataError(path, f"{option} already holds a pcm3 {kind} folder; pass --overwrite to replace it")
    return path


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
               protect: Sequence[str | os.PathLike] = (), option: str = "--out") -> Iterator[Path]:
    """Check ``path`` (:func:`check_output_dir`), yield a temporary folder, then move it into place.

    The block writes its files into the yielded folder. When it returns, the folder gets its
    marker and replaces ``path``; the old ``pcm3`` folder there (if ``overwrite``) is removed only
    then. When it raises, the temporary folder is removed and ``path`` is untouched.
    """
    path = check_output_dir(path, kind, overwrite=overwrite, protect=protect, option=option)
    parent = path.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise DataError(path, f"cannot create the output folder ({e.strerror or e})") from None
    try:
        yield tmp
        write_marker(tmp, kind)
        if path.is_dir():
            old = parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        raise DataError(path, f"cannot write the output ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
