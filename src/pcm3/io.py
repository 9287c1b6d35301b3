"""Atomic file writing (write to a temporary name in the same folder, then rename: a crash or
a user error never leaves a half-written output under the final name), and recognising the
``torch.save`` files that pcm3 writes without unpickling them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    Works for files and folders (the block creates whatever it wants at the yielded path).
    On an exception the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of the bytes of the file ``path`` (read in blocks of 1 MiB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


ENCODER_FORMAT = "pcm3-encoder"  # the format of an exported encoder (pcm3.export)
PRETRAIN_FORMAT = "pcm3-pretrain"  # the format of a pretraining checkpoint (pcm3.pretrain)


#: What each ``format`` of a ``torch.save`` file pcm3 writes is, and what to do with it instead.
PCM3_FILES = {
    PRETRAIN_FORMAT: ("a pcm3 pretraining checkpoint (pcm3 pretrain); export its encoder with "
                      "`pcm3 export RUN --out FILE`"),
    ENCODER_FORMAT: "an encoder written by pcm3 export or import-release; use it as it is",
}


def pcm3_file_format(path: str | Path) -> Optional[str]:
    """The ``format`` of a ``torch.save`` file that pcm3 wrote (:data:`PCM3_FILES`), else None.

    Nothing is unpickled (a file that is not pcm3's may be anyone's): the opcodes of the
    archive's ``data.pkl`` are only scanned for the top-level ``"format"`` entry.
    """
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
            if name is None or z.getinfo(name).file_size > (64 << 20):
                return None
            data = z.read(name)
        previous = None
        for _, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                if previous == "format":
                    return arg if arg in PCM3_FILES else None
                previous = arg
    except Exception:  # noqa: BLE001 - not a zip, not a pickle: not pcm3's
        return None
    return None


def first_line(text: str, limit: int = 160, *, sentence: bool = False) -> str:
    """The first non-empty line of an error's ``text`` (terminal colour codes removed), with
    ``sentence`` only up to its first ``". "``, at most ``limit`` characters (``...`` where it is
    cut); ``""`` when there is none. For one-line messages of library errors."""
    import re

    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if sentence:
        first = first.split(". ")[0].rstrip(".")
    return first if len(first) <= limit else first[:limit - 3] + "..."


def unreadable_checkpoint(path: str | Path, error: BaseException, expected: str) -> str:
    """A short message for a file ``torch.load`` refused where ``expected`` was wanted (e.g.
    "the authors' release checkpoint (.pth.tar)"): what the file is when pcm3 wrote it, else the
    first line of the error without torch's advice and terminal escape codes."""
    import re

    found = pcm3_file_format(path)
    if found is not None:
        return f"is {PCM3_FILES[found]}; expected {expected}"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    if "WeightsUnpickler error:" in text:  # torch's advice first, the reason after this
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = first_line(text, 120, sentence=True)
    return f"not {expected}: torch cannot read it ({type(error).__name__}{': ' + first if first else ''})"
