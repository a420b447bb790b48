"""A trial's GPU memory and time before launch: a cost model per preset and setting.

Two halves:

* **Prediction** (`predict_step`, `predict_trial`; pure Python, no torch: the planner imports it). A small linear
  model per preset × stage × precision class in terms chosen from the architecture — with P = h·w latent positions
  (h = H/8, w = W/8) and F frames: a constant, F·P (convolutions, linears, activations), F·P² (spatial attention,
  (H·W)² per frame) and P·F² (temporal attention, F² per position) — plus analytic resident memory (weights at the
  precision, the motion embeddings and their AdamW moments, a CUDA context). Coefficients, validation errors and
  the assumed achieved fraction of peak throughput ship in `model/configs/cost_model.json`, written by
  `benchmarks/fit_cost_model.py` (CI never refits).
* **Measurement** (`measure_step`, `measure_vae_decode`; torch imported lazily). The real architecture at full
  width with random weights, one real inversion step (the UNet with `MotionEmbeddings` attached, optionally
  `model.inversion._checkpoint_blocks`, `model.inversion.inversion_loss`, backward into the embeddings) or one
  generation step (2·batch UNet rows, CFG). FLOPs come from `torch.utils.flop_counter.FlopCounterMode`; peak memory
  from `StorageTracker`, a dispatch mode counting the bytes of live tensor storages created during the step (works on
  CPU, CUDA and on the meta device, where nothing is computed and a full-width step takes seconds).

What the memory figures model: attention as GPU SDPA runs it in fp16/bf16 (flash / memory-efficient kernels: the
output and a log-sum-exp are kept, never the N×N score matrix). On the meta device SDPA would decompose into the
math path (N² scores), so `measure_step` routes it to the fused kernel CPU runs (the same memory shape). Not
modelled, and carried in the stated uncertainty (`gpu_allowance` in the JSON): autocast's fp32 ops (group/layer
norm outputs in fp32 under autocast), cuDNN/cuBLAS workspaces, allocator rounding and fragmentation.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from vocabulary import GPU_TYPES, OFF, PRESETS

COST_MODEL_PATH = Path(__file__).resolve().parent / "configs" / "cost_model.json"
STAGES = ("inversion", "generation")
PRECISIONS = ("fp16", "bf16", "fp32")
PRECISION_BYTES = {"fp16": 2, "bf16": 2, "fp32": 4}
GIB = float(2 ** 30)
#: the terms of the linear models, in order (see `features`)
TERMS = ("1", "FP", "FP2", "PF2")


def precision_name(precision: str, device: str = "cuda") -> str:
    """The cost model's precision for an `InversionConfig.precision` ("auto" | "no" | "fp16" | "bf16") or a
    planner's name ("fp16" | "bf16" | "fp32"): "auto" is fp16 autocast on CUDA (fp32 on CPU), "no" is fp32."""
    if precision == "auto":
        return "fp16" if device == "cuda" else "fp32"
    if precision == "no":
        return "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; accepted: auto, no, {', '.join(PRECISIONS)}")
    return precision


def precision_class(precision: str) -> str:
    """"half" for fp16/bf16 (same bytes, same kernels' memory), "fp32" otherwise."""
    return "fp32" if precision_name(precision) == "fp32" else "half"


def latent_grid(height: int, width: int) -> tuple[int, int]:
    return math.ceil(height / 8), math.ceil(width / 8)


def features(frames: int, height: int, width: int) -> dict[str, float]:
    """The model's terms for a setting (per UNet row): P = latent positions h·w, F = frames."""
    h, w = latent_grid(height, width)
    p, f = float(h * w), float(frames)
    return {"1": 1.0, "FP": f * p, "FP2": f * p * p, "PF2": p * f * f}


# ------------------------------------------------------------------------------------------- the fitted model
@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    return json.loads(Path(path).read_text())


def cost_model(path: str | Path | None = None) -> dict:
    """The shipped (or given) fitted cost model, as JSON."""
    return _load(str(path or COST_MODEL_PATH))


def _linear(fit: dict, feats: dict[str, float]) -> float:
    return sum(c * feats[t] for t, c in zip(fit["terms"], fit["coef"]))


def _preset_model(model: dict, preset: str) -> dict:
    presets = model["presets"]
    name = model.get("aliases", {}).get(preset, preset)
    if name not in presets:
        raise ValueError(f"no cost model for preset {preset!r}; fitted: {', '.join(sorted(presets))} "
                         f"(run benchmarks/fit_cost_model.py --preset {preset})")
    return presets[name]


