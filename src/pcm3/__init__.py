"""PCM3: Prompted Contrast with Masked Motion Modeling (ACM MM 2023).

Self-supervised pretraining of 3D skeleton sequence encoders and the downstream
benchmark around it. See the README for the command-line interface.
"""

__version__ = "0.1.0"

from pcm3.errors import ConfigError, DataError, Pcm3Error  # noqa: E402,F401


def load_encoder(path, map_location="cpu"):
    """Load an exported encoder (``pcm3 export``) as a module ``(N, C, T, V, M) -> (N, D)``."""
    from pcm3.export import load_encoder as _load

    return _load(path, map_location=map_location)
