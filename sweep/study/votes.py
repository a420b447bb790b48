"""The votes: one row per vote, each written at once as its own Parquet part, and the votes table read back.

    votes/part-<study>-<rater>-<item>[r]-<question>.parquet

One part per vote (`VOTES_SCHEMA`), `r` marking the repeated (sides swapped) presentation of an item. The
name is deterministic per (study, rater, item, repeat, question): a vote is created with an exclusive,
no-replace operation on that name, so a second vote on the same key is refused and nothing is written
(see `write_vote`).
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import warnings
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sweep.results.store import Store, parquet_bytes
from sweep.results.tables import code_version

from .definition import STUDIES_DIR, open_store
from .schemas import VOTES_SCHEMA

VOTES_DIR = "votes"


def vote_part(study: str, rater: str, item: str, repeat: bool, question: str) -> str:
    """Store-relative path of one vote's part file (deterministic: the duplicate-vote key)."""
    return f"{VOTES_DIR}/part-{study}-{rater}-{item}{'r' if repeat else ''}-{question}.parquet"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def vote_row(study: dict, item: dict, p_left: str, p_right: str, *, rater: str, repeat: bool, question: str,
             choice: str, response_ms: Optional[int], when: Optional[_dt.datetime] = None,
             source: str = "server") -> dict:
    """A votes row (`VOTES_SCHEMA`): `choice` on `question` of `item`, shown with p_left as Video 1 and p_right as
    Video 2; the chosen variant, the question's text and the item's video, prompt and seed filled in."""
    qtext = next(q["text"] for q in study["questions"] if q["id"] == question)
    return {
        "sweep": study["sweep"], "study": study["study"], "item": item["id"], "repeat": bool(repeat), "rater": rater,
        "question": question, "question_text": qtext, "left_variant": p_left, "right_variant": p_right,
        "choice": choice, "chosen_variant": p_left if choice == "left" else p_right,
        "response_ms": None if response_ms is None else int(response_ms), "time": when or _now(),
        "video": item["video"], "prompt": item["prompt"], "generation_seed": item["generation_seed"],
        "source": source, "code_version": code_version(),
    }


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
    data = parquet_bytes(pa.Table.from_pylist([row], schema=VOTES_SCHEMA))
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

    root = open_store(path)
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
