"""Networks of PCM3: the sequence encoder, its heads, the prompts and the pretraining module.

``Encoder`` is what survives pretraining (``(N, C, T, V, M) -> (N, 2 * hidden)``); ``PCM3``
wraps it with the MoCo key encoder and queue, the reconstruction decoder and the prompts.
``load_release_checkpoint`` imports the authors' published weights.
"""

from pcm3.models.encoder import Encoder, EncoderConfig, flatten_frames, unflatten_frames
from pcm3.models.heads import Projector, ReconstructionDecoder
from pcm3.models.pcm3 import PCM3, LossConfig, ModelConfig, Positives
from pcm3.models.prompts import DomainPrompts, TaskPrompts
from pcm3.models.release import convert_release_state_dict, load_release_checkpoint

__all__ = [
    "Encoder", "EncoderConfig", "flatten_frames", "unflatten_frames",
    "Projector", "ReconstructionDecoder",
    "PCM3", "LossConfig", "ModelConfig", "Positives",
    "DomainPrompts", "TaskPrompts",
    "convert_release_state_dict", "load_release_checkpoint",
]
