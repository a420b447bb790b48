"""The method: motion embeddings in a stock diffusers UNet3D, inversion from one video, and generation.

Usable on its own (no Ray): load a preset, prepare a reference, train embeddings, generate.
"""

from .embeddings import (DEBIAS_MODES, DEFAULT_PLACEMENT, QK_DESIGNS, V_DESIGNS, EmbeddingMismatchError,
                         EmbeddingSpec, MotionAttnProcessor, MotionEmbeddings, debias_mv, temporal_blocks)
from .generation import GenerationConfig, generate, initial_noise
from .inversion import (InversionConfig, Reference, TrainResult, ddim_invert, encode_frames, load_video_frames,
                        prepare_reference, train_embeddings)
from .presets import PRESETS, ModelNotFoundError, Preset, get_preset, load_pipeline

__all__ = [
    "DEBIAS_MODES", "DEFAULT_PLACEMENT", "QK_DESIGNS", "V_DESIGNS", "EmbeddingMismatchError", "EmbeddingSpec",
    "MotionAttnProcessor", "MotionEmbeddings", "debias_mv", "temporal_blocks", "GenerationConfig", "generate",
    "initial_noise", "InversionConfig", "Reference", "TrainResult", "ddim_invert", "encode_frames",
    "load_video_frames", "prepare_reference", "train_embeddings", "PRESETS", "ModelNotFoundError", "Preset",
    "get_preset", "load_pipeline",
]
