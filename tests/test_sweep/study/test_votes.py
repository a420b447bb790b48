"""The votes table (sweep.study.votes): read back from a sweep folder or from every sweep under a storage root,
one study's alone, and its columns described.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.studies import BASE, FULL, build_sweep
from sweep.results.store import Store
from sweep.study.definition import create_study
from sweep.study.schemas import VOTES_SCHEMA, describe_votes
from sweep.study.votes import load_votes, vote_row, write_vote


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> str:
    """The test sweep with a study and one vote on each of its items."""
    sweep = build_sweep(tmp_path_factory.mktemp("study"))
    study = create_study(sweep, "voted", [BASE, FULL], repeats=0)
    for item in study["items"]:
        write_vote(Store(sweep), vote_row(study, item, BASE, FULL, rater="r001", repeat=False, question="motion",
                                          choice="right", response_ms=1000))
    return sweep


def test_load_votes_from_a_storage_root_and_describe(sweep_dir):
    root = str(Path(sweep_dir).parent)
    everything = load_votes(root)
    assert everything.num_rows == load_votes(sweep_dir).num_rows > 0
    assert set(describe_votes()) == set(VOTES_SCHEMA.names)
    assert load_votes(sweep_dir, "no-such-study").num_rows == 0
