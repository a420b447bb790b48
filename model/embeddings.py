"""Motion embeddings (Motion Query-Key, Motion Value) and the attention processor that injects them.

A temporal transformer block of a diffusers UNet3D attends over frames: its attentions see hidden states
shaped (batch·H·W, frames, C). We swap the stock processor of `attn1`/`attn2` for `MotionAttnProcessor`,
which computes softmax(Wq(F+mQK)·Wk(F+mQK)ᵀ/√d)·Wv(F+mV) — MQK feeds Q and K only, MV feeds V only.
The UNet's own code and weights are untouched; `detach` puts the stock processors back.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vocabulary import DEBIAS_MODES, OFF, check_choice

from .config import DEFAULT_PLACEMENT, DEFAULT_SLOTS, check_design

FORMAT_VERSION = 1


class EmbeddingMismatchError(ValueError):
    """Embeddings do not fit the model or resolution they are being used with."""


def debias_mv(mv: torch.Tensor, mode: str) -> torch.Tensor | None:
    """Inference-time debias of a Motion Value [P, F, C] along frames (dim 1); None means "do not use MV".

    none: as trained; difference: frame 0 kept, frame j -> m[j] - m[j-1]; normalize: m[j] - mean_k m[k];
    drop: MV not used at all (V = Wv(F)). `mode` is validated where it enters (attach, generate), not here:
    this runs in every attention call.
    """
    if mode == "none":
        return mv
    if mode == "difference":
        return torch.cat([mv[:, :1], mv[:, 1:] - mv[:, :-1]], dim=1)
    if mode == "normalize":
        return mv - mv.mean(dim=1, keepdim=True)
    if mode == "drop":
        return None
    raise ValueError(f"unknown debias {mode!r}; accepted: {', '.join(DEBIAS_MODES)}")


def _add(hidden: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
    """hidden (B·P', F, C) + emb (P, F, C): P == 1 broadcasts over positions, else P must be the grid."""
    if emb is None:
        return hidden
    emb = emb.to(hidden.dtype)
    positions = emb.shape[0]
    if positions == 1:
        return hidden + emb
    n, f, c = hidden.shape
    if n % positions:
        raise EmbeddingMismatchError(
            f"a 2D motion embedding holds {positions} spatial positions but the block sees {n} sequences; "
            "the embeddings were trained at another resolution — generate at the training size")
    return (hidden.view(n // positions, positions, f, c) + emb).view(n, f, c)


class MotionAttnProcessor:
    """Self-attention over frames with MQK added to the Q/K input and (debiased) MV added to the V input.

    Built by `MotionEmbeddings.attach`, which has validated `debias`."""

    def __init__(self, qk: nn.Parameter | None, v: nn.Parameter | None, debias: str = "none"):
        self.qk = qk
        self.v = v
        self.debias = debias

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        if encoder_hidden_states is not None or attention_mask is not None:
            raise RuntimeError("MotionAttnProcessor only serves temporal self-attention (no context, no mask)")
        n, frames, _ = hidden_states.shape
        slots = max((e.shape[1] for e in (self.qk, self.v) if e is not None), default=frames)
        if frames > slots:
            raise EmbeddingMismatchError(f"{frames} frames but the motion embeddings have {slots} frame slots")
        qk = self.qk[:, :frames] if self.qk is not None else None
        mv = debias_mv(self.v[:, :frames], self.debias) if self.v is not None else None
        x_qk = _add(hidden_states, qk)
        x_v = _add(hidden_states, mv)
        query, key, value = attn.to_q(x_qk), attn.to_k(x_qk), attn.to_v(x_v)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(n, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(n, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@dataclass(frozen=True)
class EmbeddingSpec:
    """Everything needed to rebuild a set of motion embeddings and to check it fits a model."""

    qk: str = "1d"
    v: str = "2d"
    placement: tuple[str, ...] = DEFAULT_PLACEMENT
    slots: int = DEFAULT_SLOTS
    latent_height: int = 40
    latent_width: int = 72
    base_model: str = ""

    def __post_init__(self):
        check_design(self.qk, self.v, self.placement, self.slots)
        object.__setattr__(self, "placement", tuple(self.placement))


def temporal_blocks(unet: nn.Module, placement: tuple[str, ...], latent_height: int,
                    latent_width: int) -> dict[str, tuple[int, int]]:
    """Temporal transformer blocks under the placement prefixes → (channels, spatial positions H·W)."""
    sizes = [(latent_height, latent_width)]  # latent grid at each UNet level (stride-2 convs round up)
    for _ in range(len(unet.down_blocks) - 1):
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    blocks: dict[str, tuple[int, int]] = {}
    available = set()
    for name, module in unet.named_modules():
        if ".temp_attentions." not in name or not name.endswith("transformer_blocks.0"):
            continue
        top = name.split(".temp_attentions.")[0]
        available.add(top)
        if not any(top == p or top.startswith(p + ".") for p in placement):
            continue
        if top.startswith("down_blocks."):
            level = int(top.split(".")[1])
        elif top.startswith("up_blocks."):
            level = len(unet.up_blocks) - 1 - int(top.split(".")[1])
        else:  # mid_block
            level = len(sizes) - 1
        h, w = sizes[level]
        blocks[name] = (module.attn1.to_q.in_features, h * w)
    unknown = [p for p in placement if not any(a == p or a.startswith(p + ".") for a in available)]
    if unknown:
        raise ValueError(f"placement {unknown} matches no temporal attention block; available: "
                         f"{', '.join(sorted(available))}")
    return blocks


class MotionEmbeddings(nn.Module):
    """The learned tensors for one model: per selected block one MQK (shared by attn1/attn2), one MV per attention."""

    def __init__(self, spec: EmbeddingSpec, blocks: dict[str, tuple[int, int]]):
        super().__init__()
        self.spec = spec
        self.blocks = dict(blocks)
        self.qk = nn.ParameterDict()
        self.v = nn.ParameterDict()
        for name, (channels, positions) in self.blocks.items():
            if spec.qk != OFF:
                p = positions if spec.qk == "2d" else 1
                self.qk[_key(name)] = nn.Parameter(torch.zeros(p, spec.slots, channels))
            if spec.v != OFF:
                p = positions if spec.v == "2d" else 1
                for attn in ("attn1", "attn2"):
                    self.v[_key(f"{name}.{attn}")] = nn.Parameter(torch.zeros(p, spec.slots, channels))
        self._attached: dict[str, object] = {}

    @classmethod
    def create(cls, unet: nn.Module, spec: EmbeddingSpec) -> "MotionEmbeddings":
        """Zero-initialised embeddings for `unet` (so the model starts out equal to the base model)."""
        blocks = temporal_blocks(unet, spec.placement, spec.latent_height, spec.latent_width)
        emb = cls(spec, blocks)
        param = next(unet.parameters())
        return emb.to(param.device)

    def attach(self, unet: nn.Module, debias: str = "none") -> "MotionEmbeddings":
        """Install the processors on `unet` (replacing any attached before). Training uses debias "none"."""
        check_choice("debias", debias, DEBIAS_MODES)
        self.check_fits(unet)
        for name in self.blocks:
            block = unet.get_submodule(name)
            qk = self.qk[_key(name)] if self.spec.qk != OFF else None
            for attn_name in ("attn1", "attn2"):
                attn = getattr(block, attn_name)
                if attn.spatial_norm is not None or attn.group_norm is not None or attn.norm_q is not None:
                    raise RuntimeError(f"{name}.{attn_name} is not a plain temporal self-attention")
                full = f"{name}.{attn_name}"
                if full not in self._attached:
                    self._attached[full] = attn.processor
                v = self.v[_key(full)] if self.spec.v != OFF else None
                attn.set_processor(MotionAttnProcessor(qk, v, debias))
        return self

    def detach(self, unet: nn.Module) -> None:
        """Restore the processors that were there before `attach`."""
        for full, processor in self._attached.items():
            unet.get_submodule(full).set_processor(processor)
        self._attached.clear()

    def check_fits(self, unet: nn.Module) -> None:
        blocks = temporal_blocks(unet, self.spec.placement, self.spec.latent_height, self.spec.latent_width)
        if blocks != self.blocks:
            raise EmbeddingMismatchError(
                f"embeddings expect blocks {self.blocks} but this model has {blocks} at that placement; "
                "they were trained on another base model")

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        """safetensors with the spec (and any extra metadata, e.g. step) in the header."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: p.detach().float().cpu().contiguous() for name, p in self._named_tensors()}
        meta = {"format": str(FORMAT_VERSION), "spec": json.dumps(asdict(self.spec)),
                "blocks": json.dumps(self.blocks)}
        meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
        tmp = path.with_name(f".tmp-{path.name}")
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, unet: nn.Module | None = None, latent_size: tuple[int, int] | None = None
             ) -> tuple["MotionEmbeddings", dict]:
        """Load embeddings (and their extra metadata); with `unet` / `latent_size`, check they fit first."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no embeddings file at {path}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if "spec" not in meta:
            raise EmbeddingMismatchError(f"{path} is not a motion-sweep embeddings file (no spec in its header)")
        spec_dict = json.loads(meta["spec"])
        spec = EmbeddingSpec(**{**spec_dict, "placement": tuple(spec_dict["placement"])})
        blocks = {k: tuple(v) for k, v in json.loads(meta["blocks"]).items()}
        if latent_size is not None and tuple(latent_size) != (spec.latent_height, spec.latent_width):
            raise EmbeddingMismatchError(
                f"{path} was trained on a {spec.latent_height}x{spec.latent_width} latent grid but this model runs "
                f"at {latent_size[0]}x{latent_size[1]}; generate at the training resolution")
        emb = cls(spec, blocks)
        if unet is not None:
            emb.check_fits(unet)
        with torch.no_grad():
            for name, p in emb._named_tensors():
                if name not in tensors or tensors[name].shape != p.shape:
                    raise EmbeddingMismatchError(f"{path}: tensor {name} missing or of the wrong shape")
                p.copy_(tensors[name])
        if unet is not None:
            emb.to(next(unet.parameters()).device)
        extra = {k: json.loads(v) for k, v in meta.items() if k not in ("format", "spec", "blocks")}
        return emb, extra

    def _named_tensors(self):
        for k, p in self.qk.items():
            yield f"{_name(k)}.qk", p
        for k, p in self.v.items():
            yield f"{_name(k)}.v", p


def _key(name: str) -> str:  # ParameterDict keys cannot hold dots
    return name.replace(".", "/")


def _name(key: str) -> str:
    return key.replace("/", ".")
