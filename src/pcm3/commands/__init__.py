"""Top-level ``pcm3`` subcommands, one module each (``add_parser(subparsers)``)."""
