"""The preference study's votes joined onto the summary: its `user_preference` column (the paper's last column).

The votes and their statistics are `sweep.study`'s; this module only says which summary row each vote is about.
"""

from __future__ import annotations

import os
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from sweep.results.tables import sweep_stores
from sweep.study import list_studies, load_study, load_votes, user_preference

from .stats import STEP, column


def with_user_preference(summary: pa.Table, path: str | os.PathLike) -> pa.Table:
    """The summary with a `user_preference` column (share of forced-choice votes won, `sweep.study.user_preference`)
    when `path` (a sweep folder or a storage root) holds votes; unchanged otherwise.

    Joined on variant *and* checkpoint (and sweep, when the summary has several): a study shows each variant's
    clips at one step (study.json items' `checkpoints`; the base model's 0), so its votes say nothing about the
    variant's other checkpoints, whose rows stay null. Votes of several studies at one step are pooled (wins over
    votes, as `user_preference` pools questions)."""
    votes = load_votes(path)
    if votes.num_rows == 0:
        return summary
    shown_at: dict[tuple, dict] = {}  # (sweep, study) -> {variant: step its clips were shown at}
    for name, store in sweep_stores(path):
        for study in list_studies(store):
            steps = shown_at.setdefault((name, study), {})
            for item in load_study(store, study)["items"]:
                steps.update({v: int(c) for v, c in (item.get("checkpoints") or {}).items()})
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # (sweep, variant, step or None) -> [wins, votes]
    keys = sorted({(r["sweep"], r["study"]) for r in votes.select(["sweep", "study"]).to_pylist()}, key=str)
    for sweep, study in keys:
        mask = pc.and_(pc.equal(votes["sweep"], sweep), pc.equal(votes["study"], study))
        for r in user_preference(votes.filter(mask)).to_pylist():
            step = shown_at.get((sweep, study), {}).get(r["variant"])  # None: no definition, any step
            counts[(sweep, r["variant"], step)][0] += r["n_wins"]
            counts[(sweep, r["variant"], step)][1] += r["n_votes"]
    several = "sweep" in summary.column_names
    pooled: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for (sweep, variant, step), (wins, n) in counts.items():
        pooled[(sweep if several else None, variant, step)][0] += wins
        pooled[(sweep if several else None, variant, step)][1] += n
    sweeps = column(summary, "sweep") if several else [None] * summary.num_rows
    steps = column(summary, STEP)
    values = []
    for sweep, variant, step in zip(sweeps, summary["variant"].to_pylist(), steps):
        wins, n = pooled.get((sweep, variant, step), pooled.get((sweep, variant, None), [0, 0]))
        values.append(wins / n if n else None)
    return summary.append_column("user_preference", pa.array(values, pa.float64()))
