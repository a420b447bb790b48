"""One command that measures a trial's real cost on a GPU, beside the cost model's prediction of every figure.

    python benchmarks/gpu_check.py --out gpu_check.json            # on a GPU machine (≈ 3-8 min)
    python benchmarks/gpu_check.py --device cpu --tiny --out x.json  # the same code at a tiny size (< 1 min)

At the preset's setting (default zeroscope, the paper's 24×320×576), with the preset's real weights when they are
present (local folder via --model, or the hub cache; never downloaded: HF_HUB_OFFLINE is set) and the full
architecture with random weights otherwise:

* an inversion step (`model.cost.measure_step`: embeddings attached, the UNet under autocast as accelerate runs it,
  loss, backward into the embeddings) for fp16 and bf16, with and without activation checkpointing
  (`model.inversion._checkpoint_blocks`): step time, the allocator's peak above the resident weights, the storage
  tracker's peak, FLOPs, achieved TFLOP/s and the fraction of the GPU type's dense peak;
* generation (`model.generation.generate`, DDIM 30 steps, CFG 12, BlendInit, batch 1): seconds per video, peak
  memory, FLOPs per video (a counted UNet step × steps + the VAE decode), achieved TFLOP/s;
* the cost model's prediction beside each (`model.cost.predict_step` / `predict_trial`), and the achieved fraction
  of peak in the form `model/configs/cost_model.json` takes (`achieved_fraction.measured`).

`--tiny` uses the tiny preset (its pipeline, built locally) at 4×64×64; `--device cpu` runs on the CPU, where
peak memory is the storage tracker's (no allocator) and there is no GPU peak to compare with.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model import cost  # noqa: E402
from vocabulary import GPU_TYPES, PRESETS  # noqa: E402

GIB = 2 ** 30
TINY_SETTING = (4, 64, 64)


def gpu_type_of(name: str) -> str | None:
    """The `vocabulary.GPU_TYPES` name for a CUDA device name (e.g. "NVIDIA A10G" → "A10G")."""
    name = name.upper()
    if "H100" in name or "H200" in name:
        return "H100-80GB"
    if "A100" in name:
        return "A100-80GB" if "80G" in name else "A100-40GB"
    for key in ("A10G", "L40S", "L4", "T4"):
        if key in name:
            return key
    if "A10" in name:
        return "A10G"
    return None


def random_pipeline(preset: str, device, dtype):
    """The preset's full pipeline with random weights: its UNet (shipped config), SD's VAE, the ViT-H text tower."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from model.presets import build_unet, clip_tokenizer, prepare_pipeline

    unet = build_unet(preset, device=device, dtype=dtype)
    with torch.device(device):
        vae = AutoencoderKL(**cost.sd_vae_config()).to(dtype)
        text = CLIPTextModel(CLIPTextConfig(**cost.text_encoder_config())).to(dtype)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                              prediction_type="epsilon")
    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(), unet=unet,
                                 scheduler=scheduler)
    return prepare_pipeline(pipe).to(device)


def load(preset: str, device, dtype, model: str | None, tiny: bool):
    """(pipeline, "real" | "random"): the preset's weights if they load offline, else random at full size."""
    from model.presets import ModelNotFoundError, get_preset, load_pipeline

    if tiny:
        return load_pipeline(get_preset("tiny"), device=device, dtype=dtype), "tiny preset (seeded random)"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return load_pipeline(get_preset(preset, model), device=device, dtype=dtype), "real"
    except ModelNotFoundError as exc:
        print(f"real weights absent ({str(exc).splitlines()[0][:120]}...); random weights at full size",
              file=sys.stderr)
        return random_pipeline(preset, device, dtype), "random"


def _gib(x):
    return None if x is None else round(x / GIB, 6)


def _fraction(flop, seconds, gpu, precision):
    if not gpu or not seconds:
        return None, None
    tflops = flop / seconds / 1e12
    peak = GPU_TYPES[gpu].peak_tflops.get(precision) or 0.0
    return round(tflops, 2), (round(tflops / peak, 4) if peak else None)


