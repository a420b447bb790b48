"""model/presets.py: a missing model fails at once with instructions; the tiny preset loads through
from_pretrained; VideoCrafter2's UNet (with its frame-rate conditioning) loads from a local folder, never unpinned
from the hub."""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from model import ModelNotFoundError, get_preset, load_pipeline
from vocabulary import PRESETS


def test_missing_model_fails_fast_with_instructions():
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"(?s)zeroscope.*hf download cerspense/zeroscope_v2_576w.*--model"):
        load_pipeline(get_preset("zeroscope"), device="cpu")
    with pytest.raises(ModelNotFoundError, match=r"(?s)hf download damo-vilab/text-to-video-ms-1.7b "
                                                 r"--revision 338683c3175cde59b407a699af8fe68f4a2b8f74 .*--model"):
        load_pipeline(get_preset("modelscope"), device="cpu")
    assert time.perf_counter() - started < 30
    with pytest.raises(ModelNotFoundError, match="local directory"):
        load_pipeline(get_preset("zeroscope", model="/nonexistent/zeroscope"), device="cpu")
    with pytest.raises(ValueError, match="unknown preset 'sd'; choose one of: zeroscope, modelscope, videocrafter2, "
                                         "tiny, toy"):
        get_preset("sd")


def test_tiny_preset_loads_through_from_pretrained(tiny_pipe):
    from model.presets import tiny_model_dir

    index = json.loads((tiny_model_dir() / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoSDPipeline"
    assert set(index) >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert tiny_pipe.tokenizer("a car").input_ids[:3] == [49406, 320, 1615]  # the real CLIP BPE


def test_videocrafter2_is_never_loaded_unpinned_from_the_hub():
    """No commit of adamdad/videocrafterv2_diffusers is pinned: refused before anything loads, saying what to do."""
    from model.presets import UnpinnedModelError

    started = time.perf_counter()
    with pytest.raises(UnpinnedModelError, match=r"(?s)adamdad/videocrafterv2_diffusers.*could not be pinned.*"
                                                 r"hf download adamdad/videocrafterv2_diffusers --local-dir .*--model"):
        load_pipeline(get_preset("videocrafter2"), device="cpu")
    assert time.perf_counter() - started < 2


def test_videocrafter2_pointed_at_a_unet_folder_or_a_pipeline_folder(tmp_path):
    """A UNet folder (config.json on top) replaces the UNet only, the rest stays ZeroScope's pinned commit; any other
    folder is a whole pipeline whose unet/ is VideoCrafter2's. Missing pieces fail fast with the download commands."""
    unet_only = tmp_path / "vc2-unet"
    unet_only.mkdir()
    (unet_only / "config.json").write_text("{}")
    preset = get_preset("videocrafter2", model=unet_only)
    zeroscope = PRESETS["zeroscope"]
    assert (preset.model, preset.revision, preset.unet) == (zeroscope.model, zeroscope.revision, str(unet_only))
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"(?s)hf download cerspense/zeroscope_v2_576w --revision "
                                                 f"{zeroscope.revision}.*--local-dir DIR --exclude 'unet/\\*'"):
        load_pipeline(preset, device="cpu")  # offline: ZeroScope's pipeline is not in the cache

    whole = get_preset("videocrafter2", model="/nonexistent/vc2")
    assert (whole.model, whole.revision, whole.unet) == ("/nonexistent/vc2", None, "/nonexistent/vc2/unet")
    with pytest.raises(ModelNotFoundError, match=r"(?s)local directory '/nonexistent/vc2'.*"
                                                 r"hf download adamdad/videocrafterv2_diffusers --local-dir DIR/unet"):
        load_pipeline(whole, device="cpu")
    # a preset re-pointed without get_preset resolves the same way
    with pytest.raises(ModelNotFoundError, match="local directory '/nonexistent/vc2'"):
        load_pipeline(PRESETS["videocrafter2"].with_model("/nonexistent/vc2"), device="cpu")
    assert time.perf_counter() - started < 10


def _videocrafter_folder(tmp_path, tiny_pipe, fps_weights=True):
    """The tiny pipeline saved as a videocrafter2 pipeline folder: its unet/ replaced by a (tiny) UNet written the way
    the diffusers conversion is: save_pretrained, `fps_cond: true` in its config, fps_embedding.* beside its weights."""
    from diffusers import UNet3DConditionModel
    from safetensors.torch import load_file, save_file

    from model.presets import TINY_UNET_CONFIG, FpsConditioning, tiny_model_dir

    folder = tmp_path / "vc2"
    shutil.copytree(tiny_model_dir(), folder, ignore=shutil.ignore_patterns("unet"))
    torch.manual_seed(7)
    unet = UNet3DConditionModel(**TINY_UNET_CONFIG)
    with torch.no_grad():  # no zero-initialised layers: every path of the UNet matters
        for p in unet.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.02)
    unet.save_pretrained(folder / "unet")
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "fps_cond": True}))
    fps = FpsConditioning(unet.config.block_out_channels[0], unet.time_embedding.linear_2.out_features)
    with torch.no_grad():
        for p in fps.parameters():
            p.normal_(0, 0.5)
    if fps_weights:
        weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
        state = load_file(weights)
        state.update({f"fps_embedding.{k}": v for k, v in fps.fps_embedding.state_dict().items()})
        save_file(state, weights, metadata={"format": "pt"})
    return folder, unet, fps


