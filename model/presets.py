"""Base text-to-video models ("presets") and how to load them.

`zeroscope` is the paper's model; `modelscope` (ZeroScope's parent) and `videocrafter2` (VideoCrafter2's UNet in
ZeroScope's pipeline, as the official code loads it) are the official code's other two. Each loads with diffusers
`from_pretrained` from a hub id at a pinned commit or from a local folder, and ships its UNet config
(model/configs/) so that its full architecture can be built with random weights (`build_unet`, `embedding_shapes`).
`tiny` is the embedded default for machines without weights: the same block types as ZeroScope at toy width, seeded
random weights, written once with `save_pretrained` and then loaded through exactly the same `from_pretrained` path
as ZeroScope. Its numbers test plumbing, not science. `toy` is the same kind of model *trained* on moving shapes
(`toyworld`); its weights ship in `model/toy_world/pipeline` and load through the same path.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from vocabulary import PRESETS, TOY_WORLD_DIR, Preset, cache_dir

from .config import DEFAULT_PLACEMENT, DEFAULT_SLOTS

TINY_FORMAT = 1  # bump when the tiny architecture changes, so stale caches are rebuilt


class ModelNotFoundError(RuntimeError):
    """The base model's weights are not where we were told to find them."""


class UnpinnedModelError(ModelNotFoundError):
    """Weights that would come from the hub without a pinned commit: refused, a local copy is asked for instead."""


#: The frame rate VideoCrafter2's UNet is conditioned on: VideoCrafter's own text-to-video script for its 512 v2
#: model (scripts/run_text2video.sh: --height 320 --width 512 --fps 28). Not the written file's frame rate.
VIDEOCRAFTER2_FPS = 28


def get_preset(name: str, model: str | os.PathLike | None = None) -> Preset:
    """Look a preset up by name; `model` points it at another copy of its weights.

    For a preset whose UNet replaces its pipeline's (`videocrafter2`), `model` is either the replacement UNet's own
    folder (a `config.json` at its top, as `hf download adamdad/videocrafterv2_diffusers --local-dir DIR` writes it;
    the rest of the pipeline stays ZeroScope's pinned hub commit) or a whole pipeline folder (`model_index.json`)
    whose `unet/` is the replacement (a fully local copy).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if name == "tiny" and model is None:
        model = tiny_model_dir()
    if name == "toy" and model is None:
        model = toy_model_dir()
    if preset.unet is not None and model is not None:
        return _point_at(preset, model)
    return preset.with_model(model)


def _point_at(preset: Preset, model: str | os.PathLike) -> Preset:
    """A replaced-UNet preset pointed at a local folder: a UNet folder, or a pipeline folder holding it as unet/."""
    folder = Path(model).expanduser()
    if (folder / "config.json").is_file() and not (folder / "model_index.json").is_file():
        return replace(preset, unet=str(folder), unet_revision=None)
    return replace(preset.with_model(str(folder)), unet=str(folder / "unet"), unet_revision=None)


def _resolved(preset: Preset) -> Preset:
    """`PRESETS[name].with_model(dir)` (not through get_preset) of a replaced-UNet preset: the same as get_preset's."""
    base = PRESETS.get(preset.name)
    if base is not None and base.unet is not None and preset.unet == base.unet and preset.model != base.model:
        return _point_at(base, preset.model)
    return preset


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists() or source.startswith(("/", ".", "~")) or source.count("/") != 1


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_pipeline(preset: Preset | str, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None):
    """Load the preset's `TextToVideoSDPipeline` with diffusers `from_pretrained` (hub id or local dir).

    CUDA defaults to fp16 (ZeroScope's published weights are fp16), CPU to fp32. A preset with a replacement UNet
    (`videocrafter2`) loads the pipeline without its own UNet, then the replacement with
    `UNet3DConditionModel.from_pretrained` and its frame-rate conditioning (`FpsConditioning`); a replacement that
    would come from the hub without a pinned commit is refused (`UnpinnedModelError`) before anything loads.
    """
    from diffusers import TextToVideoSDPipeline
    from diffusers.utils import logging as diffusers_logging

    preset = _resolved(get_preset(preset) if isinstance(preset, str) else preset)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    if preset.unet is not None and preset.unet_revision is None and not _is_local(preset.unet):
        raise UnpinnedModelError(_unpinned_message(preset))
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
        # a hub id loads the pinned commit; a local folder (revision None) is what it is. A replaced UNet is not
        # loaded twice: the pipeline comes without its own (unet=None), the replacement is registered after.
        replaced = {"unet": None} if preset.unet is not None else {}
        try:
            pipe = TextToVideoSDPipeline.from_pretrained(preset.model, dtype=dtype, revision=preset.revision,
                                                         **replaced)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ModelNotFoundError(_missing_model_message(preset, exc)) from None
        if preset.unet is not None:
            pipe.register_modules(unet=load_replacement_unet(preset, dtype))
    finally:
        diffusers_logging.set_verbosity(previous)
    return prepare_pipeline(pipe).to(device)


