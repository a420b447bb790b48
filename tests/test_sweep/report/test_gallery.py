"""The gallery (`sweep.report.gallery`): previews made once and reused on a rerun (which replaces the page
atomically), remote clips read through the store, and cards that say why a clip has no preview."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers.reports import build_sweep, gallery_data, page_html
from helpers.sweeps import make_spec, run_fake
from sweep.report import gallery, html_report_path, report
from sweep.report import html as html_page
from sweep.results.store import Store
from sweep.results.tables import load
from videoio import moving_shape_video, write_video


def test_previews_are_made_once_rerun_updates_atomically(tmp_path, monkeypatch):
    folder, _ = build_sweep(tmp_path, n_videos=2)
    made = []
    real = gallery._render_preview
    monkeypatch.setattr(gallery, "_render_preview", lambda loc, dest, h: made.append(loc) or real(loc, dest, h))
    report(folder, n_boot=0, echo=False)
    first = len(made)
    table = load(folder)
    assert first == len({r["video_path"] for r in table.to_pylist() if r["status"] == "ok"}
                        | {r["source_video"] for r in table.to_pylist()})
    report_dir = Path(folder, "report")
    before = (report_dir / "index.html").read_bytes()
    made.clear()
    report(folder, n_boot=0, echo=False)
    assert made == []  # every preview reused
    # a re-generated clip (new bytes, new mtime) gets a new preview; only that one is made
    clip = Path(folder).parent / next(r["video_path"] for r in table.to_pylist() if r["status"] == "ok")
    write_video(clip, moving_shape_video(8, 48, 64, direction=(1, 1), color=(255, 255, 255)))
    report(folder, n_boot=0, echo=False)
    assert made == [str(clip)]
    assert len([p for p in report_dir.glob("build-*")]) == html_page.KEEP_BUILDS
    used = set()
    for b in report_dir.glob("build-*"):
        used |= set(json.loads((b / "previews.json").read_text()))
    assert {p.name for p in (report_dir / "previews").glob("*.webp")} == used  # stale previews pruned
    assert not list(report_dir.rglob(".tmp-*"))
    # a report that fails half-way leaves the previous page as it was, and no temp files
    page = (report_dir / "index.html").read_bytes()
    assert page != before  # the rerun replaced it

    def boom(*a, **k):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(html_page, "make_plots", boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        report(folder, n_boot=0, echo=False)
    assert (report_dir / "index.html").read_bytes() == page and not list(report_dir.rglob(".tmp-*"))
    build = re.search(rb'src="(build-[0-9a-f]+)/gallery.js"', page).group(1).decode()
    assert (report_dir / build / "gallery.js").is_file()


def test_remote_clips_are_read_through_the_store(tmp_path, monkeypatch):
    """Clip URIs (s3://...) are fetched with sweep.results.store.Store; a missing or unreadable clip is a note, not a crash."""
    import pyarrow.fs as pafs

    import sweep.results.store as store_module

    memory = pafs._MockFileSystem()
    monkeypatch.setattr(store_module, "_filesystem_from_uri", lambda uri: (memory, uri.split("://", 1)[1]))
    memory.create_dir("bucket/results/store/videos", recursive=True)  # (an object store has no folders to make)
    local = write_video(tmp_path / "a.mp4", moving_shape_video(8, 256, 320))
    Store("s3://bucket/results").upload(local, "store/videos/a.mp4")
    Store("s3://bucket/results").write_bytes_atomic("store/videos/bad.mp4", b"not a video")
    sources = ["s3://bucket/results/store/videos/a.mp4", "store/videos/a.mp4", "s3://bucket/results/store/videos/bad.mp4",
               str(tmp_path / "missing.mp4")]
    out = gallery.make_previews(sources, tmp_path / "previews", ["s3://bucket/results"], height=128)
    assert out[sources[0]]["file"] == out[sources[1]]["file"] and (out[sources[0]]["w"], out[sources[0]]["h"]) == (160, 128)
    assert (tmp_path / out[sources[0]]["file"]).is_file()
    assert out[sources[2]]["note"].startswith("no preview:")
    assert out[sources[3]]["note"] == f"clip not found: {tmp_path / 'missing.mp4'}"


def test_report_without_clips_or_plan_still_writes_a_page(tmp_path):
    """run_fake's rows name clips that do not exist; the gallery says so on each card."""
    spec = make_spec(tmp_path, n_videos=2, axes={"qk": ["1d"], "v": ["2d"], "debias": ["difference", "none"]})
    run_fake(spec)
    folder = Path(spec.storage) / spec.name
    (folder / "plan.json").unlink()
    report(folder, n_boot=0, echo=False)
    page = page_html(str(folder))
    assert "no estimate of the compute saved by planning (no plan.json" in page
    data = gallery_data(html_report_path(folder))
    notes = {c["note"].split(":")[0] for g in data["groups"] for c in g["c"]}
    assert notes == {"clip not found"}
