"""The study server (aiohttp): the rater's page (`page/`), its session, votes written at once, and the clips.

    motion-sweep study serve NAME --sweep PATH               # 127.0.0.1:8008; one link per rater

Each vote is written at once as its own Parquet part (`votes.write_vote`); a second vote on the same item and
question is refused (HTTP 409) and nothing is written. Raters never see variant names: the page gets
"left"/"right" and opaque media URLs, and the server fills the variants into the vote. Clips the browser
cannot play (a gif, a folder of frames, a remote file) are served from a local copy, transcoded once.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Optional

from sweep.results.store import Store

from .definition import load_raters, rater_link
from .state import StudyState, VoteError
from .votes import VOTES_DIR, write_vote

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8008
BROWSER_VIDEO_SUFFIXES = (".mp4", ".webm")  # served as they are; anything else is transcoded to mp4 once
MAX_BODY = 4096

_PAGE_DIR = "page"
_STATIC = {"study.js": "text/javascript", "study.css": "text/css"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; media-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the page URL
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _page_file(name: str) -> bytes:
    return resources.files(__package__).joinpath(_PAGE_DIR, name).read_bytes()


def make_app(sweep: str | os.PathLike, name: str, *, cache_dir: Optional[str] = None):
    """The aiohttp application serving study `name` (see `serve`)."""
    from aiohttp import web

    state = StudyState(sweep, name)
    cache = Path(cache_dir or tempfile.mkdtemp(prefix="motion-sweep-study-"))
    own_cache = cache_dir is None
    media_locks: dict[str, asyncio.Lock] = {}
    page = _page_file("index.html")
    static = {n: _page_file(n) for n in _STATIC}

    @web.middleware
    async def headers(request, handler):
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # 404 of an unknown route, 405, 413 ...
            for k, v in _SECURITY_HEADERS.items():
                exc.headers.setdefault(k, v)
            raise
        for k, v in _SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    def err(status: int, message: str):
        return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})

    def who(request) -> Optional[tuple[str, int]]:
        return state.rater(request.match_info["token"])

    async def index(request):
        return web.Response(text="motion-sweep study server: open the link you were given.\n",
                            content_type="text/plain")

    async def rater_page(request):
        if who(request) is None:
            return web.Response(status=404, text="This study link is not valid.\n", content_type="text/plain")
        return web.Response(body=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def static_file(request):
        fname = request.match_info["name"]
        if fname not in static:
            return web.Response(status=404, text="not found\n")
        return web.Response(body=static[fname], content_type=_STATIC[fname], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def session(request):
        found = who(request)
        if found is None:
            return err(403, "unknown study link")
        data = await asyncio.get_running_loop().run_in_executor(
            None, state.session, found[0], found[1], request.match_info["token"])
        return web.json_response(data, headers={"Cache-Control": "no-store"})

    async def vote(request):
        found = who(request)
        if found is None:
            return err(403, "unknown study link")
        if request.content_length is None or request.content_length > MAX_BODY:
            return err(413 if request.content_length else 411, f"send a JSON body of at most {MAX_BODY} bytes")
        if request.content_type != "application/json":
            return err(415, "send Content-Type: application/json")
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return err(400, "the body is not JSON")
        try:
            row = state.validate(found[0], found[1], body)
        except VoteError as exc:
            return err(exc.status, str(exc))
        try:
            await asyncio.get_running_loop().run_in_executor(None, write_vote, state.store, row)
        except FileExistsError:
            return err(409, "this question of this item is already answered")
        return web.json_response({"ok": True}, status=201, headers={"Cache-Control": "no-store"})

    async def media(request):
        found = who(request)
        if found is None:
            return err(403, "unknown study link")
        media_id = request.match_info["media"]
        src = state.media_path(found[0], found[1], media_id)
        if src is None:
            return err(404, "unknown clip")
        lock = media_locks.setdefault(src, asyncio.Lock())
        async with lock:
            try:
                local = await asyncio.get_running_loop().run_in_executor(None, _playable, src, cache)
            except (OSError, ValueError) as exc:  # missing or undecodable file: say so, keep serving
                print(f"study server: cannot serve {src}: {exc}", file=sys.stderr)
                return err(500, "this clip cannot be read on the server")
        return web.FileResponse(local, headers={"Cache-Control": "private, max-age=3600",
                                                "Content-Type": "video/webm" if local.suffix == ".webm"
                                                else "video/mp4"})

    async def favicon(request):
        return web.Response(status=204)

    async def cleanup(app):
        if own_cache:
            shutil.rmtree(cache, ignore_errors=True)

    app = web.Application(middlewares=[headers], client_max_size=MAX_BODY)
    app.add_routes([
        web.get("/", index), web.get("/favicon.ico", favicon),
        web.get("/r/{token}", rater_page),
        web.get("/static/{name}", static_file),
        web.get("/api/{token}/session", session),
        web.post("/api/{token}/vote", vote),
        web.get(r"/media/{token}/{media:[0-9a-f]{20}}.mp4", media),
    ])
    app.on_cleanup.append(cleanup)
    app[_state_key()] = state
    return app


@functools.lru_cache(maxsize=1)
def _state_key():
    from aiohttp import web

    return web.AppKey("study_state", StudyState)


def _playable(src: str, cache: Path) -> Path:
    """A local file the browser can play for `src`: the file itself (local mp4/webm), a downloaded copy (URIs),
    or an H.264 mp4 transcoded once (gif, folders of frames, other containers)."""
    key = hashlib.sha256(src.encode()).hexdigest()[:24]
    suffix = Path(src.split("?")[0]).suffix.lower()
    remote = "://" in src and not src.startswith("file://")
    if not remote and suffix in BROWSER_VIDEO_SUFFIXES and Path(src).is_file():
        return Path(src)
    out = cache / f"{key}.mp4"
    if out.exists():
        return out
    local = Path(src)
    if remote:
        parent, base = src.rsplit("/", 1)
        local = Store(parent).download(base, cache / f"{key}-src{suffix}")
        if suffix in BROWSER_VIDEO_SUFFIXES:
            return local
    from videoio import read_video, write_video

    write_video(out, read_video(local))
    return out


class RunningServer:
    """A study server on a background thread (tests, benchmarks, notebooks). `url`, `stop()`; a context manager."""

    def __init__(self, sweep: str | os.PathLike, name: str, host: str = DEFAULT_HOST, port: int = 0):
        from aiohttp import web

        self.app = make_app(sweep, name)
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self.app, access_log=None)
        started = threading.Event()
        failure: list[BaseException] = []

        def run():
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, host, port)
                self._loop.run_until_complete(site.start())
                self.port = site._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name=f"study-server-{name}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        self.host = host
        self.url = f"http://{host}:{self.port}"

    def link(self, token: str) -> str:
        return rater_link(self.url, token)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(sweep: str | os.PathLike, name: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          base_url: Optional[str] = None) -> None:
    """Serve the study until interrupted (blocking), printing one link per rater."""
    from aiohttp import web

    app = make_app(sweep, name)
    state: StudyState = app[_state_key()]
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}, not loopback: anyone who can reach this port can load the page with a "
              "valid link, over plain HTTP. Prefer --host 127.0.0.1 behind an SSH tunnel or a TLS reverse proxy.",
              file=sys.stderr)
    base = base_url or f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    raters = load_raters(state.store, name)
    print(f"study {name}: {len(state.items)} items, {len(state.questions)} question(s), {len(raters)} rater(s); "
          f"votes go to {state.store.uri_of(VOTES_DIR)}")
    for r in raters:
        print(f"  {r['id']}  {rater_link(base, r['token'])}")
    if not raters:
        print(f"  no raters yet: motion-sweep study add-raters {name} --sweep {state.store.uri} --raters N")
    web.run_app(app, host=host, port=port, access_log=None, print=lambda s: print(s, file=sys.stderr))
