"""Inversion steps per second and generation seconds per video.

CPU: the tiny preset (fp32). CUDA (when present): also ZeroScope's architecture with random weights at the
paper's size (24×320×576, default placement), in fp16 and bf16, with peak GPU memory.

    python benchmarks/bench_model.py [--steps 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from model import GenerationConfig, InversionConfig, generate, load_pipeline, train_embeddings


def bench(pipe, frames: int, height: int, width: int, steps: int, gen_steps: int, videos: int,
          label: str) -> dict:
    device = pipe.device
    latents = torch.randn(1, 4, frames, height // 8, width // 8, generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    config = InversionConfig(steps=2)
    train_embeddings(pipe, latents, "warm up", config)  # first-call costs (kernels, allocator) out of the timing
    if device.type == "cuda":
        torch.cuda.synchronize()
    result = train_embeddings(pipe, latents, "a car turns around", InversionConfig(steps=steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    gen_config = GenerationConfig(steps=gen_steps, batch_size=videos)
    t0 = time.perf_counter()
    generate(pipe, latents, ["a tank rolls through the desert"] * videos, list(range(videos)), result.embeddings,
             "difference", gen_config)
    if device.type == "cuda":
        torch.cuda.synchronize()
    gen_seconds = (time.perf_counter() - t0) / videos
    return {"setting": label, "device": str(device), "dtype": str(pipe.unet.dtype).replace("torch.", ""),
            "frames×H×W": f"{frames}x{height}x{width}", "inversion_steps_per_s": round(steps / result.seconds, 3),
            "generation_s_per_video": round(gen_seconds, 3), "generation_steps": gen_steps,
            "trainable_parameters": result.embeddings.num_parameters(),
            "peak_gpu_gib_training": round(train_peak, 2) if train_peak else None,
            "peak_gpu_gib_total": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda"
            else None}


def zeroscope_random(dtype: torch.dtype):
    """ZeroScope's architecture (diffusers defaults = its UNet config) with random weights, tiny's VAE/text."""
    from diffusers import UNet3DConditionModel

    pipe = load_pipeline("tiny", device="cpu")
    unet = UNet3DConditionModel()  # ZeroScope's config: 320/640/1280/1280, cross_attention_dim 1024
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                        num_hidden_layers=2, num_attention_heads=16, max_position_embeddings=77))
    pipe.unet, pipe.text_encoder = unet.requires_grad_(False), text.requires_grad_(False)
    pipe.register_modules(unet=pipe.unet, text_encoder=pipe.text_encoder)
    return pipe.to("cuda", dtype)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed inversion steps")
    parser.add_argument("--gen-steps", type=int, default=30, help="denoising steps per generation")
    parser.add_argument("--videos", type=int, default=2, help="videos per generation call")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [bench(load_pipeline("tiny", device="cpu"), 8, 64, 64, args.steps, args.gen_steps, args.videos,
                  "tiny preset (CPU)")]
    if torch.cuda.is_available():
        for dtype in (torch.float16, torch.bfloat16):
            rows.append(bench(zeroscope_random(dtype), 24, 320, 576, args.steps, args.gen_steps, args.videos,
                              "ZeroScope architecture, random weights"))
            torch.cuda.empty_cache()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(", ".join(f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
