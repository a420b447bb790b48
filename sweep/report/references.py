"""The frames FID/KID compare against, and the pooling of frame features.

Real frames only, never generated clips: the `references` table holds, per sweep and FID backbone, the spec's
`reference_set` when it has one, else every frame of the sweep's own reference videos. A group's generated frames
are pooled from its rows' `fid_features`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa


def pooled_features(col: pa.ChunkedArray | pa.Array) -> Optional[np.ndarray]:
    """Pooled [frames, dim] float64 features of a list<list<float>> column (null rows skipped)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    col = col.filter(col.is_valid())
    if len(col) == 0:
        return None
    vectors = col.flatten()
    dims = set(vectors.value_lengths().to_pylist())
    if len(dims) != 1:
        raise ValueError(f"fid_features have mixed sizes {sorted(dims)} (rows scored with different FID "
                         "backbones?); summarize each backbone separately")
    dim = dims.pop()
    return vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, dim)


def reference_frames(references: pa.Table, sweeps: Sequence[str], backbone: Optional[str]
                     ) -> tuple[Optional[np.ndarray], str]:
    """Pooled real-frame features for samples of `sweeps` scored with FID `backbone`, and what they are.

    The spec's reference set (its latest features) when the sweep has one, else every frame of the sweep's
    own reference videos, each clip once (rows are unique per reference_key). Returns (None, why) when there
    is none. Raises ValueError when one key holds two different contents, one content appears under two
    keys, or feature sizes are mixed.
    """
    rows = [r for r in references.to_pylist() if r.get("sweep") in set(sweeps)
            and (backbone is None or r.get("fid_backbone") == backbone)]
    chosen = [r for r in rows if r.get("source") == "reference_set"]
    if chosen:
        parts = defaultdict(list)
        for r in chosen:
            parts[r["reference_key"].split("/")[0]].append(r)
        # an edited set was computed again under another key: the latest one is the spec's
        chosen = max(parts.values(), key=lambda rs: max(r["created_at"].timestamp() if r.get("created_at") else 0.0
                                                         for r in rs))
        failed = [r["error"] for r in chosen if r.get("status") == "error"]
        if failed:
            return None, f"the reference set's features failed ({failed[0]})"
        what = f"reference set {chosen[0].get('reference_set')}"
    else:
        chosen = [r for r in rows if r.get("status") == "ok"]
        what = "every frame of the sweep's own reference videos"
    if not chosen:
        return None, (f"no reference frames with FID backbone {backbone!r} stored for {', '.join(sweeps)} "
                      "(re-run the sweep to store them, or pass reference_features=)")
    unique: dict[str, dict] = {}
    owner: dict[str, str] = {}
    for r in chosen:
        key, content = r["reference_key"], r.get("content_hash")
        if key in unique:
            if unique[key].get("content_hash") != content:
                raise ValueError(f"reference key {key!r} holds two different clips ({unique[key].get('source_video')}"
                                 f", {r.get('source_video')}); remove one or give them distinct ids")
            continue
        unique[key] = r
        if r.get("source") == "reference_set" and content is not None:
            if content in owner:
                raise ValueError(f"reference videos {owner[content]!r} and {r.get('video')!r} hold the same "
                                 "frames; a clip counted twice weighs double in FID")
            owner[content] = r.get("video")
    dims = {r["dim"] for r in unique.values()}
    if len(dims) != 1:
        raise ValueError(f"reference features have mixed sizes {sorted(dims)} for backbone {backbone!r}")
    feats = np.concatenate([np.asarray(r["fid_features"], np.float64) for r in unique.values()])
    videos = sorted({str(r.get("video")) for r in unique.values()})
    return feats, f"{what}: {len(videos)} video{'' if len(videos) == 1 else 's'}, {len(feats)} frames"
