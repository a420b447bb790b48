"""The HTML report in a real browser (Debian's chromium driven by Playwright), opened from disk as a user would:
no console errors (under the page's Content-Security-Policy), every plot renders, the gallery's previews load
and play, the filters and pages change what is shown, error rows are visible with their message (as text: an
error holding `<script>` runs nothing).

With the `browser` fixture of tests/conftest.py (tests/helpers/browser.py): outside CI the tests skip when
chromium or playwright is missing; in CI (CI=true) that is a failure. A screenshot of the top of the report goes to
the test's tmp folder and to docs/report.png (fixed data and bootstrap seed: it changes only when the page does).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import REPO
from helpers.browser import ConsoleLog
from helpers.reports import EVIL_ERROR, EVIL_PROMPT, NONE, build_sweep
from sweep.report import html as html_page
from sweep.report import html_report_path, report
from sweep.results.tables import load

DOCS = REPO / "docs"
PAGE_SIZE = 5  # 13 groups: 3 pages


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory) -> tuple[str, Path]:
    folder, _ = build_sweep(tmp_path_factory.mktemp("report-browser"))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(html_page, "PAGE_SIZE", PAGE_SIZE)
        report(folder, n_boot=200, echo=False)
    return folder, html_report_path(folder)


@pytest.fixture
def page(browser, sweep_report):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    page.console_log = ConsoleLog(page)
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(sweep_report[1].as_uri())
    page.wait_for_function("() => document.getElementById('gallery').dataset.ready === 'true'")
    yield page
    context.close()


def _gallery_state(page) -> dict:
    return page.evaluate("""() => { const s = document.getElementById('gallery').dataset;
        return {cards: +s.matchingCards, groups: +s.matchingGroups, page: +s.page, pages: +s.pages,
                shown: document.querySelectorAll('#gallery-groups .card:not(.reference)').length,
                variants: Array.from(document.querySelectorAll('#gallery-groups .card:not(.reference)'))
                    .map(c => c.dataset.variant),
                headings: Array.from(document.querySelectorAll('#gallery-groups .group h3')).map(h => h.textContent)}; }""")


def _select(page, key: str, value: str) -> None:
    page.select_option(f'select[data-filter="{key}"]', value)


def test_the_report_opens_cleanly_and_every_plot_renders(page, sweep_report, tmp_path):
    folder, index = sweep_report
    images = """(section) => Array.from(document.querySelectorAll(section + ' img')).map(i =>
        ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth, shown: i.getBoundingClientRect().width}))"""
    files = list(index.parent.glob("build-*/plots/*.svg"))
    effect_files = [f for f in files if f.name.startswith("effects-")]
    plots = page.evaluate(images, "#plots")
    assert len(plots) == len(files) - len(effect_files) == 10
    page.evaluate("() => { document.querySelector('#effects').open = true; }")  # collapsed when it is long
    effect_plots = page.evaluate(images, "#effects")
    assert len(effect_plots) == len(effect_files) >= 2  # one per metric with effects, and the variance shares
    for p in plots + effect_plots:
        assert p["complete"] and p["width"] > 0 and p["shown"] > 300, p
    assert page.locator("#random-weights").is_visible()
    assert page.locator("#paper-table tbody tr").count() == 7  # 3 variants × 2 steps + the base model
    shot = tmp_path / "report.png"
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 20_000
    if DOCS.is_dir():
        shutil.copyfile(shot, DOCS / "report.png")
    assert page.console_log.messages == []


def test_the_gallery_previews_load_at_one_size_and_play(page, tmp_path):
    state = _gallery_state(page)
    assert (state["page"], state["pages"], len(state["headings"])) == (1, 3, PAGE_SIZE)
    for i in range(PAGE_SIZE):  # lazy images load as their group comes into view
        page.locator("#gallery-groups .group").nth(i).scroll_into_view_if_needed()
    page.wait_for_function("""() => Array.from(document.querySelectorAll('#gallery-groups img'))
        .every(i => i.complete && i.naturalWidth > 0)""")
    groups = page.evaluate("""() => Array.from(document.querySelectorAll('#gallery-groups .group')).map(g =>
        Array.from(g.querySelectorAll('img.clip')).map(i => [i.naturalWidth, i.naturalHeight,
            Math.round(i.getBoundingClientRect().width), Math.round(i.getBoundingClientRect().height)]))""")
    assert [len(images) for images in groups] == [1, 6, 8, 8, 8]  # reference + clips; error cards have none
    for images in groups:
        assert {(w, h) for w, h, *_ in images} == {(64, 48)}
        assert len({(bw, bh) for *_, bw, bh in images}) == 1  # every clip of a group in the same box
    # playing: an animated preview shows another frame a moment later
    clip = page.locator("#gallery-groups .card:not(.reference) img.clip").first
    clip.scroll_into_view_if_needed()
    frames = set()
    for _ in range(6):
        frames.add(clip.screenshot())
        page.wait_for_timeout(170)
    assert len(frames) > 1
    page.locator("#gallery").screenshot(path=str(tmp_path / "gallery.png"))
    assert page.console_log.messages == []


def test_filters_and_pages_change_what_is_shown(page, sweep_report):
    table = load(sweep_report[0]).to_pylist()
    state = _gallery_state(page)
    assert (state["cards"], state["groups"]) == (len(table), 13)
    first_page = state["headings"]

    page.click("#page-next")
    state = _gallery_state(page)
    assert state["page"] == 2 and not set(state["headings"]) & set(first_page)
    page.click("#page-prev")
    assert _gallery_state(page)["headings"] == first_page

    _select(page, "debias_applied", "none")
    state = _gallery_state(page)
    assert state["cards"] == sum(r["debias_applied"] == "none" for r in table)
    assert set(state["variants"]) == {NONE}
    _select(page, "video", "v1")
    state = _gallery_state(page)
    expected = [r for r in table if r["debias_applied"] == "none" and r["video"] == "v1"]
    assert (state["cards"], state["shown"], state["groups"]) == (len(expected), len(expected), 2) and len(expected) == 4
    _select(page, "checkpoint_step_applied", "20")
    assert _gallery_state(page)["shown"] == 2
    page.click("#filters-reset")
    page.wait_for_function(f"() => +document.getElementById('gallery').dataset.matchingCards === {len(table)}")

    _select(page, "checkpoint_step_applied", "0")  # the base model: one clip per group
    state = _gallery_state(page)
    assert state["cards"] == sum(r["checkpoint_step_applied"] == 0 for r in table)
    assert set(state["variants"]) == {"qk=off v=off"}
    assert page.console_log.messages == []


def test_error_rows_are_visible_with_their_message(page):
    errors = page.locator("#errors-table").inner_text()
    assert EVIL_ERROR in errors and errors.count("CUDA out of memory") == 2
    _select(page, "status", "error")
    state = _gallery_state(page)
    assert state["cards"] == state["shown"] == 3
    cards = page.locator("#gallery-groups .card.error")
    assert cards.count() == 3
    texts = [cards.nth(i).inner_text() for i in range(3)]
    assert sum(EVIL_ERROR in t for t in texts) == 1 and sum("CUDA out of memory" in t for t in texts) == 2
    assert any(EVIL_PROMPT in h for h in state["headings"])
    assert page.locator("#gallery-groups b, #gallery-groups i, #errors-table script").count() == 0
    assert page.dialogs == [] and page.console_log.messages == []