def check_inversion(pipe, model_preset, setting, precision, checkpointing, repeats, gpu, device) -> dict:
    import torch

    frames, height, width = setting
    cuda = device.type == "cuda"
    row = {"precision": precision, "checkpointing": checkpointing}
    autocast = {"fp16": "float16", "bf16": "bfloat16"}.get(precision)
    try:
        if cuda:
            torch.cuda.empty_cache()
            resident = torch.cuda.memory_allocated(device)
        r = cost.measure_step(pipe.unet, "inversion", frames=frames, height=height, width=width,
                              checkpointing=checkpointing, autocast=autocast, repeats=repeats)
        tflops, fraction = _fraction(r["flop"], r["seconds"], gpu, precision)
        row["measured"] = {
            "step_seconds": round(r["seconds"], 4), "tflop": round(r["flop"] / 1e12, 6),
            "step_peak_gib": _gib(r.get("allocator_peak_bytes", r["peak_bytes"])),
            "tracker_peak_gib": _gib(r["peak_bytes"]),
            "total_peak_gib": _gib(resident + r["allocator_peak_bytes"]) if cuda else None,
            "achieved_tflops": tflops if cuda else round(r["flop"] / r["seconds"] / 1e12, 6),
            "fraction_of_peak": fraction, "embedding_scalars": r["embedding_scalars"]}
    except torch.cuda.OutOfMemoryError as exc:
        row["measured"] = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
    finally:
        if cuda:
            torch.cuda.empty_cache()
    step = cost.predict_step(model_preset, "inversion", frames=frames, height=height, width=width,
                             precision=precision, checkpointing=checkpointing)
    row["predicted"] = {"step_peak_gib": round(step.peak_memory_gib, 6),
                        "step_peak_gib_high": round(step.peak_memory_gib_high, 6),
                        "tflop": round(step.tflop, 6), "relative_error": round(step.relative_error, 4)}
    if gpu:
        trial = cost.predict_trial(model_preset, gpu=gpu, frames=frames, height=height, width=width,
                                   precision=precision, checkpointing=checkpointing, inversion_steps=1,
                                   ddim_steps=0, generations=0)
        row["predicted"].update({"step_seconds": round(trial.gpu_seconds, 4),
                                 "step_seconds_low": round(trial.gpu_seconds_low, 4),
                                 "step_seconds_high": round(trial.gpu_seconds_high, 4),
                                 "total_peak_gib": round(trial.peak_memory_gib, 3),
                                 "total_peak_gib_high": round(trial.peak_memory_gib_high, 3)})
    return row


def check_generation(pipe, model_preset, setting, precision, steps, gpu, device) -> dict:
    import torch

    from model.config import GenerationConfig
    from model.embeddings import EmbeddingSpec, MotionEmbeddings
    from model.generation import generate

    frames, height, width = setting
    h, w = cost.latent_grid(height, width)
    cuda = device.type == "cuda"
    row = {"precision": precision, "steps": steps, "guidance": 12.0, "batch": 1}
    try:
        counted = cost.measure_step(pipe.unet, "generation", frames=frames, height=height, width=width, batch=1)
        embeddings = MotionEmbeddings.create(pipe.unet, EmbeddingSpec("1d", "2d", latent_height=h, latent_width=w))
        noise = torch.randn(1, 4, frames, h, w, generator=torch.Generator("cpu").manual_seed(0))
        config = GenerationConfig(steps=steps, guidance=12.0, batch_size=1)
        generate(pipe, noise, ["a warm-up"], [0], embeddings, "difference", GenerationConfig(steps=1, batch_size=1))
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        generate(pipe, noise, ["a dog running on the beach"], [0], embeddings, "difference", config)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        decode = cost.measure_vae_decode(pipe.vae, images=frames, height=height, width=width)
        flop = counted["flop"] * steps + decode["flop"]
        tflops, fraction = _fraction(flop, seconds, gpu, precision)
        row["measured"] = {"seconds_per_video": round(seconds, 3), "tflop_per_video": round(flop / 1e12, 3),
                           "unet_step_tflop": round(counted["flop"] / 1e12, 6),
                           "unet_step_peak_gib": _gib(counted.get("allocator_peak_bytes", counted["peak_bytes"])),
                           "peak_gib": _gib(torch.cuda.max_memory_allocated(device)) if cuda else None,
                           "achieved_tflops": tflops, "fraction_of_peak": fraction}
    except torch.cuda.OutOfMemoryError as exc:
        row["measured"] = {"error": f"out of memory: {str(exc).splitlines()[0]}"}
    step = cost.predict_step(model_preset, "generation", frames=frames, height=height, width=width,
                             precision=precision, batch=1)
    row["predicted"] = {"unet_step_tflop": round(step.tflop, 6), "unet_step_peak_gib": round(step.peak_memory_gib, 6),
                        "unet_step_peak_gib_high": round(step.peak_memory_gib_high, 6)}
    if gpu:
        trial = cost.predict_trial(model_preset, gpu=gpu, frames=frames, height=height, width=width,
                                   precision=precision, inversion_steps=0, ddim_steps=0, generations=1,
                                   denoising_steps=steps, generation_batch=1)
        row["predicted"].update({"seconds_per_video": round(trial.gpu_seconds, 3),
                                 "seconds_per_video_low": round(trial.gpu_seconds_low, 3),
                                 "seconds_per_video_high": round(trial.gpu_seconds_high, 3),
                                 "tflop_per_video": round(trial.tflop, 3),
                                 "peak_gib": round(trial.peak_memory_gib, 3),
                                 "peak_gib_high": round(trial.peak_memory_gib_high, 3)})
    return row


