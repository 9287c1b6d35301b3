"""``pcm3 report``: eval folders collected into the paper's table shapes, with pictures.

:func:`write_report` reads the ``metrics.json`` of every eval folder given (or found below a
given folder, as ``pcm3 benchmark`` writes them), and writes

- ``report.md``: Table 1 (linear top-1 and 3-stream fusion), Table 2 (semi-supervised mean ±
  std), Table 3 (k-NN), Table 4 (occlusion: clean, occluded, drop), Table 5 (temporal action
  detection: mAP_a / mAP_v per IoU, frame accuracy), Table 6 (motion prediction: MPJPE in mm per
  predicted frame and mean, zero-velocity row), and the paper's figures beside ours where the data
  set (and benchmark) match; folders of tasks the report does not know are listed as skipped.
  Columns stand in the paper's order. Under each table: stale fusions (a fused run's scores
  recomputed or gone since, by the ``scores_sha256`` the fusion recorded) and smoke tests, marked
  prominently; the settings in which its rows differ (protocol keys, training split size); the
  fusion weights beside each fusion cell; a caveat beside the paper's rows; one ``missing:`` line
  (rows, streams, benchmarks the paper's table has and this one lacks); the notes of its runs;
- ``report.html``: the same with the images inline;
- ``.report.md.pcm3``: the record (SHA-256) of the markdown and HTML; the HTML holds every image, so
  ``--overwrite`` replaces a report only while none of its files was changed since;
- ``<name>_images/``: confusion matrix (row-normalised, linear, pretrained row, joint stream first), per-class
  accuracy of every linear row, a 2-D map of test features coloured by class for pretrained vs
  random init (exact t-SNE, :mod:`pcm3.evaluation.tsne`; PCA when asked, and labelled so),
  accuracy against the realised occlusion ratio, and copies of the dense tasks' own images
  (detection ``timeline.png``, motion ``mpjpe.png`` and ``prediction.png``). A run whose saved
  scores or test features are damaged (truncated, unreadable, NaN) is left out of the figures
  that would show it, never drawn from damaged numbers: the report goes on, and says so, once per
  damaged file, at the top of its Figures section (``left out: FILE: PROBLEM; figure "..." left
  out``); :func:`write_report` returns those lines (``"warnings"``) for the caller to print.

The tables are built in :mod:`pcm3.evaluation.report_tables`, the pictures drawn in
:mod:`pcm3.evaluation.report_figures`; this module finds and loads the eval folders, checks the
fusions' scores, and writes the files.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from pcm3.errors import DataError
from pcm3.evaluation.common import read_metrics
from pcm3.evaluation.report_figures import (copy_dense_images, plot_confusion, plot_feature_maps, plot_occlusion,
                                            plot_per_class)
from pcm3.evaluation.report_tables import (DENSE_TASKS, KIND_LABEL, RECOGNITION_TASKS, STALE_MARK, _fusion_prefix,
                                           _kind, _stream, _usable, dense_tables, recognition_tables)
from pcm3.io import file_sha256

MARKER_LINE = "<!-- written by pcm3 report -->"
# The paper's tables by the tasks that fill them, as the report names one it lacks.
TASK_TABLES = ((("linear", "fusion"), "linear evaluation and 3-stream fusion (pcm3 eval linear, pcm3 eval fusion)"),
               (("semi",), "semi-supervised (pcm3 eval semi)"), (("knn",), "k-NN retrieval (pcm3 eval knn)"),
               (("occlusion",), "occlusion (pcm3 eval occlusion)"),
               (("detection",), "temporal action detection (pcm3 eval detection)"),
               (("motion",), "motion prediction (pcm3 eval motion)"))


# --------------------------------------------------------------------------- collecting

def _is_eval_result(folder: Path) -> bool:
    """A folder holding ``metrics.json`` is an eval folder, except a demo folder: its
    ``metrics.json`` is the demo's summary, its eval folders lie below it."""
    from pcm3.outputs import folder_kind

    return folder_kind(folder) != "demo"


