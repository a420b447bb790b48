"""A real browser for the page tests: Debian's chromium driven by Playwright (Playwright's own browser download
cannot work offline). In CI (CI=true) a missing chromium or playwright fails the test, never skips it."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]


def chromium_path() -> str | None:
    path = os.environ.get("MOTION_SWEEP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.path.exists(path) else None


@contextmanager
def launched_browser():
    """A launched chromium (Playwright), or a skip/failure naming what is missing."""
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = [what for what, ok in (("chromium (apt-get install chromium)", executable),
                                     ("playwright (pip install -e '.[dev]')", sync_playwright)) if not ok]
    if missing:
        message = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + " (CI must run them, not skip them)")
        pytest.skip(message)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class ConsoleLog:
    """Console errors/warnings and uncaught page errors of a page."""

    def __init__(self, page):
        self.messages: list[str] = []
        page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
                else None)
        page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))
        # (a media request the player itself cancels to re-request a range is not a failure; the clips' readyState is
        # checked instead)
        page.on("requestfailed", lambda r: None if "/media/" in r.url else self.messages.append(
            f"requestfailed: {r.url} {r.failure}"))
