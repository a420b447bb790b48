"""The study's votes on the summary (`sweep.report.preference.with_user_preference`): one Bradley–Terry fit per
sweep over every study, a variant at each step it was shown at being its own entry, joined on variant and step with
its interval; unconnected studies leave the column empty with a warning."""

from __future__ import annotations

import warnings

import pyarrow as pa
import pytest

from helpers.studies import BASE, FULL, NOMV, build_sweep
from sweep.report.preference import with_user_preference
from sweep.report.stats import STEP
from sweep.results.store import Store
from sweep.study import create_study, load_raters, load_votes, vote_row, write_vote
from sweep.study.stats import shown_at, user_preference


def _vote_all(folder: str, study: dict, better: str) -> None:
    """Every rater votes on every item: `better` wins 3 of 4."""
    store = Store(folder)
    for k, rater in enumerate(load_raters(folder, study["study"])):
        for i, item in enumerate(study["items"]):
            a, b = item["pair"]
            wins_a = (a == better) == bool((i + k) % 4)
            write_vote(store, vote_row(study, item, a, b, rater=rater["id"], repeat=False, question="motion",
                                       choice="left" if wins_a else "right", response_ms=100))


def _summary() -> pa.Table:
    rows = [(BASE, 0), (FULL, 100), (FULL, 200), (NOMV, 200)]
    return pa.table({"variant": [v for v, _ in rows], STEP: [s for _, s in rows]})


def test_one_scale_across_studies_that_share_a_variant(tmp_path):
    folder = build_sweep(tmp_path)
    studies = {"early": create_study(folder, "early", [BASE, FULL], checkpoint=100, raters=3, repeats=0),
               "late": create_study(folder, "late", [BASE, FULL, NOMV], checkpoint=200, raters=3, repeats=0)}
    _vote_all(folder, studies["early"], FULL)
    _vote_all(folder, studies["late"], FULL)
    summary = with_user_preference(_summary(), folder)
    got = {(r["variant"], r[STEP]): r for r in summary.to_pylist()}
    expected = user_preference(load_votes(folder), steps=shown_at(studies)).to_pylist()
    assert {(r["variant"], r["checkpoint"]) for r in expected} == set(got)  # FULL at 100 and at 200: two entries
    for r in expected:
        row = got[(r["variant"], r["checkpoint"])]
        assert row["user_preference"] == pytest.approx(r["user_preference"])
        assert (row["user_preference_ci_low"], row["user_preference_ci_high"]) == pytest.approx((r["ci_low"],
                                                                                                 r["ci_high"]))
        assert row["user_preference_ci_low"] < row["user_preference"] < row["user_preference_ci_high"]
    assert got[(FULL, 100)]["user_preference"] > 0.5 > got[(BASE, 0)]["user_preference"]
    assert sum(r["user_preference"] for r in expected) == pytest.approx(len(expected) / 2)  # one common scale


def test_studies_with_no_variant_in_common_leave_the_column_empty(tmp_path):
    folder = build_sweep(tmp_path)
    early = create_study(folder, "early", [BASE, FULL], checkpoint=100, raters=2, repeats=0)
    late = create_study(folder, "late", [FULL, NOMV], checkpoint=200, raters=2, repeats=0)  # FULL at another step
    _vote_all(folder, early, FULL)
    _vote_all(folder, late, FULL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = with_user_preference(_summary(), folder)
    assert any("unconnected groups" in str(w.message) for w in caught)
    assert summary["user_preference"].null_count == summary.num_rows
    assert summary.column_names[-3:] == ["user_preference", "user_preference_ci_low", "user_preference_ci_high"]
