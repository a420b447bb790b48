"""The method: motion embeddings in a stock diffusers UNet3D, inversion from one video, and generation.

Usable on its own (no Ray): load a preset, prepare a reference, train embeddings, generate.
Importing `model` is cheap: torch and diffusers load with the first name used from it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DEFAULT_PLACEMENT": "config", "DEFAULT_SLOTS": "config", "PRECISIONS": "config", "GenerationConfig": "config",
    "InversionConfig": "config", "ReferenceConfig": "config",
    "EmbeddingMismatchError": "embeddings", "EmbeddingSpec": "embeddings",
    "MotionAttnProcessor": "embeddings", "MotionEmbeddings": "embeddings", "debias_mv": "embeddings",
    "temporal_blocks": "embeddings",
    "generate": "generation", "initial_noise": "generation",
    "Reference": "inversion", "TrainResult": "inversion", "TrainState": "inversion", "ddim_invert": "inversion",
    "encode_frames": "inversion", "load_video_frames": "inversion", "take_frames": "inversion", "prepare_reference": "inversion",
    "train_embeddings": "inversion",
    "ModelNotFoundError": "presets", "get_preset": "presets", "load_pipeline": "presets",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