def test_videocrafter2_loads_from_a_local_pipeline_folder_with_its_fps_conditioning(tmp_path, tiny_pipe, capfd):
    from model.presets import VIDEOCRAFTER2_FPS, fps_conditioning

    folder, unet, fps = _videocrafter_folder(tmp_path, tiny_pipe)
    capfd.readouterr()
    pipe = load_pipeline(get_preset("videocrafter2", model=folder), device="cpu")
    err = capfd.readouterr().err
    assert "fps_cond" not in err and "fps_embedding" not in err  # the notices about what we handle ourselves
    conditioning = fps_conditioning(pipe.unet)
    assert conditioning is not None and conditioning.fps == VIDEOCRAFTER2_FPS
    for name, p in fps.fps_embedding.state_dict().items():
        torch.testing.assert_close(conditioning.fps_embedding.state_dict()[name], p)
    torch.testing.assert_close(pipe.unet.conv_in.weight, unet.conv_in.weight)  # the replacement, not the tiny UNet
    assert pipe.config.unet[1] == "UNet3DConditionModel"
    assert not any(p.requires_grad for p in pipe.unet.parameters())

    g = torch.Generator().manual_seed(0)  # 2 frames of a 4x4 latent: the conditioning is all this checks
    x, t, context = torch.randn(1, 4, 2, 4, 4, generator=g), torch.tensor([500]), torch.randn(1, 77, 32, generator=g)

    def noise_prediction(fps_value):
        conditioning.fps = fps_value
        with torch.no_grad():
            return pipe.unet(x, t, encoder_hidden_states=context).sample

    at_28, at_8 = noise_prediction(28), noise_prediction(8)
    assert not torch.allclose(at_28, at_8, atol=1e-5)  # the frame rate conditions the UNet
    pipe.unet.time_embedding.post_act = None  # without the conditioning: another output again
    with torch.no_grad():
        assert not torch.allclose(pipe.unet(x, t, encoder_hidden_states=context).sample, at_28, atol=1e-5)


def test_a_unet_without_fps_weights_is_not_videocrafter2(tmp_path, tiny_pipe):
    folder, _, _ = _videocrafter_folder(tmp_path, tiny_pipe, fps_weights=False)
    with pytest.raises(ModelNotFoundError, match=r"(?s)no fps_embedding\.\* weights.*not VideoCrafter2's.*"
                                                 r"hf download adamdad/videocrafterv2_diffusers"):
        load_pipeline(get_preset("videocrafter2", model=folder), device="cpu")
