"""Heads on top of the encoder: the contrastive projector and the reconstruction decoder."""

from __future__ import annotations

from torch import Tensor, nn

from pcm3.models.encoder import unflatten_frames


class Projector(nn.Module):
    """MoCo v2 projection head ``h(.)``: Linear(D, D) - ReLU - Linear(D, out_dim).

    The first layer is Xavier-uniform initialised (method doc, section 2; the release's code
    in fact applies Xavier to the last layer, which existed before its MLP was built).

    Shape:
        - feat: ``(N, D)`` -> ``(N, out_dim)`` (not normalised).
    """

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))
        nn.init.xavier_uniform_(self.net[0].weight)

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat)


class ReconstructionDecoder(nn.Module):
    """``dec(.)`` of the masked branch: one output frame per input frame.

    Per frame Linear(D, hidden) - BatchNorm - ReLU - Linear(hidden, hidden), then a
    ``layers``-layer GRU(hidden) over time and Linear(hidden, F); the frames are reshaped back
    to skeletons with the inverse of the encoder's flattening.

    Args:
        feature_dim: D, the encoder's per-frame output size.
        channels, joints, persons: C, V, M of the reconstructed skeleton (F = V * C * M).
        hidden: decoder width (512).
        layers: decoder GRU layers (2).

    Shape:
        - seq: ``(N, T, D)`` -> ``(N, C, T, V, M)``.
    """

    def __init__(self, feature_dim: int, channels: int, joints: int, persons: int,
                 hidden: int = 512, layers: int = 2):
        super().__init__()
        self.shape = (channels, joints, persons)
        self.frame_mlp = nn.Sequential(nn.Linear(feature_dim, hidden), nn.BatchNorm1d(hidden),
                                       nn.ReLU(inplace=True), nn.Linear(hidden, hidden))
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, channels * joints * persons)

    def forward(self, seq: Tensor) -> Tensor:
        n, t, d = seq.shape
        h = self.frame_mlp(seq.reshape(n * t, d)).reshape(n, t, -1)  # N x T x hidden, BN over N*T frames
        h, _ = self.gru(h)  # N x T x hidden
        return unflatten_frames(self.head(h), *self.shape)  # N x C x T x V x M