def prepare_pipeline(pipe):
    """What every pipeline this project runs is set to: frozen weights, no progress bars, and the VAE decoding one
    frame at a time (`enable_slicing`): the stock pipeline decodes a batch's clips × frames in one call, which at
    the paper's 24 × 320 × 576 peaks at about 6.3 GiB per clip in fp16 (25 GiB for a batch of 4) and made the decode,
    not the UNet, a trial's largest allocation; frame by frame it is about 0.3 GiB, with the same arithmetic."""
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.enable_slicing()
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    return pipe


def load_replacement_unet(preset: Preset, dtype: torch.dtype = torch.float32):
    """The preset's replacement UNet (`preset.unet`, a local folder or a hub id at `preset.unet_revision`) with
    `UNet3DConditionModel.from_pretrained`, plus VideoCrafter2's frame-rate conditioning read from the same
    checkpoint's `fps_embedding.*` weights and installed as `unet.time_embedding.post_act` (`FpsConditioning`)."""
    from diffusers import UNet3DConditionModel

    preset = _resolved(preset)
    if preset.unet is None:
        raise ValueError(f"preset {preset.name!r} has no replacement UNet")
    if preset.unet_revision is None and not _is_local(preset.unet):
        raise UnpinnedModelError(_unpinned_message(preset))
    try:
        with _quiet_fps_notices():
            unet = UNet3DConditionModel.from_pretrained(preset.unet, revision=preset.unet_revision, dtype=dtype)
        fps_state = fps_weights(_model_folder(preset.unet, preset.unet_revision))
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelNotFoundError(_missing_unet_message(preset, exc)) from None
    if not fps_state:
        raise ModelNotFoundError(
            f"the UNet at {preset.unet!r} has no fps_embedding.* weights, so it is not VideoCrafter2's (the diffusers "
            f"conversion {PRESETS[preset.name].unet} carries its frame-rate embedding beside the UNet's weights). "
            + _unet_instructions(preset))
    install_fps_conditioning(unet, fps_state)
    return unet.requires_grad_(False)


class _QuietFpsNotices(logging.Filter):
    """Drops diffusers' two notices about the frame-rate conditioning that `load_replacement_unet` does itself:
    the config's `fps_cond` "not expected" and the checkpoint's fps_embedding.* weights "not used"."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("fps_cond" in message and "not expected" in message
                    or "fps_embedding." in message and "were not used" in message)


@contextlib.contextmanager
def _quiet_fps_notices():
    quiet = _QuietFpsNotices()
    loggers = [logging.getLogger(name) for name in ("diffusers.configuration_utils", "diffusers.models.modeling_utils")]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def _model_folder(source: str, revision: str | None) -> Path:
    """The folder holding a model's files: the local folder, or the hub snapshot from_pretrained just fetched."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source, revision=revision, local_files_only=True))


