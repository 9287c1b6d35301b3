"""``tools/probe_features.py``: the per-layer read-outs are the encoder's own layers."""

import pytest
import torch

from pcm3.models.encoder import Encoder, EncoderConfig


@pytest.fixture(scope="module")
def probe_features(repo_script):
    return repo_script("tools", "probe_features")


@pytest.mark.parametrize("variant,center", [("bigru", True), ("stepwise", False)])
def test_top_layer_equals_the_encoders_output(probe_features, variant, center):
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(num_joints=4, num_persons=1, hidden=8, layers=2, variant=variant, pool="mean",
                                center_time=center, mean_pose_weight=0.3 if center else 0.0))
    x = torch.randn(8, 3, 10, 4, 1)
    enc.train()
    enc(x)  # running statistics away from their initial values
    enc.eval()
    with torch.no_grad():
        layers = probe_features.layer_outputs(enc, x)
        _, top = enc(x, return_sequence=True)
    assert len(layers) == 2 and layers[0].shape == (8, 10, 16)
    torch.testing.assert_close(layers[-1], top, rtol=1e-5, atol=1e-6)
