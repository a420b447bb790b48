"""Votes collected elsewhere (a survey tool's CSV, JSON or JSONL export) imported into a study: every record
validated as the server validates a vote, all or nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

from .state import StudyState, VoteError
from .votes import load_votes, write_vote

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]{0,63}$")  # rater ids: no '-' (part names split on it)


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