def find_runs(paths: Sequence[str | os.PathLike], depth: int = 3) -> List[Path]:
    """Eval folders (holding ``metrics.json``) among ``paths`` and below them (``depth`` levels);
    a folder reached twice (given, and below another given folder) counts once."""
    found: List[Path] = []
    seen = set()

    def walk(p: Path, level: int) -> int:
        if (p / "metrics.json").is_file() and _is_eval_result(p):
            if p.resolve() not in seen:
                seen.add(p.resolve())
                found.append(p)
            return 1
        n = 0
        if level < depth:
            for child in sorted(q for q in p.iterdir() if q.is_dir() and not q.name.startswith(".")):
                n += walk(child, level + 1)
        return n

    for path in paths:
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise DataError(path, "a file, not a folder (give eval folders or a folder that holds them)")
        if not path.is_dir():
            raise DataError(path, "no such folder (give eval folders or a folder that holds them)")
        if not walk(path, 0):
            raise DataError(path, "holds no eval results (metrics.json)")
    return found


def load_runs(paths: Sequence[str | os.PathLike]) -> List[dict]:
    """Every eval folder's metrics, with ``_dir`` added."""
    runs = []
    for d in find_runs(paths):
        m = read_metrics(d)
        if not isinstance(m, dict):
            m = {"task": None}
        m["_dir"] = str(d)
        runs.append(m)
    return runs


def _fused_folders(name: str, fusion_dir: str, locate=None) -> List[Path]:
    """Where a fused run folder named ``name`` in a fusion's ``runs`` may be now: the path itself
    (``locate`` maps it first, e.g. to the temporary folder a benchmark reports from); a relative
    one (as given to ``pcm3 eval fusion`` in the folder it ran in) below the current folder, else
    below a folder holding the fusion folder; an absolute one that is gone (a moved or copied
    benchmark folder), its last parts below a folder holding the fusion folder."""
    path = Path(locate(name) if locate is not None else name)
    bases = [Path.cwd(), *Path(os.path.abspath(fusion_dir)).parents]
    if path.is_absolute():
        if path.exists():
            return [path]
        # a moved or copied folder (a benchmark's fusions record absolute paths): the path's last
        # parts below a folder holding the fusion folder (the checksum then tells the right one)
        tails = [Path(*path.parts[-k:]) for k in range(1, len(path.parts))]
        return [path] + list(dict.fromkeys(Path(os.path.normpath(b / t)) for t in tails for b in bases[1:]))
    return list(dict.fromkeys(Path(os.path.normpath(b / path)) for b in bases))


def check_fusions(runs: List[dict], locate=None) -> None:
    """Mark the fusion runs whose fused scores changed since they were fused: ``run["_stale"] =
    [(run folder, why)]``, why being that its ``{prefix}scores.npy`` was recomputed after the
    fusion (its SHA-256 is not the one the fusion recorded in ``scores_sha256``) or is gone.
    Fusion folders that recorded no ``scores_sha256`` (older ones) are not checked.

    ``locate``: maps a recorded run folder to where it is now (``write_report``'s ``shown_as``
    in reverse), or None.
    """
    for m in runs:
        if m.get("task") != "fusion" or "scores_sha256" not in m:
            continue
        names, sums = m.get("runs"), m.get("scores_sha256")
        prefix = m["prefix"] if isinstance(m.get("prefix"), str) else _fusion_prefix(m)
        if not (isinstance(names, list) and isinstance(sums, list) and len(names) == len(sums)
                and all(isinstance(x, str) for x in sums)):
            m["_stale"] = [(m.get("_dir", "?"), "its scores_sha256 does not name one checksum per fused run, "
                                                "so its scores cannot be checked")]
            continue
        stale = []
        for name, want in zip(names, sums):
            files = [f / f"{prefix}scores.npy" for f in _fused_folders(str(name), m.get("_dir", "."), locate)]
            files = [f for f in files if f.is_file()]
            if not files:
                stale.append((str(name), f"{prefix}scores.npy is gone (or the folder), so the fused scores "
                                         "cannot be checked"))
            elif not any(file_sha256(f) == want.lower() for f in files):
                stale.append((str(name), f"{prefix}scores.npy recomputed after this fusion"))
        if stale:
            m["_stale"] = stale


