"""Sweeps to report on, for the report tests: variant names, a sweep with real clips and hostile text
(`build_sweep`), a search's summary files (`search_rows`, `write_search`), and readers of the written page."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

from helpers.sweeps import make_spec, run_fake
from sweep.report import html_report_path
from sweep.results.store import Store
from sweep.results.tables import load, sample_row, write_part
from sweep.run.search import search_table
from videoio import moving_shape_video, write_video

PAPER = "qk=1d v=2d debias=difference"
NONE = "qk=1d v=2d debias=none"
TWO_VARIANTS = {"qk": ["1d"], "v": ["2d"], "debias": ["difference", "none"]}  # the baseline and one other
EVIL_PROMPT = 'a "quoted" <i>prompt</i> & more'
EVIL_ERROR = "generate: <script>alert('x')</script> & <b>boom</b>"
COLOURS = {PAPER: (230, 60, 40), NONE: (40, 200, 90), "qk=1d v=off": (60, 90, 230), "qk=off v=off": (220, 200, 40)}
DIRECTIONS = [(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1)]
SEARCH_ERROR = "RuntimeError: CUDA out of memory <at step 60> & more"


def build_sweep(root: Path, n_videos: int = 6, size: tuple[int, int] = (48, 64)) -> tuple[str, dict]:
    """A sweep folder `abl` with real clips: n_videos × 2 prompts × 4 variants (the base model at step 0, the
    others at steps 10 and 20), appearance leakage growing with the step, two failed generations ("CUDA out of
    memory") and one error row whose prompt and message hold HTML. Returns (folder, {"spec", "store"})."""
    spec = make_spec(root, n_videos=n_videos)
    h, w = size
    for i, item in enumerate(spec.data):  # real reference clips (make_spec writes placeholders)
        write_video(item.video, moving_shape_video(8, h, w, direction=DIRECTIONS[i % len(DIRECTIONS)],
                                                   texture_seed=i))

    def metrics(g):
        step = g.checkpoint or 0
        return {"text_similarity": 0.28 + 0.01 * (g.variant == PAPER) + 0.0005 * len(g.prompt) * int(g.columns["video"][1:]),
                "motion_fidelity": 0.6 + 0.01 * step + 0.01 * int(g.columns["video"][1:]),
                "temporal_consistency": 0.9, "appearance_leakage": 0.1 + 0.005 * step}

    store = run_fake(spec, metrics=metrics, fail=lambda g: g.variant == NONE and g.prompt == "p0a")
    table = load(spec.storage)
    for r in table.to_pylist():
        if r["status"] == "ok":
            vid = int(r["video"][1:])
            write_video(Path(spec.storage) / r["video_path"], moving_shape_video(
                8, h, w, direction=DIRECTIONS[vid % len(DIRECTIONS)], color=COLOURS[r["variant"]], texture_seed=vid))
    first = table.to_pylist()[0]
    write_part(store, spec.name, "evil", [sample_row(
        {k: first[k] for k in ("sweep", "trial_id", "variant", "video", "source_video", "generation_seed",
                               "qk_applied", "v_applied", "remove_applied", "debias_applied", "seed_applied",
                               "checkpoint_step_applied")}
        | {"sample_key": "evil", "prompt": EVIL_PROMPT}, error=EVIL_ERROR, device="cpu", pretrained_metrics=False)])
    return str(Path(spec.storage) / spec.name), {"spec": spec, "store": store}


# --------------------------------------------------------------------------------------------------
# A search: search.parquet / search.json as sweep.run.search.write_search_summary writes them.

def search_rows(sweep: str) -> list[dict]:
    """Four samples of one video: the best (ran to its end, best at step 100), one stopped early at the first
    rung, one failed after its first rung, one that ran to its end but scored lower."""
    def row(search, lr, steps, qk, steps_run, rungs, objectives, *, error=None, best=False):
        scored = [(o, s) for o, s in zip(objectives, rungs)]
        top = max(scored, key=lambda p: (p[0], -p[1])) if scored else (None, None)
        config = {"inversion.lr": lr, "inversion.steps": steps, "qk": qk}
        return {"sweep": sweep, "search": search, "experiment": f"{sweep}-search", "config": json.dumps(config),
                "status": "error" if error else "ok", "error": error, "steps_max": steps, "steps_run": steps_run,
                "stopped_early": error is None and steps_run < steps, "rungs": rungs, "objectives": objectives,
                "best_step": top[1], "best_objective": top[0], "is_best": best, "videos": 1,
                "inversion_keys": [f"key-{search}"], "seconds": 10.0 * steps_run, "code_version": "test", **config}

    return [row("s_best", 0.0125, 200, "2d", 200, [50, 100, 200], [0.41, 0.5512, 0.52], best=True),
            row("s_early", 0.0033, 400, "1d", 50, [50], [0.30]),
            row("s_failed", 0.041, 200, "1d", 50, [50], [0.2], error=SEARCH_ERROR),
            row("s_low", 0.002, 100, "2d", 100, [50, 100], [0.35, 0.45])]


def write_search(store: Store, sweep: str, rows: list[dict], seconds: float = 321.0) -> dict:
    """search.parquet through the search's own table builder, and the search.json it would write."""
    store.write_parquet(f"{sweep}/search.parquet", search_table(rows))
    winner = next(r for r in rows if r["is_best"])
    run, full = sum(r["steps_run"] for r in rows), sum(r["steps_max"] for r in rows)  # one video
    summary = {
        "sweep": sweep, "experiment": f"{sweep}-search", "experiment_path": f"/x/{sweep}/tune/{sweep}-search",
        "algorithm": "random", "space": {"inversion.lr": {"loguniform": [0.002, 0.05]},
                                         "inversion.steps": {"choice": [100, 200, 400]}, "qk": {"choice": ["1d", "2d"]}},
        "objective": {"metric": "motion_fidelity", "mode": "max", "penalty": {"appearance_leakage": 0.5}},
        "scheduler": {"asha": {"time_attr": "asha_time", "grace_period": 1, "max_t": 4.0, "reduction_factor": 2.0,
                               "rungs": [50, 100, 200]}},
        "samples": 6, "trials": len(rows), "stopped_early": sum(r["stopped_early"] for r in rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "best": {"search": winner["search"], "config": json.loads(winner["config"]), "step": winner["best_step"],
                 "objective": winner["best_objective"], "inversion_keys": winner["inversion_keys"],
                 "embeddings": [f"/x/store/inversions/{k}/step-{winner['best_step']}" for k in winner["inversion_keys"]]},
        "compute": {"inversion_steps_run": run, "inversion_steps_to_end": full, "fraction_run": run / full,
                    "seconds": seconds}}
    store.write_json(f"{sweep}/search.json", summary)
    return summary


# --------------------------------------------------------------------------------------------------
# Reading the written page.

def page_html(folder: str) -> str:
    """The report page of the sweep folder (or storage root) `folder`."""
    return html_report_path(folder).read_text(encoding="utf-8")


def gallery_data(index: Path) -> dict:
    """The gallery index (gallery.js) the page at `index` loads."""
    page = index.read_text(encoding="utf-8")
    build = re.search(r'src="(build-[0-9a-f]+)/gallery.js"', page).group(1)
    text = (index.parent / build / "gallery.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))


def text_cells(html: str) -> list[list[str]]:
    """The cells of each table row, as text."""
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    return [[unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
            for r in rows]


def between(page: str, start: str, end: str = "</section>") -> str:
    """The page from `start` to the next `end`."""
    i = page.index(start)
    return page[i:page.index(end, i)]


def plain_text(html: str) -> str:
    """What the browser shows: tags dropped, entities decoded, runs of white space as one space."""
    return " ".join(unescape(re.sub(r"<[^>]+>", "", html)).split())
