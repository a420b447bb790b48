"""CLIP metrics: text similarity, temporal consistency, appearance leakage (open_clip backbones).

All three are cosines between L2-normalised open_clip embeddings, with open_clip's own preprocessing
(PIL bicubic resize of the short side, centre crop, normalise), as CLIP-score papers compute them:
raw cosine, not torchmetrics' CLIPScore (which is 100·max(cos, 0)).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .config import EvaluationError, offline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipBackbone:
    """A loaded open_clip model with its preprocessing and tokenizer, plus how it was made."""
    model: Any
    preprocess: Any
    tokenizer: Any
    name: str          # e.g. "ViT-B-32/laion2b_s34b_b79k" or "ViT-S-32/random-seed0"
    pretrained: bool
    device: str



def _how(model: str, tag: str = "TAG") -> str:
    return (f"download it once with internet (python -c \"import open_clip; open_clip.create_model('{model}', "
            f"pretrained='{tag}')\" fills the Hugging Face cache; copy that cache or set HF_HOME to it), or pass "
            "clip_pretrained=/path/to/open_clip_pytorch_model.bin (CLI: --clip MODEL//path/to/file), or "
            "clip_pretrained=None for seeded random weights (plumbing only)")


def _check_cached(model: str, tag: str, pcfg: dict) -> None:
    """Offline, fail before open_clip tries the network (a URL download would hang, not fail)."""
    hub = pcfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = [filename] if filename else []
        names += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(repo, n), str) for n in names):
            return
        where = f"Hugging Face repo {repo}"
    else:
        url = pcfg.get("url", "")
        if (Path("~/.cache/clip").expanduser() / os.path.basename(url)).is_file():
            return
        where = url
    raise EvaluationError(f"CLIP weights {model}/{tag} are not in the local cache ({where}) and "
                          f"HF_HUB_OFFLINE is set, so they cannot be downloaded; {_how(model, tag)}")


def _check_local_dir(model: str) -> None:
    """A `local-dir:` model needs its config and a weights file: open_clip only warns when the weights are
    missing and goes on with random ones, which would be scored as if trained."""
    folder = Path(model[len("local-dir:"):]).expanduser()
    if not (folder / "open_clip_config.json").is_file():
        raise EvaluationError(f"CLIP model {model}: no open_clip_config.json in {folder} (a local open_clip model "
                              "is a folder with open_clip_config.json and open_clip_model.safetensors)")
    if not any(folder.glob(pattern) for pattern in ("*.safetensors", "*.bin", "*.pth")):
        raise EvaluationError(f"CLIP model {model}: {folder} holds a config but no weights "
                              "(open_clip_model.safetensors / open_clip_pytorch_model.bin)")


@lru_cache(maxsize=None)
def load_clip(model: str, pretrained: str | None, device: str = "cpu", seed: int = 0) -> ClipBackbone:
    """Load (once per process) an open_clip model.

    `pretrained` None: weights drawn from a torch RNG seeded with `seed` (forked, so the caller's RNG is
    untouched): deterministic plumbing, marked pretrained=False. A tag: open_clip's download/cache; tags
    trained with QuickGELU (e.g. "openai") get the QuickGELU activation, as the "-quickgelu" configs do.
    A file path: a local checkpoint.
    """
    import open_clip
    import torch

    schema = model.startswith(("hf-hub:", "local-dir:"))
    kwargs: dict[str, Any] = {}
    name = model
    if schema:
        if model.startswith("local-dir:"):
            _check_local_dir(model)
        if offline() and model.startswith("hf-hub:"):
            from huggingface_hub import try_to_load_from_cache
            if not isinstance(try_to_load_from_cache(model[7:], "open_clip_config.json"), str):
                raise EvaluationError(f"CLIP model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE "
                                      f"is set; {_how(model)}")
        pretrained_flag = True
    elif pretrained is None:
        name, pretrained_flag = f"{model}/random-seed{seed}", False
    else:
        tags = open_clip.list_pretrained_tags_by_model(model)
        if pretrained in tags:
            pcfg = open_clip.get_pretrained_cfg(model, pretrained)
            if pcfg.get("quick_gelu") and not (open_clip.get_model_config(model) or {}).get("quick_gelu"):
                kwargs["force_quick_gelu"] = True
                model_label = model if model.endswith("-quickgelu") else f"{model}-quickgelu"
                name = f"{model_label}/{pretrained}"
            else:
                name = f"{model}/{pretrained}"
            if offline():
                _check_cached(model, pretrained, pcfg)
        elif Path(pretrained).expanduser().is_file():
            pretrained = str(Path(pretrained).expanduser())
            name = f"{model}/{pretrained}"
        else:
            raise EvaluationError(
                f"CLIP weights {pretrained!r} for {model} are neither an open_clip tag ({', '.join(tags) or 'none'}) "
                "nor an existing checkpoint file")
        pretrained_flag = True

    try:
        if pretrained_flag:
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=None if schema else pretrained, device=device, **kwargs)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                root = logging.getLogger()
                level = root.level
                root.setLevel(logging.ERROR)  # open_clip warns that no weights were loaded: that is the point
                try:
                    net, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=None,
                                                                               device=device)
                finally:
                    root.setLevel(level)
    except EvaluationError:
        raise
    except Exception as exc:  # noqa: BLE001 - download/cache/checkpoint problems
        raise EvaluationError(f"cannot load CLIP {name}: {type(exc).__name__}: {exc}; "
                              f"{_how(model, pretrained or 'TAG')}") from None
    tokenizer = open_clip.get_tokenizer(model)
    net.eval()
    return ClipBackbone(net, preprocess, tokenizer, name, pretrained_flag, device)


def encode_frames(backbone: ClipBackbone, frames: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """L2-normalised CLIP image embeddings of uint8 frames [T, H, W, 3] → float32 [T, D]."""
    import torch
    from PIL import Image

    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch_size):
            x = torch.stack([backbone.preprocess(Image.fromarray(f)) for f in frames[i:i + batch_size]])
            e = backbone.model.encode_image(x.to(backbone.device)).float()
            out.append(torch.nn.functional.normalize(e, dim=-1).cpu())
    return torch.cat(out).numpy()


def encode_text(backbone: ClipBackbone, text: str) -> np.ndarray:
    """L2-normalised CLIP text embedding of one prompt → float32 [D] (prompts past 77 tokens are cut)."""
    import torch

    with torch.inference_mode():
        e = backbone.model.encode_text(backbone.tokenizer([text]).to(backbone.device)).float()
    return torch.nn.functional.normalize(e, dim=-1)[0].cpu().numpy()


def text_similarity(frame_emb: np.ndarray, text_emb: np.ndarray) -> float:
    """Mean over frames of cos(frame, prompt): the paper's "text similarity" (raw cosine)."""
    return float(np.mean(frame_emb.astype(np.float64) @ text_emb.astype(np.float64)))


def temporal_consistency(frame_emb: np.ndarray) -> float:
    """Mean cos between consecutive frames' embeddings (1.0 for a constant video)."""
    e = frame_emb.astype(np.float64)
    return float(np.mean(np.sum(e[:-1] * e[1:], axis=-1)))


def appearance_leakage(gen_emb: np.ndarray, ref_emb: np.ndarray) -> float:
    """Mean cos over all (generated frame, reference frame) pairs. Higher = the generated clip looks
    more like the reference video (its subject leaking into the edit). All pairs rather than
    frame-aligned pairs, so it measures appearance, not pose at a given time."""
    return float(np.mean(gen_emb.astype(np.float64) @ ref_emb.astype(np.float64).T))
