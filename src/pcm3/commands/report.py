"""``pcm3 report DIR... --out report.md``: eval results in the paper's table shapes, with images."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="collect eval folders into tables and pictures (markdown + HTML)",
                       description="Collect the metrics of eval folders (or of folders holding them, as "
                                   "`pcm3 benchmark` writes) into the paper's Tables 1-4 (and 5-6 for detection and "
                                   "motion folders, with their images), with a confusion "
                                   "matrix, per-class accuracy, a t-SNE of test features (pretrained vs "
                                   "random init) and accuracy against occlusion ratio. Writes OUT (markdown), "
                                   "the HTML beside it (images inline) and OUT_images/.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="eval folders, or folders that hold them")
    p.add_argument("--out", required=True, help="markdown file, e.g. report.md")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a report written before by pcm3, unless a file of it was changed since "
                        "(the record .NAME.md.pcm3 beside OUT holds their SHA-256)")
    p.add_argument("--embedding", choices=("tsne", "pca"), default="tsne",
                   help="2-D map of test features: exact t-SNE (default) or PCA")
    p.add_argument("--max-points", type=int, default=800, help="test samples per feature map (default 800)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from pcm3.args import set_threads
    from pcm3.errors import ConfigError
    from pcm3.evaluation.report import write_report
    from pcm3.outputs import check_not_inside_pcm3_folder

    if args.max_points < 10:
        raise ConfigError(f"--max-points: must be >= 10, got {args.max_points}")
    # the markdown, the HTML and the images folder go in one folder: not one pcm3 keeps its own
    # (a prepared or eval folder, one of the inputs among them), whose --overwrite would then refuse
    check_not_inside_pcm3_folder(args.out, "--out")
    set_threads(args.threads)
    paths = write_report(args.dirs, args.out, overwrite=args.overwrite, embedding=args.embedding,
                         max_points=args.max_points)
    if paths.get("notice"):  # an older report without a record was replaced
        print(f"note: {paths['notice']}", file=sys.stderr)
    for warning in paths.get("warnings") or ():  # a damaged scores or features file, left out of a figure
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {paths['markdown']}, {paths['html']} and {paths['images']}/")
    return 0
