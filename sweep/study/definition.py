"""A study's definition: its items, questions and raters, built from a sweep's samples and kept in the sweep folder.

    studies/<NAME>/study.json    the definition (items, questions, options, a secret that seeds each rater's
                                 order and sides and the opaque media ids). Written once, atomically.
    studies/<NAME>/raters.json   rater ids and their link tokens (kept apart from the definition, which can
                                 be shared without giving away links)

An item is one (video, prompt, generation seed) with the clips of two variants (a pair of the --compare list)
at the study's checkpoint (the base model's step 0 matches any).
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import re
import secrets
from pathlib import Path
from typing import Any, Optional, Sequence

from sweep.results import tables
from sweep.results.store import Store

STUDIES_DIR = "studies"
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

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")   # study names (part names allow '-')
_QUESTION_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def open_store(sweep: str | os.PathLike | Store) -> Store:
    """The Store of a sweep folder given as a path, a URI or a Store."""
    return sweep if isinstance(sweep, Store) else Store(sweep)


def sweep_name(store: Store) -> str:
    return store.uri.rstrip("/").rsplit("/", 1)[-1]


def study_path(name: str) -> str:
    return f"{STUDIES_DIR}/{name}/study.json"


def raters_path(name: str) -> str:
    return f"{STUDIES_DIR}/{name}/raters.json"


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"study name {name!r} must match {_NAME.pattern} (letters, digits, . _ -)")
    return name


def load_study(sweep: str | os.PathLike | Store, name: str) -> dict:
    """The study definition (study.json) of study `name` in a sweep folder."""
    store = open_store(sweep)
    study = store.read_json(study_path(_check_name(name)))
    if study is None:
        existing = store.list_dirs(STUDIES_DIR)
        raise FileNotFoundError(f"no study {name!r} in {store.uri} (studies there: {', '.join(existing) or 'none'};"
                                " make one with `motion-sweep study create`)")
    return study


def list_studies(sweep: str | os.PathLike | Store) -> list[str]:
    store = open_store(sweep)
    return [n for n in store.list_dirs(STUDIES_DIR) if store.exists(study_path(n))]


def load_raters(sweep: str | os.PathLike | Store, name: str) -> list[dict]:
    """[{id, token, created_at}] of a study (empty before raters are added)."""
    data = open_store(sweep).read_json(raters_path(name))
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
    table = tables.load(store.uri)
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
    store = open_store(sweep)
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
    store = open_store(sweep)
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
