"""Inception-v3 features for FID/KID (torchmetrics' "inception-v3-compat", 2048-d pool features): the extractor
whose features `evaluation.fid` compares. Loaded from a local file (torch-fidelity's weights), never downloaded
when HF_HUB_OFFLINE is set."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import EvaluationError, offline

#: torch-fidelity's Inception-v3 weights (downloaded to torch.hub.get_dir()/checkpoints by default).
INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS}"


def inception_weights(checkpoint: str | None = None) -> Path | None:
    """Local Inception weights: `checkpoint` if given, else torch-fidelity's file in the torch hub
    cache; None when absent."""
    import torch

    path = Path(checkpoint).expanduser() if checkpoint else Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS
    return path if path.is_file() else None


def inception_available(checkpoint: str | None = None) -> bool:
    """Whether Inception features can be computed here without a download."""
    import importlib.util

    return importlib.util.find_spec("torch_fidelity") is not None and inception_weights(checkpoint) is not None


@lru_cache(maxsize=None)
def load_inception(checkpoint: str | None, device: str = "cpu"):
    """torchmetrics' Inception-v3 ("inception-v3-compat", 2048-d pool features), loaded once."""
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        raise EvaluationError("Inception FID features need torch-fidelity: pip install torch-fidelity "
                              "(or torchmetrics[image]); or use fid_features='clip'")
    path = inception_weights(checkpoint)
    if checkpoint and path is None:
        raise EvaluationError(f"Inception weights not found: {checkpoint}; download {INCEPTION_URL}")
    if path is None and offline():
        import torch
        raise EvaluationError(
            f"Inception weights are not in the torch hub cache and HF_HUB_OFFLINE is set; download "
            f"{INCEPTION_URL} into {Path(torch.hub.get_dir()) / 'checkpoints'} or give "
            "fid_checkpoint=/path/to/it, or use fid_features='clip'")
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                                 feature_extractor_weights_path=str(path) if path else None)
    except Exception as exc:  # noqa: BLE001
        raise EvaluationError(f"cannot load Inception weights ({type(exc).__name__}: {exc}); download "
                              f"{INCEPTION_URL} and give fid_checkpoint=, or use fid_features='clip'") from None
    return net.to(device).eval()


def inception_features(net, frames: np.ndarray, device: str = "cpu", batch_size: int = 32) -> np.ndarray:
    """2048-d Inception pool features of uint8 frames [N, H, W, 3] (resized to 299 inside)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(frames), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size])).permute(0, 3, 1, 2)
            out.append(net(x.to(device)).reshape(len(x), -1).float().cpu())
    return torch.cat(out).numpy()