# --------------------------------------------------------------------------- writing

#: The kind in the record ``.report.md.pcm3`` (:func:`pcm3.outputs.recorded_output`) that proves
#: ``report.md`` and ``report.html`` written by ``pcm3 report`` and unchanged since.
REPORT_KIND = "report"

# An image inline in the HTML (:func:`to_html`), in the order of the markdown's image lines.
_INLINE_IMAGE = re.compile(r'<p><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]*)"></p>')


def _has_marker(path: Path) -> bool:
    """Whether ``path`` carries :data:`MARKER_LINE` on one of its first two lines."""
    try:
        with open(path, errors="replace") as f:
            return MARKER_LINE in (f.readline().strip(), f.readline().strip())
    except OSError:
        return False


def _image_names(md: str) -> List[str]:
    """The image files the markdown shows, in order (as :func:`to_html` reads them)."""
    return [line[line.index("](") + 2:-1].split("/")[-1] for line in md.splitlines()
            if line.startswith("![") and "](" in line]


def _unchanged_report(out: Path, html_path: Path, images: Path, *, legacy: bool) -> Optional[str]:
    """None when the report's images (and, with ``legacy``, a report of an older pcm3 that kept no
    record, its markdown and HTML too) are as ``pcm3 report`` wrote them; else why not, as a
    clause. The HTML holds every image inline as drawn: an image that differs from its inline
    copy was changed, and (``legacy``) an HTML that is not :func:`to_html` of the markdown and
    images means one of them was."""
    try:
        md, page = out.read_text(), html_path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        return f"it cannot be read ({getattr(e, 'strerror', None) or e})"
    names, inline = _image_names(md), _INLINE_IMAGE.findall(page)
    if len(names) != len(inline):
        return f"{out.name} shows {len(names)} images and {html_path.name} holds {len(inline)} (edited since?)"
    for name, data in zip(names, inline):
        f = images / name
        if f.is_symlink() or not f.is_file():
            return f"{images.name}/{name} is missing or not a plain file"
        if base64.b64encode(f.read_bytes()).decode() != data:
            return f"{images.name}/{name} was changed since pcm3 wrote it"
    if legacy:
        try:
            same = to_html(md, images) == page
        except (OSError, ValueError):
            same = False
        if not same:
            return f"{out.name} and {html_path.name} no longer match as pcm3 wrote them (edited since?)"
    return None


def _check_outputs(out: Path, html_path: Path, images: Path, overwrite: bool, protect: Sequence[Path]) -> Optional[str]:
    """Refuse (one-line :class:`DataError`, nothing changed) a report that would replace anything
    ``pcm3 report`` did not write, or a report it wrote that was changed since: the markdown and
    HTML proven by their record (``.report.md.pcm3``: SHA-256 of each), the images by their
    copies inline in the proven HTML, the images folder holding nothing else
    (:func:`pcm3.outputs.check_output_dir`). A report of an older pcm3 (no record) is replaced
    only with ``overwrite``, when it carries the marker and its markdown, HTML and images still
    match one another as pcm3 wrote them; returns then a notice saying so, else None."""
    from pcm3.outputs import check_out_file, check_output_dir, check_recorded_output, record_path

    files = [out, html_path]
    legacy = not os.path.lexists(record_path(out)) and any(os.path.lexists(f) for f in files)
    if not legacy:
        check_recorded_output(files, REPORT_KIND, overwrite, what="pcm3 report", protect=protect)
    else:  # no record: an older pcm3's report, recognised by its marker line alone
        for f in files:
            check_out_file(f, overwrite, protect=protect, ours=_has_marker, what="pcm3 report")
    check_output_dir(images, "report", overwrite=overwrite, protect=protect)
    present = [f for f in files if os.path.lexists(f)]
    if not present:
        return None
    advice = (f"move {out.name}, {html_path.name} and {images.name}/ away or remove them yourself, or choose "
              "another --out (nothing was changed)")
    if legacy and len(present) < len(files):
        gone = next(f for f in files if f not in present)
        raise DataError(present[0], f"--overwrite refused: an older pcm3 wrote this report without a record of its "
                                    f"files, and {gone.name} is gone, so whether {present[0].name} was edited "
                                    f"cannot be told; {advice}")
    why = _unchanged_report(out, html_path, images, legacy=legacy)
    if why is not None:
        older = "; an older pcm3 wrote this report and kept no record of its files" if legacy else ""
        raise DataError(out, f"--overwrite refused: {why}{older}; replacing it could lose those changes: {advice}")
    if legacy:
        return (f"{out} was written by an older pcm3 that kept no record of its files; its markdown, HTML and "
                f"images still matched one another as written (no edits), so it was replaced; the new report keeps "
                f"its record in {record_path(out).name}")
    return None


