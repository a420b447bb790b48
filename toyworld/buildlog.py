"""The build log: a build's loss curves and measurements as JSON (the system of record), one line per event on
stderr while it runs, and the short markdown report written beside the JSON at its end."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .architecture import TOY_FORMAT, jsonable


class BuildLog:
    """Loss curves and measurements, as JSON (the system of record) and one line per event on stderr."""

    def __init__(self, path: Path | None):
        self.path = path
        self.data: dict = {"format": TOY_FORMAT, "phases": {}, "evaluations": [], "final": {}}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, msg: str) -> None:
        print(f"[toy {self.elapsed() / 60:6.1f} min] {msg}", file=sys.stderr, flush=True)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".tmp-{self.path.name}")
        tmp.write_text(json.dumps(self.data, indent=1, default=jsonable))
        tmp.replace(self.path)


def log_markdown(data: dict) -> str:
    """The build log as a short markdown report (the JSON beside it has every number)."""
    ph = data.get("phases", {})
    lines = ["# Toy world build log", "",
             f"seed {data['config']['seed']}, {data.get('torch_threads')} torch threads, "
             f"training {data.get('train_seconds', 0) / 60:.1f} min, total {data.get('total_seconds', 0) / 60:.1f} min",
             "", "| phase | steps | minutes | result |", "|---|---|---|---|"]
    if "vae" in ph:
        v = ph["vae"]
        lines.append(f"| VAE | {v['steps']} | {v['seconds'] / 60:.1f} | held-out PSNR {v['psnr_db']:.1f} dB, "
                     f"scaling factor {v['scaling_factor']:.4f}{_reused(v)} |")
    if "clip" in ph:
        c = ph["clip"]
        zs = c.get("zero_shot", {})
        lines.append(f"| toy CLIP | {c['steps']} | {c['seconds'] / 60:.1f} | zero-shot shape {zs.get('shape', 0):.3f}, "
                     f"colour {zs.get('color', 0):.3f}, background {zs.get('background', 0):.3f}{_reused(c)} |")
    if "latents" in ph:
        lines.append(f"| latents | {ph['latents']['clips']} clips | {ph['latents']['seconds'] / 60:.1f} | |")
    if "unet" in ph:
        u = ph["unet"]
        if u.get("image_steps"):
            lines.append(f"| UNet + text encoder, single frames | {u['image_steps']} (batch {u.get('image_batch')} "
                         f"frames) | | final loss {u['image_curve'][-1][1]:.4f} |")
        lines.append(f"| UNet + text encoder | {u['steps']} (batch {u.get('batch')}) | "
                     f"{u.get('seconds', 0) / 60:.1f} | final loss {u['loss_curve'][-1][1]:.4f} |")
        evals = u.get("evaluations", [])
        transfer = any("transfer" in e for e in evals)
        lines += ["", "Samples of the EMA weights during training (prompted shape, colour, straight motion"
                  + ("; transfer: the method's and the base model's mean motion fidelity, `transfer_check`" if transfer
                     else "") + "):", "",
                  "| step | min | shape | colour | both | direction | follows motion words |"
                  + (" transfer: method / base (method higher) |" if transfer else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if transfer else "")]
        for e in evals:
            row = (f"| {e['step']} | {e['minutes']:.0f} | {e['shape']:.2f} | {e['color']:.2f} | "
                   f"{e['both']:.2f} | {e['direction']:.2f} | {_fmt(e.get('motion_follows_words', '-'))} |")
            if transfer:
                tr = e.get("transfer")
                row += (f" {tr['method']:+.2f} / {tr['base']:+.2f} ({tr['method_higher']} of {tr['n']}) |" if tr
                        else " |")
            lines.append(row)
        for name, curve in (("UNet loss on single frames", u.get("image_curve")), ("UNet loss", u["loss_curve"]),
                            ("text distillation loss", u.get("distill_curve"))):
            if curve:
                pick = curve[:: max(1, len(curve) // 12)]
                pick += curve[-1:] if pick[-1] != curve[-1] else []
                lines += ["", f"{name} (mean over 50 steps): " + ", ".join(f"{s}: {l:.4f}" for s, l in pick)]
        if u.get("resumed_from"):
            lines += ["", f"UNet + text encoder continued from {u['resumed_from']}"]
    fin = data.get("final", {})
    if fin:
        zs = fin["clip_zero_shot"]
        lines += ["", "## Final, through `load_pipeline` and the `local-dir:` toy CLIP", "",
                  f"toy-CLIP zero-shot on {zs['n']} held-out frames: shape {zs['shape']:.3f}, colour {zs['color']:.3f}, "
                  f"background {zs['background']:.3f}", "",
                  "| DDIM steps | guidance | n | shape | colour | both | direction | follows motion words | s/clip |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in fin["samples"]:
            lines.append(f"| {r['ddim_steps']} | {r['guidance']:g} | {r['n']} | {r['shape']:.2f} | {r['color']:.2f} | "
                         f"{r['both']:.2f} | {r['direction']:.2f} | {_fmt(r.get('motion_follows_words', '-'))} | "
                         f"{r['seconds_per_clip']:.2f} |")
        if fin.get("transfer"):
            tr = fin["transfer"]
            lines += ["", f"Motion transfer ({tr['n']} references, another shape, no motion word; debias `difference`): "
                          f"motion fidelity {tr['method']:.2f} with the embeddings vs {tr['base']:.2f} for the base "
                          f"model from the same seed, higher in {tr['method_higher']} of {tr['n']}"]
    if data.get("bytes"):
        lines += ["", f"Size on disk: {sum(data['bytes'].values()) / 1e6:.1f} MB"]
    return "\n".join(lines) + "\n"


def _reused(phase: dict) -> str:
    return f" (reused from {phase['reused_from']})" if phase.get("reused_from") else ""


def _fmt(x) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)
