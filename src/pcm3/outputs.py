"""One place for the folders that ``pcm3`` writes: prepared data, runs, evaluation results.

The promise to users: ``pcm3`` never removes or changes a file it did not create.

- Every folder ``pcm3`` creates holds a marker file, ``.pcm3`` (one line of JSON:
  ``{"kind": ..., "version": 1}``). ``kind`` is ``prepared``, ``run``, ``eval``, ``report``,
  ``demo``... Folders written whole by :func:`output_dir` also record what was written in
  them: ``"entries"``, every file and folder below it (relative paths, folders ending in ``/``).
- An output folder may be written when it does not exist or is empty. A non-empty folder is
  refused unless it is a ``pcm3`` folder of the same kind *and* the user asked to overwrite
  *and* it holds nothing but what ``pcm3`` wrote there (its recorded entries; for a folder
  without a record, written by an older ``pcm3``, only the files of the prepared format
  count as ``pcm3``'s). Prepared data folders written before the marker existed are
  recognised by their ``meta.json`` (format ``pcm3-prepared``).
- An output must never be, lie inside, or contain one of the inputs (``protect``).
- :func:`output_dir` writes into a hidden temporary folder beside the destination and moves
  it into place only when the block succeeded. A ``pcm3`` folder replaced with ``overwrite``
  is renamed aside, the new one renamed in, and the old one removed only then; an empty
  destination folder, or one that holds the current folder (``--out .``: the user's shell is
  there), is kept and filled in place, its previous ``pcm3`` entries moved aside and removed
  only after the new ones are all in. On any failure the temporary folder is removed and the
  destination is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

from pcm3.errors import ConfigError, DataError
from pcm3.io import file_sha256

MARKER = ".pcm3"

#: Foreign entries named in a refusal; the rest are counted (``a, b, c and 4 more``).
_SHOWN = 3


# Files pcm3 writes in a prepared folder (:mod:`pcm3.data.prepared`, and the preparers'
# ``skipped.csv``): taken as pcm3's where the marker records no entries (folders of older
# versions). Where it does, the record alone counts: a user's own ``intervals.csv`` in a clips
# folder is the user's. Other kinds have no fixed list.
_FORMAT_FILES = {"prepared": frozenset(("meta.json", "data.npy", "labels.npy", "lengths.npy", "samples.csv",
                                        "splits.json", "offsets.npy", "intervals.csv", "skipped.csv"))}


#: Files a user may edit in place (a results table, notes): their SHA-256 is recorded in the
#: marker, and ``--overwrite`` refuses to replace one that was changed since (up to 1 MiB each).
EDITABLE_SUFFIXES = (".md", ".html", ".json", ".csv", ".txt", ".yaml")
_EDITABLE_MAX_BYTES = 1 << 20


def write_marker(folder: str | os.PathLike, kind: str, entries: Optional[Sequence[str]] = None) -> None:
    """Mark ``folder`` as created by ``pcm3`` with the given ``kind``.

    ``entries``: what ``pcm3`` wrote in it (:func:`list_entries`), recorded so that a later
    ``--overwrite`` can tell its own files from the user's, with the SHA-256 of its editable
    files (:data:`EDITABLE_SUFFIXES`), so that it can tell an edited one. None for folders that
    grow over time (runs, caches): they record nothing and are never overwritten wholesale.
    """
    record = {"kind": kind, "version": 1}
    if entries is not None:
        record["entries"] = sorted(entries)
        digests = {}
        for rel in record["entries"]:
            f = Path(folder, rel)
            if (rel.endswith(EDITABLE_SUFFIXES) and f.is_file() and not f.is_symlink()
                    and f.stat().st_size <= _EDITABLE_MAX_BYTES):
                digests[rel] = file_sha256(f)
        record["sha256"] = digests
    Path(folder, MARKER).write_text(json.dumps(record) + "\n")


def _edited_entries(folder: Path) -> List[str]:
    """The editable files whose SHA-256 the marker of ``folder`` records and that differ from
    it now (changed since ``pcm3`` wrote them); [] for markers without checksums."""
    try:
        digests = json.loads((folder / MARKER).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(digests, dict):
        return []
    edited = []
    for rel, digest in sorted(digests.items()):
        f = folder / str(rel)
        try:
            if f.is_file() and file_sha256(f) != digest:
                edited.append(str(rel))
        except OSError:
            continue
    return edited


def list_entries(folder: str | os.PathLike) -> List[str]:
    """Every file and folder below ``folder``, as relative paths with ``/``; folders end in
    ``/``. Symbolic links are listed, not followed; the top-level marker is left out."""
    out: List[str] = []

    def walk(d: str, prefix: str) -> None:
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    out.append(prefix + e.name + "/")
                    walk(e.path, prefix + e.name + "/")
                elif prefix or e.name != MARKER:
                    out.append(prefix + e.name)

    walk(os.fspath(folder), "")
    return out


def _recorded_entries(folder: Path) -> Optional[set]:
    """The entries the marker of ``folder`` records, or None when it records none."""
    try:
        entries = json.loads((folder / MARKER).read_text()).get("entries")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return None
    return set(entries)


def _foreign(folder: Path, kind: str) -> Tuple[List[str], bool]:
    """Every entry of ``folder`` that ``pcm3`` did not write (see :func:`foreign_entries`)."""
    recorded = _recorded_entries(folder)
    known = recorded if recorded is not None else _FORMAT_FILES.get(kind, frozenset())
    found: List[str] = []
    for rel in sorted(list_entries(folder)):
        if rel in known or any(f.endswith("/") and rel.startswith(f) for f in found):
            continue  # pcm3's, or inside a folder already named
        found.append(rel)
    return found, recorded is not None


def foreign_entries(folder: str | os.PathLike, kind: str, limit: int = 3) -> Tuple[List[str], bool]:
    """Up to ``limit`` entries of the ``pcm3`` folder ``folder`` that ``pcm3`` did not write, and
    whether its marker records what was written (False: an older folder, judged by the names
    of its format alone; then any subfolder counts as foreign).

    A folder counts as ``pcm3``'s only if recorded as a folder, a file only if recorded as a
    file; the contents of a foreign folder are not listed on their own.
    """
    found, recorded = _foreign(Path(folder), kind)
    return found[:limit], recorded


def _listing(names: Sequence[str], more: int = 0) -> str:
    """``a``, ``a and b``, ``a, b and c``; with ``more`` left out: ``a, b, c and 4 more``."""
    if more > 0:
        return ", ".join(names) + f" and {more} more"
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]


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


#: Kinds of folders that grow over time and record no entries (runs, demo folders, the NTU
#: reader's cache): never replaced wholesale, so a file added inside one is no obstacle.
_GROWING_KINDS = frozenset(("run", "demo", "ntu-cache"))


def enclosing_pcm3_folder(path: str | os.PathLike) -> Optional[Tuple[Path, str]]:
    """The nearest folder above ``path`` (resolved) that is a ``pcm3`` folder written whole
    (prepared data, eval results, a report's images...), with its kind; None when there is none.

    Such a folder holds only what ``pcm3`` wrote there: anything added inside makes a later
    ``--overwrite`` of it refuse. Folders that grow (runs, demo folders) do not count.
    """
    folder = Path(os.path.realpath(path)).parent
    for f in (folder, *folder.parents):
        kind = folder_kind(f)
        if kind is not None and kind not in _GROWING_KINDS:
            return f, kind
    return None


def check_not_inside_pcm3_folder(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse an output (file or folder) inside a ``pcm3`` folder written whole
    (:func:`enclosing_pcm3_folder`): one-line :class:`DataError`."""
    found = enclosing_pcm3_folder(path)
    if found is not None:
        folder, kind = found
        raise DataError(path, f"{option} lies inside {folder}, a pcm3 {kind} folder, which must hold only what "
                              "pcm3 wrote there (anything added makes its --overwrite refuse); choose a place "
                              "outside it")


def overlaps(a: Path, b: Path) -> bool:
    """True when ``a`` is ``b``, inside ``b``, or contains ``b`` (resolved paths; ``realpath``,
    which, unlike ``Path.resolve``, does not raise on a symbolic link loop)."""
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return a == b or b in a.parents or a in b.parents


def check_output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
                     protect: Sequence[str | os.PathLike] = (), option: str = "--out") -> Path:
    """Refuse an output folder that would destroy anything ``pcm3`` did not create.

    Args:
        path: the folder to be written.
        kind: what ``pcm3`` will write there (``prepared``, ``run``, ``eval``...).
        overwrite: an existing ``pcm3`` folder of the same kind may be replaced, if it holds
            nothing but what ``pcm3`` wrote there (:func:`foreign_entries`).
        protect: inputs of the command; the output may not be, lie in, or contain any of them.
        option: the flag that named ``path``, for the message.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        DataError: one line naming the folder and the problem.
    """
    path = _normal(path)
    for p in protect:
        if p is not None and str(p) != "" and overlaps(path, Path(p)):
            raise DataError(path, f"{option} is, lies inside, or contains the input {p}; choose another folder")
    check_not_inside_pcm3_folder(path, option)
    if path.exists() and not path.is_dir():
        raise DataError(path, f"{option} exists and is not a folder")
    if path.is_symlink() and not path.is_dir():  # dangling, or a loop: the output could not go there
        raise DataError(path, f"{option} is a symbolic link to no folder ({os.readlink(path)}); choose another folder")
    if path.is_dir() and any(path.iterdir()):
        found = folder_kind(path)
        if found is None:
            raise DataError(path, f"{option} is a non-empty folder that pcm3 did not create; "
                                  "choose a new or empty folder (nothing was changed)")
        if found != kind:
            raise DataError(path, f"{option} holds a pcm3 {found} folder, not a {kind} folder; choose another folder")
        if not overwrite:
            raise DataError(path, f"{option} already holds a pcm3 {kind} folder; pass --overwrite to replace it")
        every, recorded = _foreign(path, kind)
        if every:
            them = "it" if len(every) == 1 else "them"
            listing = _listing(every[:_SHOWN], len(every) - _SHOWN)
            if recorded:
                raise DataError(path, f"{option} holds {listing}, which pcm3 did not write there and "
                                      f"--overwrite would remove; move {them} out of the folder or choose another "
                                      "folder (nothing was changed)")
            raise DataError(path, f"{option} was written by an older pcm3 that did not record its files, and "
                                  f"holds {listing}, which may not be pcm3's; move {them} out of the "
                                  "folder, or remove the folder yourself, or choose another folder "
                                  "(nothing was changed)")
        edited = _edited_entries(path)
        if edited:
            them = "it" if len(edited) == 1 else "them"
            listing = _listing(edited[:_SHOWN], len(edited) - _SHOWN)
            raise DataError(path, f"{option} holds {listing}, changed since pcm3 wrote {them}; --overwrite would "
                                  f"lose the change: move {them} out of the folder or choose another folder "
                                  "(nothing was changed)")
    check_writable(path, option)
    return path


