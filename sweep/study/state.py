"""A study loaded for serving and importing: raters by link token, their schedules and media ids, the page's
session, and the validation that turns a request body (or an imported record) into a vote row.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import threading
import time
from typing import Any, Optional

from sweep.results.store import Store

from .definition import load_raters, load_study, open_store
from .schedule import Presentation, media_id, rater_schedule
from .votes import VOTES_DIR, vote_row

CHOICES = ("left", "right")
MAX_RESPONSE_MS = 24 * 3600 * 1000

_ITEM_ID = re.compile(r"^i[0-9]{1,6}$")


class VoteError(ValueError):
    """A vote that cannot be accepted; `status` is the HTTP answer (400, 403, 404, 409)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class StudyState:
    """A study's definition, raters and schedules, for the server and for imports (validation in one place)."""

    def __init__(self, sweep: str | os.PathLike | Store, name: str):
        self.store = open_store(sweep)
        self.study = load_study(self.store, name)
        self.name = name
        self.items = {it["id"]: it for it in self.study["items"]}
        self.questions = {q["id"]: q for q in self.study["questions"]}
        self._lock = threading.Lock()
        self._raters: dict[str, tuple[str, int]] = {}  # token -> (rater id, index)
        self._raters_loaded = 0.0
        self._schedules: dict[str, list[Presentation]] = {}
        self._media: dict[str, dict[str, str]] = {}
        self.reload_raters()

    def reload_raters(self) -> None:
        raters = load_raters(self.store, self.name)
        with self._lock:
            self._raters = {r["token"]: (r["id"], i) for i, r in enumerate(raters)}
            self._raters_loaded = time.monotonic()

    def rater(self, token: str) -> Optional[tuple[str, int]]:
        """(rater id, index) for a link token, or None. Unknown tokens re-read raters.json (at most every 2 s),
        so raters added while serving work at once."""
        found = self._raters.get(token)
        if found is None and time.monotonic() - self._raters_loaded > 2.0:
            self.reload_raters()
            found = self._raters.get(token)
        return found

    def schedule(self, rater: str, index: int) -> list[Presentation]:
        with self._lock:
            if rater not in self._schedules:
                seq = rater_schedule(self.study, rater, index)
                media = {}
                for p in seq:
                    it = self.items[p.item]
                    for path in (it["reference"], *it["clips"].values()):
                        media[media_id(self.study, rater, path)] = path
                self._schedules[rater], self._media[rater] = seq, media
            return self._schedules[rater]

    def media_path(self, rater: str, index: int, media_id: str) -> Optional[str]:
        self.schedule(rater, index)
        return self._media[rater].get(media_id)

    def presentation(self, rater: str, index: int, item: str, repeat: bool) -> Presentation:
        for p in self.schedule(rater, index):
            if p.item == item and p.repeat == repeat:
                return p
        raise VoteError(404, f"item {item!r}{' (repeat)' if repeat else ''} is not in this rater's study")

    def session(self, rater: str, index: int, token: str) -> dict:
        """What the page needs: no variant names, opaque media URLs, the questions, what is answered."""
        seq = self.schedule(rater, index)

        def url(path: str) -> str:
            return f"/media/{token}/{media_id(self.study, rater, path)}.mp4"

        pres = []
        for p in seq:
            it = self.items[p.item]
            pres.append({"item": p.item, "repeat": p.repeat, "reference": url(it["reference"]),
                         "left": url(it["clips"][p.left]), "right": url(it["clips"][p.right])})
        return {"title": self.study.get("title", "Video comparison"), "instructions": self.study["instructions"],
                "questions": [{"id": q["id"], "text": q["text"]} for q in self.study["questions"]],
                "presentations": pres, "answered": self.answered(rater)}

    def answered(self, rater: str) -> list[list]:
        """[[item, repeat, question], ...] this rater has voted on (from the part names)."""
        out = []
        for n in self.store.list_names(VOTES_DIR, f"part-{self.name}-{rater}-", ".parquet"):
            head, r, item, question = n[:-len(".parquet")].rsplit("-", 3)
            if head == f"part-{self.name}" and r == rater:
                out.append([item.rstrip("r"), item.endswith("r"), question])
        return out

    def validate(self, rater: str, index: Optional[int], body: Any, *, source: str = "server",
                 sides_from_body: bool = False) -> dict:
        """A vote row from a request body (or an imported record), or VoteError (400/404)."""
        if not isinstance(body, dict):
            raise VoteError(400, "the body must be a JSON object")
        allowed = {"item", "repeat", "question", "choice", "response_ms"} | (
            {"left_variant", "right_variant", "time", "rater", "chosen_variant"} if sides_from_body else set())
        extra = set(body) - allowed
        if extra:
            raise VoteError(400, f"unknown field(s): {sorted(extra)}")
        item, question, choice = body.get("item"), body.get("question"), body.get("choice")
        repeat = body.get("repeat", False)
        if not isinstance(item, str) or not _ITEM_ID.match(item):
            raise VoteError(400, "item must be an item id like 'i001'")
        if not isinstance(repeat, bool):
            raise VoteError(400, "repeat must be true or false")
        if not isinstance(question, str) or question not in self.questions:
            raise VoteError(400, f"question must be one of {list(self.questions)}")
        if item not in self.items:
            raise VoteError(404, f"unknown item {item!r}")
        ms = body.get("response_ms")
        if ms is not None and (isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms)
                               or not 0 <= ms <= MAX_RESPONSE_MS):
            raise VoteError(400, f"response_ms must be a number of milliseconds in [0, {MAX_RESPONSE_MS}]")
        it = self.items[item]
        when = None
        if sides_from_body:
            left, right = body.get("left_variant"), body.get("right_variant")
            if sorted([str(left), str(right)]) != sorted(it["pair"]):
                raise VoteError(400, f"item {item}: left_variant/right_variant must be its pair {it['pair']}, "
                                     f"got {left!r}, {right!r}")
            chosen = body.get("chosen_variant")
            if choice is None and chosen in it["pair"]:
                choice = "left" if chosen == left else "right"
            elif chosen is not None and chosen != (left if choice == "left" else right):
                raise VoteError(400, f"chosen_variant {chosen!r} disagrees with choice {choice!r}")
            if body.get("time"):
                try:
                    when = _dt.datetime.fromisoformat(str(body["time"]).replace("Z", "+00:00"))
                except ValueError:
                    raise VoteError(400, f"time {body['time']!r} is not an ISO 8601 time") from None
                when = when.replace(tzinfo=_dt.timezone.utc) if when.tzinfo is None else when
        else:
            p = self.presentation(rater, index or 0, item, repeat)
            left, right = p.left, p.right
        if choice not in CHOICES:
            raise VoteError(400, "choice must be 'left' or 'right'")
        return vote_row(self.study, it, left, right, rater=rater, repeat=repeat, question=question, choice=choice,
                        response_ms=None if ms is None else round(ms), when=when, source=source)