def write_report(dirs: Sequence[str | os.PathLike], out: str | os.PathLike, *, overwrite: bool = False,
                 embedding: str = "tsne", max_points: int = 800, seed: int = 0,
                 shown_as: Optional[Tuple[str | os.PathLike, str | os.PathLike]] = None) -> Dict[str, Path | str]:
    """Write ``out`` (markdown), the HTML beside it and the images folder.

    Args:
        dirs: eval folders, or folders holding them (a ``pcm3 benchmark`` output).
        out: the markdown file (``report.md``); ``report.html``, ``report_images/`` and the
            record ``.report.md.pcm3`` (SHA-256 of the markdown and HTML, which holds every image)
            go beside it. An existing report is replaced only with ``overwrite``, and only while
            it is as pcm3 wrote it (:func:`_check_outputs`).
        embedding: ``tsne`` (exact, in torch) or ``pca``.
        max_points: test samples per feature map (class-stratified subsample).
        shown_as: ``(folder, name)``: folders below ``folder`` are named below ``name`` in the text
            (``pcm3 benchmark`` reports from its temporary folder before renaming it), and fused
            run folders recorded below ``name`` are looked for below ``folder``.

    Returns:
        ``{"markdown", "html", "images"}`` paths, ``"notice"`` (a line for the user) when an
        older report without a record was replaced, and ``"warnings"``: one line per damaged file
        of the runs (scores, test features) that a figure left out, ``FILE: PROBLEM; figure "TITLE"
        left out`` (the report shows them too; :func:`_left_out_line`).
    """
    from pcm3.outputs import output_dir, recorded_output, write_error

    out = Path(out)
    if out.suffix.lower() != ".md":
        raise DataError(out, "--out must name a .md file (the HTML and images go beside it)")
    html_path = out.with_suffix(".html")
    images = out.with_name(out.stem + "_images")
    all_runs = load_runs(dirs)
    protect = [Path(m["_dir"]) for m in all_runs]
    notice = _check_outputs(out, html_path, images, overwrite, protect)
    runs = [m for m in all_runs if _usable(m)]
    skipped = [m for m in all_runs if not _usable(m)]
    if not runs:
        where = ", ".join(str(d) for d in dirs)
        raise DataError(where, f"no usable eval results ({len(skipped)} folder(s) of tasks without a table or "
                               f"without figures; tables need {', '.join(RECOGNITION_TASKS + DENSE_TASKS)})")

    def show(d) -> str:
        if shown_as is not None:
            rel = os.path.relpath(os.path.abspath(d), os.path.abspath(shown_as[0]))
            if not rel.startswith(".."):
                return os.path.normpath(os.path.join(str(shown_as[1]), rel))
        return str(d)

    def locate(d) -> str:  # show() in reverse: where a folder named below shown_as[1] is now
        if shown_as is not None:
            rel = os.path.relpath(os.path.abspath(d), os.path.abspath(shown_as[1]))
            if not rel.startswith(".."):
                return os.path.normpath(os.path.join(os.path.abspath(shown_as[0]), rel))
        return str(d)

    check_fusions(runs, locate)
    lines = [MARKER_LINE, "# pcm3 evaluation report", "",
             f"{len(runs)} eval runs: " + ", ".join(sorted({str(m.get("task")) for m in runs})) + ".", ""]
    absent = [what for tasks, what in TASK_TABLES if not any(m.get("task") in tasks for m in runs)]
    if absent:
        lines += ["Not in this report (no eval folders of these tasks): " + "; ".join(absent) + ".", ""]
    stale = [m for m in runs if m.get("_stale")]
    if stale:
        lines += [f"> **{STALE_MARK}**: {len(stale)} fusion folder(s) fused scores that were recomputed or removed "
                  "since (marked in the tables, named below them); rerun pcm3 eval fusion.", ""]
    lines += recognition_tables(runs)
    lines += dense_tables(runs)
    if skipped:
        lines += [f"Skipped {len(skipped)} folder(s) of tasks this report has no table for (or without figures): "
                  + ", ".join(f"`{show(m['_dir'])}` (task {m.get('task')!r})" for m in skipped) + ".", ""]
    linear = [m for m in runs if m.get("task") == "linear"]
    occ = [m for m in runs if m.get("task") == "occlusion"]
    pictures: List[Tuple[str, Path]] = []
    left_out: Dict[Tuple[str, str], List[str]] = {}  # (damaged file, problem) -> titles of the figures lacking it

    def skip_as(title: str):
        def skipped(error: DataError) -> None:
            titles = left_out.setdefault((error.path, error.message) if error.path else ("", str(error)), [])
            if title not in titles:
                titles.append(title)
        return skipped

    warnings: List[str] = []
    legacy = {f: file_sha256(f) for f in (out, html_path) if notice and os.path.lexists(f)}
    aside: List[Tuple[Path, Path]] = []
    # Every byte of the three outputs is written under temporary names first; only then are they
    # put in place (images, then HTML, markdown and their record), so an error leaves none of them
    # half-made and an old report as it was.
    try:
        with recorded_output([out, html_path], REPORT_KIND) as (md_tmp, html_tmp):
            with output_dir(images, "report", overwrite=overwrite, protect=protect) as tmp:
                order = {"joint": 0, "bone": 1, "motion": 2}  # the joint stream's run first, as the paper shows
                pretrained = sorted((m for m in linear if _kind(m) == "pretrained"),
                                    key=lambda m: order.get(_stream(m), 3))
                main = pretrained[0] if pretrained else (linear[0] if linear else None)
                cm, pc, fm = "Confusion matrix", "Per-class accuracy", "Test features in 2-D"
                made = [(cm, main and plot_confusion(main, tmp / "confusion.png", among=linear, skipped=skip_as(cm))),
                        (pc, linear and plot_per_class(linear, tmp / "per_class.png", skipped=skip_as(pc))),
                        (fm, linear and plot_feature_maps(linear, tmp / "features_2d.png", method=embedding,
                                                          max_points=max_points, seed=seed, skipped=skip_as(fm))),
                        ("Accuracy against occlusion ratio", occ and plot_occlusion(occ, tmp / "occlusion.png"))]
                made += copy_dense_images(runs, tmp)
                for title, p in made:
                    if p:
                        pictures.append((title, images / Path(p).name))
                drawn = {title for title, p in made if p}
                warnings = [_left_out_line(show(f) if f else "", problem, titles, drawn)
                            for (f, problem), titles in left_out.items()]
                if pictures or warnings:
                    lines += ["## Figures", ""]
                    for w in warnings:
                        lines += [f"> **left out**: {w}", ""]
                    for title, p in pictures:
                        lines += [f"### {title}", "", f"![{title}]({images.name}/{p.name})", ""]
                lines += ["## Runs", ""] + [f"- `{show(m['_dir'])}`: {_run_line(m)}" for m in runs]
                md = "\n".join(lines) + "\n"
                md_tmp.write_text(md)
                html_tmp.write_text(to_html(md, tmp))  # the images as drawn, before they move into place
                if any(os.path.lexists(f) for f in (out, html_path)):  # the old report, checked again now
                    why = _unchanged_report(out, html_path, images, legacy=bool(legacy))
                    if why is not None:
                        raise DataError(out, f"--out changed while pcm3 worked ({why}); nothing was written")
            # An older report without a record: recorded_output replaces only files its record
            # proves pcm3's, so these (checked above) go aside first, and come back on a failure.
            for f, digest in legacy.items():
                if file_sha256(f) != digest:
                    raise DataError(f, "--out changed while pcm3 worked; nothing was written")
                hidden = f.with_name(f".{f.name}.old-{os.getpid()}")
                aside.append((f, hidden))
                os.replace(f, hidden)
    except BaseException as e:
        for f, hidden in aside:
            if os.path.lexists(hidden) and not os.path.lexists(f):
                os.replace(hidden, f)
        if isinstance(e, OSError):
            raise write_error(out, e, "the report") from None
        raise
    for _, hidden in aside:
        hidden.unlink(missing_ok=True)
    paths: Dict[str, Path | str | List[str]] = {"markdown": out, "html": html_path, "images": images,
                                                "warnings": warnings}
    if notice:
        paths["notice"] = notice
    return paths