# --------------------------------------------------------------------------- single output files
#
# A file written on its own (features and labels of ``embed``, a GIF of ``visualize``) gets a
# record beside it, ``.NAME.pcm3`` (hidden; one line of JSON: ``{"kind", "version": 1,
# "files": {name: {"size", "sha256"}}}``) naming every file written with it and its checksum.
# ``--overwrite`` replaces such files only while the record proves them pcm3's and unchanged.

RECORD_SUFFIX = ".pcm3"


def record_path(path: str | os.PathLike) -> Path:
    """The record of the single output file ``path``: ``.NAME.pcm3`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}{RECORD_SUFFIX}")


def _digest(path: Path) -> dict:
    return {"size": os.path.getsize(path), "sha256": file_sha256(path)}


def _read_record(path: Path) -> Optional[dict]:
    """The record at ``path`` if it is one ``pcm3`` wrote (a JSON object with ``kind`` and
    ``files``), else None."""
    try:
        if path.is_symlink() or not path.is_file():
            return None
        rec = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("kind"), str) or not isinstance(rec.get("files"), dict):
        return None
    return rec


def unproven_output(files: Sequence[str | os.PathLike], kind: str) -> Optional[str]:
    """None when the record of ``files[0]`` proves every one of ``files`` written by ``pcm3``
    (as ``kind``, together, and unchanged since); else why not, as a clause for a message."""
    files = [Path(f) for f in files]
    rec_path = record_path(files[0])
    rec = _read_record(rec_path)
    if rec is None:
        if os.path.lexists(rec_path):
            return f"{rec_path.name} beside it is not a pcm3 record"
        return (f"no record {rec_path.name} beside it; if an older pcm3, which kept none, wrote "
                f"{_listing([f.name for f in files])}, remove {'it' if len(files) == 1 else 'them'} yourself")
    if rec.get("kind") != kind or set(rec["files"]) != {f.name for f in files}:
        return f"{rec_path.name} records other files"
    for f in files:
        want = rec["files"][f.name]
        if f.is_symlink() or not f.is_file():
            return f"{f.name} is missing or not a plain file"
        if not isinstance(want, dict) or want.get("size") != os.path.getsize(f) or want != _digest(f):
            return f"{f.name} was changed since pcm3 wrote it"
    return None


def check_out_file(path: str | os.PathLike, overwrite: bool, *, option: str = "--out",
                   protect: Sequence[str | os.PathLike] = (), ours=None, what: str = "pcm3") -> Path:
    """An output file: not a folder, not under a file or in a read-only folder, not inside a
    ``pcm3`` folder written whole (:func:`check_not_inside_pcm3_folder`), not replaced unless
    ``overwrite``, and not one of the inputs ``protect`` (files or folders) nor inside one.

    ``ours(path)`` says whether an existing file is one this command writes: True, or False or a
    clause saying why not (:func:`unproven_output`); any other file is never replaced,
    ``--overwrite`` or not (``what`` names the command in the message). Returns ``path``.
    """
    path = Path(path)
    for p in protect:
        if p is not None and str(p) != "" and overlaps(path, Path(p)):
            raise DataError(path, f"{option} is, or lies inside, the input {p}; choose another file")
    if path.is_dir():
        raise DataError(path, f"{option} is a folder; give a file name")
    check_not_inside_pcm3_folder(path, option)
    if os.path.lexists(path):
        verdict = ours(path) if ours is not None and path.is_file() and not path.is_symlink() else ours is None
        if verdict is not True:
            why = f" ({verdict})" if isinstance(verdict, str) and verdict else ""
            raise DataError(path, f"{option} exists and was not written by {what}{why}; choose another file")
        if not overwrite:
            raise DataError(path, f"{option} exists; pass --overwrite to replace it")
    check_writable(path, option, file=True)
    return path


def check_recorded_output(files: Sequence[str | os.PathLike], kind: str, overwrite: bool, *, what: str,
                          option: str = "--out", protect: Sequence[str | os.PathLike] = ()) -> None:
    """Check the files one output consists of (``files[0]`` the main one, its record beside
    it): each as :func:`check_out_file`, an existing one replaced only if the record proves all
    of them ``pcm3``'s (:func:`unproven_output`), and the record's name not taken by a file of
    the user's."""
    files = [Path(f) for f in files]
    verdict: List = []

    def ours(_):
        if not verdict:  # checksums once for all the files
            verdict.append(unproven_output(files, kind) or True)
        return verdict[0]

    for f in files:
        check_out_file(f, overwrite, option=option, protect=protect, what=what, ours=ours)
    rec = record_path(files[0])
    if os.path.lexists(rec) and _read_record(rec) is None:
        raise DataError(rec, f"exists and is not a record pcm3 wrote (pcm3 keeps the record of {option} "
                             f"{files[0].name} there); move it away or choose another {option}")


