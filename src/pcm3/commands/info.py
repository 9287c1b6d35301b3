"""``pcm3 info DIR``: print what a prepared folder holds, and validate it."""

from __future__ import annotations

import json

from pcm3.data.prepared import Prepared, format_summary
from pcm3.errors import DataError


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="summarise and validate a prepared data folder",
                       description="Print per split: samples, classes, length statistics; then "
                                   "scan every value for NaN/inf and check labels, lengths, splits, "
                                   "samples.csv and, for untrimmed videos, offsets and intervals.csv.")
    p.add_argument("dir", help="a folder written by `pcm3 prepare`")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-scan", action="store_true", help="skip the full scan of data.npy (the other checks run)")
    p.set_defaults(func=run)


def run(args) -> int:
    ds = Prepared(args.dir)
    summary = ds.summary()
    problems = ds.validate(scan=not args.no_scan)
    if args.json:
        print(json.dumps({**summary, "problems": problems}, indent=2))
    else:
        print(format_summary(summary))
        print("  validation: " + ("ok" if not problems else "; ".join(problems)))
    if problems:
        raise DataError(args.dir, "validation failed: " + "; ".join(problems))
    return 0