def embedding_scalars(preset: str, *, height: int, width: int, qk: str = "1d", v: str = "2d",
                      model: dict | None = None) -> int:
    """Trainable scalars of the motion embeddings at the default placement (slots × channels per tensor; MQK one
    tensor per block, MV one per attention, 2D designs hold the block level's latent grid)."""
    pm = _preset_model(model or cost_model(), preset)
    slots = int((model or cost_model())["slots"])
    h, w = latent_grid(height, width)
    total = 0
    for channels, level in pm["embedding_blocks"]:
        gh, gw = h, w
        for _ in range(level):
            gh, gw = math.ceil(gh / 2), math.ceil(gw / 2)
        grid = gh * gw
        if qk != OFF:
            total += (grid if qk == "2d" else 1) * slots * channels
        if v != OFF:
            total += 2 * (grid if v == "2d" else 1) * slots * channels
    return total


def _error(fit: dict, reference: dict) -> float:
    """The relative error a fitted figure carries: the larger of its held-out validation error and the error of the
    fp32 fit's extrapolation to the paper's setting (measured there on the meta device; half-dtype fits share it)."""
    return max(float(fit["relative_error"]), float(reference.get("extrapolation_error", 0.0)))


@dataclass(frozen=True)
class StepCost:
    """One optimisation step ("inversion") or one denoising step of a batch with CFG ("generation"): the step's own
    peak (activations and temporaries above the resident weights), its FLOPs and the validation error they carry."""

    peak_memory_gib: float
    peak_memory_gib_high: float
    tflop: float
    relative_error: float

    def to_dict(self) -> dict:
        return asdict(self)


def predict_step(preset: str, stage: str, *, frames: int, height: int, width: int, qk: str = "1d", v: str = "2d",
                 precision: str = "fp16", checkpointing: bool = True, batch: int = 1,
                 model: dict | None = None) -> StepCost:
    """The peak memory (above resident weights) and TFLOP of one step of `stage` at a setting.

    "inversion": forward + backward into the embeddings of one video (batch 1); both designs off means nothing is
    trained (zero cost). "generation": one UNet call on 2·batch rows (classifier-free guidance), no grad.
    """
    model = model or cost_model()
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; accepted: {', '.join(STAGES)}")
    pm = _preset_model(model, preset)
    cls = precision_class(precision)
    feats = features(frames, height, width)
    if stage == "inversion":
        if qk == OFF and v == OFF:
            return StepCost(0.0, 0.0, 0.0, 0.0)
        key = "inversion_ckpt" if checkpointing else "inversion"
        rows = 1
    else:
        key, rows = "generation", 2 * int(batch)
    fits = pm["fits"][key]
    mem_fit, flop_fit = fits["peak_bytes"][cls], fits["flop"]
    peak = max(_linear(mem_fit, feats), 0.0) * rows
    flop = max(_linear(flop_fit, feats), 0.0) * rows
    if stage == "inversion":  # the fit is for the paper's design; the gradients follow the design's size
        paper = embedding_scalars(preset, height=height, width=width, model=model)
        this = embedding_scalars(preset, height=height, width=width, qk=qk, v=v, model=model)
        peak = max(peak + 4.0 * (this - paper), 0.0)
    err_mem = _error(mem_fit, fits["peak_bytes"]["fp32"])
    err = max(err_mem, _error(flop_fit, flop_fit))
    high = peak * (1.0 + err_mem + float(model["gpu_allowance"]["activations"]))
    return StepCost(peak / GIB, high / GIB, flop / 1e12, err)


@dataclass(frozen=True)
class TrialCost:
    """A trial's predicted peak GPU memory and GPU time (inversion + DDIM inversion + generations)."""

    peak_memory_gib: float
    peak_memory_gib_high: float
    gpu_seconds: float
    gpu_seconds_low: float
    gpu_seconds_high: float
    fits: bool
    gpu: str = ""
    resident_gib: float = 0.0  #: weights, embeddings + AdamW moments, CUDA context
    dominant: str = ""  #: the stage whose peak sets the trial's: inversion | generation | ddim | vae_decode
    tflop: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def resident_bytes(preset: str, *, precision: str, height: int, width: int, qk: str = "1d", v: str = "2d",
                   train: bool = True, model: dict | None = None) -> dict[str, float]:
    """Memory held for a whole trial: UNet + VAE + text encoder at the precision's bytes, the embeddings (fp32) and,
    when training, their two AdamW moments; plus the CUDA context (outside the allocator)."""
    model = model or cost_model()
    pm = _preset_model(model, preset)
    nbytes = PRECISION_BYTES[precision_name(precision)]
    scalars = embedding_scalars(preset, height=height, width=width, qk=qk, v=v, model=model)
    return {"weights": nbytes * (pm["unet_parameters"] + model["vae_parameters"] + model["text_encoder_parameters"]),
            "embeddings": 4.0 * scalars * (3 if train else 1),
            "cuda_context": model["cuda_context_gib"] * GIB}


