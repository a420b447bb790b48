"""The gallery: its index (gallery.js, what report.js draws and filters) and the clips' previews.

The index groups the rows by (video, prompt, generation seed): each group has its reference clip and one card per
sample row (error rows carry their message). Each clip gets one preview, a small animated WebP named after its
source file's identity (location, size, modification time), so a re-run only makes new ones; clips are found
locally (relative paths under the storage root, the sweep folder, the current folder) or through `Store`.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import av
import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image

from sweep.results.store import Store
from sweep.results.tables import sweep_stores
from videoio import read_video
from vocabulary import APPLIED, DESIGN_AXES, METRICS, PRESET_AXIS, applied

from .stats import STEP

PREVIEW_HEIGHT = 128       #: previews are at most this tall (px); smaller clips keep their size
PREVIEW_FRAMES = 24        #: at most this many frames per preview (evenly spaced; duration kept)
PREVIEW_VERSION = 1        #: part of every preview's key: bump it when previews are made differently


def gallery_index(table: pa.Table, path: str | os.PathLike, previews_folder: Path, metrics: Sequence[str],
                  preview_height: int = PREVIEW_HEIGHT) -> tuple[dict, set[str]]:
    """The gallery's data (see report.js) and the preview files it uses."""
    recs = table.to_pylist()
    roots = _storage_roots(path)
    previews = make_previews([r.get("source_video") for r in recs] + [r.get("video_path") for r in recs
                                                                      if r.get("status") == "ok"],
                             previews_folder, roots, preview_height)
    axis_cols = _axis_columns(table)
    variants = sorted({(r.get("sweep"), r.get("variant")) for r in recs}, key=lambda k: (str(k[0]), str(k[1])))
    vi = {k: i for i, k in enumerate(variants)}
    first = {}
    for r in recs:
        first.setdefault((r.get("sweep"), r.get("variant")), r)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        groups[(r.get("sweep"), r.get("video"), r.get("prompt"), r.get("generation_seed"))].append(r)

    def clip(source: Optional[str]) -> dict:
        if not source:
            return {"note": "no clip path in the row"}
        info = dict(previews.get(source, {"note": f"clip not found: {source}"}))
        location, _ = _locate(source, roots)
        if _file_url(location):
            info["url"] = _file_url(location)  # a local clip: the card links to it
        else:
            info["src"] = source
        return info

    out_groups = []
    order = sorted(groups, key=lambda k: (str(k[0]), str(k[1]), str(k[2]), -1 if k[3] is None else k[3]))
    for sweep, video, prompt, seed in order:
        rs = groups[(sweep, video, prompt, seed)]
        rs.sort(key=lambda r: (vi[(r.get("sweep"), r.get("variant"))], r.get(STEP) or 0, str(r.get("created_at"))))
        cards = []
        for r in rs:
            card = {"v": vi[(r.get("sweep"), r.get("variant"))], "s": r.get(STEP),
                    "m": [None if r.get(m) is None or not math.isfinite(r[m]) else round(float(r[m]), 4)
                          for m in metrics]}
            if r.get("status") == "error":
                card["e"] = r.get("error") or "error (no message)"
            else:
                card.update(clip(r.get("video_path")))
            cards.append(card)
        source = next((r.get("source_video") for r in rs if r.get("source_video")), None)
        out_groups.append({"sweep": sweep, "video": video, "prompt": prompt, "seed": seed, "ref": clip(source),
                           "c": cards})

    axes = []
    for col in [*axis_cols, STEP]:
        values = sorted({_value(r.get(col)) for r in recs} - {None}, key=_natural)
        if len(values) > 1 or (col == STEP and values):
            label = "step" if col == STEP else col[:-len(APPLIED)] if col.endswith(APPLIED) else col
            axes.append({"key": col, "label": label, "values": values})
    data = {
        "axes": axes,
        "metrics": [{"key": m, "label": METRICS[m].display if m in METRICS else m,
                     "arrow": METRICS[m].arrow if m in METRICS else ""} for m in metrics],
        "variants": [{"id": v, "sweep": s, "axes": {a["key"]: _value(first[(s, v)].get(a["key"]))
                                                      for a in axes if a["key"] != STEP}} for s, v in variants],
        "groups": out_groups,
        "filters": {name: sorted({_value(g[name]) for g in out_groups} - {None}, key=_natural)
                    for name in ("sweep", "video", "prompt", "seed")},
    }
    used = {info["file"].split("/", 1)[1] for info in previews.values() if "file" in info}
    return data, used


def _storage_roots(path: str | os.PathLike) -> list[str]:
    """Where relative clip paths are resolved: the storage root, then the folder given."""
    root = Store(path)
    sweeps = sweep_stores(path)
    folder = root.uri
    if len(sweeps) == 1 and sweeps[0][1].uri == root.uri:  # a sweep folder: its storage root is the parent
        return [folder.rsplit("/", 1)[0] if "://" in folder else str(Path(folder).parent), folder]
    return [folder]


def _axis_columns(table: pa.Table) -> list[str]:
    """The applied-value columns that tell variants apart (the preset, design axes, swept hyperparameters), then
    the step (only those with more than one value become filters)."""
    design = [PRESET_AXIS, *(applied(a) for a in DESIGN_AXES)]
    hyper = sorted(c for c in table.column_names if c.endswith(APPLIED) and "." in c)
    return [c for c in (*design, *hyper) if c in table.column_names]


