"""The preference study's votes joined onto the summary: its `user_preference` column (the paper's last column) and
that column's 95% interval (`user_preference_ci_low`, `user_preference_ci_high`).

The votes and their statistics are `sweep.study`'s; this module only says which summary row each vote is about.
"""

from __future__ import annotations

import os
import warnings

import pyarrow as pa
import pyarrow.compute as pc

from sweep.results.tables import sweep_stores
from sweep.study import list_studies, load_study, load_votes
from sweep.study.stats import shown_at, user_preference

from .stats import STEP, column

COLUMNS = ("user_preference", "user_preference_ci_low", "user_preference_ci_high")


def with_user_preference(summary: pa.Table, path: str | os.PathLike) -> pa.Table:
    """The summary with `user_preference` and its interval (`sweep.study.user_preference`: the Bradley–Terry
    probability of beating a variant drawn at random from the others compared, rater-clustered 95% interval) when
    `path` (a sweep folder or a storage root) holds votes; unchanged otherwise.

    One fit per sweep over all its studies' votes, a variant at each step it was shown at being its own entry
    (study.json items' `checkpoints`; the base model's 0), so studies that share a variant share one scale. Joined
    on variant *and* checkpoint (and sweep, when the summary has several): the votes say nothing about a variant's
    other checkpoints, whose rows stay null. A sweep whose comparisons fall into unconnected groups has no common
    scale: its rows stay null, with a warning (`motion-sweep study results` shows each group's values)."""
    votes = load_votes(path)
    if votes.num_rows == 0:
        return summary
    steps = {name: shown_at({s: load_study(store, s) for s in list_studies(store)})
             for name, store in sweep_stores(path)}
    several = "sweep" in summary.column_names
    found: dict[tuple, tuple] = {}  # (sweep or None, variant, step or None: any step) -> (value, low, high)
    for sweep in sorted(set(votes["sweep"].to_pylist()), key=str):
        prefs = user_preference(votes.filter(pc.equal(votes["sweep"], sweep)), steps=steps.get(sweep, {})).to_pylist()
        if len({r["component"] for r in prefs}) > 1:
            warnings.warn(f"sweep {sweep}: the study votes compare variants in unconnected groups (no vote links "
                          "them), so their user_preference has no common scale; the summary leaves it empty. See "
                          "`motion-sweep study results` for each group's values, or add a study comparing across "
                          "the groups", stacklevel=2)
            continue
        for r in prefs:
            found[(sweep if several else None, r["variant"], r["checkpoint"])] = (r["user_preference"], r["ci_low"],
                                                                                  r["ci_high"])
    sweeps = column(summary, "sweep") if several else [None] * summary.num_rows
    rows = [found.get((sweep, variant, step), found.get((sweep, variant, None), (None, None, None)))
            for sweep, variant, step in zip(sweeps, summary["variant"].to_pylist(), column(summary, STEP))]
    for k, name in enumerate(COLUMNS):
        summary = summary.append_column(name, pa.array([r[k] for r in rows], pa.float64()))
    return summary
