"""model/presets.py: a missing model fails at once with instructions; the tiny preset loads through
from_pretrained."""

from __future__ import annotations

import json
import time

import pytest

from model import ModelNotFoundError, get_preset, load_pipeline


def test_missing_model_fails_fast_with_instructions():
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"(?s)zeroscope.*hf download cerspense/zeroscope_v2_576w.*--model"):
        load_pipeline(get_preset("zeroscope"), device="cpu")
    assert time.perf_counter() - started < 30
    with pytest.raises(ModelNotFoundError, match="local directory"):
        load_pipeline(get_preset("zeroscope", model="/nonexistent/zeroscope"), device="cpu")
    with pytest.raises(ValueError, match="unknown preset 'sd'; choose one of: zeroscope, tiny"):
        get_preset("sd")


def test_tiny_preset_loads_through_from_pretrained(tiny_pipe):
    from model.presets import tiny_model_dir

    index = json.loads((tiny_model_dir() / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoSDPipeline"
    assert set(index) >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert tiny_pipe.tokenizer("a car").input_ids[:3] == [49406, 320, 1615]  # the real CLIP BPE
