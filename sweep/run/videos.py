"""The reference videos as files: their content hashes (what the plan's keys are made of), a node's local copy of a
remote one (s3://…), and the probe that refuses a video before any Ray work (header and needed frames decoded).

Everything here reads files; the planner (`sweep.run.plan`) only takes the hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import videoio
from videoio import IMAGE_SUFFIXES
from vocabulary import cache_dir

from ..results.store import Store

if TYPE_CHECKING:
    from ..spec import Spec
    from .plan import DDIMInversion


class PlanError(ValueError):
    """The spec is valid but cannot be planned (e.g. a video cannot be read to fingerprint it)."""


def fingerprints_of(spec: "Spec", known: Optional[dict[str, str]] = None) -> dict[str, str]:
    """{video path: sha256} of every video of the spec: `known` ones kept, an item's `sha256:` taken as given, the
    rest hashed from their bytes."""
    out = dict(known or {})
    for item in spec.data:
        if item.video not in out:
            out[item.video] = item.sha256 or fingerprint_video(item.video)
    return out


def fingerprint_video(path: str) -> str:
    """sha256 of a video file's bytes, or of a frame folder's (name, bytes) pairs. Local path or URI."""
    h = hashlib.sha256()
    if "://" in path:
        store = Store(path)
        info = store.fs.get_file_info(store.root)
        import pyarrow.fs as pafs

        if info.type == pafs.FileType.NotFound:
            raise PlanError(f"video not found: {path}")
        if info.type == pafs.FileType.Directory:
            for name in store.list_names(""):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    h.update(name.encode() + b"\0" + store.read_bytes(name))
        else:
            h.update(store.read_bytes(""))
        return h.hexdigest()
    p = Path(path)
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                h.update(f.name.encode() + b"\0")
                _hash_file(h, f)
    elif p.is_file():
        _hash_file(h, p)
    else:
        raise PlanError(f"video not found: {path} (needed to fingerprint it; or give `sha256:` in the data)")
    return h.hexdigest()


def fetch_video(uri: str, fingerprint: str, cache: Path) -> Path:
    """A local copy of a remote reference video (a file or a folder of frames at `uri`, e.g. s3://…), kept in
    `cache` under its content hash: fetched once per node, renamed into place whole, and checked against the
    hash the plan was made with (an object replaced since then is an error, not a silent other video)."""
    dest = cache / fingerprint / Path(uri.rstrip("/")).name
    if dest.exists():
        return dest
    src = Store(uri)
    import pyarrow.fs as pafs

    info = src.fs.get_file_info(src.root)
    if info.type == pafs.FileType.NotFound:
        raise PlanError(f"video not found: {uri}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".fetch-"))
    try:
        got = tmp / dest.name
        if info.type == pafs.FileType.Directory:
            got.mkdir()
            for name in src.list_names(""):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    (got / name).write_bytes(src.read_bytes(name))
        else:
            got.write_bytes(src.read_bytes(""))
        if fingerprint_video(str(got)) != fingerprint:
            raise PlanError(f"video {uri} changed since the sweep was planned (its sha256 is no longer "
                            f"{fingerprint[:12]}…); plan the sweep again, or restore the video")
        try:
            os.replace(got, dest)
        except OSError:  # another process on this node fetched it first (a folder cannot replace a folder)
            if not dest.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _hash_file(h: "hashlib._Hash", path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def local_video(ddim: "DDIMInversion") -> str:
    """The reference video as a local path: itself, or a remote one (s3://…) fetched into this node's cache."""
    if "://" not in ddim.video_path:
        return ddim.video_path
    return str(fetch_video(ddim.video_path, ddim.fingerprint, cache_dir() / "videos"))


def probe_videos(ddims: list["DDIMInversion"]) -> dict[str, str]:
    """{ddim_key: problem} of the DDIM inversions whose video cannot be used: each distinct video (by content
    and frame sampling) is probed once, its header and the frames the sweep needs decoded; the verdict is
    cached under MOTION_SWEEP_CACHE by content hash, so a re-run decodes nothing."""
    cache = cache_dir() / "probes"
    out: dict[str, str] = {}
    seen: dict[tuple, Optional[str]] = {}
    for d in ddims:
        c = d.config
        needed = c["start"] + (c["frames"] - 1) * c["stride"] + 1
        key = (d.fingerprint, needed)
        if key not in seen:
            verdict = cache / f"{d.fingerprint}-{needed}.json"
            if verdict.is_file():
                seen[key] = json.loads(verdict.read_text()).get("problem")
            else:
                try:
                    videoio.probe_video(local_video(d), needed)
                    seen[key] = None
                except (videoio.VideoError, OSError) as exc:
                    seen[key] = str(exc)
                verdict.parent.mkdir(parents=True, exist_ok=True)
                tmp = verdict.with_name(f".tmp-{os.getpid()}-{verdict.name}")
                tmp.write_text(json.dumps({"problem": seen[key]}))
                os.replace(tmp, verdict)
        if seen[key] is not None:
            out[d.ddim_key] = seen[key]
    return out
