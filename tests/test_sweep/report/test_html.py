"""The HTML report (`sweep.report.html`, written by `report()`): what the page holds, that its numbers are the
summary's and comparisons', its plots and gallery index, compute estimates, user preference from real votes, the
CLI, and a rerun that replaces the page atomically with the rows that landed since.
tests/sweep/report/test_page_browser.py opens the same kind of report in a real browser."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest

from helpers.reports import (EVIL_ERROR, NONE, PAPER, build_sweep, gallery_data, page_html, text_cells)
from sweep import study as S
from sweep.report import html_report_path, paper_cells, report, summarize
from sweep.report.page import compute
from sweep.results.store import Store
from sweep.results.tables import load


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("html-report")
    folder, info = build_sweep(root)
    report(folder, n_boot=200, echo=False)
    return folder, info


def test_the_page_has_every_section_and_escapes_user_text(built):
    folder, _ = built
    index = html_report_path(folder)
    assert index == Path(folder, "report", "index.html").resolve()
    page = page_html(folder)
    for section in ("summary", "provenance", "compute", "plots", "gallery", "errors"):
        assert f'id="{section}"' in page
    assert "RANDOM-WEIGHT METRIC BACKBONES" in page and 'id="random-weights"' in page
    assert "http://" not in page and "https://" not in page  # offline: nothing from a CDN
    # user text is escaped: the error message and the prompt appear as text, never as markup
    assert "<script>alert" not in page and "<b>boom" not in page and "<i>prompt" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;boom&lt;/b&gt;" in page
    assert "a &#34;quoted&#34; &lt;i&gt;prompt&lt;/i&gt; &amp; more" in page
    errors = text_cells(page[page.index('id="errors-table"'):])
    assert sum(EVIL_ERROR in r for r in errors) == 1 and sum("CUDA out of memory" in r for r in errors) == 2
    # the spec and the sizes
    assert "Spec of abl (plan.json)" in page and "name: abl" in page
    sizes = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", page))
    assert sizes["samples (rows)"] == "85 of 84 planned" and sizes["errors"] == "3" and sizes["videos"] == "6"
    assert sizes["prompts"] == "13" and sizes["variants"] == "4" and sizes["checkpoints"] == "0, 10, 20"
    # how the numbers were made
    prov = text_cells(page[page.index('id="provenance-table"'):page.index('id="compute"')])
    assert ["pretrained_metrics", "false ×82"] == prov[[r[0] for r in prov].index("pretrained_metrics")][:2]
    assert any(r[0] == "fid_backbone" and r[1] == "clip:fake ×82" for r in prov)


def test_the_tables_show_report_py_numbers(built):
    """The Table 1 layout is report.paper_cells' (bold best, marks), and the per-variant CIs are summarize's."""
    folder, _ = built
    page = page_html(folder)
    table = load(folder)
    summary = summarize(table, n_boot=200, references=load(folder, "references"))
    header, labels, values, _ = paper_cells(summary, load(folder, "comparisons"))
    shown = text_cells(page[page.index('id="paper-table"'):page.index("</table>", page.index('id="paper-table"'))])
    assert shown[0] == header
    expected = [[*label, *(c["text"] + ("†" if c["dagger"] else "") + ("" if c["p_holm"] is None or c["p_holm"] >= 0.05
                                                                       else "**" if c["p_holm"] < 0.01 else "*")
                          for c in row)] for label, row in zip(labels, values)]
    assert shown[1:] == expected
    bold = re.findall(r"<strong>(.*?)</strong>", page[page.index('id="paper-table"'):page.index('id="variant-table"')])
    assert len(bold) == sum(c["best"] for row in values for c in row)
    rows = text_cells(page[page.index('id="variant-table"'):page.index("</table>", page.index('id="variant-table"'))])
    by_label = {r[0]: r for r in rows[1:]}
    col = rows[0].index("Motion fidelity ↑")
    for r in summary.to_pylist():
        label = f"{r['variant']} @ {r['checkpoint_step_applied']}"
        lo, hi = r["motion_fidelity_low"], r["motion_fidelity_high"]
        assert by_label[label][col] == f"{r['motion_fidelity_mean']:.4f}[{lo:.4f}, {hi:.4f}]"


def test_plots_are_svgs_made_with_matplotlib(built):
    folder, _ = built
    report_dir = Path(folder, "report")
    page = page_html(folder)
    plots = re.findall(r'<img src="(build-[0-9a-f]+/plots/[^"]+)"', page)
    names = {p.rsplit("/", 1)[1] for p in plots}
    metrics = ("text_similarity", "motion_fidelity", "temporal_consistency", "appearance_leakage")
    assert names == {*(f"ci-{m}.svg" for m in metrics), *(f"steps-{m}.svg" for m in metrics), "loss.svg",
                     "tradeoff.svg", *(f"effects-{m}.svg" for m in metrics), "effects-variance.svg"}
    for p in plots:
        svg = (report_dir / p).read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Matplotlib" in svg
        assert (report_dir / p).stat().st_size < 60_000
    steps = (report_dir / [p for p in plots if p.endswith("steps-appearance_leakage.svg")][0]).read_text()
    assert "Appearance leakage against the checkpoint step" in steps and "(step 0)" in steps


def test_gallery_index_groups_every_sample_with_its_reference(built):
    folder, info = built
    data = gallery_data(html_report_path(folder))
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


def test_compute_spent_and_the_estimate_of_what_planning_saved(built):
    folder, _ = built
    table, inversions = load(folder), load(folder, "inversions")
    plan = json.loads(Path(folder, "plan.json").read_text())
    out = compute(table, inversions, {"abl": plan})
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
    page = page_html(folder)
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


def test_rows_that_land_later_appear_on_rerun(tmp_path):
    folder, info = build_sweep(tmp_path, n_videos=2)
    spec = info["spec"]
    parts = sorted(Path(folder, "samples").glob("part-*.parquet"))
    held = {p: p.read_bytes() for p in parts[:2]}
    for p in held:
        p.unlink()
    report(folder, n_boot=0, echo=False)
    n_before = sum(len(g["c"]) for g in gallery_data(html_report_path(folder))["groups"])
    for p, data in held.items():
        p.write_bytes(data)
    report(folder, n_boot=0, echo=False)
    n_after = sum(len(g["c"]) for g in gallery_data(html_report_path(folder))["groups"])
    assert n_after == load(folder).num_rows > n_before
    assert spec.name in page_html(folder)