def fps_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The `fps_embedding.*` tensors of the checkpoint in `folder` (keys without the prefix; {} if none):
    safetensors files first (headers only are read, then the few tensors), else a PyTorch .bin."""
    folder = Path(folder)
    prefix = "fps_embedding."
    preferred = folder / "diffusion_pytorch_model.safetensors"
    files = [preferred] if preferred.is_file() else []
    files += [f for f in sorted(folder.glob("*.safetensors")) if f != preferred]
    from safetensors import safe_open

    for file in files:
        with safe_open(str(file), framework="pt") as f:
            found = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
        if found:
            return found
    for file in sorted(folder.glob("*.bin")):
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return found
    return {}


# --------------------------------------------------------------------------------------------------
# VideoCrafter2's frame-rate conditioning, done diffusers' way: the stock UNet3DConditionModel, plus a module run by
# its time embedding's `post_act` hook that adds fps_embedding(fps_proj(fps)) to the timestep embedding (as
# VideoCrafter adds its fps embedding to the time embedding). No UNet code is forked.

class FpsConditioning(nn.Module):
    """Adds the embedding of a frame rate to the UNet's timestep embedding; install with `install_fps_conditioning`.

    `fps_proj` (sinusoidal, cos first, no shift: VideoCrafter's timestep_embedding) and `fps_embedding`
    (linear-act-linear to the time-embedding width) match the diffusers conversion's `fps_proj`/`fps_embedding`.
    `fps` is the conditioning value, a plain attribute: set it to generate at another frame rate.
    """

    def __init__(self, channels: int, time_embed_dim: int, act_fn: str = "silu", fps: float = VIDEOCRAFTER2_FPS):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.fps_proj = Timesteps(channels, True, 0)
        self.fps_embedding = TimestepEmbedding(channels, time_embed_dim, act_fn=act_fn)
        self.fps = fps

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        fps = torch.full((1,), float(self.fps), device=sample.device)
        weight = self.fps_embedding.linear_1.weight
        return sample + self.fps_embedding(self.fps_proj(fps).to(weight.dtype)).to(sample.dtype)

    def extra_repr(self) -> str:
        return f"fps={self.fps:g}"


def install_fps_conditioning(unet: nn.Module, state: dict[str, torch.Tensor] | None = None,
                             fps: float = VIDEOCRAFTER2_FPS) -> FpsConditioning:
    """Give a UNet3DConditionModel VideoCrafter2's frame-rate conditioning (as `unet.time_embedding.post_act`),
    with `state` (the checkpoint's fps_embedding.* tensors, prefix stripped) or fresh random weights; frozen, on the
    UNet's device and dtype."""
    reference = unet.time_embedding.linear_1.weight
    with torch.device(reference.device):
        module = FpsConditioning(unet.config.block_out_channels[0], unet.time_embedding.linear_2.out_features,
                                 act_fn=unet.config.act_fn, fps=fps)
    if state is not None:
        module.fps_embedding.load_state_dict(state)
    module = module.to(reference.dtype).requires_grad_(False)
    unet.time_embedding.post_act = module
    return module


def fps_conditioning(unet: nn.Module) -> FpsConditioning | None:
    """The UNet's frame-rate conditioning, or None (a UNet without one)."""
    module = getattr(getattr(unet, "time_embedding", None), "post_act", None)
    return module if isinstance(module, FpsConditioning) else None


def _missing_model_message(preset: Preset, exc: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = "local directory" if _is_local(preset.model) else "hub id"
    lines = [
        f"cannot load the base model of preset {preset.name!r} from {where} {preset.model!r}: "
        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"]
    if PRESETS[preset.name].unet is not None:  # its --model is the replacement UNet or a pipeline holding it
        lines.append("To provide it: " + _fully_local_instructions(preset))
    else:
        source = PRESETS[preset.name]
        pin = f" --revision {source.revision}" if source.revision else ""
        lines.append(
            f"To provide it: on a machine with hub access run `hf download {source.model or '<repo>'}{pin} "
            "--local-dir /path/to/model`, copy the folder where this machine (or every cluster worker) can read it, "
            "and pass it with --model /path/to/model (spec: `model: /path/to/model`).")
    if offline:
        lines.append("HF_HUB_OFFLINE=1 is set, so nothing is downloaded; unset it to let diffusers fetch the model.")
    return "\n".join(lines)


def _unpinned_message(preset: Preset) -> str:
    base = PRESETS[preset.name]
    return (f"preset {preset.name!r} replaces its pipeline's UNet with the hub repo {preset.unet!r}, whose commit "
            "could not be pinned, so it is not downloaded (an upload to that repo would silently change every "
            "sweep). " + _unet_instructions(preset) + " Or " + _fully_local_instructions(base))


def _unet_instructions(preset: Preset) -> str:
    base = PRESETS[preset.name]
    return (f"Download it once on a machine with hub access, `hf download {base.unet} --local-dir "
            "/models/videocrafter2-unet`, and pass that folder with --model /models/videocrafter2-unet (spec: "
            f"`model: /models/videocrafter2-unet`); the rest of the pipeline is then {base.model} at commit "
            f"{base.revision}.")


def _fully_local_instructions(preset: Preset) -> str:
    base = PRESETS[preset.name]
    return (f"a fully local copy: on a machine with hub access run `hf download {base.model} --revision "
            f"{base.revision} --local-dir DIR --exclude 'unet/*'`, then `hf download {base.unet} --local-dir "
            "DIR/unet`, copy DIR where this machine (or every cluster worker) can read it, and pass --model DIR "
            "(spec: `model: DIR`).")


def _missing_unet_message(preset: Preset, exc: Exception) -> str:
    where = "local directory" if _is_local(preset.unet) else "hub id"
    return (f"cannot load the UNet of preset {preset.name!r} from {where} {preset.unet!r}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}\n" + _unet_instructions(preset))


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
    """The preset's UNet config (the shipped copy of its hub config; no download). `fps_cond: true` marks
    VideoCrafter2's frame-rate conditioning (the diffusers conversion's config flag)."""
    name = preset if isinstance(preset, str) else preset.name
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    if name == "tiny":
        return dict(TINY_UNET_CONFIG)
    path = TOY_WORLD_DIR / "pipeline" / "unet" / "config.json" if name == "toy" else CONFIG_DIR / f"{name}.unet.json"
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def build_unet(preset: Preset | str, *, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32,
               seed: int = 0):
    """The preset's full UNet built from its shipped config (with VideoCrafter2's frame-rate conditioning where the
    config says `fps_cond`): random weights (seeded, diffusers' own init) on a real device, no storage at all on
    "meta" (shapes, parameter counts, FLOP counting). Frozen."""
    from diffusers import UNet3DConditionModel

    config = unet_config(preset)
    fps_cond = bool(config.pop("fps_cond", False))
    # Keys UNet3DConditionModel does not take are dropped, not passed on to be warned about: ModelScope's config
    # (hence ZeroScope's) still carries center_input_sample/flip_sin_to_cos/freq_shift from the 2D UNet, whose
    # values (False/True/0) are what UNet3DConditionModel hard-codes.
    accepted = inspect.signature(UNet3DConditionModel.__init__).parameters
    config = {k: v for k, v in config.items() if k in accepted}
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet3DConditionModel(**config)
        if fps_cond:
            install_fps_conditioning(unet)
    # nn.Module.to, not ModelMixin.to: diffusers' `to(dtype)` warns about "modules kept in float32" even for a
    # model that has none (UNet3DConditionModel).
    return nn.Module.to(unet, dtype).requires_grad_(False)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------
# The motion embeddings' sizes per preset and setting, without weights (the planner, the cost model, checks): the
# preset's architecture on "meta" and the embeddings' own code (`temporal_blocks`, `MotionEmbeddings`).

#: Pixels per latent cell of every preset's VAE (Stable Diffusion's AutoencoderKL: 4 blocks, 3 downsamplings).
VAE_FACTOR = 8


def latent_size(preset: Preset | str, height: int | None = None, width: int | None = None) -> tuple[int, int]:
    """The latent grid (h, w) of `height`×`width` pixels (default: the preset's size)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    height, width = height or preset.height, width or preset.width
    if height % VAE_FACTOR or width % VAE_FACTOR:
        raise ValueError(f"{height}x{width} is not a multiple of the VAE's factor {VAE_FACTOR}")
    return height // VAE_FACTOR, width // VAE_FACTOR


@dataclass(frozen=True)
class EmbeddingShapes:
    """The motion embeddings of one preset and setting: what `MotionEmbeddings.create` would build."""

    latent: tuple[int, int]  #: latent grid (h, w) at the training size
    blocks: dict[str, tuple[int, int]]  #: temporal block -> (channels, spatial tokens H·W at its level)
    tensors: dict[str, tuple[int, ...]]  #: embedding tensor (as saved: "<block>.qk", "<block>.attnN.v") -> shape

    @property
    def parameters(self) -> int:
        """Trainable scalars."""
        return sum(int(torch.Size(shape).numel()) for shape in self.tensors.values())

    @property
    def tokens(self) -> dict[str, int]:
        """Spatial tokens (H·W) per temporal block: the positions of a 2D embedding there."""
        return {name: positions for name, (_, positions) in self.blocks.items()}


@functools.lru_cache(maxsize=None)
def _architecture(name: str) -> nn.Module:
    """The preset's UNet on meta, built once per process (read only: shapes)."""
    return build_unet(name, device="meta")


def embedding_shapes(preset: Preset | str, height: int | None = None, width: int | None = None, *, qk: str = "1d",
                     v: str = "2d", placement: tuple[str, ...] = DEFAULT_PLACEMENT, slots: int = DEFAULT_SLOTS,
                     frames: int | None = None) -> EmbeddingShapes:
    """The motion embeddings' blocks, token counts, tensor shapes and parameter count for a preset at
    `height`×`width` pixels (default: the preset's size), without building anything but the architecture on meta.

    `frames` (default: the preset's) must fit in `slots`, the frame slots each embedding reserves.
    E.g. zeroscope at 320x576: latent 40x72, 10x18 = 180 tokens at down_blocks.2/up_blocks.1, 73,932,800 scalars.
    """
    from .embeddings import EmbeddingSpec, MotionEmbeddings, temporal_blocks

    preset = get_preset(preset) if isinstance(preset, str) else preset
    frames = frames or preset.num_frames
    if frames > slots:
        raise ValueError(f"{frames} frames do not fit in {slots} embedding slots; raise slots")
    h, w = latent_size(preset, height, width)
    spec = EmbeddingSpec(qk, v, tuple(placement), slots, h, w, preset.name)
    blocks = temporal_blocks(_architecture(preset.name), spec.placement, h, w)
    with torch.device("meta"):
        embeddings = MotionEmbeddings(spec, blocks)
    return EmbeddingShapes((h, w), dict(blocks),
                           {name: tuple(t.shape) for name, t in embeddings._named_tensors()})


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
