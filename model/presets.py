"""Base text-to-video models ("presets") and how to load them.

`zeroscope` is the paper's model. `tiny` is the embedded default for machines without weights: the same
block types as ZeroScope at toy width, seeded random weights, written once with `save_pretrained` and then
loaded through exactly the same `from_pretrained` path as ZeroScope. Its numbers test plumbing, not science.
`toy` is the same kind of model *trained* on moving shapes (`toyworld`); its weights ship in
`model/toy_world/pipeline` and load through the same path.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from vocabulary import PRESETS, TOY_WORLD_DIR, Preset, cache_dir

TINY_FORMAT = 1  # bump when the tiny architecture changes, so stale caches are rebuilt


class ModelNotFoundError(RuntimeError):
    """The base model's weights are not where we were told to find them."""


def get_preset(name: str, model: str | os.PathLike | None = None) -> Preset:
    """Look a preset up by name; `model` points it at another copy of its weights."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if name == "tiny" and model is None:
        model = tiny_model_dir()
    if name == "toy" and model is None:
        model = toy_model_dir()
    return preset.with_model(model)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pipeline(preset: Preset | str, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None):
    """Load the preset's `TextToVideoSDPipeline` with diffusers `from_pretrained` (hub id or local dir).

    CUDA defaults to fp16 (ZeroScope's published weights are fp16), CPU to fp32.
    """
    from diffusers import TextToVideoSDPipeline
    from diffusers.utils import logging as diffusers_logging

    preset = get_preset(preset) if isinstance(preset, str) else preset
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    if preset.name == "tiny" and preset.model == str(tiny_model_dir()):
        build_tiny_model(Path(preset.model))
    if preset.name == "toy" and not (Path(preset.model) / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"the toy preset's weights are missing: no diffusers pipeline (model_index.json) in {preset.model}. "
            "They ship with the repository under model/toy_world/; rebuild them with `python -m toyworld build` "
            "(about 90 min on 2 CPU cores), or use --preset tiny for plumbing tests.")
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()  # per-component loading bars drown the real progress output
    transformers_logging.disable_progress_bar()
    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # TextToVideoSDPipeline's deprecation banner on every load
    try:
        # a hub id loads the pinned commit; a local folder (revision None) is what it is
        pipe = TextToVideoSDPipeline.from_pretrained(preset.model, dtype=dtype, revision=preset.revision)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelNotFoundError(_missing_model_message(preset, exc)) from None
    finally:
        diffusers_logging.set_verbosity(previous)
    pipe.set_progress_bar_config(disable=True)
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    return pipe.to(device)


def _missing_model_message(preset: Preset, exc: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    looks_local = Path(preset.model).exists() or preset.model.startswith(("/", ".", "~")) \
        or preset.model.count("/") != 1
    where = "local directory" if looks_local else "hub id"
    lines = [
        f"cannot load the base model of preset {preset.name!r} from {where} {preset.model!r}: "
        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        "To provide it: on a machine with hub access run "
        f"`hf download {PRESETS[preset.name].model or '<repo>'}"
        + (f" --revision {PRESETS[preset.name].revision}" if PRESETS[preset.name].revision else "")
        + " --local-dir /path/to/model`, copy the folder "
        "where this machine (or every cluster worker) can read it, and pass it with --model /path/to/model "
        "(spec: `model: /path/to/model`).",
    ]
    if offline:
        lines.append("HF_HUB_OFFLINE=1 is set, so nothing is downloaded; unset it to let diffusers fetch the model.")
    return "\n".join(lines)


def toy_model_dir() -> Path:
    """Where the toy preset's trained pipeline ships (package data, written by `python -m toyworld build`)."""
    return TOY_WORLD_DIR / "pipeline"


# --------------------------------------------------------------------------------------------------
# Architectures without the hub: each preset's UNet config ships in the repository (model/configs/), so the full
# model can be built with random weights (tests, the cost model, benchmarks/gpu_check.py).

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TINY_UNET_CONFIG = dict(  # ZeroScope's block types at toy width
    sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=8,
    cross_attention_dim=32, attention_head_dim=4,
)


def unet_config(preset: Preset | str) -> dict:
    """The preset's UNet3DConditionModel config (the shipped copy of its hub config; no download)."""
    name = preset if isinstance(preset, str) else preset.name
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    if name == "tiny":
        return dict(TINY_UNET_CONFIG)
    path = TOY_WORLD_DIR / "pipeline" / "unet" / "config.json" if name == "toy" else CONFIG_DIR / f"{name}.unet.json"
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def build_unet(preset: Preset | str, *, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32,
               seed: int = 0):
    """The preset's full UNet built from its shipped config: random weights (seeded) on a real device, no storage
    at all on "meta" (shapes, parameter counts, FLOP counting)."""
    from diffusers import UNet3DConditionModel

    config = unet_config(preset)
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet3DConditionModel.from_config(config)
    return unet.to(dtype).requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# The tiny preset: built from configs with seeded random weights, saved once, loaded like ZeroScope.

def tiny_model_dir() -> Path:
    return cache_dir() / f"tiny-v{TINY_FORMAT}"


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the tiny pipeline to `path` unless it is already there (atomic: built aside, then renamed)."""
    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet3DConditionModel(**TINY_UNET_CONFIG)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
        sample_size=64, scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    # Stock init zeroes some output layers (temporal convs); give every path random weights so the
    # motion embeddings measurably change the output.
    with torch.no_grad():
        for module in (unet, vae):
            for p in module.parameters():
                if p.dim() > 1 and not p.any():
                    p.normal_(0, 0.02)
    scheduler = DDIMScheduler(  # ZeroScope's scheduler config
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        tokenizer = clip_tokenizer()
        previous = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                         scheduler=scheduler)
        finally:
            diffusers_logging.set_verbosity(previous)
        pipe.save_pretrained(tmp)
        (tmp / "motion_sweep_tiny.json").write_text(json.dumps({"format": TINY_FORMAT, "seed": seed}))
        try:
            os.replace(tmp, path)
        except OSError:  # another process won the race; its copy is identical
            if not (path / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.getLogger(__name__).info("built the tiny preset at %s", path)
    return path


def clip_tokenizer():
    """A transformers CLIPTokenizer from the CLIP BPE vocabulary that open_clip ships (works offline)."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    specials = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {specials.get(tok, tok): idx for tok, idx in bpe.encoder.items()}
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
