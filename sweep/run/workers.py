"""What a worker process loads once and keeps: the preset's pipeline and the metrics' scorer (a worker that runs
several trials loads each model once), and the name of the device it runs on.

torch, diffusers and the metric backbones load on first use, so the driver that only plans never pays for them.
"""

from __future__ import annotations

from typing import Any, Optional

_PIPELINES: dict[tuple[str, Optional[str]], Any] = {}


def get_pipeline(preset: str, model: Optional[str]):
    """The preset's pipeline (`model` another copy of its weights), loaded once per worker process.

    One at a time: a worker that moves on to another preset (a sweep with a preset axis) lets the last one go
    first, so two base models never share its GPU."""
    from model import get_preset, load_pipeline

    key = (preset, model)
    if key not in _PIPELINES:
        if _PIPELINES:
            _PIPELINES.clear()
            if cuda():
                import torch

                torch.cuda.empty_cache()
        _PIPELINES[key] = load_pipeline(get_preset(preset, model))
    return _PIPELINES[key]


def get_scorer(metrics: dict):
    """The scorer of a spec's `metrics:` block, on this worker's device (evaluation caches one per config)."""
    import evaluation

    kwargs = {k: metrics[k] for k in ("grid_size", "min_motion", "fid_frames") if metrics.get(k) is not None}
    config = evaluation.ScorerConfig.from_names(clip=metrics.get("clip"), tracker=metrics.get("tracker"),
                                                fid=metrics.get("fid"), device="cuda" if cuda() else "cpu", **kwargs)
    return evaluation.get_scorer(config)


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def device_name() -> str:
    """Where this process computes: "cpu" or "cuda:<GPU name>" (every row records it)."""
    import torch

    return f"cuda:{torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"