def table(report: dict) -> str:
    lines = [f"gpu_check: {report['preset']} {report['setting']} on {report['device_name']} "
             f"(GPU type {report['gpu_type']}), weights: {report['weights']}", "",
             "inversion step        | seconds meas / pred        | step peak GiB meas / pred (high) | TFLOP meas / pred "
             "| TFLOP/s | of peak"]
    lines += [_row(r) for r in report["inversion"]]
    g = report["generation"]
    m, p = g["measured"], g["predicted"]
    lines.append("")
    if "error" in m:
        lines.append(f"generation ({g['steps']} steps, CFG 12): {m['error']}")
    else:
        lines.append(f"generation ({g['steps']} steps, CFG 12, 1 video): {m['seconds_per_video']:.2f} s / predicted "
                     f"{_s(p.get('seconds_per_video'))}; UNet step TFLOP {m['unet_step_tflop']} / "
                     f"{p['unet_step_tflop']}; UNet step peak GiB {m['unet_step_peak_gib']} / {p['unet_step_peak_gib']}"
                     f"; video peak GiB {m['peak_gib']} / {p.get('peak_gib')}; TFLOP/s {m['achieved_tflops']}")
    return "\n".join(lines)


def _row(r: dict) -> str:
    m, p = r["measured"], r["predicted"]
    name = f"{r['precision']} ckpt={'on ' if r['checkpointing'] else 'off'}"
    if "error" in m:
        return f"{name:21s} | {m['error'][:60]} | pred peak {p['step_peak_gib']} ({p['step_peak_gib_high']})"
    return (f"{name:21s} | {m['step_seconds']:.4g} / {_s(p.get('step_seconds'))} "
            f"| {m['step_peak_gib']:.4g} / {p['step_peak_gib']:.4g} ({p['step_peak_gib_high']:.4g}) "
            f"| {m['tflop']:.4g} / {p['tflop']:.4g} | {m['achieved_tflops']} | {m['fraction_of_peak']}")


def _s(x):
    return "n/a" if x is None else f"{x:.4g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny preset at 4x64x64 (a quick run of this code)")
    parser.add_argument("--preset", default="zeroscope", choices=[p for p in PRESETS if p not in ("tiny", "toy")])
    parser.add_argument("--model", default=None, help="local folder holding the preset's weights")
    parser.add_argument("--frames", type=int), parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--repeats", type=int, default=3, help="inversion steps per setting (the last one is timed)")
    parser.add_argument("--gen-steps", type=int, default=30)
    parser.add_argument("--precisions", nargs="+", default=None, help="default: fp16 bf16 (CPU: fp32 bf16)")
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":  # more threads than free cores slows a small model down many times over
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    preset = "tiny" if args.tiny else args.preset
    p = PRESETS[preset]
    setting = TINY_SETTING if args.tiny else (p.num_frames, p.height, p.width)
    setting = (args.frames or setting[0], args.height or setting[1], args.width or setting[2])
    cuda = device.type == "cuda"
    precisions = args.precisions or (["fp16", "bf16"] if cuda else ["fp32", "bf16"])
    device_name = torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu"
    gpu = gpu_type_of(device_name) if cuda else None
    started = time.perf_counter()
    report = {"preset": preset, "setting": "x".join(map(str, setting)), "device": str(device),
              "device_name": device_name, "gpu_type": gpu, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "inversion": [], "generation": None}
    pipe = None
    for i, precision in enumerate(precisions):
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        if pipe is None:
            pipe, report["weights"] = load(preset, device, dtype, args.model, args.tiny)
        pipe.to(dtype=dtype)
        for checkpointing in (True, False):
            report["inversion"].append(check_inversion(pipe, preset, setting, precision, checkpointing,
                                                       args.repeats, gpu, device))
            print(_row(report["inversion"][-1]), flush=True)
    report["generation"] = check_generation(pipe, preset, setting, precisions[-1], args.gen_steps, gpu, device)
    fractions = {}
    for r in report["inversion"]:
        f = r["measured"].get("fraction_of_peak")
        if f:
            fractions[r["precision"]] = max(fractions.get(r["precision"], 0.0), f)
    if gpu and fractions:
        report["achieved_fraction"] = {gpu: {prec: {"central": f, "low": round(0.8 * f, 4),
                                                   "high": round(min(1.0, 1.2 * f), 4)}
                                             for prec, f in fractions.items()}}
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(table(report))
    print(f"\n({report['seconds']} s)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
