"""What each rater sees (sweep.study.schedule): order and sides drawn per rater, deterministic, repeats swapped and
not right after the first showing, --per-rater slices covering the items.
"""

from __future__ import annotations

import pytest

from helpers.studies import VARIANTS, build_sweep
from sweep.study.definition import create_study
from sweep.study.schedule import rater_schedule


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> str:
    return build_sweep(tmp_path_factory.mktemp("study"))


def test_schedule_randomises_sides_per_rater_and_repeats_swapped(sweep_dir):
    study = create_study(sweep_dir, "sched", VARIANTS, repeats=3)
    seqs = {f"r{k:03d}": rater_schedule(study, f"r{k:03d}") for k in range(1, 21)}
    assert seqs["r001"] == rater_schedule(study, "r001")  # deterministic
    for seq in seqs.values():
        first = [p for p in seq if not p.repeat]
        again = [p for p in seq if p.repeat]
        assert sorted(p.item for p in first) == [it["id"] for it in study["items"]] and len(again) == 3
        for rep in again:
            orig = next(p for p in first if p.item == rep.item)
            assert (rep.left, rep.right) == (orig.right, orig.left)  # sides swapped
            assert seq.index(rep) - seq.index(orig) >= 4  # not right after the first showing
    for it in study["items"]:  # each side drawn per rater: over 20 raters both orders occur
        lefts = {next(p.left for p in seq if p.item == it["id"] and not p.repeat) for seq in seqs.values()}
        assert lefts == set(it["pair"])
    assert len({tuple(p.item for p in seq) for seq in seqs.values()}) > 1  # orders differ

    per = create_study(sweep_dir, "per-rater", VARIANTS, per_rater=4, repeats=1)
    seen = [p.item for k in range(3) for p in rater_schedule(per, f"r{k + 1:03d}", k) if not p.repeat]
    assert sorted(seen) == sorted(it["id"] for it in per["items"])  # 3 raters × 4 cover the 12 items once
