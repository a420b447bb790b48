"""The page's search section (`sweep.report.page.search_sections`, and its plot): search.parquet / search.json as
the search writes them, per sweep of a storage root; and the objective's formula against its value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers.reports import SEARCH_ERROR, between, page_html, plain_text, search_rows, text_cells, write_search
from helpers.sweeps import make_spec, run_fake
from sweep.report import report
from vocabulary import objective_formula, objective_value


def test_the_search_section_shows_objective_samples_plot_and_compute(tmp_path):
    spec = make_spec(tmp_path, n_videos=2, axes={"qk": ["1d"], "v": ["2d"], "debias": ["difference"]})
    store = run_fake(spec)
    folder = Path(spec.storage) / spec.name
    report(folder, n_boot=0, echo=False)
    page = page_html(str(folder))
    assert 'id="search"' not in page and 'href="#search"' not in page  # no search.json: no section
    assert not list(Path(folder, "report").glob("build-*/plots/search-*.svg"))

    rows = search_rows(spec.name)
    summary = write_search(store, spec.name, rows)
    report(folder, n_boot=0, echo=False)
    page = page_html(str(folder))
    assert 'href="#search"' in page and page.count('<section id="search">') == 1
    section = between(page, '<section id="search">')
    text = plain_text(section)
    assert "max motion_fidelity − 0.5·appearance_leakage" in text
    assert "random" in text and "ASHA, rungs at inversion steps 50, 100, 200 (reduction factor 2)" in text
    assert "4 of 6 requested" in text
    # the best sample: its config and its best step (100, not its last step 200)
    best = plain_text(between(page, 'id="search-best-abl"', "</p>"))
    assert "inversion.lr=0.0125, inversion.steps=200, qk=2d at inversion step 100: objective 0.5512" in best
    assert "s_best" in best and "/x/store/inversions/key-s_best/step-100" in section
    # the samples, best first, then by best objective; the failed one listed with its (escaped) error
    table = text_cells(between(page, 'id="search-table-abl"', "</table>"))
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
    compute = plain_text(between(page, 'id="search-compute-abl"', "</p>"))
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
    page = page_html(first.storage)
    section = between(page, '<section id="search">')
    assert 'id="search-one"' in section and 'id="search-three"' in section and 'id="search-two"' not in section
    assert 'id="search-table-one"' in section and 'id="search-table-three"' in section
    best = plain_text(between(page, 'id="search-best-three"', "</p>"))
    assert "inversion.lr=0.002, inversion.steps=100, qk=2d at inversion step 100: objective 0.4500" in best
    four = plain_text(between(section, 'id="search-four"', '<h3 id="search-one"'))
    assert "min appearance_leakage" in four and "none: every sample runs to its end" in four
    assert "No best sample: none was scored." in four and "No samples recorded" in four
    assert "inversion steps run are not recorded. Wall time of the search: 2.0 s." in four
    build = re.search(r'src="(build-[0-9a-f]+)/gallery.js"', page).group(1)
    assert {p.name for p in Path(first.storage, "report", build, "plots").glob("search-*.svg")} == {
        "search-one.svg", "search-three.svg"}


def test_objective_formula_signs_follow_objective_value():
    objective = {"metric": "motion_fidelity", "mode": "max", "penalty": {"appearance_leakage": 0.5,
                                                                          "text_similarity": 2}}
    assert objective_formula(objective) == "max motion_fidelity − 0.5·appearance_leakage + 2·text_similarity"
    metrics = {"motion_fidelity": 0.8, "appearance_leakage": 0.2, "text_similarity": 0.3}
    assert objective_value(metrics, objective) == pytest.approx(0.8 - 0.5 * 0.2 + 2 * 0.3)
    minimise = {"metric": "appearance_leakage", "mode": "min", "penalty": {"motion_fidelity": 1}}
    assert objective_formula(minimise) == "min appearance_leakage − 1·motion_fidelity"
    assert objective_value(metrics, minimise) == pytest.approx(0.2 - 0.8)
