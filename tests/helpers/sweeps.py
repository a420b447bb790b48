"""Sweeps without a model, for the results and report tests: a spec over small fake videos, and the rows the
trials would write for it (samples, inversions, FID references)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sweep.results.store import Store
from sweep.results.tables import sample_row, write_part
from sweep.run.plan import make_plan, save_plan
from sweep.spec import Spec

DIM = 6
BACKBONE = "clip:fake"


def make_spec(tmp_path: Path, name: str = "abl", n_videos: int = 3, axes=None, prompts: str = "ab",
              checkpoints=(10, 20)) -> Spec:
    data = []
    for i in range(n_videos):
        video = tmp_path / f"v{i}.mp4"
        video.write_bytes(f"video {i}".encode())
        data.append({"video": str(video), "source_prompt": f"source {i}", "prompts": [f"p{i}{p}" for p in prompts]})
    axes = axes or {"qk": ["1d"], "v": ["2d"], "remove": ["none", "v", "both"], "debias": ["difference", "none"]}
    return Spec.model_validate({"name": name, "preset": "tiny", "storage": str(tmp_path / "results"),
                                "data": data, "axes": axes,
                                "inversion": {"steps": 20, "checkpoints": list(checkpoints)}})


def run_fake(spec: Spec, fail=lambda g: False, metric=lambda g: 0.5, seed: int = 0, metrics=None,
             references: bool = True, features=None) -> Store:
    """What the trainable does, minus the model: one samples part and one inversions part per trial, and one
    references part per reference video (its frames' FID features, as the trainable stores them).

    metric(g) sets every per-sample metric but temporal_consistency/appearance_leakage (0.9/0.1); `metrics(g)`,
    if given, returns the metric dict instead. features(g) -> [frames, DIM] (default: normal around metric(g)).
    """
    rng = np.random.default_rng(seed)
    plan = make_plan(spec)
    store = Store(spec.storage)
    save_plan(store, plan)
    for trial in plan.trials:
        rows = []
        for g in trial.generations:
            if fail(g):
                rows.append(sample_row(g.columns, error="CUDA out of memory", device="cpu"))
                continue
            value = metric(g)
            values = metrics(g) if metrics else {
                "text_similarity": value, "temporal_consistency": 0.9, "motion_fidelity": value,
                "motion_fidelity_two_way": value, "appearance_leakage": 0.1}
            feats = features(g) if features else rng.normal(value, 1.0, size=(4, DIM)).astype(np.float32)
            rows.append(sample_row(g.columns, {**values, "fid_features": feats},
                                   video_path=f"store/videos/{g.generation_key}.mp4", device="cpu",
                                   generate_seconds=1.0, pretrained_metrics=False, fid_backbone=BACKBONE))
        write_part(store, spec.name, trial.trial_id, rows)
        write_part(store, spec.name, trial.trial_id, [{**trial.columns, "loss_curve": np.linspace(1, 0, 20),
                                                      "seconds": 3.0, "device": "cpu"}], table="inversions")
    if references:
        for d in plan.ddim_inversions:
            write_reference(store, spec.name, d.ddim_key, d.video, rng.normal(0.0, 1.0, size=(8, DIM)))
    return store


def write_reference(store: Store, sweep: str, key: str, video: str, feats, source: str = "sweep_videos",
                    backbone: str = BACKBONE, content: str | None = None, **fields) -> None:
    feats = np.asarray(feats, np.float32)
    write_part(store, sweep, f"ref-{key}".replace("/", "-"), [{
        "reference_key": key, "source": source, "video": video, "ddim_key": key if source == "sweep_videos" else None,
        "content_hash": content or key, "n_frames": len(feats), "dim": feats.shape[1], "fid_features": feats,
        "fid_backbone": backbone, "status": "ok", "created_at": "2024-01-01T00:00:00+00:00", **fields}],
        table="references")
