"""The study page in a real browser (Debian's chromium driven by Playwright): a scripted rater completes a
study with the keyboard, the clips load and play, nothing is logged to the console (under the page's strict
Content-Security-Policy: the test scripts are functions, never strings to eval), the phone layout stacks
the clips, and votes forged or repeated from the browser's side are refused with the table unchanged.

Needs `chromium` (apt-get install chromium) and `playwright` (the dev extra). Outside CI the tests skip when
either is missing; in CI (CI=true) a missing one is a failure, never a silent skip. Screenshots of the page
(desktop and phone) go to the test's tmp folder and are copied to docs/study-page.png and
docs/study-page-phone.png (clips paused at a fixed frame, so the images only change when the page does).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import REPO
from helpers.browser import ConsoleLog
from helpers.studies import BASE, FULL, build_sweep
from sweep.study import definition
from sweep.study.definition import create_study, load_raters
from sweep.study.schedule import media_id, rater_schedule
from sweep.study.server import RunningServer
from sweep.study.votes import load_votes

DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> str:
    return build_sweep(tmp_path_factory.mktemp("study-browser"), size=64, frames=8)


def _ready(page) -> dict:
    page.wait_for_function("() => ['ready', 'done'].includes(document.body.dataset.state)")
    return page.evaluate("""() => ({state: document.body.dataset.state, item: document.body.dataset.item,
        question: document.body.dataset.question,
        videos: Array.from(document.querySelectorAll('video')).map(v => ({id: v.id, src: v.currentSrc,
            readyState: v.readyState, width: v.videoWidth, muted: v.muted, loop: v.loop, paused: v.paused,
            box: v.getBoundingClientRect().toJSON()}))})""")


def _screenshot(page, tmp_path: Path, name: str) -> None:
    """Clips paused on one frame, then the viewport to tmp_path/name and a copy to docs/name."""
    page.evaluate("""() => Promise.all(Array.from(document.querySelectorAll('video')).map(v => new Promise(done => {
        v.pause(); v.addEventListener('seeked', done, {once: true}); v.currentTime = 0.5; })))""")
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 5_000
    if DOCS.is_dir():
        shutil.copyfile(shot, DOCS / name)
    page.evaluate("() => document.querySelectorAll('video').forEach(v => v.play().catch(() => {}))")


def _create(monkeypatch, *args, **kw) -> dict:
    """create_study with a fixed study secret: the same order and sides every run, so the screenshots in docs/
    change only when the page does (rater tokens stay random)."""
    with monkeypatch.context() as m:
        m.setattr(definition.secrets, "token_hex", lambda n=16: "5eed" * (n // 2))
        return create_study(*args, **kw)


def test_rater_completes_study_with_keyboard(browser, sweep_dir, tmp_path, monkeypatch):
    study = _create(monkeypatch, sweep_dir, "keyboard", [BASE, FULL], raters=1, repeats=1)
    rater = load_raters(sweep_dir, "keyboard")[0]
    schedule = rater_schedule(study, rater["id"], 0)
    assert len(schedule) == 4 + 1
    items = {it["id"]: it for it in study["items"]}
    keys = ["ArrowLeft", "ArrowRight", "1", "2"]
    expected = []
    with RunningServer(sweep_dir, "keyboard") as server:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        log = ConsoleLog(page)
        page.goto(server.link(rater["token"]))
        seen_items = []
        for n in range(len(schedule) * 3):
            info = _ready(page)
            assert info["state"] == "ready", f"the study ended after {n} answers"
            if not seen_items or info["item"] != seen_items[-1]:
                seen_items.append(info["item"])
            p = schedule[len(seen_items) - 1]  # the page follows the rater's schedule
            assert info["item"] == p.item + ("r" if p.repeat else "")
            # the three clips loaded, play, muted and looping, at the same size; "left" is the schedule's left
            for v in info["videos"]:
                assert v["readyState"] >= 2 and v["width"] == 64 and v["muted"] and v["loop"], v
            sizes = {(round(v["box"]["width"]), round(v["box"]["height"])) for v in info["videos"]}
            assert len(sizes) == 1, sizes
            src = {v["id"]: v["src"].rsplit("/", 1)[1][:-4] for v in info["videos"]}
            assert src["video-left"] == media_id(study, rater["id"], items[p.item]["clips"][p.left])
            assert src["video-right"] == media_id(study, rater["id"], items[p.item]["clips"][p.right])
            assert src["video-reference"] == media_id(study, rater["id"], items[p.item]["reference"])
            for leak in (BASE, FULL, "qk="):
                assert leak not in page.content()
            if n == 0:
                page.wait_for_function(
                    "() => Array.from(document.querySelectorAll('video')).every(v => v.currentTime > 0)")
                assert page.inner_text("#progress-text") == "Pair 1 of 5 · 0 of 15 answers"
                _screenshot(page, tmp_path, "study-page.png")
            key = keys[n % len(keys)]
            side = "left" if key in ("ArrowLeft", "1") else "right"
            expected.append((p.item, p.repeat, info["question"], side, p.left if side == "left" else p.right))
            before = f"{info['item']}|{info['question']}"
            page.keyboard.press(key)
            page.wait_for_function(
                """m => document.body.dataset.state === 'done' || (document.body.dataset.state === 'ready'
                    && document.body.dataset.item + '|' + document.body.dataset.question !== m)""", arg=before)
        assert page.evaluate("() => document.body.dataset.state") == "done"
        assert "15 answers" in page.inner_text("#done-text")
        assert page.get_attribute("#progress", "aria-valuenow") == "100"
        page.keyboard.press("ArrowLeft")  # nothing more to answer: no request, no error
        page.reload()  # progress is the server's: a reload resumes, here at the end
        page.wait_for_function("() => document.body.dataset.state === 'done'")
        assert log.messages == []
        context.close()

    votes = load_votes(sweep_dir, "keyboard").to_pylist()
    got = sorted((v["item"], v["repeat"], v["question"], v["choice"], v["chosen_variant"]) for v in votes)
    assert got == sorted(expected) and len(votes) == 15
    assert all(v["rater"] == rater["id"] and v["response_ms"] is not None and v["response_ms"] >= 0 for v in votes)
    assert sum(v["repeat"] for v in votes) == 3  # the repeated item, 3 questions
    assert [q["id"] for q in study["questions"]] == sorted({v["question"] for v in votes}, key=["motion", "text",
                                                                                                "overall"].index)


def test_phone_layout_stacks_clips_and_takes_taps(browser, sweep_dir, tmp_path, monkeypatch):
    _create(monkeypatch, sweep_dir, "phone", [BASE, FULL], raters=1, repeats=0)
    rater = load_raters(sweep_dir, "phone")[0]
    with RunningServer(sweep_dir, "phone") as server:
        context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True,
                                      has_touch=True)
        page = context.new_page()
        log = ConsoleLog(page)
        page.goto(server.link(rater["token"]))
        info = _ready(page)
        boxes = [v["box"] for v in info["videos"]]
        assert all(a["y"] + a["height"] <= b["y"] for a, b in zip(boxes, boxes[1:]))  # one above the other
        assert all(b["x"] >= 0 and b["x"] + b["width"] <= 390 for b in boxes)  # stacked, none off-screen
        assert all(b["y"] + b["height"] <= 844 for b in boxes)  # all three on the first screen
        assert len({(round(b["width"]), round(b["height"])) for b in boxes}) == 1
        for button in ("#choose-left", "#choose-right"):
            box = page.locator(button).bounding_box()
            assert box["y"] + box["height"] <= 844 and box["height"] >= 44  # thumb-sized, on screen
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        _screenshot(page, tmp_path, "study-page-phone.png")
        page.tap("#choose-right")
        page.wait_for_function("() => document.body.dataset.question === 'text'")
        assert log.messages == []
        context.close()
    votes = load_votes(sweep_dir, "phone").to_pylist()
    assert [(v["question"], v["choice"]) for v in votes] == [("motion", "right")]


def test_forged_repeated_and_malformed_votes_refused(browser, sweep_dir):
    """Votes posted straight to the server from the browser's side (its request API, same origin and cookies as
    the page): the answered vote again, another token, a made-up item, malformed bodies. All 4xx, table unchanged."""
    create_study(sweep_dir, "forge", [BASE, FULL], raters=2, repeats=0)
    r1, r2 = load_raters(sweep_dir, "forge")
    with RunningServer(sweep_dir, "forge") as server:
        context = browser.new_context()
        page = context.new_page()
        log = ConsoleLog(page)
        page.goto(server.link(r1["token"]))
        info = _ready(page)
        page.keyboard.press("ArrowRight")
        page.wait_for_function("() => document.body.dataset.question === 'text'")
        before = load_votes(sweep_dir, "forge").to_pylist()
        assert len(before) == 1
        vote = {"item": info["item"], "repeat": False, "question": "motion", "choice": "left", "response_ms": 5}
        api = context.request

        def post(token, data, **kw):
            kw.setdefault("headers", {"Content-Type": "application/json"})
            return api.post(f"{server.url}/api/{token}/vote", data=data, **kw).status

        assert post(r1["token"], json.dumps(vote)) == 409                             # repeated
        assert post("0" * 24, json.dumps(vote)) == 403                                 # forged token
        assert post(r1["token"], json.dumps({**vote, "item": "i777"})) == 404          # forged item
        assert post(r1["token"], json.dumps({**vote, "chosen_variant": FULL})) == 400  # naming a variant
        assert post(r1["token"], "{\"item\": ") == 400                                 # malformed
        assert post(r1["token"], json.dumps({**vote, "choice": 1})) == 400
        assert post(r1["token"], json.dumps(vote), headers={"Content-Type": "text/plain"}) == 415
        assert api.get(f"{server.url}/api/{'x' * 24}/session").status == 403
        assert load_votes(sweep_dir, "forge").to_pylist() == before
        # the other rater's link is a separate rater: the same item and question is its own vote
        assert post(r2["token"], json.dumps(vote)) == 201
        assert len(load_votes(sweep_dir, "forge")) == 2
        assert log.messages == []
        context.close()
