"""Data: readers per dataset format, the prepared on-disk format, datasets, synthetic data."""

from pcm3.data.prepared import Prepared, PreparedWriter  # noqa: F401