def vae_decode(frames_total: int, height: int, width: int, precision: str, model: dict) -> tuple[float, float]:
    """(peak bytes, FLOP) of decoding `frames_total` frames one at a time (`model.presets.prepare_pipeline` turns
    on the VAE's slicing): one frame's activations at the VAE's measured per-pixel rate, plus the decoded frames
    held meanwhile (the slices and their concatenation at the precision, the pipeline's fp32 copy)."""
    fit = model["vae_decode"]
    pixels = float(height * width)
    per_px = fit["peak_bytes_per_pixel"][precision_class(precision)]
    held = frames_total * pixels * 3 * (2 * PRECISION_BYTES[precision_name(precision)] + 4)
    return per_px * pixels + held, fit["flop_per_pixel"] * pixels * frames_total


def achieved_fraction(gpu: str, precision: str, model: dict | None = None) -> dict[str, float]:
    """The fraction of peak throughput a step achieves: gpu_check's measurement if the JSON holds one for this GPU
    and precision, else the stated assumption (central, low, high)."""
    model = model or cost_model()
    measured = model["achieved_fraction"].get("measured", {}).get(gpu, {}).get(precision_name(precision))
    return measured or model["achieved_fraction"]["assumed"]


def predict_trial(preset: str, *, gpu: str, frames: int, height: int, width: int, qk: str = "1d", v: str = "2d",
                  precision: str = "fp16", checkpointing: bool = True, inversion_steps: int = 400,
                  ddim_steps: int = 50, generations: int = 0, denoising_steps: int = 30, generation_batch: int = 4,
                  model: dict | None = None) -> TrialCost:
    """A trial's peak memory and GPU seconds on a GPU type (`vocabulary.GPU_TYPES`).

    peak = resident (weights, embeddings + AdamW moments, CUDA context) + the largest of: an inversion step, a
    generation step of min(generation_batch, generations) videos with CFG, a DDIM-inversion step (1 row), the VAE
    decode of a batch's frames (one frame at a time). seconds = total TFLOP / (achieved fraction × the GPU's peak
    at the precision); the low/high figures combine the fraction's stated range with the FLOP model's validation
    error.
    """
    model = model or cost_model()
    if gpu not in GPU_TYPES:
        raise ValueError(f"unknown GPU type {gpu!r}; accepted: {', '.join(GPU_TYPES)}")
    gpu_type = GPU_TYPES[gpu]
    prec = precision_name(precision)
    peak_tflops = gpu_type.peak_tflops.get(prec, 0.0)
    train = inversion_steps > 0 and not (qk == OFF and v == OFF)
    kw = dict(frames=frames, height=height, width=width, qk=qk, v=v, precision=prec, model=model)
    resident = resident_bytes(preset, height=height, width=width, qk=qk, v=v, precision=prec, train=train,
                              model=model)
    resident_total = sum(resident.values())
    peaks: dict[str, tuple[float, float]] = {}  # stage -> (central, high) GiB
    tflop = 0.0
    err = 0.0
    if train:
        inv = predict_step(preset, "inversion", checkpointing=checkpointing, **kw)
        peaks["inversion"] = (inv.peak_memory_gib, inv.peak_memory_gib_high)
        tflop += inv.tflop * inversion_steps
        err = max(err, inv.relative_error)
    if ddim_steps > 0:
        one = predict_step(preset, "generation", batch=1, **kw)  # 2 rows; DDIM inversion runs 1 (no CFG)
        peaks["ddim"] = (one.peak_memory_gib / 2, one.peak_memory_gib_high / 2)
        tflop += one.tflop / 2 * ddim_steps
        err = max(err, one.relative_error)
    if generations > 0:
        batch = max(1, min(int(generation_batch), int(generations)))
        gen = predict_step(preset, "generation", batch=batch, **kw)
        peaks["generation"] = (gen.peak_memory_gib, gen.peak_memory_gib_high)
        tflop += gen.tflop / batch * generations * denoising_steps
        dec_bytes, dec_flop = vae_decode(batch * frames, height, width, prec, model)
        dec_err = float(model["vae_decode"]["relative_error"])
        allowance = float(model["gpu_allowance"]["activations"])
        peaks["vae_decode"] = (dec_bytes / GIB, dec_bytes * (1 + dec_err + allowance) / GIB)
        tflop += dec_flop * generations / batch / 1e12
        err = max(err, one.relative_error if ddim_steps > 0 else gen.relative_error, dec_err)
    dominant = max(peaks, key=lambda k: peaks[k][1]) if peaks else ""
    stage_peak, stage_high = peaks.get(dominant, (0.0, 0.0))
    peak = resident_total / GIB + stage_peak
    high = resident_total / GIB + max(h for _, h in peaks.values()) if peaks else resident_total / GIB
    fraction = achieved_fraction(gpu, prec, model)
    if peak_tflops <= 0:  # the GPU cannot run this precision (T4 and bf16)
        seconds = low = high_s = math.inf
    else:
        rate = peak_tflops * 1e12
        seconds = tflop * 1e12 / (fraction["central"] * rate)
        low = tflop * 1e12 * (1 - err) / (fraction["high"] * rate)
        high_s = tflop * 1e12 * (1 + err) / (fraction["low"] * rate)
    fits = peak_tflops > 0 and high <= gpu_type.memory_gib
    return TrialCost(peak_memory_gib=peak, peak_memory_gib_high=high, gpu_seconds=seconds, gpu_seconds_low=low,
                     gpu_seconds_high=high_s, fits=fits, gpu=gpu, resident_gib=resident_total / GIB,
                     dominant=dominant, tflop=tflop)