@contextlib.contextmanager
def recorded_output(files: Sequence[str | os.PathLike], kind: str) -> Iterator[List[Path]]:
    """Yield a temporary path beside each of ``files`` (same suffix: writers that go by the
    name see the right one); when the block returns, write the record of ``files[0]`` under a
    temporary name and put the new set in place: files already there (checked again now: they
    must still be a set that the record proves pcm3's, else nothing is written) and their record
    are renamed aside, the new files and record renamed in, then the old ones removed. When the
    block raises, or a rename fails (Ctrl-C too), nothing is changed: the old set is put back.
    An ``OSError`` is passed on (the caller makes it one line)."""
    files = [Path(f) for f in files]
    tmps: List[Path] = []
    rec = record_path(files[0])
    rec_tmp = rec.with_name(rec.name + f".{os.getpid()}.tmp")
    try:
        for f in files:
            f.parent.mkdir(parents=True, exist_ok=True)  # ``--out new/f.npy``: its folder is made
            fd, t = tempfile.mkstemp(prefix=f".{f.name}.", suffix=".tmp" + f.suffix, dir=f.parent)
            os.close(fd)
            os.unlink(t)  # the writer creates it, with the usual mode
            tmps.append(Path(t))
        yield tmps
        record = {"kind": kind, "version": 1, "files": {f.name: _digest(t) for f, t in zip(files, tmps)}}
        rec_tmp.write_text(json.dumps(record) + "\n")
        if any(os.path.lexists(f) for f in files):  # may have appeared or changed while pcm3 worked
            why = unproven_output(files, kind)
            if why is not None:
                raise DataError(files[0], f"--out changed while pcm3 worked ({why}); nothing was written")
        _replace_set([*files, rec], [*tmps, rec_tmp])
    finally:
        for t in (*tmps, rec_tmp):
            if os.path.lexists(t):
                t.unlink()


