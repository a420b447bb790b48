"""A user-preference study: two-alternative forced choice between variants of a sweep, served to raters.

    motion-sweep study create NAME --sweep PATH --compare VARIANT_A VARIANT_B [...] --raters 20
    motion-sweep study serve NAME --sweep PATH               # 127.0.0.1:8008; one link per rater
    motion-sweep study results NAME --sweep PATH

Layout under the sweep folder (local or s3://):

* `studies/<NAME>/study.json`: the definition (items, questions, options, a secret that seeds each rater's
  order and sides and the opaque media ids). Written once, atomically.
* `studies/<NAME>/raters.json`: rater ids and their link tokens (kept apart from the definition, which can
  be shared without giving away links).
* `votes/part-<study>-<rater>-<item>[r]-<question>.parquet`: one Parquet part per vote (`VOTES_SCHEMA`),
  `r` marking the repeated (sides swapped) presentation of an item. The name is deterministic per
  (study, rater, item, repeat, question): a vote is created with an exclusive, no-replace operation on that
  name, so a second vote on the same key is refused (HTTP 409) and nothing is written (see `write_vote`).

An item is one (video, prompt, generation seed) with the clips of two variants (a pair of the --compare
list) at the study's checkpoint (the base model's step 0 matches any). Each rater sees every item (or
--per-rater of them), in an order and with sides drawn from the study's secret and the rater's id, plus
--repeats of them again later with the sides swapped (rater consistency). Raters never see variant names:
the page gets "left"/"right" and opaque media URLs; the server fills the variants into the vote.

Statistics (`study_results`, `user_preference`): first presentations only (repeats measure consistency):
per pair and question the win rate with a Wilson 95% interval and a two-sided exact binomial test against
1/2; Bradley–Terry strengths per question fitted by Hunter's MM algorithm with 0.5 pseudo-wins each way on
every compared pair, with 95% percentile intervals from a bootstrap over raters; rater consistency on the
repeated items; votes per item.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as _dt
import functools
import hashlib
import hmac
import io
import json
import math
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .store import Store, dumps
from .tables import doc_field

STUDIES_DIR = "studies"
VOTES_DIR = "votes"
FORMAT = 1
DEFAULT_QUESTIONS = (
    ("motion", "Which video's motion is closer to the reference?"),
    ("text", "Which video matches the text better?"),
    ("overall", "Which video looks better overall?"),
)
DEFAULT_INSTRUCTIONS = (
    "Watch the reference clip, then answer each question by choosing Video 1 or Video 2 "
    "(keys ← / → or 1 / 2). Each answer is saved at once and cannot be changed.")
DEFAULT_REPEATS = 3
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8008
CHOICES = ("left", "right")
BROWSER_VIDEO_SUFFIXES = (".mp4", ".webm")  # served as they are; anything else is transcoded to mp4 once
MAX_RESPONSE_MS = 24 * 3600 * 1000
MAX_BODY = 4096

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")   # study names (part names allow '-')
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{0,63}$")        # rater ids: no '-' (part names split on it)
_QUESTION_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ITEM_ID = re.compile(r"^i[0-9]{1,6}$")

_timestamp = pa.timestamp("us", tz="UTC")


VOTES_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("study", pa.string(), "study name (`motion-sweep study create NAME`)"),
    doc_field("item", pa.string(), "study item id (one video, prompt, generation seed and pair of variants)"),
    doc_field("repeat", pa.bool_(), "true: the item's second showing to this rater, sides swapped (consistency)"),
    doc_field("rater", pa.string(), "rater id (r001...; never the link token), or the id given by an import"),
    doc_field("question", pa.string(), "question id (the study's `questions`)"),
    doc_field("question_text", pa.string(), "the question as the rater read it"),
    doc_field("left_variant", pa.string(), "variant shown as Video 1 (left; top on a phone)"),
    doc_field("right_variant", pa.string(), "variant shown as Video 2 (right; bottom on a phone)"),
    doc_field("choice", pa.string(), "left | right: the side chosen"),
    doc_field("chosen_variant", pa.string(), "the variant chosen (left_variant or right_variant)"),
    doc_field("response_ms", pa.int64(), "milliseconds from the question being shown (clips loaded) to the answer"),
    doc_field("time", _timestamp, "when the vote was received (UTC)"),
    doc_field("video", pa.string(), "reference video id of the item"),
    doc_field("prompt", pa.string(), "edit prompt of the item"),
    doc_field("generation_seed", pa.int64(), "generation seed of the item's clips"),
    doc_field("source", pa.string(), "server (the study page) | import:<file name> (`study import`)"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
])

PAIRS_SCHEMA = pa.schema([
    doc_field("study", pa.string(), "study name"),
    doc_field("question", pa.string(), "question id"),
    doc_field("variant_a", pa.string(), "first variant of the pair (the --compare order)"),
    doc_field("variant_b", pa.string(), "second variant of the pair"),
    doc_field("n_votes", pa.int64(), "votes on the pair (first presentations; repeats excluded)"),
    doc_field("wins_a", pa.int64(), "votes for variant_a"),
    doc_field("wins_b", pa.int64(), "votes for variant_b"),
    doc_field("win_rate_a", pa.float64(), "wins_a / n_votes"),
    doc_field("ci_low", pa.float64(), "lower end of the Wilson 95% interval of win_rate_a"),
    doc_field("ci_high", pa.float64(), "upper end of the Wilson 95% interval of win_rate_a"),
    doc_field("p", pa.float64(), "two-sided exact binomial test of win_rate_a = 1/2"),
    doc_field("n_raters", pa.int64(), "raters who voted on the pair"),
    doc_field("n_items", pa.int64(), "items of the pair with a vote"),
])

BRADLEY_TERRY_SCHEMA = pa.schema([
    doc_field("study", pa.string(), "study name"),
    doc_field("question", pa.string(), "question id"),
    doc_field("variant", pa.string(), "variant"),
    doc_field("log_strength", pa.float64(), "Bradley–Terry log-strength θ (mean 0 over the variants): "
                                         "P(i beats j) = 1 / (1 + exp(θj − θi))"),
    doc_field("ci_low", pa.float64(), "2.5% percentile of θ over the bootstrap over raters (null: < 2 raters)"),
    doc_field("ci_high", pa.float64(), "97.5% percentile of θ over the bootstrap over raters"),
    doc_field("strength", pa.float64(), "exp(θ): strengths with geometric mean 1"),
    doc_field("n_votes", pa.int64(), "votes on pairs containing the variant"),
    doc_field("n_wins", pa.int64(), "votes won"),
    doc_field("method", pa.string(), "fit and interval method"),
])

CONSISTENCY_SCHEMA = pa.schema([
    doc_field("study", pa.string(), "study name"),
    doc_field("rater", pa.string(), "rater id, or 'all'"),
    doc_field("question", pa.string(), "question id, or 'all'"),
    doc_field("n_repeated", pa.int64(), "answers given on both showings of a repeated item"),
    doc_field("n_consistent", pa.int64(), "of those, the same variant chosen both times (sides un-swapped)"),
    doc_field("consistency", pa.float64(), "n_consistent / n_repeated (null when 0)"),
])

ITEMS_SCHEMA = pa.schema([
    doc_field("study", pa.string(), "study name"),
    doc_field("item", pa.string(), "item id"),
    doc_field("variant_a", pa.string(), "first variant of the item's pair"),
    doc_field("variant_b", pa.string(), "second variant"),
    doc_field("video", pa.string(), "reference video id"),
    doc_field("prompt", pa.string(), "edit prompt"),
    doc_field("generation_seed", pa.int64(), "generation seed"),
    doc_field("n_votes", pa.int64(), "votes on the item (first presentations, every question)"),
    doc_field("n_raters", pa.int64(), "raters who voted on it"),
    doc_field("n_repeat_votes", pa.int64(), "votes on its repeated presentations"),
])

USER_PREFERENCE_SCHEMA = pa.schema([
    doc_field("variant", pa.string(), "variant (join key with the samples/summary tables)"),
    doc_field("user_preference", pa.float64(), "share of forced-choice votes won (vocabulary.METRICS)"),
    doc_field("n_votes", pa.int64(), "forced-choice votes on pairs containing the variant (first presentations)"),
    doc_field("n_wins", pa.int64(), "votes won"),
    doc_field("ci_low", pa.float64(), "lower end of the Wilson 95% interval of user_preference"),
    doc_field("ci_high", pa.float64(), "upper end of the Wilson 95% interval"),
    doc_field("n_raters", pa.int64(), "raters who voted on it"),
    doc_field("questions", pa.string(), "question ids pooled (comma-separated)"),
    doc_field("studies", pa.string(), "studies pooled (comma-separated)"),
])

RESULT_SCHEMAS = {"pairs": PAIRS_SCHEMA, "bradley_terry": BRADLEY_TERRY_SCHEMA, "consistency": CONSISTENCY_SCHEMA,
                  "items": ITEMS_SCHEMA, "user_preference": USER_PREFERENCE_SCHEMA}


def describe_votes() -> dict[str, str]:
    """{column: what it holds} of the votes table."""
    return {f.name: f.metadata[b"doc"].decode() for f in VOTES_SCHEMA}


class VoteError(ValueError):
    """A vote that cannot be accepted; `status` is the HTTP answer (400, 403, 404, 409)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------------
