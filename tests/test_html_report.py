"""The HTML report (`sweep.html_report`, written by `report()`): what the page holds, that its numbers are
report.py's, previews made once, atomic replacement, compute estimates, user preference from real votes, the CLI.
tests/test_report_browser.py opens the same kind of report in a real browser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from sweep import html_report as H
from sweep import study as S
from sweep.report import html_report_path, paper_cells, report, summarize
from sweep.search import objective_formula
from sweep.store import Store
from sweep.tables import load, sample_row, write_part
from test_results import make_spec, run_fake  # noqa: I001 - sibling test module (tests/ is on sys.path)
from videoio import moving_shape_video, write_video

PAPER = "qk=1d v=2d debias=difference"
NONE = "qk=1d v=2d debias=none"
EVIL_PROMPT = 'a "quoted" <i>prompt</i> & more'
EVIL_ERROR = "generate: <script>alert('x')</script> & <b>boom</b>"
COLOURS = {PAPER: (230, 60, 40), NONE: (40, 200, 90), "qk=1d v=off": (60, 90, 230), "qk=off v=off": (220, 200, 40)}
DIRECTIONS = [(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, 1)]


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


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("html-report")
    folder, info = build_sweep(root)
    report(folder, n_boot=200, echo=False)
    return folder, info


def _page(folder: str) -> str:
    return html_report_path(folder).read_text(encoding="utf-8")


def _gallery(index: Path) -> dict:
    page = index.read_text(encoding="utf-8")
    build = re.search(r'src="(build-[0-9a-f]+)/gallery.js"', page).group(1)
    text = (index.parent / build / "gallery.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))


def _text_cells(html: str) -> list[list[str]]:
    rows = re.findall(r"<tr>(.*?)</tr>", html, re.S)
    return [[unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
            for r in rows]


def test_the_page_has_every_section_and_escapes_user_text(built):
    folder, _ = built
    index = html_report_path(folder)
    assert index == Path(folder, "report", "index.html").resolve()
    page = _page(folder)
    for section in ("summary", "provenance", "compute", "plots", "gallery", "errors"):
        assert f'id="{section}"' in page
    assert "RANDOM-WEIGHT METRIC BACKBONES" in page and 'id="random-weights"' in page
    assert "http://" not in page and "https://" not in page  # offline: nothing from a CDN
    # user text is escaped: the error message and the prompt appear as text, never as markup
    assert "<script>alert" not in page and "<b>boom" not in page and "<i>prompt" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;boom&lt;/b&gt;" in page
    assert "a &#34;quoted&#34; &lt;i&gt;prompt&lt;/i&gt; &amp; more" in page
    errors = _text_cells(page[page.index('id="errors-table"'):])
    assert sum(EVIL_ERROR in r for r in errors) == 1 and sum("CUDA out of memory" in r for r in errors) == 2
    # the spec and the sizes
    assert "Spec of abl (plan.json)" in page and "name: abl" in page
    sizes = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page))
    assert sizes["samples (rows)"] == "85 of 84 planned" and sizes["errors"] == "3" and sizes["videos"] == "6"
    assert sizes["prompts"] == "13" and sizes["variants"] == "4" and sizes["checkpoints"] == "0, 10, 20"
    # how the numbers were made
    prov = _text_cells(page[page.index('id="provenance-table"'):page.index('id="compute"')])
    assert ["pretrained_metrics", "false ×82"] == prov[[r[0] for r in prov].index("pretrained_metrics")][:2]
    assert any(r[0] == "fid_backbone" and r[1] == "clip:fake ×82" for r in prov)


def test_the_tables_show_report_py_numbers(built):
    """The Table 1 layout is report.paper_cells' (bold best, marks), and the per-variant CIs are summarize's."""
    folder, _ = built
    page = _page(folder)
    table = load(folder)
    summary = summarize(table, n_boot=200, references=load(folder, "references"))
    header, labels, values, _ = paper_cells(summary, load(folder, "comparisons"))
    shown = _text_cells(page[page.index('id="paper-table"'):page.index("</table>", page.index('id="paper-table"'))])
    assert shown[0] == header
    expected = [[*label, *(c["text"] + ("†" if c["dagger"] else "") + ("" if c["p_holm"] is None or c["p_holm"] >= 0.05
                                                                       else "**" if c["p_holm"] < 0.01 else "*")
                          for c in row)] for label, row in zip(labels, values)]
    assert shown[1:] == expected
    bold = re.findall(r"<strong>(.*?)</strong>", page[page.index('id="paper-table"'):page.index('id="variant-table"')])
    assert len(bold) == sum(c["best"] for row in values for c in row)
    rows = _text_cells(page[page.index('id="variant-table"'):page.index("</table>", page.index('id="variant-table"'))])
    by_label = {r[0]: r for r in rows[1:]}
    col = rows[0].index("Motion fidelity ↑")
    for r in summary.to_pylist():
        label = f"{r['variant']} @ {r['checkpoint_step_applied']}"
        lo, hi = r["motion_fidelity_low"], r["motion_fidelity_high"]
        assert by_label[label][col] == f"{r['motion_fidelity_mean']:.4f}[{lo:.4f}, {hi:.4f}]"


def test_plots_are_svgs_made_with_matplotlib(built):
    folder, _ = built
    report_dir = Path(folder, "report")
    page = _page(folder)
    plots = re.findall(r'<img src="(build-[0-9a-f]+/plots/[^"]+)"', page)
    names = {p.rsplit("/", 1)[1] for p in plots}
    metrics = ("text_similarity", "motion_fidelity", "temporal_consistency", "appearance_leakage")
    assert names == {*(f"ci-{m}.svg" for m in metrics), *(f"steps-{m}.svg" for m in metrics), "loss.svg",
                     "tradeoff.svg"}
    for p in plots:
        svg = (report_dir / p).read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Matplotlib" in svg
        assert (report_dir / p).stat().st_size < 60_000
    steps = (report_dir / [p for p in plots if p.endswith("steps-appearance_leakage.svg")][0]).read_text()
    assert "Appearance leakage against the checkpoint step" in steps and "(step 0)" in steps


def test_gallery_index_groups_every_sample_with_its_reference(built):
    folder, info = built
    data = _gallery(html_report_path(folder))
    table = load(folder)
    assert sum(len(g["c"]) for g in data["groups"]) == table.num_rows
    assert len(data["groups"]) == 6 * 2 + 1  # every (video, prompt, seed), plus the error row's own prompt
    assert {a["key"] for a in data["axes"]} == {"v_applied", "remove_applied", "debias_applied", "qk_applied",
                                                 "checkpoint_step_applied"}
    previews = Path(folder, "report", "previews")
    for g in data["groups"]:
        assert g["ref"]["file"].startswith("previews/") and (previews.parent / g["ref"]["file"]).is_file()
        for c in g["c"]:
            if "e" in c:
                continue
            assert (previews.parent / c["file"]).is_file() and c["url"].startswith("file://")
            assert (c["w"], c["h"]) == (64, 48)  # smaller than PREVIEW_HEIGHT: kept at its size
    errors = [c["e"] for g in data["groups"] for c in g["c"] if "e" in c]
    assert sorted(errors) == sorted(["CUDA out of memory"] * 2 + [EVIL_ERROR])
    # one preview per distinct clip (the reference of a video is shared by its groups)
    distinct = {r["video_path"] for r in table.to_pylist() if r["status"] == "ok"} | {
        r["source_video"] for r in table.to_pylist()}
    assert len(list(previews.glob("*.webp"))) == len(distinct)
    from PIL import Image

    with Image.open(next(previews.glob("*.webp"))) as im:
        assert im.format == "WEBP" and getattr(im, "n_frames", 1) == 8 and im.info.get("loop") == 0


def test_previews_are_made_once_rerun_updates_atomically(tmp_path, monkeypatch):
    folder, _ = build_sweep(tmp_path, n_videos=2)
    made = []
    real = H._render_preview
    monkeypatch.setattr(H, "_render_preview", lambda loc, dest, h: made.append(loc) or real(loc, dest, h))
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
    assert len([p for p in report_dir.glob("build-*")]) == H.KEEP_BUILDS
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

    monkeypatch.setattr(H, "make_plots", boom)
    with pytest.raises(RuntimeError, match="plotting failed"):
        report(folder, n_boot=0, echo=False)
    assert (report_dir / "index.html").read_bytes() == page and not list(report_dir.rglob(".tmp-*"))
    build = re.search(rb'src="(build-[0-9a-f]+)/gallery.js"', page).group(1).decode()
    assert (report_dir / build / "gallery.js").is_file()


def test_rows_that_land_later_appear_on_rerun(tmp_path):
    folder, info = build_sweep(tmp_path, n_videos=2)
    spec = info["spec"]
    parts = sorted(Path(folder, "samples").glob("part-*.parquet"))
    held = {p: p.read_bytes() for p in parts[:2]}
    for p in held:
        p.unlink()
    report(folder, n_boot=0, echo=False)
    n_before = sum(len(g["c"]) for g in _gallery(html_report_path(folder))["groups"])
    for p, data in held.items():
        p.write_bytes(data)
    report(folder, n_boot=0, echo=False)
    n_after = sum(len(g["c"]) for g in _gallery(html_report_path(folder))["groups"])
    assert n_after == load(folder).num_rows > n_before
    assert spec.name in _page(folder)


def test_compute_spent_and_the_estimate_of_what_planning_saved(built):
    folder, _ = built
    table, inversions = load(folder), load(folder, "inversions")
    plan = json.loads(Path(folder, "plan.json").read_text())
    out = H.compute(table, inversions, {"abl": plan})
    (cpu,) = out["spent"]
    assert cpu["device"] == "cpu" and cpu["kind"] == "CPU"
    # run_fake: 3.0 s per inversion row, 1.0 s per generated clip
    assert cpu["optimisation"] == pytest.approx(3.0 * inversions.num_rows / 3600)
    assert cpu["generation"] == pytest.approx(table["generate_seconds"].to_numpy(zero_copy_only=False)[
        ~table["generate_seconds"].is_null().to_numpy(zero_copy_only=False)].sum() / 3600)
    (saved,) = out["saved"]
    work = plan["summary"]["work"]
    opt = [r for r in inversions.to_pylist() if r["steps"]]
    t_opt = sum(r["seconds"] for r in opt) / sum(r["steps"] for r in opt)
    n_gen = sum(1 for g in table["generate_seconds"].to_pylist() if g)
    t_den = n_gen * 1.0 / (n_gen * work["planned"]["denoising_steps"] / work["planned"]["generations"])
    naive = work["naive"]["optimisation_steps"] * t_opt + work["naive"]["denoising_steps"] * t_den
    planned = work["planned"]["optimisation_steps"] * t_opt + work["planned"]["denoising_steps"] * t_den
    assert saved["naive_h"] == pytest.approx(naive / 3600) and saved["planned_h"] == pytest.approx(planned / 3600)
    assert saved["ratio"] == pytest.approx(naive / planned) and saved["ratio"] > 1 and saved["devices"] == ["cpu"]
    page = _page(folder)
    text = unescape(re.sub(r"<[^>]+>", "", page[page.index('id="saved-abl"'):page.index("</p>", page.index('id="saved-abl"'))]))
    assert "Estimate" in text and "measured on cpu" in text and f"(×{naive / planned:.1f})" in text
    assert "An estimate" in text


def test_user_preference_from_real_votes(built, tmp_path):
    """Votes written by sweep.study (a study at checkpoint 20) fill user_preference in the paper table for the
    rows shown to raters, and the page shows win rates and Bradley–Terry strengths."""
    folder, _ = built
    study = S.create_study(folder, "pref", [PAPER, NONE], checkpoint=20, raters=2, repeats=0)
    store = Store(folder)
    for k, rater in enumerate(S.load_raters(folder, "pref")):
        for i, item in enumerate(study["items"]):
            a, b = item["pair"]
            choice = "left" if (i + k) % 3 else "right"  # PAPER wins 2 of 3
            S.write_vote(store, S.vote_row(study, item, a, b, rater=rater["id"], repeat=False, question="motion",
                                           choice=choice, response_ms=100))
    try:
        summary = report(folder, tmp_path / "out", n_boot=0, echo=False)
        prefs = {(r["variant"], r["checkpoint_step_applied"]): r["user_preference"] for r in summary.to_pylist()}
        votes = S.load_votes(folder)
        expected = S.user_preference(votes).to_pylist()
        assert prefs[(PAPER, 20)] == pytest.approx(next(r for r in expected if r["variant"] == PAPER)["user_preference"])
        assert prefs[(NONE, 20)] == pytest.approx(next(r for r in expected if r["variant"] == NONE)["user_preference"])
        assert prefs[(PAPER, 10)] is None and prefs[(NONE, 10)] is None  # not what raters saw
        assert prefs[(PAPER, 20)] > 0.5
        page = (tmp_path / "out" / "report" / "index.html").read_text(encoding="utf-8")
        assert 'id="preference"' in page and "User preference ↑" in page
        assert "Bradley–Terry" in page and f"{PAPER} <em>vs</em> {NONE}" in page
        # a storage root holding the sweep: the same join (the votes live in the sweep folder)
        root_summary = report(str(Path(folder).parent), tmp_path / "root", n_boot=0, echo=False)
        assert root_summary["user_preference"].to_pylist() == summary["user_preference"].to_pylist()
    finally:
        import shutil

        shutil.rmtree(Path(folder, "votes"))
        shutil.rmtree(Path(folder, "studies"))


def test_cli_prints_the_path_and_open_opens_it(built, monkeypatch, capsys, tmp_path):
    import webbrowser

    from sweep.cli import main

    folder, _ = built
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    assert main(["report", folder, "--out", str(tmp_path), "--n-boot", "20", "--open"]) == 0
    index = (tmp_path / "report" / "index.html").resolve()
    assert f"report: {index}" in capsys.readouterr().out and index.is_file()
    assert opened == [index.as_uri()]
    assert main(["report", folder, "--out", str(tmp_path), "--n-boot", "20"]) == 0
    assert len(opened) == 1


def test_remote_clips_are_read_through_the_store(tmp_path, monkeypatch):
    """Clip URIs (s3://...) are fetched with sweep.store.Store; a missing or unreadable clip is a note, not a crash."""
    import pyarrow.fs as pafs

    import sweep.store as store_module

    memory = pafs._MockFileSystem()
    monkeypatch.setattr(store_module, "_filesystem_from_uri", lambda uri: (memory, uri.split("://", 1)[1]))
    memory.create_dir("bucket/results/store/videos", recursive=True)  # (an object store has no folders to make)
    local = write_video(tmp_path / "a.mp4", moving_shape_video(8, 256, 320))
    Store("s3://bucket/results").upload(local, "store/videos/a.mp4")
    Store("s3://bucket/results").write_bytes_atomic("store/videos/bad.mp4", b"not a video")
    sources = ["s3://bucket/results/store/videos/a.mp4", "store/videos/a.mp4", "s3://bucket/results/store/videos/bad.mp4",
               str(tmp_path / "missing.mp4")]
    out = H.make_previews(sources, tmp_path / "previews", ["s3://bucket/results"], height=128)
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
    page = _page(str(folder))
    assert "no estimate of the compute saved by planning (no plan.json" in page
    data = _gallery(html_report_path(folder))
    notes = {c["note"].split(":")[0] for g in data["groups"] for c in g["c"]}
    assert notes == {"clip not found"}


def test_the_report_path_imports_no_plotting_library():
    code = ("import sys, sweep.report, sweep.cli, sweep.tables; "
            "bad = [m for m in ('matplotlib', 'jinja2', 'PIL', 'sweep.html_report') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


# --------------------------------------------------------------------------------------------------
# The search section: search.parquet / search.json as sweep.search.summarize writes them.

SEARCH_ERROR = "RuntimeError: CUDA out of memory <at step 60> & more"


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
    """search.parquet through sweep.search's own table builder, and the search.json summarize would write."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sweep.search import _to_table
    from sweep.tables import SEARCH_SCHEMA

    sink = pa.BufferOutputStream()  # as summarize writes it
    pq.write_table(_to_table(rows, SEARCH_SCHEMA), sink)
    store.write_bytes_atomic(f"{sweep}/search.parquet", sink.getvalue().to_pybytes())
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


def _section(page: str, start: str, end: str = "</section>") -> str:
    i = page.index(start)
    return page[i:page.index(end, i)]


def _plain_text(html: str) -> str:
    """What the browser shows: tags dropped, entities decoded, runs of white space as one space."""
    return " ".join(unescape(re.sub(r"<[^>]+>", "", html)).split())


def test_the_search_section_shows_objective_samples_plot_and_compute(tmp_path):
    spec = make_spec(tmp_path, n_videos=2, axes={"qk": ["1d"], "v": ["2d"], "debias": ["difference"]})
    store = run_fake(spec)
    folder = Path(spec.storage) / spec.name
    report(folder, n_boot=0, echo=False)
    page = _page(str(folder))
    assert 'id="search"' not in page and 'href="#search"' not in page  # no search.json: no section
    assert not list(Path(folder, "report").glob("build-*/plots/search-*.svg"))

    rows = search_rows(spec.name)
    summary = write_search(store, spec.name, rows)
    report(folder, n_boot=0, echo=False)
    page = _page(str(folder))
    assert 'href="#search"' in page and page.count('<section id="search">') == 1
    section = _section(page, '<section id="search">')
    text = _plain_text(section)
    assert "max motion_fidelity − 0.5·appearance_leakage" in text
    assert "random" in text and "ASHA, rungs at inversion steps 50, 100, 200 (reduction factor 2)" in text
    assert "4 of 6 requested" in text
    # the best sample: its config and its best step (100, not its last step 200)
    best = _plain_text(_section(page, 'id="search-best-abl"', "</p>"))
    assert "inversion.lr=0.0125, inversion.steps=200, qk=2d at inversion step 100: objective 0.5512" in best
    assert "s_best" in best and "/x/store/inversions/key-s_best/step-100" in section
    # the samples, best first, then by best objective; the failed one listed with its (escaped) error
    table = _text_cells(_section(page, 'id="search-table-abl"', "</table>"))
    assert table[0][:5] == ["", "sample", "inversion.lr", "inversion.steps", "qk"]
    assert [r[1] for r in table[1:]] == ["s_best", "s_low", "s_early", "s_failed"]
    by = {r[1]: dict(zip(table[0], r)) for r in table[1:]}
    assert by["s_best"][""] == "★ best" and all(by[s][""] == "" for s in ("s_low", "s_early", "s_failed"))
    assert by["s_best"]["best step"] == "100" and by["s_best"]["best objective"] == "0.5512"
    assert by["s_best"]["steps run / max"] == "200 / 200" and by["s_best"]["stopped early"] == "no"
    assert by["s_early"]["stopped early"] == "yes, at step 50" and by["s_early"]["steps run / max"] == "50 / 400"
    assert by["s_early"]["inversion.lr"] == "0.0033" and by["s_early"]["status"] == "ok"
    assert by["s_failed"]["status"] == f"error: {SEARCH_ERROR}" and by["s_failed"]["stopped early"] == "–"
    assert "&lt;at step 60&gt; &amp; more" in section and "<at step 60>" not in page
    assert by["s_best"]["objective at each step"] == "50: 0.4100 · 100: 0.5512 · 200: 0.5200"
    # compute: the steps planted, what early stopping saved
    run, full = sum(r["steps_run"] for r in rows), sum(r["steps_max"] for r in rows)
    assert (run, full) == (400, 900) == (summary["compute"]["inversion_steps_run"],
                                         summary["compute"]["inversion_steps_to_end"])
    compute = _plain_text(_section(page, 'id="search-compute-abl"', "</p>"))
    assert f"{run} of {full} inversion steps run ({run / full:.0%})" in compute
    assert f"early stopping saved {full - run} steps ({(full - run) / full:.0%})" in compute
    assert "500 steps (56%)" in compute and "5.3 min" in compute  # 321 s
    # the plot: an SVG in this build, shown in the section, one line per sample
    plots = re.findall(r'<img src="(build-[0-9a-f]+/plots/search-abl\.svg)"', section)
    assert len(plots) == 1
    svg = Path(folder, "report", plots[0]).read_text()
    assert svg.lstrip().startswith("<?xml") and "Matplotlib" in svg and "best: step 100" in svg
    assert "stopped early" in svg and "failed" in svg and "ran to its end" in svg
    assert "inversion step" in svg and "max motion_fidelity − 0.5·appearance_leakage" in svg


def test_search_blocks_per_sweep_of_a_storage_root(tmp_path):
    """A storage root: one block per sweep that ran a search; a sweep without one gets none."""
    axes = {"qk": ["1d"], "v": ["2d"], "debias": ["difference"]}
    first = make_spec(tmp_path, name="one", n_videos=1, axes=axes)
    second = make_spec(tmp_path, name="two", n_videos=1, axes=axes)
    third = make_spec(tmp_path, name="three", n_videos=1, axes=axes)
    store = run_fake(first)
    run_fake(second)
    run_fake(third)
    rows = search_rows("one")
    write_search(store, "one", rows)
    low = [{**r, "is_best": r["search"] == "s_low", "search": f"t_{r['search']}"} for r in rows]
    write_search(store, "three", low)
    # a search.json alone (no scored sample, no scheduler, no search.parquet): a block that says so
    fourth = make_spec(tmp_path, name="four", n_videos=1, axes=axes)
    run_fake(fourth)
    store.write_json("four/search.json", {
        "algorithm": "random", "objective": {"metric": "appearance_leakage", "mode": "min", "penalty": {}},
        "scheduler": None, "samples": 2, "trials": 0, "stopped_early": 0, "errors": 0, "best": None,
        "compute": {"inversion_steps_run": 0, "inversion_steps_to_end": 0, "fraction_run": None, "seconds": 2.0}})
    report(first.storage, n_boot=0, echo=False)
    page = _page(first.storage)
    section = _section(page, '<section id="search">')
    assert 'id="search-one"' in section and 'id="search-three"' in section and 'id="search-two"' not in section
    assert 'id="search-table-one"' in section and 'id="search-table-three"' in section
    best = _plain_text(_section(page, 'id="search-best-three"', "</p>"))
    assert "inversion.lr=0.002, inversion.steps=100, qk=2d at inversion step 100: objective 0.4500" in best
    four = _plain_text(_section(section, 'id="search-four"', '<h3 id="search-one"'))
    assert "min appearance_leakage" in four and "none: every sample runs to its end" in four
    assert "No best sample: none was scored." in four and "No samples recorded" in four
    assert "inversion steps run are not recorded. Wall time of the search: 2.0 s." in four
    build = re.search(r'src="(build-[0-9a-f]+)/gallery.js"', page).group(1)
    assert {p.name for p in Path(first.storage, "report", build, "plots").glob("search-*.svg")} == {
        "search-one.svg", "search-three.svg"}


def test_objective_formula_signs_follow_objective_of():
    from sweep.trainable import objective_of

    objective = {"metric": "motion_fidelity", "mode": "max", "penalty": {"appearance_leakage": 0.5,
                                                                          "text_similarity": 2}}
    assert objective_formula(objective) == "max motion_fidelity − 0.5·appearance_leakage + 2·text_similarity"
    metrics = {"motion_fidelity": 0.8, "appearance_leakage": 0.2, "text_similarity": 0.3}
    assert objective_of(metrics, objective) == pytest.approx(0.8 - 0.5 * 0.2 + 2 * 0.3)
    minimise = {"metric": "appearance_leakage", "mode": "min", "penalty": {"motion_fidelity": 1}}
    assert objective_formula(minimise) == "min appearance_leakage − 1·motion_fidelity"
    assert objective_of(metrics, minimise) == pytest.approx(0.2 - 0.8)