def _left_out_line(path: str, problem: str, titles: Sequence[str], drawn) -> str:
    """What the report says of a damaged file: ``FILE: PROBLEM; figure "A" left out; its run left
    out of figure "B"`` (a figure not drawn at all, or drawn from the other runs; ``drawn``: the
    titles of the figures made)."""
    def named(ts):
        return ("figures " if len(ts) > 1 else "figure ") + ", ".join(f'"{t}"' for t in ts)

    whole = [t for t in titles if t not in drawn]
    part = [t for t in titles if t in drawn]
    said = ([f"{named(whole)} left out"] if whole else []) + ([f"its run left out of {named(part)}"] if part else [])
    return (f"{path}: {problem}" if path else problem) + "; " + "; ".join(said)


def _run_line(m: dict) -> str:
    """How the Runs list describes a run: task, row, stream, seed (the seeds of a semi run), time."""
    seeds = m.get("seeds")
    seed = (f"seeds {', '.join(map(str, seeds))}, " if isinstance(seeds, list) and seeds
            else f"seed {m['seed']}, " if m.get("seed") is not None else "")  # a fusion has none
    return (f"{m.get('task')}, {KIND_LABEL.get(_kind(m), _kind(m))}, {_stream(m)}, {seed}"
            f"{m.get('wall_seconds') or 0:.0f} s" + (f", {STALE_MARK}" if m.get("_stale") else ""))


_WARNING_STYLE = "border-left:4px solid #c60;background:#fff4e5;margin:1em 0;padding:6px 12px"


def to_html(md: str, images: Path) -> str:
    """A plain HTML rendering of the report's markdown (tables, headings, lists) with images inline."""
    body = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("<!--"):
            body.append(line)
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, rest = rows[0], [r for r in rows[1:] if not set("".join(r)) <= set("-")]
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</table>")
            continue
        elif line.startswith("!["):
            alt = line[2:line.index("]")]
            name = line[line.index("](") + 2:-1].split("/")[-1]
            data = base64.b64encode((images / name).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("> "):  # a warning: **bold** kept bold
            text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(line[2:]))
            # styled inline: the page's style sheet stays as older reports have it (see _unchanged_report)
            body.append(f'<blockquote style="{_WARNING_STYLE}">{text}</blockquote>')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n{MARKER_LINE}\n<html><head><meta charset='utf-8'><title>pcm3 evaluation report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