# Paths and the study definition.

def _store(sweep: str | os.PathLike | Store) -> Store:
    return sweep if isinstance(sweep, Store) else Store(sweep)


def sweep_name(store: Store) -> str:
    return store.uri.rstrip("/").rsplit("/", 1)[-1]


def study_path(name: str) -> str:
    return f"{STUDIES_DIR}/{name}/study.json"


def raters_path(name: str) -> str:
    return f"{STUDIES_DIR}/{name}/raters.json"


def vote_part(study: str, rater: str, item: str, repeat: bool, question: str) -> str:
    """Store-relative path of one vote's part file (deterministic: the duplicate-vote key)."""
    return f"{VOTES_DIR}/part-{study}-{rater}-{item}{'r' if repeat else ''}-{question}.parquet"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"study name {name!r} must match {_NAME.pattern} (letters, digits, . _ -)")
    return name


def load_study(sweep: str | os.PathLike | Store, name: str) -> dict:
    """The study definition (study.json) of study `name` in a sweep folder."""
    store = _store(sweep)
    study = store.read_json(study_path(_check_name(name)))
    if study is None:
        existing = store.list_dirs(STUDIES_DIR)
        raise FileNotFoundError(f"no study {name!r} in {store.uri} (studies there: {', '.join(existing) or 'none'};"
                                " make one with `motion-sweep study create`)")
    return study


def list_studies(sweep: str | os.PathLike | Store) -> list[str]:
    store = _store(sweep)
    return [n for n in store.list_dirs(STUDIES_DIR) if store.exists(study_path(n))]


def load_raters(sweep: str | os.PathLike | Store, name: str) -> list[dict]:
    """[{id, token, created_at}] of a study (empty before raters are added)."""
    data = _store(sweep).read_json(raters_path(name))
    return list(data["raters"]) if data else []


def _questions(questions: Optional[Sequence[Any]]) -> list[dict]:
    """Normalise questions: strings (ids q1, q2, ...) or {id, text} mappings; default the three of the paper."""
    if not questions:
        return [{"id": qid, "text": text} for qid, text in DEFAULT_QUESTIONS]
    out = []
    for i, q in enumerate(questions, 1):
        if isinstance(q, str):
            q = {"id": f"q{i}", "text": q}
        if not isinstance(q, dict) or not isinstance(q.get("text"), str) or not q["text"].strip():
            raise ValueError(f"question {i}: give a text (a string, or a mapping with `id` and `text`), got {q!r}")
        qid = str(q.get("id") or f"q{i}")
        if not _QUESTION_ID.match(qid):
            raise ValueError(f"question id {qid!r} must match {_QUESTION_ID.pattern}")
        out.append({"id": qid, "text": q["text"].strip()})
    if len({q["id"] for q in out}) != len(out):
        raise ValueError(f"question ids repeat: {[q['id'] for q in out]}")
    return out


