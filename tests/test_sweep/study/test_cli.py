"""`motion-sweep study ...` (sweep.study.cli): create, links, add-raters, import, results (text, JSON, files), user
errors as messages, and the parser plugged into another CLI's subparsers; `study_results` as the report uses it.
"""

from __future__ import annotations

import json

import pytest

from helpers.studies import BASE, FULL, build_sweep
from sweep.study import cli
from sweep.study.definition import load_study
from sweep.study.schemas import RESULT_SCHEMAS
from sweep.study.stats import study_results, user_preference


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> str:
    return build_sweep(tmp_path_factory.mktemp("study"))


# --------------------------------------------------------------------------------------------------
# The command line and the report API.

def test_cli_create_links_import_results(sweep_dir, tmp_path, capsys):
    assert cli.main(["create", "cli", "--sweep", sweep_dir, "--compare", BASE, FULL, "--raters", "2", "--repeats", "1",
                   "--question", "Same motion?", "--question", "Nicer?", "--base-url", "https://study.example"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.split("\t")[1].startswith("https://study.example/r/") for line in out)
    assert cli.main(["links", "cli", "--sweep", sweep_dir]) == 0
    assert capsys.readouterr().out.count("http://127.0.0.1:8008/r/") == 2
    assert cli.main(["add-raters", "cli", "--sweep", sweep_dir, "--raters", "1"]) == 0
    assert capsys.readouterr().out.startswith("r003\t")
    study = load_study(sweep_dir, "cli")
    votes = tmp_path / "votes.jsonl"
    lines = []
    for k, it in enumerate(study["items"]):
        for q, rater in (("q1", "a"), ("q2", "a"), ("q1", "b")):
            lines.append({"rater": rater, "item": it["id"], "question": q, "left_variant": BASE,
                          "right_variant": FULL, "choice": "right" if k or rater == "a" else "left"})
    votes.write_text("\n".join(json.dumps(line) for line in lines))
    assert cli.main(["import", "cli", "--sweep", sweep_dir, str(votes)]) == 0
    assert "imported 12 vote(s)" in capsys.readouterr().out
    assert cli.main(["results", "cli", "--sweep", sweep_dir, "--boot", "50", "--out", str(tmp_path / "res")]) == 0
    text = capsys.readouterr().out
    assert "Win rate of variant_a" in text and "Bradley–Terry" in text and "User preference" in text
    assert {p.name for p in (tmp_path / "res").iterdir()} >= {"study-cli-pairs.parquet", "study-cli-pairs.csv"}
    assert cli.main(["results", "cli", "--sweep", sweep_dir, "--json", "--boot", "20"]) == 0
    data = json.loads(capsys.readouterr().out)
    q1 = next(r for r in data["pairs"] if r["question"] == "q1")
    assert (q1["variant_a"], q1["n_votes"], q1["wins_b"]) == (BASE, 8, 7)

    res = study_results(sweep_dir, "cli", n_boot=20)
    assert set(res) == {"pairs", "bradley_terry", "consistency", "items", "user_preference", "votes"}
    for key, schema in RESULT_SCHEMAS.items():
        assert res[key].schema.equals(schema, check_metadata=True), key
    pref = {r["variant"]: r for r in res["user_preference"].to_pylist()}
    assert pref[FULL]["n_votes"] == 12 and pref[FULL]["n_wins"] == 11
    assert user_preference(sweep_dir, study="cli", question="q2").column("n_votes").to_pylist() == [4, 4]
    assert cli.main(["results", "nope", "--sweep", sweep_dir]) == 2  # a user error: message, no traceback
    assert "no study 'nope'" in capsys.readouterr().err
    assert cli.main(["create", "x", "--sweep", sweep_dir, "--compare", BASE, "qk=9d"]) == 2

    # the parser plugs into another CLI's subparsers (sweep.cli wires it the same way)
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_study_arguments(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["study", "serve", "cli", "--sweep", sweep_dir])
    assert (args.host, args.port, args.func) == ("127.0.0.1", 8008, cli.cmd_study_serve)
