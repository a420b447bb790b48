"""How long the HTML report takes for the paper-scale table, and how heavy the page is.

Setting: the paper's seed-grid sweep as `sweep.run.plan` schedules it (22 videos × 3 prompts × 20 variants: 1,320
samples at one checkpoint, 2,640 with `--checkpoints 250,400`; 176 inversions with 400-step loss curves;
sweep.demo.paper_scale_spec), rows
synthesised (metrics, FID features, timings; a few error rows) and a small clip written for every sample
and reference (`videoio.moving_shape_video`, default 24 frames at 128×230: the size of a ZeroScope clip's
preview, so the previews weigh what real ones would; decoding real 320×576 clips costs more).

Timed:
1. the statistics alone (`report(..., html=False)`: summaries, BCa CIs, paired tests, summary.md);
2. the HTML report cold (`write_html_report` into an empty report folder: every preview made), split into
   previews, plots and the rest;
3. the HTML report warm (previews cached: what a re-run after more rows land costs);
4. `report()` end to end, warm (what `motion-sweep report` costs on a re-run).
Page weight: index.html, the build folder (CSS, JS, the gallery's JSON index, plots), the previews; what the
first page needs (everything but the previews of other pages), and with --browser, what chromium actually
fetches when the page opens (previews load lazily, as their group scrolls into view).

    python benchmarks/bench_report.py [--checkpoints 400] [--frames 24] [--height 128] [--width 230]
                                      [--n-boot 9999] [--browser] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sweep.demo import paper_scale_spec
from sweep.report import compare, gallery, html, report, summarize, summary_notes
from sweep.results.store import Store
from sweep.results.tables import load, sample_row, write_part
from sweep.run.plan import make_plan, save_plan
from videoio import moving_shape_video, write_video
from vocabulary import SEED_GRID

DIM = 16


def build(folder: Path, frames: int, height: int, width: int, checkpoints: list[int]) -> tuple[str, float]:
    """The paper-scale sweep with clips under `folder`; returns (sweep folder, seconds spent writing clips)."""
    rng = np.random.default_rng(0)
    spec = paper_scale_spec(folder, SEED_GRID)
    spec.inversion = spec.inversion.model_copy(update={"checkpoints": checkpoints})
    clip_seconds = 0.0
    t0 = time.perf_counter()
    directions = [(np.cos(a), np.sin(a)) for a in np.linspace(0, 2 * np.pi, 22, endpoint=False)]
    for i, item in enumerate(spec.data):
        write_video(item.video, moving_shape_video(frames, height, width, direction=directions[i], texture_seed=i))
    plan = make_plan(spec)
    store = Store(spec.storage)
    save_plan(store, plan)
    variants = sorted(plan.variants)
    colours = {v: tuple(int(c) for c in rng.integers(40, 255, 3)) for v in variants}
    videos = [item.id for item in spec.data]
    rendered: dict[tuple, Path] = {}  # one clip per (video, variant, step), copied for each prompt
    clip_seconds += time.perf_counter() - t0
    for trial in plan.trials:
        rows = []
        for g in trial.generations:
            video = g.columns["video"]
            vi, step = videos.index(video), g.checkpoint or 0
            if rng.random() < 0.005:
                rows.append(sample_row(g.columns, error="generate: CUDA out of memory", device="cuda:NVIDIA H100"))
                continue
            value = 0.28 + 0.002 * vi + 0.01 * rng.standard_normal()
            metrics = {"text_similarity": value, "motion_fidelity": 0.9 + 0.0001 * step + 0.01 * rng.standard_normal(),
                       "temporal_consistency": 0.93 + 0.005 * rng.standard_normal(),
                       "appearance_leakage": 0.6 + 0.0004 * step + 0.01 * rng.standard_normal(),
                       "motion_fidelity_dmt": value + 0.6, "motion_fidelity_two_way": value + 0.55,
                       "fid_features": rng.normal(value, 1.0, (4, DIM)).astype(np.float32)}
            rel = store.video_path(g.generation_key)
            t0 = time.perf_counter()
            key = (video, g.variant, step)
            target = Path(store.uri, rel)
            if key not in rendered:
                rendered[key] = write_video(target, moving_shape_video(
                    frames, height, width, direction=directions[vi], color=colours[g.variant], texture_seed=vi))
            elif not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(rendered[key], target)
            clip_seconds += time.perf_counter() - t0
            rows.append(sample_row(g.columns, metrics, video_path=store.uri_of(rel), device="cuda:NVIDIA H100",
                                   invert_seconds=95.0, generate_seconds=4.0 + rng.random(),
                                   score_seconds=1.5, pretrained_metrics=True, clip_pretrained=True,
                                   clip_backbone="ViT-B-32/laion2b_s34b_b79k", tracker="cotracker3",
                                   fid_backbone="inception"))
        write_part(store, spec.name, trial.trial_id, rows)
        steps = 0 if trial.base else trial.inversion["steps"]
        curve = (np.exp(-np.linspace(0, 3, steps)) * 0.2 + 0.05 + 0.02 * rng.standard_normal(steps)).clip(0.01)
        write_part(store, spec.name, trial.trial_id, [{**trial.columns, "loss_curve": curve, "steps": steps,
                                                       "seconds": 0.0 if trial.base else 95.0 + rng.random(),
                                                       "device": "cuda:NVIDIA H100", "status": "ok"}],
                   table="inversions")
    for d in plan.ddim_inversions:
        write_part(store, spec.name, f"ref-{d.ddim_key}", [{
            "reference_key": d.ddim_key, "source": "sweep_videos", "video": d.video, "ddim_key": d.ddim_key,
            "content_hash": d.ddim_key, "n_frames": 24, "dim": DIM, "fid_backbone": "inception",
            "fid_features": rng.normal(0.0, 1.0, (24, DIM)).astype(np.float32), "status": "ok"}], table="references")
    return str(Path(spec.storage) / spec.name), clip_seconds


def weigh(report_dir: Path) -> dict:
    index = report_dir / "index.html"
    page = index.read_text(encoding="utf-8")
    build = report_dir / page.split('src="', 1)[1].split("/", 1)[0]
    build_files = [p for p in build.rglob("*") if p.is_file() and p.name != "previews.json"]
    previews = list((report_dir / "previews").glob("*.webp"))
    text = (build / "gallery.js").read_text(encoding="utf-8")
    data = json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))
    first = set()
    for g in data["groups"][:html.PAGE_SIZE]:
        for c in [g["ref"], *g["c"]]:
            if c.get("file"):
                first.add(c["file"])
    first_bytes = sum((report_dir / f).stat().st_size for f in first)
    size = {"index_html": index.stat().st_size, "build": sum(p.stat().st_size for p in build_files),
            "gallery_js": (build / "gallery.js").stat().st_size,
            "plots": sum(p.stat().st_size for p in build.glob("plots/*.svg")), "n_plots": len(list(build.glob("plots/*"))),
            "previews": sum(p.stat().st_size for p in previews), "n_previews": len(previews),
            "first_page_previews": first_bytes, "n_first_page_previews": len(first)}
    size["total"] = size["index_html"] + size["build"] + size["previews"]
    size["first_page"] = size["index_html"] + size["build"] + first_bytes
    size["mean_preview"] = size["previews"] / max(1, len(previews))
    return size


def browser_load(index: Path) -> dict:
    """What chromium fetches when the report opens (no scrolling), and after scrolling through page 1."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    fetched: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("request", lambda r: fetched.append(r.url))
        t0 = time.perf_counter()
        page.goto(index.as_uri())
        page.wait_for_function("() => document.getElementById('gallery').dataset.ready === 'true'")
        ready = time.perf_counter() - t0
        page.wait_for_timeout(500)
        opened = list(fetched)
        groups = page.locator("#gallery-groups .group")
        for i in range(groups.count()):
            groups.nth(i).scroll_into_view_if_needed()
            page.wait_for_timeout(50)
        page.wait_for_function("() => Array.from(document.querySelectorAll('#gallery-groups img'))"
                               ".every(i => i.complete)")
        browser.close()

    def size(urls):
        from urllib.parse import unquote, urlparse

        return sum(os.path.getsize(unquote(urlparse(u).path)) for u in set(urls) if u.startswith("file://"))

    return {"ready_s": ready, "opened_requests": len(set(opened)), "opened_bytes": size(opened),
            "page1_requests": len(set(fetched)), "page1_bytes": size(fetched)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=230)
    parser.add_argument("--checkpoints", default="400",
                        help="checkpoint steps, comma-separated (default 400: 1,320 samples; 250,400: 2,640)")
    parser.add_argument("--n-boot", type=int, default=9999, help="bootstrap resamples (report's default)")
    parser.add_argument("--browser", action="store_true", help="also load the page in chromium (Playwright)")
    parser.add_argument("--keep", help="build the sweep in this folder and keep it (default: a temp folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-report-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        folder, clip_seconds = build(tmp, args.frames, args.height, args.width,
                                     [int(c) for c in args.checkpoints.split(",")])
        setup = time.perf_counter() - t0
        table = load(folder)
        out: dict = {"samples": table.num_rows, "errors": table["status"].to_pylist().count("error"),
                     "setup_s": round(setup, 1), "clips_s": round(clip_seconds, 1)}

        t0 = time.perf_counter()
        report(folder, n_boot=args.n_boot, echo=False, html=False)
        out["statistics_s"] = round(time.perf_counter() - t0, 2)

        # the HTML report from the same tables report() computes, timed in parts
        summary = summarize(table, references=load(folder, "references"), n_boot=args.n_boot)
        comparisons = compare(table, n_boot=args.n_boot)
        timings: dict[str, float] = {}

        def timed(name, fn):
            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
            return wrapper

        gallery.make_previews = timed("previews", gallery.make_previews)
        html.make_plots = timed("plots", html.make_plots)
        report_dir = Path(folder, "report")
        for run in ("cold", "warm"):
            timings.clear()
            t0 = time.perf_counter()
            html.write_html_report(folder, report_dir, table=table, summary=summary, comparisons=comparisons,
                                notes=summary_notes(summary))
            total = time.perf_counter() - t0
            out[f"html_{run}_s"] = round(total, 2)
            out[f"html_{run}_previews_s"] = round(timings.get("previews", 0.0), 2)
            out[f"html_{run}_plots_s"] = round(timings.get("plots", 0.0), 2)
            out[f"html_{run}_rest_s"] = round(total - sum(timings.values()), 2)
        t0 = time.perf_counter()
        report(folder, n_boot=args.n_boot, echo=False)
        out["report_warm_s"] = round(time.perf_counter() - t0, 2)
        out["weight"] = weigh(report_dir)
        if args.browser:
            out["browser"] = browser_load(report_dir / "index.html")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    w = out["weight"]
    mb = lambda b: f"{b / 1e6:.2f} MB"  # noqa: E731
    print(f"{out['samples']} samples ({out['errors']} errors); clips {args.frames}×{args.height}×{args.width}; "
          f"setup {out['setup_s']} s (clips {out['clips_s']} s)")
    print(f"statistics only (report, html=False)   {out['statistics_s']:>7.2f} s")
    for run in ("cold", "warm"):
        print(f"HTML report {run:<4}                       {out[f'html_{run}_s']:>7.2f} s   (previews "
              f"{out[f'html_{run}_previews_s']} s, plots {out[f'html_{run}_plots_s']} s, rest {out[f'html_{run}_rest_s']} s)")
    print(f"report() end to end, warm              {out['report_warm_s']:>7.2f} s")
    print(f"page weight: index.html {w['index_html'] / 1e3:.0f} kB, build {w['build'] / 1e3:.0f} kB (gallery.js "
          f"{w['gallery_js'] / 1e3:.0f} kB, {w['n_plots']} plots {w['plots'] / 1e3:.0f} kB), previews {w['n_previews']} × "
          f"{w['mean_preview'] / 1e3:.1f} kB = {mb(w['previews'])}; total {mb(w['total'])}")
    print(f"first page (all but other pages' previews): {mb(w['first_page'])} ({w['n_first_page_previews']} previews)")
    if "browser" in out:
        b = out["browser"]
        print(f"chromium: ready in {b['ready_s']:.2f} s; on open {b['opened_requests']} files, {mb(b['opened_bytes'])}; "
              f"after scrolling page 1 {b['page1_requests']} files, {mb(b['page1_bytes'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