# ------------------------------------------------------------------------------------------- measurement (torch)
def _storage_tracker_class():
    import torch
    from torch.multiprocessing.reductions import StorageWeakRef
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class StorageTracker(TorchDispatchMode):
        """Counts the bytes of live tensor storages created inside it (device-agnostic, meta included): `peak` is
        the largest sum reached right after an op (its inputs still alive, its outputs just made). Storages that
        existed before (weights, inputs) are not counted; nor are an op's internal temporaries."""

        def __init__(self):
            super().__init__()
            self.live: dict[int, tuple[object, int]] = {}
            self.current = 0
            self.peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = set()
            for t in tree_flatten((args, kwargs))[0]:
                if isinstance(t, torch.Tensor):
                    inputs.add(StorageWeakRef(t.untyped_storage()).cdata)
            self._prune()
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    ref = StorageWeakRef(t.untyped_storage())
                    if ref.cdata in inputs or ref.cdata in self.live:
                        continue
                    nbytes = t.untyped_storage().nbytes()
                    self.live[ref.cdata] = (ref, nbytes)
                    self.current += nbytes
            self.peak = max(self.peak, self.current)
            return out

        def _prune(self):
            for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
                self.current -= self.live.pop(key)[1]

    return StorageTracker


def storage_tracker():
    """A fresh `StorageTracker` (see `_storage_tracker_class`)."""
    return _storage_tracker_class()()