def _replace_set(dests: Sequence[Path], news: Sequence[Path]) -> None:
    """Rename each of ``news`` to its ``dests`` entry as one change: the existing ``dests`` go
    aside first and come back if any rename fails (or is interrupted); removed at the end."""
    aside: List[Tuple[Path, Path]] = []
    moved: List[Path] = []
    try:
        for d in dests:
            if os.path.lexists(d):
                hidden = d.with_name(f".{d.name}.old-{os.getpid()}")
                os.replace(d, hidden)
                aside.append((d, hidden))
        for d, n in zip(dests, news):
            os.replace(n, d)
            moved.append(d)
    except BaseException:
        for d in moved:
            d.unlink(missing_ok=True)
        for d, hidden in aside:
            os.replace(hidden, d)
        raise
    for _, hidden in aside:
        hidden.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normal(path: str | os.PathLike) -> Path:
    """``path`` as a Path; made absolute when it has no name of its own (``.``, ``..``). A
    symbolic link to a folder is replaced by the folder it names: that folder is the output
    (renaming the link aside would replace the user's link and leave the folder as it was)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        path = Path(os.path.abspath(path))
    if path.is_symlink() and path.is_dir():
        path = Path(os.path.realpath(path))
    return path


def check_writable(path: str | os.PathLike, option: str = "--out", *, file: bool = False) -> None:
    """Refuse early an output that cannot be created: under a file, or in a read-only folder.

    Looks at ``path`` if it exists, else at its nearest existing ancestor (where the folders
    leading to it would be created); with ``file`` ``path`` is a file, and its folder is looked
    at. Raises :class:`DataError` naming that folder.
    """
    path = Path(os.path.abspath(path))
    probe = path.parent if file else path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        if probe == path:
            raise DataError(path, f"{option} exists and is not a folder")
        raise DataError(path, f"{option} lies under {probe}, which is a file, not a folder")
    # the folder itself and the folder holding it (where the temporary sibling is made)
    for folder in ({probe, probe.parent} if probe == path else {probe}):
        if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
            raise DataError(path, f"{option}: cannot write in {folder} (read-only or no permission)")
    if probe.exists() and not has_storage(probe):
        raise DataError(path, f"{option}: {_NO_STORAGE.format(folder=probe)}")


def free_bytes(folder: str | os.PathLike) -> int:
    """Free bytes on the file system holding ``folder`` (for users who are not root)."""
    return int(shutil.disk_usage(folder).free)


_NO_STORAGE = ("cannot write in {folder}: its file system holds no files (a virtual one such as /proc or /sys); "
               "choose a folder on a disk")


#: kernel file systems that hold no files of their own (the free space of which reads 0)
VIRTUAL_FILE_SYSTEMS = frozenset(("proc", "sysfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
                                  "securityfs", "configfs", "pstore", "bpf", "mqueue", "efivarfs", "binfmt_misc",
                                  "fusectl", "autofs"))


def _file_system_type(folder: str | os.PathLike) -> Optional[str]:
    """The type of the mounted file system holding ``folder`` (``/proc/self/mounts``: the longest
    mount point above it), or None where that cannot be read (not Linux)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return None
    path = os.path.realpath(folder)
    best, kind = "", None
    for point, fs in mounts:
        point = point.replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs
    return kind


