"""What the study tools share: they run on validation benchmarks only (the test split is never read)."""

from __future__ import annotations


def require_validation(parser, benchmark: str) -> None:
    """``parser.error`` unless ``benchmark`` is ``<benchmark>-val`` or ``<benchmark>-val<K>``."""
    from pcm3.data.prepared import parse_validation_benchmark

    if parse_validation_benchmark(benchmark) is None:
        parser.error(f"--benchmark {benchmark}: validation benchmarks only (<benchmark>-val or <benchmark>-val<K>)")


def validation_parts(data: str, benchmark: str):
    """The ``(train, test)`` :class:`~pcm3.data.dataset.SkeletonDataset` pair of a validation benchmark."""
    from pcm3.data.dataset import SkeletonDataset

    return SkeletonDataset(data, benchmark, "train"), SkeletonDataset(data, benchmark, "test")