def flop_counter():
    """`FlopCounterMode` that also counts the CPU's fused attention (`_scaled_dot_product_flash_attention_for_cpu`,
    what SDPA runs on the CPU and what `_fused_sdpa_on_meta` routes meta tensors to) like CUDA's flash/efficient
    kernels: torch's own table knows only the CUDA ones and would count such attention as 0 FLOPs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def forward(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    def backward(grad_out, q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, q, k, v)

    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward})


@contextlib.contextmanager
def _fused_sdpa_on_meta():
    """Send meta-device SDPA to the fused kernel (flash-style: output + log-sum-exp kept, no N×N scores), as CUDA
    and CPU dispatch it; on meta it would decompose into the math path. Patched on `torch.nn.functional` itself
    (diffusers looks it up at call time) so that checkpointing's recompute in backward sees the same path."""
    import torch
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if query.device.type == "meta" and attn_mask is None and not kwargs:
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, key, value, float(dropout_p), bool(is_causal), scale=scale)[0]
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                        scale=scale, **kwargs)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def measure_step(unet, stage: str, *, frames: int, height: int, width: int, qk: str = "1d", v: str = "2d",
                 checkpointing: bool = False, batch: int = 1, autocast: Optional[str] = None, repeats: int = 1,
                 count_flops: bool = True, placement: Optional[tuple[str, ...]] = None, synchronize=None) -> dict:
    """Measure one real step of `stage` on `unet` (weights already on their device and dtype).

    "inversion": `MotionEmbeddings` attached (zero-initialised, fp32, on the UNet's device), activation checkpointing
    by `model.inversion._checkpoint_blocks` if asked, the UNet forward (under autocast in `autocast` if given, as
    accelerate runs it), `inversion_loss` on the fp32 prediction, backward into the embeddings. "generation": the
    embeddings attached with the paper's debias, one no-grad UNet call on 2·batch rows.

    Returns {"peak_bytes": storage-tracker peak of the step's own tensors, "flop": FlopCounterMode's count,
    "seconds": wall time of the last repeat (synchronized; with repeats=1 it includes the counting's overhead),
    "allocator_peak_bytes": CUDA's max_memory_allocated growth (CUDA only), "embedding_scalars"}.
    """
    import torch
    from .config import DEFAULT_PLACEMENT, DEFAULT_SLOTS
    from .embeddings import EmbeddingSpec, MotionEmbeddings
    from .inversion import _checkpoint_blocks, inversion_loss

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; accepted: {', '.join(STAGES)}")
    device = next(unet.parameters()).device
    dtype = unet.dtype
    h, w = latent_grid(height, width)
    spec = EmbeddingSpec(qk, v, tuple(placement or DEFAULT_PLACEMENT), DEFAULT_SLOTS, h, w)
    embeddings = MotionEmbeddings.create(unet, spec)
    rows = 1 if stage == "inversion" else 2 * batch
    cross = unet.config.cross_attention_dim
    generator = torch.Generator("cpu").manual_seed(0)

    def make(*shape, dt=dtype):
        if device.type == "meta":
            return torch.empty(*shape, device=device, dtype=dt)
        return torch.randn(*shape, generator=generator).to(device, dt)

    sample = make(rows, unet.config.in_channels, frames, h, w)
    target = make(rows, unet.config.in_channels, frames, h, w, dt=torch.float32)
    context = make(rows, 77, cross)
    timestep = torch.tensor([500], device=device)
    sync = synchronize or (torch.cuda.synchronize if device.type == "cuda" else (lambda: None))

    def run():
        if stage == "inversion":
            with torch.autocast(device.type, dtype=getattr(torch, autocast)) if autocast else _null():
                pred = unet(sample, timestep, encoder_hidden_states=context).sample
            loss = inversion_loss(pred.float(), target, "base")
            loss.backward()
            for p in embeddings.parameters():
                p.grad = None
        else:
            with torch.no_grad(), torch.autocast(device.type, dtype=getattr(torch, autocast)) if autocast \
                    else _null():
                unet(sample, timestep, encoder_hidden_states=context)

    restore = _checkpoint_blocks(unet) if checkpointing and stage == "inversion" else (lambda: None)
    embeddings.attach(unet, "none" if stage == "inversion" else "difference")
    result = {"embedding_scalars": embeddings.num_parameters()}
    try:
        with _fused_sdpa_on_meta():
            if count_flops:  # a pass of its own: FlopCounterMode's module tracking keeps tensors alive longer
                with flop_counter() as counter:
                    run()
                result["flop"] = int(counter.get_total_flops())
            tracker = storage_tracker()
            if device.type == "cuda":
                sync()
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            seconds = 0.0
            for i in range(max(1, repeats)):
                sync()
                started = time.perf_counter()
                if i == 0:  # the first repeat tracks storages (and warms up); the last one is timed
                    with tracker:
                        run()
                else:
                    run()
                sync()
                seconds = time.perf_counter() - started
            if device.type == "cuda":
                result["allocator_peak_bytes"] = int(torch.cuda.max_memory_allocated(device) - base)
    finally:
        embeddings.detach(unet)
        restore()
    result["peak_bytes"] = int(tracker.peak)
    result["seconds"] = seconds
    return result


def _null():
    import contextlib

    return contextlib.nullcontext()


def sd_vae_config() -> dict:
    """Stable Diffusion's AutoencoderKL config (ZeroScope's, ModelScope's and VideoCrafter2's VAE)."""
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, norm_num_groups=32, sample_size=768, scaling_factor=0.18215,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def text_encoder_config() -> dict:
    """ZeroScope's text encoder (OpenCLIP ViT-H text tower as a transformers CLIPTextModel, penultimate layer)."""
    return dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, max_position_embeddings=77, projection_dim=1024, hidden_act="gelu")


def measure_vae_decode(vae, *, images: int, height: int, width: int, count_flops: bool = True) -> dict:
    """Peak storage bytes and FLOPs of `vae.decode` of `images` latents at height×width (no grad)."""
    import torch
    device = next(vae.parameters()).device
    h, w = latent_grid(height, width)
    z = torch.zeros(images, vae.config.latent_channels, h, w, device=device, dtype=vae.dtype)
    result = {}
    with torch.no_grad(), _fused_sdpa_on_meta():
        if count_flops:
            with flop_counter() as counter:
                vae.decode(z)
            result["flop"] = int(counter.get_total_flops())
        tracker = storage_tracker()
        with tracker:
            vae.decode(z)
    result["peak_bytes"] = int(tracker.peak)
    return result