def load_questions_file(path: str | os.PathLike) -> tuple[list[dict], Optional[str]]:
    """Questions (and optional instructions) from a YAML/JSON file: a list of questions, or a mapping with
    `questions:` (strings or {id, text}) and an optional `instructions:` text."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    instructions = None
    if isinstance(data, dict):
        instructions = data.get("instructions")
        unknown = set(data) - {"questions", "instructions"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} (expected questions, instructions)")
        data = data.get("questions")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a list of questions (or `questions:` with a list)")
    return _questions(data), instructions


def _ok_samples(store: Store) -> list[dict]:
    from .tables import load

    table = load(store.uri)
    if table.num_rows == 0:
        raise ValueError(f"no samples in {store.uri} (give a sweep folder, STORAGE/NAME, that has results)")
    sweeps = set(table["sweep"].to_pylist())
    if len(sweeps) > 1:
        raise ValueError(f"{store.uri} holds several sweeps ({', '.join(sorted(map(str, sweeps)))}); "
                         "give one sweep folder (STORAGE/NAME)")
    needed = ["variant", "video", "prompt", "generation_seed", "checkpoint_step_applied", "status", "video_path",
              "source_video"]
    cols = {c: table[c].to_pylist() for c in needed + (["created_at"] if "created_at" in table.column_names else [])}
    rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())]
    return [r for r in rows if r["status"] == "ok" and r["video_path"]]


def _resolve_local(path: str, store: Store) -> str:
    """An absolute local path (checked to exist) or a URI, for a clip path from the samples table."""
    if "://" in path and not path.startswith("file://"):
        return path
    p = Path(path[len("file://"):] if path.startswith("file://") else path).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + (
        [Path(store.uri) / p, Path(store.uri).parent / p] if store.is_local else [])
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    raise FileNotFoundError(f"video {path} not found (looked at {', '.join(map(str, candidates))}); "
                            "serve the study where the sweep's videos are readable")


def create_study(sweep: str | os.PathLike, name: str, compare: Sequence[str], *, checkpoint: Optional[int] = None,
                 items: Optional[int] = None, repeats: int = DEFAULT_REPEATS, per_rater: Optional[int] = None,
                 questions: Optional[Sequence[Any]] = None, instructions: Optional[str] = None,
                 title: str = "Video comparison", seed: int = 0, raters: int = 0) -> dict:
    """Build a forced-choice study from a sweep's ok samples and write it (atomically) into the sweep folder.

    Items are the (video, prompt, generation_seed) units both variants of a pair have at the checkpoint
    (`checkpoint`: that step; default the largest step every compared non-base variant has; the base
    model's step 0 matches any). `items` caps their number (drawn at random with `seed`, balanced over the
    pairs); `repeats` items are shown to each rater a second time with the sides swapped; `per_rater` gives
    each rater that many of the items (balanced over raters; default all). Returns the definition.
    """
    store = _store(sweep)
    _check_name(name)
    if store.exists(study_path(name)):
        raise ValueError(f"study {name!r} already exists in {store.uri}; choose another name")
    compare = list(dict.fromkeys(compare))
    if len(compare) < 2:
        raise ValueError("--compare needs at least two distinct variants")
    qs = _questions(questions)
    rows = _ok_samples(store)
    available = sorted({r["variant"] for r in rows})
    missing = [v for v in compare if v not in available]
    if missing:
        raise ValueError(f"variant(s) {missing} have no ok samples in {store.uri}; variants there: "
                         + "; ".join(repr(v) for v in available))
    by_variant: dict[str, list[dict]] = {v: [r for r in rows if r["variant"] == v] for v in compare}
    steps = {v: {int(r["checkpoint_step_applied"] or 0) for r in rs} for v, rs in by_variant.items()}
    trained = {v: s - {0} for v, s in steps.items() if s - {0}}  # the base model has only step 0
    if checkpoint is None:
        common = set.intersection(*trained.values()) if trained else set()
        if trained and not common:
            raise ValueError("the compared variants share no checkpoint step: "
                             + "; ".join(f"{v}: {sorted(s)}" for v, s in trained.items()) + " (give --checkpoint)")
        checkpoint = max(common) if common else 0
    checkpoint = int(checkpoint)
    for v, s in steps.items():
        if checkpoint not in s and 0 not in s:
            raise ValueError(f"variant {v!r} has no samples at checkpoint {checkpoint} (it has {sorted(s)})")

    def clips(v: str) -> dict[tuple, dict]:
        out: dict[tuple, dict] = {}
        step = checkpoint if checkpoint in steps[v] else 0
        for r in sorted(by_variant[v], key=lambda r: str(r.get("created_at") or "")):  # the newest row wins
            if int(r["checkpoint_step_applied"] or 0) == step:
                out[(r["video"], r["prompt"], int(r["generation_seed"] or 0))] = r
        return out

    per_variant = {v: clips(v) for v in compare}
    pairs = [(a, b) for i, a in enumerate(compare) for b in compare[i + 1:]]
    rng = random.Random(seed)
    pools = []
    for a, b in pairs:
        units = sorted(set(per_variant[a]) & set(per_variant[b]), key=lambda u: (str(u[0]), str(u[1]), u[2]))
        if not units:
            raise ValueError(f"variants {a!r} and {b!r} have no (video, prompt, generation_seed) in common at "
                             f"checkpoint {checkpoint}")
        rng.shuffle(units)
        pools.append([(a, b, u) for u in units])
    total = sum(len(p) for p in pools)
    if items is not None and items < 1:
        raise ValueError("--items must be at least 1")
    n_items = total if items is None else min(items, total)
    chosen: list[tuple] = []
    while len(chosen) < n_items:  # round-robin over the pairs: balanced
        for pool in pools:
            if pool and len(chosen) < n_items:
                chosen.append(pool.pop(0))
    chosen.sort(key=lambda t: (compare.index(t[0]), compare.index(t[1]), str(t[2][0]), str(t[2][1]), t[2][2]))
    width = max(3, len(str(len(chosen))))
    item_list = []
    for k, (a, b, unit) in enumerate(chosen, 1):
        ra, rb = per_variant[a][unit], per_variant[b][unit]
        item_list.append({
            "id": f"i{k:0{width}d}", "pair": [a, b], "video": unit[0], "prompt": unit[1], "generation_seed": unit[2],
            "reference": _resolve_local(ra["source_video"] or rb["source_video"], store),
            "clips": {a: _resolve_local(ra["video_path"], store), b: _resolve_local(rb["video_path"], store)},
            "checkpoints": {a: int(ra["checkpoint_step_applied"] or 0), b: int(rb["checkpoint_step_applied"] or 0)},
        })
    if per_rater is not None and not 1 <= per_rater <= len(item_list):
        raise ValueError(f"--per-rater must be between 1 and the number of items ({len(item_list)})")
    shown = per_rater or len(item_list)
    if repeats < 0 or raters < 0:
        raise ValueError("--repeats and --raters must be >= 0")
    study = {
        "format": FORMAT, "study": name, "sweep": sweep_name(store), "title": title,
        "instructions": instructions or DEFAULT_INSTRUCTIONS, "questions": qs, "compare": compare,
        "checkpoint": checkpoint, "seed": seed, "n_items_available": total, "per_rater": per_rater,
        "repeats": min(repeats, shown), "secret": secrets.token_hex(16),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(), "items": item_list,
    }
    store.write_json(study_path(name), study)
    if not store.exists(raters_path(name)):
        store.write_json(raters_path(name), {"raters": []})
    if raters:
        add_raters(store, name, raters)
    return study


def add_raters(sweep: str | os.PathLike | Store, name: str, n: int) -> list[dict]:
    """Create `n` raters (ids r001..., random link tokens); returns the new ones. Rewrites raters.json
    atomically (a running server picks them up on their first request)."""
    store = _store(sweep)
    load_study(store, name)
    if n < 1:
        raise ValueError("the number of raters must be at least 1")
    current = load_raters(store, name)
    start = max((int(r["id"][1:]) for r in current if re.fullmatch(r"r\d+", r["id"])), default=0)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat()
    new = [{"id": f"r{start + k:03d}", "token": secrets.token_urlsafe(18), "created_at": now} for k in range(1, n + 1)]
    store.write_json(raters_path(name), {"raters": current + new})
    return new


def rater_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/r/{token}"


# --------------------------------------------------------------------------------------------------
# What each rater sees.

@dataclass(frozen=True)
class Presentation:
    item: str
    repeat: bool
    left: str   #: variant shown as Video 1
    right: str  #: variant shown as Video 2


def _rng(study: dict, *parts: str) -> random.Random:
    digest = hmac.new(study["secret"].encode(), ":".join(parts).encode(), hashlib.sha256).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def rater_schedule(study: dict, rater: str, rater_index: int = 0) -> list[Presentation]:
    """The rater's presentations in order: its items shuffled, each side drawn at random, then `repeats` of them
    again (at random later positions, at least 3 presentations after the first showing when possible) with the
    sides swapped. Deterministic per (study secret, rater id)."""
    items = study["items"]
    rng = _rng(study, "schedule", rater)
    if study.get("per_rater"):
        order = list(range(len(items)))
        _rng(study, "per-rater").shuffle(order)  # one study-wide order; rater k takes the next slice
        m = int(study["per_rater"])
        chosen = [items[order[(rater_index * m + j) % len(items)]] for j in range(m)]
    else:
        chosen = list(items)
    rng.shuffle(chosen)
    seq = []
    for it in chosen:
        a, b = it["pair"]
        seq.append(Presentation(it["id"], False, *((b, a) if rng.random() < 0.5 else (a, b))))
    k = min(int(study.get("repeats", 0)), len(seq))
    eligible = seq[:len(seq) - 3] if len(seq) - 3 >= k else list(seq)  # room for 3 others before the repeat
    for first in rng.sample(eligible, k):
        pos = seq.index(first)
        lo = min(pos + 4, len(seq))
        seq.insert(rng.randint(lo, len(seq)), Presentation(first.item, True, first.right, first.left))
    return seq


def _media_id(study: dict, rater: str, path: str) -> str:
    return hmac.new(study["secret"].encode(), f"media:{rater}:{path}".encode(), hashlib.sha256).hexdigest()[:20]


# --------------------------------------------------------------------------------------------------
# Votes: validation, writing (exclusive create), loading.

def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _code_version() -> str:
    from .tables import code_version

    return code_version()


def vote_row(study: dict, item: dict, p_left: str, p_right: str, *, rater: str, repeat: bool, question: str,
             choice: str, response_ms: Optional[int], when: Optional[_dt.datetime] = None,
             source: str = "server") -> dict:
    qtext = next(q["text"] for q in study["questions"] if q["id"] == question)
    return {
        "sweep": study["sweep"], "study": study["study"], "item": item["id"], "repeat": bool(repeat), "rater": rater,
        "question": question, "question_text": qtext, "left_variant": p_left, "right_variant": p_right,
        "choice": choice, "chosen_variant": p_left if choice == "left" else p_right,
        "response_ms": None if response_ms is None else int(response_ms), "time": when or _now(),
        "video": item["video"], "prompt": item["prompt"], "generation_seed": item["generation_seed"],
        "source": source, "code_version": _code_version(),
    }


def _vote_bytes(row: dict) -> bytes:
    table = pa.Table.from_pylist([row], schema=VOTES_SCHEMA)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


_REMOTE_LOCK = threading.Lock()
_REMOTE_PENDING: set[str] = set()


def write_vote(store: Store, row: dict) -> str:
    """Write one vote as its own Parquet part, never replacing an existing one. Returns the store path.

    Raises FileExistsError when that (study, rater, item, repeat, question) already has a vote; then nothing
    is written. Local stores: `Store.create_bytes_exclusive` (race-free across threads and processes). Object stores
    (s3://): pyarrow has no conditional put, so an existence check and the put run under a lock of this
    process: race-free within one server; two processes writing the same study could both accept one key,
    and the later put replaces the earlier (still one row per key).
    """
    rel = vote_part(row["study"], row["rater"], row["item"], row["repeat"], row["question"])
    data = _vote_bytes(row)
    if store.is_local:
        return store.create_bytes_exclusive(rel, data)
    with _REMOTE_LOCK:
        if rel in _REMOTE_PENDING:
            raise FileExistsError(rel)
        _REMOTE_PENDING.add(rel)
    try:
        if store.exists(rel):
            raise FileExistsError(rel)
        store.write_bytes_atomic(rel, data)
    finally:
        with _REMOTE_LOCK:
            _REMOTE_PENDING.discard(rel)
    return rel


def _vote_parts(store: Store, study: Optional[str] = None) -> list[str]:
    names = store.list_names(VOTES_DIR, f"part-{study}-" if study else "part-", ".parquet")
    if study:  # "part-a-b-..." also starts with "part-a-": split from the right (rater/item/question have no '-')
        names = [n for n in names if n[:-len(".parquet")].rsplit("-", 3)[0] == f"part-{study}"]
    return names


def load_votes(path: str | os.PathLike, study: Optional[str] = None) -> pa.Table:
    """The votes table (`VOTES_SCHEMA`) of a sweep folder, or of every sweep under a storage root;
    `study` keeps one study's. Unreadable parts are skipped with a warning."""
    import pyarrow.dataset as ds

    root = _store(path)
    stores = [root] if root.list_names(VOTES_DIR) or root.exists(STUDIES_DIR) else [
        Store(root.uri_of(n)) for n in root.list_dirs() if Store(root.uri_of(n)).list_names(VOTES_DIR)]
    pieces = []
    for store in stores:
        files = [f"{VOTES_DIR}/{n}" for n in _vote_parts(store, study)]
        if not files:
            continue
        paths = [str(store.local_path(f)) if store.is_local else store.abspath(f) for f in files]
        fs = None if store.is_local else store.fs
        try:
            pieces.append(ds.dataset(paths, schema=VOTES_SCHEMA, format="parquet", filesystem=fs).to_table())
        except (pa.ArrowInvalid, OSError):  # a bad part: read them one by one, skipping it
            for p, rel in zip(paths, files):
                try:
                    pieces.append(pq.read_table(p, filesystem=fs, schema=VOTES_SCHEMA))
                except (pa.ArrowInvalid, OSError) as exc:
                    warnings.warn(f"skipping unreadable vote part {store.uri_of(rel)}: {exc}", stacklevel=2)
    if not pieces:
        return VOTES_SCHEMA.empty_table()
    out = pa.concat_tables(pieces)
    if study:
        out = out.filter(pc.equal(out["study"], study))
    return out.sort_by([("study", "ascending"), ("rater", "ascending"), ("time", "ascending")])


class StudyState:
    """A study's definition, raters and schedules, for the server and for imports (validation in one place)."""

    def __init__(self, sweep: str | os.PathLike | Store, name: str):
        self.store = _store(sweep)
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
                        media[_media_id(self.study, rater, path)] = path
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
            return f"/media/{token}/{_media_id(self.study, rater, path)}.mp4"

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


# --------------------------------------------------------------------------------------------------
# Importing votes collected elsewhere.

def _read_records(path: Path) -> list[dict]:
    if path.suffix.lower() not in (".csv", ".json", ".jsonl", ".ndjson"):
        raise ValueError(f"{path}: give a .csv, .json or .jsonl file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        return [dict(r) for r in csv.DictReader(io.StringIO(text))]
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        data = data.get("votes") if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of votes (or {{\"votes\": [...]}})")
    return data


def _record(rec: dict) -> dict:
    """CSV strings -> the types a request body has (empty cells are missing values)."""
    out = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in rec.items() if k is not None}
    out = {k: v for k, v in out.items() if v not in ("", None)}
    if isinstance(out.get("repeat"), str):
        low = out["repeat"].lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise VoteError(400, f"repeat {out['repeat']!r} is not a boolean")
        out["repeat"] = low in ("true", "1", "yes")
    if isinstance(out.get("response_ms"), str):
        try:
            out["response_ms"] = float(out["response_ms"])
        except ValueError:
            raise VoteError(400, f"response_ms {out['response_ms']!r} is not a number") from None
    for derived in ("sweep", "question_text", "video", "prompt", "generation_seed", "source", "code_version"):
        out.pop(derived, None)  # columns of an exported votes table that follow from the item: not taken as given
    return out


def import_votes(sweep: str | os.PathLike, name: str, file: str | os.PathLike) -> int:
    """Import votes from a CSV/JSON/JSONL export with the server's validation; all or nothing.

    Columns: rater, item, question, left_variant, right_variant, and choice (left/right) or chosen_variant;
    optional: repeat (default false), response_ms, time (ISO 8601, default now), study (must be NAME).
    Rater ids are kept as given (letters, digits, _). Any invalid row, a duplicate within the file or of a
    vote already stored, refuses the whole import before anything is written. Returns the votes written.
    """
    state = StudyState(sweep, name)
    path = Path(file)
    records = _read_records(path)
    if not records:
        raise ValueError(f"{path}: no votes")
    rows, problems, seen = [], [], set()
    existing = {(r, i, bool(rep), q) for r, i, rep, q in zip(*[load_votes(state.store, name)[c].to_pylist()
                                                               for c in ("rater", "item", "repeat", "question")])}
    for n, rec in enumerate(records, 2 if path.suffix.lower() == ".csv" else 1):
        try:
            if not isinstance(rec, dict):
                raise VoteError(400, "a vote must be an object")
            rec = _record(rec)
            if rec.pop("study", name) != name:
                raise VoteError(400, f"study is not {name!r}")
            rater = str(rec.pop("rater", ""))
            if not _ID.match(rater):
                raise VoteError(400, f"rater {rater!r} must match {_ID.pattern}")
            row = state.validate(rater, None, rec, source=f"import:{path.name}", sides_from_body=True)
            key = (rater, row["item"], row["repeat"], row["question"])
            if key in seen or key in existing:
                raise VoteError(409, f"rater {rater} already voted on {row['item']}"
                                     f"{' (repeat)' if row['repeat'] else ''} / {row['question']}")
            seen.add(key)
            rows.append(row)
        except VoteError as exc:
            problems.append(f"{'line' if path.suffix.lower() == '.csv' else 'record'} {n}: {exc}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise ValueError(f"{path}: nothing imported; {len(problems)} invalid vote(s): " + "; ".join(problems[:10])
                         + more)
    for row in rows:
        write_vote(state.store, row)
    return len(rows)


# --------------------------------------------------------------------------------------------------
# The server (aiohttp.web).

_PAGE_DIR = "study_page"
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
    return resources.files("sweep").joinpath(_PAGE_DIR, name).read_bytes()


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


# --------------------------------------------------------------------------------------------------
# Statistics.

def _first(votes: pa.Table) -> list[dict]:
    return [r for r in votes.to_pylist() if not r["repeat"]]


def _wilson(k: int, n: int) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """(ci_low, ci_high, p) of k successes in n: Wilson 95% interval, two-sided exact binomial test of 1/2."""
    if n == 0:
        return None, None, None
    from scipy.stats import binomtest

    res = binomtest(k, n, 0.5, alternative="two-sided")
    ci = res.proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high), float(res.pvalue)


def _pair_order(votes_rows: list[dict], study_defs: dict[str, dict]) -> dict[tuple, tuple[str, str]]:
    """Canonical (variant_a, variant_b) of each study's pair: the --compare order when known."""
    order: dict[tuple, tuple[str, str]] = {}
    for r in votes_rows:
        pair = tuple(sorted((r["left_variant"], r["right_variant"])))
        key = (r["study"], pair)
        if key not in order:
            compare = study_defs.get(r["study"], {}).get("compare") or []
            a, b = pair
            if a in compare and b in compare and compare.index(b) < compare.index(a):
                a, b = b, a
            order[key] = (a, b)
    return order


def pairwise(votes: pa.Table, study_defs: Optional[dict[str, dict]] = None) -> pa.Table:
    """Per study, question and pair of variants: win rate of variant_a, Wilson 95% CI, two-sided binomial p."""
    rows = _first(votes)
    order = _pair_order(rows, study_defs or {})
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        a, b = order[(r["study"], tuple(sorted((r["left_variant"], r["right_variant"]))))]
        groups.setdefault((r["study"], r["question"], a, b), []).append(r)
    out = []
    for (study, question, a, b), rs in sorted(groups.items(), key=lambda kv: _sort_key(kv[0], study_defs)):
        wins_a = sum(r["chosen_variant"] == a for r in rs)
        lo, hi, p = _wilson(wins_a, len(rs))
        out.append({"study": study, "question": question, "variant_a": a, "variant_b": b, "n_votes": len(rs),
                    "wins_a": wins_a, "wins_b": len(rs) - wins_a, "win_rate_a": wins_a / len(rs), "ci_low": lo,
                    "ci_high": hi, "p": p, "n_raters": len({r["rater"] for r in rs}),
                    "n_items": len({r["item"] for r in rs})})
    return pa.Table.from_pylist(out, schema=PAIRS_SCHEMA)


def _sort_key(key: tuple, study_defs: Optional[dict]) -> tuple:
    study, question = key[0], key[1]
    qs = [q["id"] for q in (study_defs or {}).get(study, {}).get("questions", [])]
    return (study, qs.index(question) if question in qs else len(qs), question, *key[2:])


def bradley_terry_fit(wins: np.ndarray, compared: Optional[np.ndarray] = None, prior: float = 0.5,
                      max_iter: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Log-strengths θ (mean 0) from a wins matrix (wins[i, j]: times i beat j) by Hunter's (2004) MM algorithm:
    p_i ← W_i / Σ_j n_ij / (p_i + p_j). `prior` pseudo-wins are added each way on every compared pair (the
    `compared` mask, default where there are votes), which keeps θ finite when a variant never wins."""
    wins = np.asarray(wins, dtype=float)
    mask = (wins + wins.T) > 0 if compared is None else np.asarray(compared, bool)
    w = wins + prior * mask
    n = w + w.T
    total = w.sum(axis=1)
    p = np.ones(len(w))
    for _ in range(max_iter):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1), p)
        new = new / np.exp(np.mean(np.log(new)))
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    theta = np.log(p)
    return theta - theta.mean()


def bradley_terry(votes: pa.Table, study_defs: Optional[dict[str, dict]] = None, n_boot: int = 1000,
                  seed: int = 0) -> pa.Table:
    """Bradley–Terry log-strength per variant, per study and question, over every pair; 95% percentile
    intervals from `n_boot` resamples of raters (with replacement: a rater's votes stay together)."""
    rows = _first(votes)
    out = []
    keys = sorted({(r["study"], r["question"]) for r in rows}, key=lambda k: _sort_key(k, study_defs))
    for study, question in keys:
        rs = [r for r in rows if r["study"] == study and r["question"] == question]
        compare = (study_defs or {}).get(study, {}).get("compare") or []
        seen = {v for r in rs for v in (r["left_variant"], r["right_variant"])}
        variants = [v for v in compare if v in seen] + sorted(seen - set(compare))
        vi = {v: i for i, v in enumerate(variants)}
        raters = sorted({r["rater"] for r in rs})
        ri = {r: i for i, r in enumerate(raters)}
        per = np.zeros((len(raters), len(variants), len(variants)))
        for r in rs:
            win = r["chosen_variant"]
            lose = r["right_variant"] if win == r["left_variant"] else r["left_variant"]
            per[ri[r["rater"]], vi[win], vi[lose]] += 1
        wins = per.sum(axis=0)
        compared = (wins + wins.T) > 0
        theta = bradley_terry_fit(wins, compared)
        lo = hi = None
        if len(raters) >= 2 and n_boot > 0:
            rng = np.random.default_rng(seed)
            boots = np.empty((n_boot, len(variants)))
            for b in range(n_boot):
                counts = np.bincount(rng.integers(0, len(raters), len(raters)), minlength=len(raters))
                boots[b] = bradley_terry_fit(np.tensordot(counts, per, axes=1), compared)
            lo, hi = np.percentile(boots, 2.5, axis=0), np.percentile(boots, 97.5, axis=0)
        method = (f"MM fit (Hunter 2004), 0.5 pseudo-wins each way per compared pair; 95% percentile bootstrap "
                  f"over raters ({n_boot} resamples)" if lo is not None else
                  "MM fit (Hunter 2004), 0.5 pseudo-wins each way per compared pair; no interval (< 2 raters)")
        for v, i in vi.items():
            out.append({"study": study, "question": question, "variant": v, "log_strength": float(theta[i]),
                        "ci_low": None if lo is None else float(lo[i]), "ci_high": None if hi is None else float(hi[i]),
                        "strength": float(np.exp(theta[i])), "n_votes": int(wins[i].sum() + wins[:, i].sum()),
                        "n_wins": int(wins[i].sum()), "method": method})
    return pa.Table.from_pylist(out, schema=BRADLEY_TERRY_SCHEMA)


def rater_consistency(votes: pa.Table) -> pa.Table:
    """Share of repeated (item, question) answers choosing the same variant both times, sides un-swapped:
    overall per question ('all' raters), overall, and per rater."""
    rows = votes.to_pylist()
    first = {(r["study"], r["rater"], r["item"], r["question"]): r["chosen_variant"] for r in rows if not r["repeat"]}
    pairs = [(r["study"], r["rater"], r["question"], first[k] == r["chosen_variant"]) for r in rows if r["repeat"]
             and (k := (r["study"], r["rater"], r["item"], r["question"])) in first]
    out = []

    def add(study, rater, question, sel):
        n = len(sel)
        c = sum(sel)
        out.append({"study": study, "rater": rater, "question": question, "n_repeated": n, "n_consistent": c,
                    "consistency": c / n if n else None})

    for study in sorted({p[0] for p in pairs}):
        ps = [p for p in pairs if p[0] == study]
        for q in sorted({p[2] for p in ps}):
            add(study, "all", q, [p[3] for p in ps if p[2] == q])
        add(study, "all", "all", [p[3] for p in ps])
        for rater in sorted({p[1] for p in ps}):
            add(study, rater, "all", [p[3] for p in ps if p[1] == rater])
    return pa.Table.from_pylist(out, schema=CONSISTENCY_SCHEMA)


def item_votes(votes: pa.Table, study_defs: Optional[dict[str, dict]] = None) -> pa.Table:
    """Votes per item (every item of the study definitions, with zeros, plus any other voted item)."""
    rows = votes.to_pylist()
    items: dict[tuple, dict] = {}
    for study, d in (study_defs or {}).items():
        for it in d["items"]:
            items[(study, it["id"])] = {"study": study, "item": it["id"], "variant_a": it["pair"][0],
                                        "variant_b": it["pair"][1], "video": it["video"], "prompt": it["prompt"],
                                        "generation_seed": it["generation_seed"]}
    for r in rows:
        items.setdefault((r["study"], r["item"]), {
            "study": r["study"], "item": r["item"], "variant_a": min(r["left_variant"], r["right_variant"]),
            "variant_b": max(r["left_variant"], r["right_variant"]), "video": r["video"], "prompt": r["prompt"],
            "generation_seed": r["generation_seed"]})
    by_item: dict[tuple, list[dict]] = {}
    for r in rows:
        by_item.setdefault((r["study"], r["item"]), []).append(r)
    out = []
    for key, info in sorted(items.items()):
        rs = by_item.get(key, [])
        first = [r for r in rs if not r["repeat"]]
        out.append({**info, "n_votes": len(first), "n_raters": len({r["rater"] for r in first}),
                    "n_repeat_votes": len(rs) - len(first)})
    return pa.Table.from_pylist(out, schema=ITEMS_SCHEMA)


def user_preference(votes: pa.Table | str | os.PathLike, *, study: Optional[str] = None,
                    question: Optional[str | Sequence[str]] = None) -> pa.Table:
    """variant → user_preference (share of forced-choice votes won, first presentations) with n_votes, n_wins and
    a Wilson 95% interval. `votes`: a votes table or a sweep folder; `study`/`question` restrict (default: every
    study and question pooled). Joins the summary table on `variant`."""
    if not isinstance(votes, pa.Table):
        votes = load_votes(votes, study)
    rows = [r for r in _first(votes) if (study is None or r["study"] == study)]
    if question is not None:
        wanted = {question} if isinstance(question, str) else set(question)
        rows = [r for r in rows if r["question"] in wanted]
    variants = sorted({v for r in rows for v in (r["left_variant"], r["right_variant"])})
    out = []
    for v in variants:
        rs = [r for r in rows if v in (r["left_variant"], r["right_variant"])]
        wins = sum(r["chosen_variant"] == v for r in rs)
        lo, hi, _ = _wilson(wins, len(rs))
        out.append({"variant": v, "user_preference": wins / len(rs), "n_votes": len(rs), "n_wins": wins,
                    "ci_low": lo, "ci_high": hi, "n_raters": len({r["rater"] for r in rs}),
                    "questions": ",".join(sorted({r["question"] for r in rs})),
                    "studies": ",".join(sorted({r["study"] for r in rs}))})
    return pa.Table.from_pylist(out, schema=USER_PREFERENCE_SCHEMA)


def study_results(sweep: str | os.PathLike, name: Optional[str] = None, *, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, pa.Table]:
    """Every result table of a study (or of all studies of the sweep when `name` is None):
    {"pairs", "bradley_terry", "consistency", "items", "user_preference", "votes"}."""
    store = _store(sweep)
    names = [name] if name else list_studies(store)
    defs = {n: load_study(store, n) for n in names}
    votes = load_votes(store, name)
    return {"pairs": pairwise(votes, defs), "bradley_terry": bradley_terry(votes, defs, n_boot=n_boot, seed=seed),
            "consistency": rater_consistency(votes), "items": item_votes(votes, defs),
            "user_preference": user_preference(votes, study=name), "votes": votes}


# --------------------------------------------------------------------------------------------------
# Command line: `motion-sweep study ...` (sweep.cli wires `add_study_arguments`).

def add_study_arguments(subparsers) -> argparse.ArgumentParser:
    """Add `study` with its sub-commands to an argparse subparsers object; each sets `func`."""
    p = subparsers.add_parser(
        "study", help="a user-preference study (forced choice between variants, served to raters)",
        description="Build a two-alternative forced-choice study from a sweep's clips, serve it to raters (one "
                    "link each), import votes collected elsewhere, and compute win rates and Bradley–Terry "
                    "strengths. Votes are an Arrow table (votes/ under the sweep folder).")
    sub = p.add_subparsers(dest="study_command", metavar="STUDY_COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    def common(q):
        q.add_argument("name", help="study name (letters, digits, . _ -)")
        q.add_argument("--sweep", required=True, help="the sweep folder (STORAGE/NAME, local or s3://)")

    q = sub.add_parser("create", help="build a study from a sweep's samples",
                       description="Items: the (video, prompt, generation seed) units two compared variants share at "
                                   "the checkpoint, for every pair of --compare variants. Writes "
                                   "SWEEP/studies/NAME/study.json; with --raters, prints one link per rater.")
    common(q)
    q.add_argument("--compare", nargs="+", required=True, metavar="VARIANT",
                   help="variant ids as in the samples table (quote them: 'qk=1d v=2d debias=difference'); every "
                        "pair is compared")
    q.add_argument("--checkpoint", type=int, help="checkpoint step (default: the largest the compared variants "
                                                  "share; the base model's 0 matches any)")
    q.add_argument("--items", type=int, help="at most N items, drawn at random balanced over pairs (default: all)")
    q.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help=f"items each rater sees twice, sides swapped (consistency; default {DEFAULT_REPEATS})")
    q.add_argument("--per-rater", type=int, help="items per rater, spread evenly over raters (default: all)")
    q.add_argument("--question", action="append", metavar="TEXT",
                   help="a question (repeatable; default: motion, text and overall quality questions)")
    q.add_argument("--questions", metavar="YAML", help="questions (and instructions) from a YAML file")
    q.add_argument("--title", default="Video comparison", help="page title shown to raters (no variant names)")
    q.add_argument("--seed", type=int, default=0, help="seed of the item draw")
    q.add_argument("--raters", type=int, default=0, help="create N raters now and print their links")
    q.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}",
                   help="URL raters reach the server at, for the printed links")
    q.set_defaults(func=cmd_study_create)

    q = sub.add_parser("add-raters", help="add raters (random link tokens) and print their links")
    common(q)
    q.add_argument("--raters", type=int, required=True, help="how many")
    q.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}", help="for the printed links")
    q.set_defaults(func=cmd_study_add_raters)

    q = sub.add_parser("links", help="print every rater's link")
    common(q)
    q.add_argument("--base-url", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}", help="for the printed links")
    q.set_defaults(func=cmd_study_links)

    q = sub.add_parser("serve", help="serve the study page (loopback by default)",
                       description="Serve the study with aiohttp. Each vote is written at once as its own Parquet "
                                   "part; a second vote on the same item and question is refused (409). Binds "
                                   "127.0.0.1: reach it through an SSH tunnel or a TLS reverse proxy.")
    common(q)
    q.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    q.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    q.add_argument("--base-url", help="public URL for the printed links (e.g. behind a reverse proxy)")
    q.set_defaults(func=cmd_study_serve)

    q = sub.add_parser("import", help="import votes from a CSV/JSON export (validated; all or nothing)",
                       description="Columns: rater, item, question, left_variant, right_variant, choice (left/right) "
                                   "or chosen_variant; optional repeat, response_ms, time (ISO 8601).")
    common(q)
    q.add_argument("file", help="votes.csv, .json or .jsonl")
    q.set_defaults(func=cmd_study_import)

    q = sub.add_parser("results", help="win rates, Bradley–Terry strengths, rater consistency, votes per item")
    common(q)
    q.add_argument("--boot", type=int, default=1000, help="bootstrap resamples over raters (default 1000)")
    q.add_argument("--json", action="store_true", help="print the tables as JSON")
    q.add_argument("--out", help="also write the tables as Parquet and CSV into this folder")
    q.set_defaults(func=cmd_study_results)
    return p


def _print_links(study: str, raters: Iterable[dict], base_url: str) -> None:
    for r in raters:
        print(f"{r['id']}\t{rater_link(base_url, r['token'])}")


def cmd_study_create(args: argparse.Namespace) -> int:
    questions, instructions = (load_questions_file(args.questions) if args.questions else (None, None))
    if args.question:
        if questions:
            raise ValueError("give --question or --questions, not both")
        questions = args.question
    study = create_study(args.sweep, args.name, args.compare, checkpoint=args.checkpoint, items=args.items,
                         repeats=args.repeats, per_rater=args.per_rater, questions=questions,
                         instructions=instructions, title=args.title, seed=args.seed)
    store = Store(args.sweep)
    pairs = {tuple(it["pair"]) for it in study["items"]}
    print(f"study {args.name}: {len(study['items'])} items ({len(pairs)} pair(s), checkpoint {study['checkpoint']}), "
          f"{len(study['questions'])} question(s), {study['repeats']} repeat(s) per rater -> "
          f"{store.uri_of(study_path(args.name))}", file=sys.stderr)
    if args.raters:
        _print_links(args.name, add_raters(store, args.name, args.raters), args.base_url)
    else:
        print(f"add raters: motion-sweep study add-raters {args.name} --sweep {store.uri} --raters N", file=sys.stderr)
    return 0


def cmd_study_add_raters(args: argparse.Namespace) -> int:
    _print_links(args.name, add_raters(args.sweep, args.name, args.raters), args.base_url)
    return 0


def cmd_study_links(args: argparse.Namespace) -> int:
    load_study(args.sweep, args.name)
    _print_links(args.name, load_raters(args.sweep, args.name), args.base_url)
    return 0


def cmd_study_serve(args: argparse.Namespace) -> int:
    serve(args.sweep, args.name, host=args.host, port=args.port, base_url=args.base_url)
    return 0


def cmd_study_import(args: argparse.Namespace) -> int:
    n = import_votes(args.sweep, args.name, args.file)
    print(f"imported {n} vote(s) into {Store(args.sweep).uri_of(VOTES_DIR)}")
    return 0


def format_table(table: pa.Table, digits: int = 3) -> str:
    """A plain-text table (for the terminal)."""
    if table.num_rows == 0:
        return "(none)"
    cols = table.column_names
    cells = [[("" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v))
              for v in row.values()] for row in table.to_pylist()]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def cmd_study_results(args: argparse.Namespace) -> int:
    load_study(args.sweep, args.name)
    res = study_results(args.sweep, args.name, n_boot=args.boot)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        import pyarrow.csv as pacsv

        for key, table in res.items():
            pq.write_table(table, out / f"study-{args.name}-{key}.parquet")
            pacsv.write_csv(table, out / f"study-{args.name}-{key}.csv")
    if args.json:
        print(dumps({k: v.to_pylist() for k, v in res.items() if k != "votes"}))
        return 0
    print(f"study {args.name}: {res['votes'].num_rows} vote(s) from "
          f"{len(set(res['votes']['rater'].to_pylist()))} rater(s)\n")
    show = {"pairs": ["question", "variant_a", "variant_b", "n_votes", "win_rate_a", "ci_low", "ci_high", "p"],
            "bradley_terry": ["question", "variant", "log_strength", "ci_low", "ci_high", "n_votes"],
            "consistency": ["rater", "question", "n_repeated", "consistency"],
            "user_preference": ["variant", "user_preference", "ci_low", "ci_high", "n_votes"]}
    titles = {"pairs": "Win rate of variant_a (Wilson 95% CI, two-sided binomial test)",
              "bradley_terry": "Bradley–Terry log-strength (95% bootstrap over raters)",
              "consistency": "Rater consistency on repeated items (sides swapped)",
              "user_preference": "User preference (share of votes won, all questions)"}
    for key, cols in show.items():
        table = res[key]
        if key == "consistency":
            table = table.filter(pc.equal(table["rater"], "all"))
        print(titles[key])
        print(format_table(table.select(cols)) + "\n")
    n = res["items"]["n_votes"].to_pylist()
    if n:
        print(f"votes per item (first presentations): min {min(n)}, median {float(np.median(n)):g}, max {max(n)}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m sweep.study CMD ...` (the same as `motion-sweep study CMD ...`)."""
    parser = argparse.ArgumentParser(prog="motion-sweep")  # usage lines read as the real command
    sub = parser.add_subparsers(dest="command")
    add_study_arguments(sub)
    args = parser.parse_args(["study", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"motion-sweep study: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
