"""What a trial computes once and stores for every other trial and sweep on the same storage (content-addressed,
computed under a lease while the others wait): a video's latent and DDIM inversion, and the FID/KID features of
real frames (the sweep's own reference videos, and the spec's reference set), which the report compares with.
Whether an inversion's embeddings are complete in the store is answered here too.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import numpy as np

from ..results.leases import wait_or_lease
from ..results.store import Store
from ..results.tables import code_version, error_text, write_part
from .plan import DDIMInversion, Trial, content_key
from .videos import local_video
from .workers import device_name, get_pipeline, get_scorer


def ensure_reference(store: Store, ddim: DDIMInversion, preset: str, model: str | None, owner: str | None = None):
    """The video's cached latent + DDIM inversion (`model.Reference`) from the store, computed and stored on a
    miss (once across concurrent sweeps: the others wait for it; `owner` as in `sweep.results.leases`)."""
    from model import Reference, prepare_reference

    rel = store.ddim_path(ddim.ddim_key)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "reference.safetensors"
        lease = wait_or_lease(store, ddim.ddim_key, lambda: store.exists(rel), owner=owner)
        if lease is None:
            return Reference.load(store.download(rel, local))
        try:
            c = ddim.config
            ref = prepare_reference(get_pipeline(preset, model), local_video(ddim), c["frames"], c["height"],
                                    c["width"], c["start"], c["stride"], c["ddim_steps"])
            ref.metadata.update(video=ddim.video, fingerprint=ddim.fingerprint, base_model=ddim.base_model)
            ref.save(local)
            store.upload(local, rel)
            return Reference.load(local)  # what every other trial reads: the stored bytes, not the in-memory copy
        finally:
            lease.release()


def inversion_done(store: Store, trial: Trial) -> bool:
    """Every checkpoint's embeddings and the meta.json written after them are in the store."""
    needed = sorted(set(trial.checkpoints))
    return store.has_inversion(trial.inversion_key, needed) and store.exists(store.inversion_meta_path(trial.inversion_key))


# --------------------------------------------------------------------------------------------------
# FID/KID reference features: real frames, stored once per (clip, backbone) so the report needs no model.

def _fid_backbone(scorer) -> tuple[str, bool]:
    """The scorer's FID feature extractor (as the samples' `fid_backbone` says it) and whether it is trained."""
    return scorer.describe()["fid_backbone"], bool(scorer.inception is not None or scorer.clip.pretrained)


def _reference_row(key: str, features: np.ndarray | None, backbone: tuple[str, bool], **fields) -> dict:
    from evaluation import EVALUATION_VERSION

    ok = features is not None
    return {"reference_key": key, **fields, "fid_features": features,
            "n_frames": len(features) if ok else None, "dim": features.shape[1] if ok else None,
            "fid_backbone": backbone[0], "pretrained_metrics": backbone[1], "evaluation_version": EVALUATION_VERSION,
            "status": "ok" if ok else "error", "device": device_name(), "code_version": code_version(),
            "created_at": dt.datetime.now(dt.timezone.utc)}


def ensure_reference_features(store: Store, sweep: str, ddim: DDIMInversion, frames: np.ndarray, scorer) -> str:
    """FID features of every frame of a sweep video as prepared for the model (the default FID reference),
    written once per (ddim_key, backbone) as a `references` part; returns the part name."""
    backbone = _fid_backbone(scorer)
    part = f"video-{ddim.ddim_key}-{content_key(backbone[0])[:8]}"
    if store.exists(store.part_path(sweep, "references", part)):
        return part
    fields = {"source": "sweep_videos", "video": ddim.video, "source_video": ddim.video_path,
              "ddim_key": ddim.ddim_key, "height": int(frames.shape[1]), "width": int(frames.shape[2]),
              "content_hash": ddim.fingerprint}
    try:
        row = _reference_row(ddim.ddim_key, scorer.fid_features(frames, all_frames=True), backbone, **fields)
    except Exception:  # noqa: BLE001 - the trial's samples still count; the report says why FID lacks it
        row = {**_reference_row(ddim.ddim_key, None, backbone, **fields), "error": error_text("fid reference")}
    write_part(store, sweep, part, [row], table="references")
    return part


def reference_set_part(reference_set: str, metrics: dict, size: tuple[int, int]) -> str:
    """Part name of a reference set's features: changes with its videos (names and bytes), the FID settings
    and the frame size, so an edited set is computed again."""
    from evaluation.scorer import reference_videos

    listing = []
    for vid, path in reference_videos(reference_set):
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        listing.append((vid, [(f.name, f.stat().st_size) for f in files if f.is_file()]))
    settings = {k: metrics.get(k) for k in ("clip", "fid")}
    return "set-" + content_key({"set": str(reference_set), "videos": listing, "metrics": settings,
                                 "size": list(size)})


def ensure_reference_set(store: Store, sweep: str, reference_set: str, metrics: dict, size: tuple[int, int],
                         part: str) -> str | None:
    """FID features of every frame of every video of the spec's reference set (resized to `size`), as one
    `references` part with a row per video. Returns None, or the error (also written, as an error row, so
    the report says why FID is missing instead of falling back to another reference)."""
    from evaluation.scorer import reference_set_features

    scorer = get_scorer(metrics)
    backbone = _fid_backbone(scorer)
    common = {"source": "reference_set", "reference_set": str(reference_set), "height": int(size[0]),
              "width": int(size[1])}
    try:
        per_video = reference_set_features(reference_set, scorer.config, size=size)
    except Exception as exc:  # noqa: BLE001 - reported by the runner and the report
        error = f"reference set {reference_set}: {type(exc).__name__}: {exc}"
        write_part(store, sweep, part, [{**_reference_row(part, None, backbone, **common), "error": error}],
                   table="references")
        return error
    rows = [_reference_row(f"{part}/{vid}", feats, backbone, video=vid, content_hash=digest, **common)
            for vid, (feats, digest) in per_video.items()]
    write_part(store, sweep, part, rows, table="references")
    return None
