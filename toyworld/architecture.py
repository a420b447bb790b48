"""The toy world's models: what they are, the settings the method works at on them, and a built world's files.

Everything is made of the classes the real model uses — a diffusers `TextToVideoSDPipeline` (AutoencoderKL,
UNet3DConditionModel with ZeroScope's block types, a transformers `CLIPTextModel` with the CLIP tokenizer,
ZeroScope's DDIM scheduler) saved with `save_pretrained`, and an open_clip model saved as an
`open_clip_config.json` + safetensors folder — so the shipped weights load through the same `from_pretrained` /
open_clip paths as ZeroScope and ViT-B-32. Here: their configs, builders with fresh weights, the pipeline made of
them, and saving and loading the folders of a built world (shipped in `vocabulary.TOY_WORLD_DIR`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from vocabulary import TOY_WORLD_DIR

PIPELINE_DIR = TOY_WORLD_DIR / "pipeline"
CLIP_DIR = TOY_WORLD_DIR / "clip"
LOG_JSON = TOY_WORLD_DIR / "build_log.json"
TOY_FORMAT = 1

#: The toy CLIP as the evaluation backbone names it (ScorerConfig(clip=TOY_CLIP)).
TOY_CLIP = f"local-dir:{CLIP_DIR}"

# ---------------------------------------------------------------------------------------------- configs
UNET_CONFIG = dict(  # ZeroScope's block types (3× CrossAttnDownBlock3D + DownBlock3D, mirrored) at toy width
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64, 64), layers_per_block=1,
    norm_num_groups=8, cross_attention_dim=48, attention_head_dim=4,
)
VAE_CONFIG = dict(  # 8× downsampling: 64×64 RGB ↔ 4×8×8
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 32, 64), layers_per_block=1,
    latent_channels=4, norm_num_groups=8, sample_size=64,
)
TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, projection_dim=48, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)
SCHEDULER_CONFIG = dict(  # ZeroScope's betas, rescaled to zero terminal SNR, with v-prediction (Lin et al. 2024)
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    # Why not ZeroScope's ε-prediction: trained on the same clips, its samples' motion followed the noise, not
    # the words. At zero terminal SNR the first sampling step sees pure noise and must predict the caption's
    # mean clip, which (paths centred, `data.sample_spec`) shows the motion; ε cannot be learned where the
    # SNR is zero, v can. Measured in toyworld/NOTES.md "What made the words steer the motion".
    prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
)
CLIP_MODEL_CONFIG = dict(
    embed_dim=64,
    vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=12, head_width=32),  # a small ModifiedResNet
    text_cfg=dict(context_length=32, vocab_size=49408, width=32, heads=2, layers=2, mlp_ratio=2.0),
)
CLIP_PREPROCESS = dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], interpolation="bicubic", resize_mode="shortest")

#: Settings that work in the toy world (measured by the build / tests; see toyworld/NOTES.md "Builds 1–3").
#: The toy UNet's temporal attention is small: the embeddings need a higher learning rate than ZeroScope's 0.02.
INVERSION_DEFAULTS = dict(steps=300, lr=0.1)
#: Guidance 7.5, not ZeroScope's 12: at 12 this v-prediction model's samples stop following the motion words
#: (the build log's final table: direction 0.67 vs 0.96, motion text dependence 0.06 vs 0.81).
GENERATION_DEFAULTS = dict(steps=30, guidance=7.5, noise_prior=0.5)


# --------------------------------------------------------------------------------------------- builders
def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG, scaling_factor=1.0)


def build_unet():
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(**UNET_CONFIG)


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def build_clip():
    from open_clip.model import CLIP

    return CLIP(**copy.deepcopy(CLIP_MODEL_CONFIG))


def make_pipeline(vae, text_encoder, unet, scheduler=None, tokenizer=None):
    from diffusers import TextToVideoSDPipeline
    from diffusers.utils import logging as diffusers_logging

    from model.presets import clip_tokenizer

    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer or clip_tokenizer(),
                                     unet=unet, scheduler=scheduler or build_scheduler())
    finally:
        diffusers_logging.set_verbosity(previous)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------ a built world's files
def jsonable(x):
    """The JSON `default` of every file a build writes: numpy numbers and arrays as such, anything else as text."""
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def save_clip(model, folder: Path) -> Path:
    """An open_clip `local-dir:` folder: open_clip_config.json + open_clip_model.safetensors (fp16)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": CLIP_MODEL_CONFIG, "preprocess_cfg": CLIP_PREPROCESS}, indent=1))
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def save_pipeline(vae, text_encoder, unet, tokenizer, folder: Path, meta: dict) -> Path:
    """save_pretrained in fp16 (loading casts to the requested dtype: fp32 on CPU)."""
    import torch

    pipe = make_pipeline(copy.deepcopy(vae).to(torch.float16), copy.deepcopy(text_encoder).to(torch.float16),
                         copy.deepcopy(unet).to(torch.float16), tokenizer=tokenizer)
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / "motion_sweep_toy.json").write_text(json.dumps(meta, indent=1, default=jsonable))
    return folder


def load_built_vae_clip(world: Path):
    """The VAE and toy CLIP of a built world, in fp32, in eval mode (to keep them: `build --reuse`)."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    vae = AutoencoderKL.from_pretrained(world / "pipeline" / "vae", torch_dtype=torch.float32).eval()
    clip_model = build_clip()
    clip_model.load_state_dict({k: v.float() for k, v in
                                load_file(str(world / "clip" / "open_clip_model.safetensors")).items()})
    return vae, clip_model.eval()


def load_built_unet(world: Path):
    """The UNet + text encoder of a built world, in fp32, to continue training (`build --resume`)."""
    import torch
    from diffusers import UNet3DConditionModel
    from transformers import CLIPTextModel

    folder = world / "pipeline"
    return (UNet3DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32),
            CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32))
