"""``pcm3 visualize``: an animated skeleton of a sample, a reconstruction, or detections (GIF)."""

from __future__ import annotations

from pcm3.args import seed_arg


def add_parser(sub) -> None:
    p = sub.add_parser(
        "visualize", help="animate a sample (GIF): skeleton, masked reconstruction, or detections",
        description="Draw one sample of a prepared folder as an animated GIF: the layout's bones, person 1 "
                    "blue, person 2 orange. --checkpoint RUN shows the run's masked input, reconstruction and "
                    "the original side by side; --detections FILE (detections.csv of `pcm3 eval detection`) "
                    "shows the true and detected intervals of an untrimmed video under it.")
    p.add_argument("data", metavar="DIR", help="prepared data folder")
    p.add_argument("--sample", required=True, metavar="NAME|INDEX", help="sample name (samples.csv) or index")
    p.add_argument("--out", required=True, help="output GIF file")
    p.add_argument("--checkpoint", metavar="RUN", help="PCM3 run folder (or checkpoint file): show its reconstruction")
    p.add_argument("--detections", metavar="FILE", help="detections.csv to overlay on an untrimmed video")
    p.add_argument("--fps", type=float, default=None, help="frames per second of the GIF (default 15; 10 with --checkpoint)")
    p.add_argument("--max-frames", type=int, default=300,
                   help="thin long samples evenly to at most this many frames (default 300; 0: all)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the mask drawn with --checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a GIF written before by pcm3 visualize (its record .NAME.gif.pcm3 beside it "
                        "proves it; any other file is never replaced)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pcm3.errors import ConfigError
    from pcm3.visualize import visualize

    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps: must be > 0, got {args.fps}")
    if args.max_frames < 0:
        raise ConfigError(f"--max-frames: must be >= 0, got {args.max_frames}")
    out = visualize(args.data, args.sample, args.out, checkpoint=args.checkpoint, detections=args.detections,
                    fps=args.fps, max_frames=args.max_frames, seed=args.seed,
                    overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0