def has_storage(folder: str | os.PathLike) -> bool:
    """False when ``folder`` lies on a kernel file system that holds no files (``/proc``,
    ``/sys``...; :data:`VIRTUAL_FILE_SYSTEMS`): nothing can be written there, whatever its free
    space reads. A RAM disk (tmpfs, ramfs) is storage. Unknown (not Linux): True."""
    return _file_system_type(folder) not in VIRTUAL_FILE_SYSTEMS


def ensure_free_space(folder: str | os.PathLike, nbytes: int, what: str, *, report: str | os.PathLike | None = None) -> None:
    """Raise a one-line :class:`DataError` when ``folder``'s file system has less than
    ``nbytes`` (plus 1% and 16 MiB of headroom) free; ``what`` says what needs the space."""
    need = int(nbytes * 1.01) + (16 << 20)
    if not has_storage(folder):
        raise DataError(report or folder, _NO_STORAGE.format(folder=folder))
    try:
        free = free_bytes(folder)
    except OSError:  # cannot tell; the write itself will say
        return
    if free < need:
        raise DataError(report or folder, f"not enough free disk space for {what}: needs {_size(need)}, "
                                          f"{_size(free)} free (nothing was written)")


def reserve(path: str | os.PathLike, nbytes: int) -> None:
    """Allocate ``nbytes`` of the existing file ``path`` on disk now (``posix_fallocate``).

    A memory-mapped file whose pages cannot be allocated later kills the process with SIGBUS;
    allocating up front turns a full disk into an ``OSError`` (ENOSPC) here instead. File
    systems without ``fallocate`` are left as they are.
    """
    if not hasattr(os, "posix_fallocate") or nbytes <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, int(nbytes))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
    finally:
        os.close(fd)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def write_error(path: str | os.PathLike, e: OSError, what: str = "the output") -> DataError:
    """A one-line :class:`DataError` for an ``OSError`` met while writing ``path``."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(path, f"disk full while writing {what} ({e.strerror}); nothing was left half-written")
    return DataError(path, f"cannot write {what} ({e.strerror or e})")


def open_run_dir(path: str | os.PathLike, *, resume: bool, protect: Sequence[str | os.PathLike] = ()) -> Path:
    """Check a pretraining run folder; with ``create``-semantics of ``pcm3 pretrain``.

    A new run (``resume=False``) may go to a new or empty folder, or to a run folder in which no
    epoch finished (no ``checkpoint_last.pt``). ``resume=True`` needs a run folder. Nothing is
    created here: call :func:`create_run_dir` once everything else is validated.
    """
    path = _normal(path)
    for p in protect:
        if p is not None and str(p) != "" and overlaps(path, Path(p)):
            raise DataError(path, f"--out is, lies inside, or contains the input {p}; choose another folder")
    if path.exists() and not path.is_dir():
        raise DataError(path, "--out exists and is not a folder")
    kind = folder_kind(path) if path.is_dir() else None
    legacy_run = (path / "checkpoint_last.pt").is_file() and (path / "config.yaml").is_file()
    if resume:
        if not path.is_dir():
            raise DataError(path, "--resume: no such run folder")
        if kind != "run" and not legacy_run:
            raise DataError(path, "--resume: not a pcm3 run folder (no .pcm3 marker / checkpoint_last.pt)")
        return path
    if kind != "run" and not legacy_run:
        check_not_inside_pcm3_folder(path, "--out")
    if path.is_dir() and any(path.iterdir()):
        if kind not in ("run", None) or (kind is None and not legacy_run):
            check_output_dir(path, "run", option="--out")  # raises the usual message
        if (path / "checkpoint_last.pt").exists():
            raise ConfigError(f"{path}: already holds a run (checkpoint_last.pt); use --resume to continue it "
                              "or choose another --out")
    check_writable(path, "--out")
    return path


def create_run_dir(path: str | os.PathLike) -> Path:
    """Create the run folder (and its marker); a one-line :class:`DataError` if that fails."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if folder_kind(path) != "run":
            write_marker(path, "run")
    except OSError as e:
        raise write_error(path, e, "the run folder") from None
    return path