def _value(v: Any) -> Optional[str]:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return str(v).lower() if isinstance(v, bool) else str(v)


def _natural(value: str) -> tuple:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _file_url(location: Optional[str]) -> Optional[str]:
    return Path(location).resolve().as_uri() if location and "://" not in location else None


def make_previews(sources: Sequence[str], folder: Path, roots: Sequence[str], height: int = PREVIEW_HEIGHT,
                  workers: Optional[int] = None) -> dict[str, dict]:
    """{source: {"file": "previews/<hash>.webp", "w", "h"} or {"note": why there is none}} for clip paths from the
    tables; previews already in `folder` (same source identity) are reused, the others made in a thread pool."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    todo: dict[Path, tuple[str, list[str]]] = {}  # preview to make -> (where its clip is, the sources naming it)
    for source in dict.fromkeys(s for s in sources if s):
        location, why = _locate(source, roots)
        try:
            if location is None:
                raise FileNotFoundError(why)
            key = hashlib.sha256(f"v{PREVIEW_VERSION}|h{height}|{_identity(location)}".encode()).hexdigest()[:24]
        except OSError as exc:
            out[source] = {"note": str(exc) if isinstance(exc, FileNotFoundError) else f"clip unreadable: {exc}"}
            continue
        dest = folder / f"{key}.webp"
        if dest in todo:
            todo[dest][1].append(source)
            continue
        if dest.exists():
            try:
                with Image.open(dest) as im:
                    out[source] = {"file": f"previews/{dest.name}", "w": im.size[0], "h": im.size[1]}
                continue
            except OSError:  # a damaged preview: make it again
                pass
        todo[dest] = (location, [source])

    def make(item: tuple[Path, tuple[str, list[str]]]) -> list[tuple[str, dict]]:
        dest, (location, names) = item
        try:
            w, h = _render_preview(location, dest, height)
            info = {"file": f"previews/{dest.name}", "w": w, "h": h}
        except Exception as exc:  # noqa: BLE001 - any decoder failure: the card says so, the report goes on
            info = {"note": f"no preview: {type(exc).__name__}: {exc}"}
        return [(name, info) for name in names]

    if todo:
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            for done in pool.map(make, todo.items()):
                out.update(done)
    return out


def _locate(source: str, roots: Sequence[str]) -> tuple[Optional[str], Optional[str]]:
    """(local path or URI, None) of a clip path from the tables, or (None, why): relative paths are tried
    under the storage root, the sweep folder and the current folder."""
    if "://" in source and not source.startswith("file://"):
        return source, None
    p = Path(source[len("file://"):] if source.startswith("file://") else source).expanduser()
    if p.is_absolute():
        candidates = [str(p)]
    else:
        candidates = [(f"{r.rstrip('/')}/{source}" if "://" in r else str(Path(r) / p)) for r in roots]
        candidates.append(str(Path.cwd() / p))
    for c in candidates:
        if "://" in c or Path(c).exists():
            return c, None
    return None, f"clip not found: {source}"


def _identity(location: str) -> str:
    """What names a preview: the file's location, size and modification time (a rewritten file is new)."""
    if "://" in location:
        store, name = _remote(location)
        info = store.fs.get_file_info(store.abspath(name))
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"clip not found: {location}")
        return f"{location}|{info.size}|{info.mtime_ns}"
    st = os.stat(location)
    return f"{os.path.abspath(location)}|{st.st_size}|{st.st_mtime_ns}"


def _remote(uri: str) -> tuple[Store, str]:
    parent, name = uri.rsplit("/", 1)
    return Store(parent), name


def _render_preview(location: str, dest: Path, height: int) -> tuple[int, int]:
    """Decode the clip at `location`, write its preview to `dest` (atomically); returns (width, height)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(location)
        if "://" in location:
            store, name = _remote(location)
            local = store.download(name, Path(tmp) / name)
        frames, fps = _decode(local)
    if not frames:
        raise ValueError("no frames")
    every = max(1, math.ceil(len(frames) / PREVIEW_FRAMES))
    frames = frames[::every]
    w, h = frames[0].size
    if h > height:
        w, h = max(2, round(w * height / h)), height
        frames = [f.convert("RGB").resize((w, h), Image.Resampling.BILINEAR) for f in frames]
    else:
        frames = [f.convert("RGB") for f in frames]
    tmp = dest.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{dest.name}")
    try:
        # kmin=kmax=0: only the first frame is a key frame, the others code what changed (less than half the
        # bytes of the default key frame spacing on a clip with a static background; a loop needs no seeking)
        frames[0].save(tmp, format="WEBP", save_all=True, append_images=frames[1:], loop=0, quality=60, method=3,
                       kmin=0, kmax=0, duration=max(20, round(1000 * every / fps)))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return w, h


def _decode(local: Path) -> tuple[list, float]:
    """The frames of a clip as PIL images, and its frame rate (8 when the file does not say)."""
    if local.is_dir() or local.suffix.lower() == ".gif":
        return [Image.fromarray(f) for f in read_video(local)], 8.0
    with av.open(str(local)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else 8.0
        return [f.to_image() for f in container.decode(stream)], fps
