"""Votes collected elsewhere imported into a study (sweep.study.vote_import): validated like the server's, all or
nothing, duplicates refused, CSV and JSON.
"""

from __future__ import annotations

import csv
import json

import pytest

from helpers.studies import BASE, FULL, NOMV, build_sweep, part_files
from sweep.study.definition import create_study
from sweep.study.vote_import import import_votes
from sweep.study.votes import load_votes


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> str:
    return build_sweep(tmp_path_factory.mktemp("study"))


# --------------------------------------------------------------------------------------------------
# Importing votes collected elsewhere.

def test_import_votes_validated_all_or_nothing(sweep_dir, tmp_path):
    study = create_study(sweep_dir, "imported", [BASE, FULL], repeats=0)
    it1, it2 = study["items"][:2]
    fields = ["rater", "item", "question", "left_variant", "right_variant", "choice", "chosen_variant",
              "response_ms", "time", "repeat"]

    def write(rows, name="survey.csv"):
        p = tmp_path / name
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows(rows)
        return p

    good = [
        {"rater": "ext_1", "item": it1["id"], "question": "motion", "left_variant": BASE, "right_variant": FULL,
         "choice": "right", "response_ms": "1500", "time": "2026-01-02T03:04:05Z"},
        {"rater": "ext_1", "item": it2["id"], "question": "motion", "left_variant": FULL, "right_variant": BASE,
         "chosen_variant": BASE, "repeat": "false"},
        {"rater": "ext_2", "item": it1["id"], "question": "overall", "left_variant": FULL, "right_variant": BASE,
         "choice": "left"},
    ]
    bad_sets = [
        [*good, {**good[0]}],                                                  # duplicate inside the file
        [*good, {**good[0], "rater": "ext_3", "item": "i999"}],               # unknown item
        [*good, {**good[0], "rater": "ext_3", "question": "colour"}],         # unknown question
        [*good, {**good[0], "rater": "ext_3", "left_variant": NOMV}],         # not the item's pair
        [*good, {**good[0], "rater": "ext_3", "choice": "up"}],
        [*good, {**good[0], "rater": "ext 3"}],                               # bad rater id
        [*good, {**good[0], "rater": "ext_3", "choice": "left", "chosen_variant": FULL}],  # disagree
        [*good, {**good[0], "rater": "ext_3", "time": "yesterday"}],
    ]
    for rows in bad_sets:
        with pytest.raises(ValueError, match="nothing imported"):
            import_votes(sweep_dir, "imported", write(rows))
        assert load_votes(sweep_dir, "imported").num_rows == 0 and not part_files(sweep_dir, "imported")

    assert import_votes(sweep_dir, "imported", write(good)) == 3
    votes = load_votes(sweep_dir, "imported").sort_by([("rater", "ascending"), ("item", "ascending")])
    rows = votes.to_pylist()
    assert [r["chosen_variant"] for r in rows] == [FULL, BASE, FULL]
    assert [r["choice"] for r in rows] == ["right", "right", "left"]
    assert rows[0]["time"].isoformat().startswith("2026-01-02T03:04:05") and rows[0]["response_ms"] == 1500
    assert {r["source"] for r in rows} == {"import:survey.csv"}
    with pytest.raises(ValueError, match="already voted"):  # importing again: every row a duplicate
        import_votes(sweep_dir, "imported", write(good))
    assert load_votes(sweep_dir, "imported").num_rows == 3

    js = tmp_path / "more.json"
    js.write_text(json.dumps({"votes": [{"rater": "ext_4", "item": it2["id"], "question": "text", "repeat": False,
                                         "left_variant": BASE, "right_variant": FULL, "choice": "left"}]}))
    assert import_votes(sweep_dir, "imported", js) == 1
    with pytest.raises(ValueError, match="csv, .json or .jsonl"):
        import_votes(sweep_dir, "imported", tmp_path / "questions.txt")