#: The lock file of a run folder being trained (:class:`RunLock`).
RUN_LOCK = ".pcm3.lock"

#: Temporaries of :func:`pcm3.io.atomic_path` for the files a run writes, left behind only by a
#: process killed while it wrote one (``kill -9``, a power cut): ``tempfile.mkstemp``'s names,
#: 8 characters of ``[a-z0-9_]`` between the prefix and the suffix (``.tmp``; ``.png.tmp`` for
#: the figure).
_RUN_TEMPORARY = re.compile(r"^\.(?:(?:checkpoint_last\.pt|checkpoint_epoch\d+\.pt|metrics\.csv|config\.yaml)"
                            r"\.[a-z0-9_]{8}|loss\.png\.[a-z0-9_]{8}\.png)\.tmp$")


class RunLock:
    """An exclusive lock on a run folder while one process trains it (``fcntl.flock`` on its
    :data:`RUN_LOCK` file; released when the process ends, however it ends). Without it a second
    ``--resume`` of a run still training was accepted, and both processes rewrote its checkpoint,
    metrics and log. A no-op where ``fcntl`` does not exist (Windows)."""

    def __init__(self, run: str | os.PathLike):
        self.run = Path(run)
        self._file = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover (Windows)
            return self
        path = self.run / RUN_LOCK
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise DataError(self.run, f"another process is training this run{f' (pid {holder})' if holder else ''}; "
                                      "wait for it to end, or stop it, before --resume") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None


