"""A study built from a sweep's samples (sweep.study.definition): items, pairs, the checkpoint, questions, raters
and their link tokens, and the errors of bad options.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.studies import BASE, FULL, NOMV, VARIANTS, build_sweep
from sweep.study.definition import add_raters, create_study, list_studies, load_questions_file, load_raters, load_study


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> str:
    return build_sweep(tmp_path_factory.mktemp("study"))


# --------------------------------------------------------------------------------------------------
# Creating a study.

def test_create_study_items_pairs_checkpoint_and_raters(sweep_dir):
    study = create_study(sweep_dir, "all-pairs", VARIANTS, raters=4, repeats=2)
    assert study["checkpoint"] == 200  # the largest step FULL and NOMV share; the base model's 0 matches any
    items = study["items"]
    assert len(items) == 3 * 4  # 3 pairs × (2 videos × 2 prompts × 1 seed); the error row is not an item
    assert {tuple(it["pair"]) for it in items} == {(BASE, FULL), (BASE, NOMV), (FULL, NOMV)}
    assert [it["id"] for it in items] == [f"i{k:03d}" for k in range(1, 13)]
    assert all(it["prompt"] != "a green star" for it in items)
    for it in items:
        assert it["checkpoints"][it["pair"][0]] in (0, 200) and it["checkpoints"][it["pair"][1]] == 200
        assert all(Path(p).is_file() for p in (it["reference"], *it["clips"].values()))
        assert Path(it["clips"][it["pair"][0]]).name.split("-")[0] == it["video"]
    assert [q["id"] for q in study["questions"]] == ["motion", "text", "overall"]
    assert study["questions"][0]["text"] == "Which video's motion is closer to the reference?"
    on_disk = json.loads(Path(sweep_dir, "studies/all-pairs/study.json").read_text())
    assert on_disk["items"] == items and "raters" not in on_disk
    raters = load_raters(sweep_dir, "all-pairs")
    assert [r["id"] for r in raters] == ["r001", "r002", "r003", "r004"]
    assert len({r["token"] for r in raters}) == 4 and all(len(r["token"]) >= 20 for r in raters)
    assert not any(r["token"] in Path(sweep_dir, "studies/all-pairs/study.json").read_text() for r in raters)
    more = add_raters(sweep_dir, "all-pairs", 2)
    assert [r["id"] for r in more] == ["r005", "r006"] and len(load_raters(sweep_dir, "all-pairs")) == 6
    assert list_studies(sweep_dir) == sorted(list_studies(sweep_dir)) and "all-pairs" in list_studies(sweep_dir)


def test_create_study_options_and_errors(sweep_dir, tmp_path):
    s = create_study(sweep_dir, "ckpt100", [BASE, FULL], checkpoint=100, repeats=0)
    assert len(s["items"]) == 4 and all(it["checkpoints"][FULL] == 100 for it in s["items"])
    assert all(Path(it["clips"][FULL]).stem.endswith("-100") for it in s["items"])
    with pytest.raises(ValueError, match="no samples at checkpoint 100"):
        create_study(sweep_dir, "nomv100", [FULL, NOMV], checkpoint=100)
    s = create_study(sweep_dir, "five", VARIANTS, items=5, seed=3)
    pairs = [tuple(it["pair"]) for it in s["items"]]
    assert len(pairs) == 5 and sorted(pairs.count(p) for p in set(pairs)) == [1, 2, 2]  # balanced over pairs
    assert s["n_items_available"] == 12
    with pytest.raises(ValueError, match="no ok samples.*variants there"):
        create_study(sweep_dir, "bad", [BASE, "qk=9d"])
    with pytest.raises(ValueError, match="at least two"):
        create_study(sweep_dir, "bad", [BASE, BASE])
    with pytest.raises(ValueError, match="already exists"):
        create_study(sweep_dir, "five", VARIANTS)
    with pytest.raises(ValueError, match="study name"):
        create_study(sweep_dir, "../escape", VARIANTS)
    with pytest.raises(ValueError, match="per-rater"):
        create_study(sweep_dir, "pr", VARIANTS, per_rater=99)
    with pytest.raises(FileNotFoundError, match="no study 'nope'"):
        load_study(sweep_dir, "nope")
    assert not Path(sweep_dir, "studies", "bad").exists() and not Path(sweep_dir, "studies", "pr").exists()

    s = create_study(sweep_dir, "custom-q", [BASE, FULL], questions=["Which moves like the reference?",
                                                                       "Which is sharper?"])
    assert s["questions"] == [{"id": "q1", "text": "Which moves like the reference?"},
                              {"id": "q2", "text": "Which is sharper?"}]
    spec = tmp_path / "questions.yaml"
    spec.write_text('instructions: Pick one.\nquestions:\n  - {id: motion, text: "Same motion?"}\n  - Nicer?\n')
    qs, instructions = load_questions_file(spec)
    assert qs == [{"id": "motion", "text": "Same motion?"}, {"id": "q2", "text": "Nicer?"}]
    assert instructions == "Pick one."
    spec.write_text("questions:\n  - {id: Bad-Id, text: x}\n")
    with pytest.raises(ValueError, match="question id"):
        load_questions_file(spec)
    spec.write_text("questions: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_questions_file(spec)