def remove_run_temporaries(run: str | os.PathLike) -> List[str]:
    """Remove the temporaries of run files left by a process killed while it wrote one (call
    with the run's :class:`RunLock` held: no other process is writing); returns their names."""
    removed = []
    for entry in sorted(Path(run).iterdir()):
        if _RUN_TEMPORARY.match(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink()
            removed.append(entry.name)
    return removed


def _holds_cwd(path: Path) -> bool:
    """Whether this process's current folder is ``path`` or lies inside it (``--out .``)."""
    try:
        return Path.cwd().resolve().is_relative_to(path.resolve())
    except OSError:  # the current folder is gone: nothing to keep valid
        return False


def _swap(tmp: Path, path: Path, parent: Path) -> None:
    """Replace the ``pcm3`` folder ``path`` by the finished ``tmp`` with two renames (the old one
    aside, the new one in), then remove the old one; on a failure the old one is put back."""
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=parent))
    os.rmdir(old)
    try:
        os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C too: the destination must not stay in the hidden ``old``
        if os.path.lexists(old) and not os.path.lexists(path):
            os.replace(old, path)  # put it back: the destination stays as it was
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fill_in_place(tmp: Path, path: Path, parent: Path) -> None:
    """Make the existing folder ``path`` hold what the finished ``tmp`` holds, keeping ``path``
    itself (it may be the current folder of the user's shell).

    Entries already in ``path`` (all written by ``pcm3``: checked just before) are moved to a
    hidden folder beside it, then the new ones are moved in, the marker first and ``meta.json``
    last (readers take it as the sign of a complete prepared folder); the old entries are
    removed only once all new ones are in. On a failure every move is undone.
    """
    old = None
    moved_out: List[str] = []
    moved_in: List[str] = []
    try:
        current = sorted(os.listdir(path), key=lambda n: n == MARKER)  # the old marker goes last
        if current:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=parent))
        for name in current:
            os.replace(path / name, old / name)
            moved_out.append(name)
        for name in sorted(os.listdir(tmp), key=lambda n: (n != MARKER, n == "meta.json")):
            os.replace(tmp / name, path / name)
            moved_in.append(name)
    except BaseException:  # an OSError, or Ctrl-C half-way
        undone = True
        for src, dst, names in ((path, tmp, moved_in), (old, path, moved_out)):
            for name in reversed(names):
                try:
                    os.replace(src / name, dst / name)
                except OSError:  # pragma: no cover - a second failure; keep what is left in ``old``
                    undone = False
        if old is not None and undone:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, kind: str, *, overwrite: bool = False,
               protect: Sequence[str | os.PathLike] = (), option: str = "--out") -> Iterator[Path]:
    """Check ``path`` (:func:`check_output_dir`), yield a temporary folder, then move it into place.

    The block writes its files into the yielded folder. When it returns, the folder gets its
    marker (recording the entries written) and ``path`` is checked again (the block may have run
    for hours); a new ``path`` is the renamed temporary folder, a ``pcm3`` folder replaced with
    ``overwrite`` is swapped for it (:func:`_swap`), an empty one or the current folder is
    filled in place (:func:`_fill_in_place`); the old ``pcm3`` files are removed only then. When it raises, the temporary folder is removed
    and ``path`` is untouched.
    """
    path = check_output_dir(path, kind, overwrite=overwrite, protect=protect, option=option)
    parent = path.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output gets the usual mode
    except OSError as e:
        raise DataError(path, f"cannot create the output folder ({e.strerror or e})") from None
    try:
        yield tmp
        write_marker(tmp, kind, list_entries(tmp))
        check_output_dir(path, kind, overwrite=overwrite, option=option)  # the user may have added files since
        if path.is_dir() and any(path.iterdir()) and not _holds_cwd(path):
            _swap(tmp, path, parent)          # --overwrite: one rename puts the whole new folder in place
        elif path.is_dir():
            _fill_in_place(tmp, path, parent)  # empty, or the user's current folder: keep the folder itself
        else:
            os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
