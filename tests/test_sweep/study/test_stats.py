"""The study's statistics (sweep.study.stats) on hand-made votes tables: win rates with Wilson intervals and the
binomial test, Bradley–Terry against the maximum-likelihood fit, rater consistency, votes per item, and
user_preference.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from sweep.study.schemas import USER_PREFERENCE_SCHEMA, VOTES_SCHEMA
from sweep.study.stats import bradley_terry, bradley_terry_fit, item_votes, pairwise, rater_consistency, user_preference


# --------------------------------------------------------------------------------------------------
# Statistics.

def _votes(rows: list[dict]) -> pa.Table:
    base = {"sweep": "s", "study": "st", "repeat": False, "question": "motion", "question_text": "q",
            "response_ms": 1, "time": None, "video": "v", "prompt": "p", "generation_seed": 0, "source": "test",
            "code_version": "x"}
    out = []
    for r in rows:
        r = {**base, **r}
        r.setdefault("choice", "left" if r["chosen_variant"] == r["left_variant"] else "right")
        out.append(r)
    return pa.Table.from_pylist(out, schema=VOTES_SCHEMA)


def test_pairwise_win_rates_wilson_and_binomial():
    from scipy.stats import binomtest

    rows = []
    for k in range(10):  # A vs B: A wins 8 of 10; one repeat (excluded from win rates)
        rows.append({"item": f"i{k:03d}", "rater": f"r{k % 3}", "left_variant": "A", "right_variant": "B",
                     "chosen_variant": "A" if k < 8 else "B"})
    rows.append({"item": "i000", "rater": "r0", "repeat": True, "left_variant": "B", "right_variant": "A",
                 "chosen_variant": "B"})
    rows.append({"item": "i100", "rater": "r0", "left_variant": "C", "right_variant": "A", "chosen_variant": "C"})
    pairs = pairwise(_votes(rows), {"st": {"compare": ["A", "B", "C"], "questions": [{"id": "motion"}]}})
    ab = pairs.to_pylist()[0]
    assert (ab["variant_a"], ab["variant_b"], ab["n_votes"], ab["wins_a"], ab["wins_b"]) == ("A", "B", 10, 8, 2)
    ref = binomtest(8, 10, 0.5)
    ci = ref.proportion_ci(method="wilson")
    assert ab["win_rate_a"] == 0.8 and math.isclose(ab["p"], ref.pvalue)
    assert math.isclose(ab["ci_low"], ci.low) and math.isclose(ab["ci_high"], ci.high)
    # Wilson by hand: (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)
    z, n, p = 1.959963984540054, 10, 0.8
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (
        1 + z * z / n)
    assert math.isclose(ab["ci_low"], centre - half, rel_tol=1e-9) and math.isclose(ab["ci_high"], centre + half)
    assert ab["n_raters"] == 3 and ab["n_items"] == 10
    ac = pairs.to_pylist()[1]
    assert (ac["variant_a"], ac["variant_b"], ac["wins_a"], ac["wins_b"]) == ("A", "C", 0, 1)  # the --compare order

    pref = {r["variant"]: r for r in user_preference(_votes(rows)).to_pylist()}
    assert pref["A"]["n_votes"] == 11 and pref["A"]["n_wins"] == 8 and math.isclose(pref["A"]["user_preference"],
                                                                                     8 / 11)
    assert pref["C"]["user_preference"] == 1.0 and pref["B"]["n_wins"] == 2
    assert USER_PREFERENCE_SCHEMA.names[:3] == ["variant", "user_preference", "n_votes"]
    assert "user_preference" in __import__("vocabulary").METRICS


def test_bradley_terry_recovers_strengths_and_matches_the_mle():
    from scipy.optimize import minimize

    rng = np.random.default_rng(0)
    truth = np.array([1.0, 0.0, -1.0])
    names = ["A", "B", "C"]
    rows = []
    for rater in range(30):
        for k in range(30):
            i, j = rng.choice(3, 2, replace=False)
            win = i if rng.random() < 1 / (1 + np.exp(truth[j] - truth[i])) else j
            rows.append({"item": f"i{k:03d}", "rater": f"r{rater:02d}", "left_variant": names[i],
                         "right_variant": names[j], "chosen_variant": names[win]})
    votes = _votes(rows)
    bt = bradley_terry(votes, {"st": {"compare": names}}, n_boot=200).to_pylist()
    theta = np.array([r["log_strength"] for r in bt])
    assert [r["variant"] for r in bt] == names and abs(theta.sum()) < 1e-9
    assert np.all(np.abs((theta - theta.mean()) - (truth - truth.mean())) < 0.3)
    assert all(r["ci_low"] < r["log_strength"] < r["ci_high"] for r in bt)
    assert all(r["ci_low"] < t - truth.mean() < r["ci_high"] for r, t in zip(bt, truth))
    assert "bootstrap over raters" in bt[0]["method"]

    wins = np.zeros((3, 3))
    for r in rows:
        loser = r["right_variant"] if r["chosen_variant"] == r["left_variant"] else r["left_variant"]
        wins[names.index(r["chosen_variant"]), names.index(loser)] += 1
    mm = bradley_terry_fit(wins, prior=0.0)

    def nll(t):
        d = t[:, None] - t[None, :]
        return -(wins * (d - np.logaddexp(0, d))).sum()

    mle = minimize(nll, np.zeros(3), method="BFGS").x
    assert np.allclose(mm, mle - mle.mean(), atol=1e-4)
    # a variant that never wins keeps a finite strength (pseudo-wins), below the others
    shut = bradley_terry_fit(np.array([[0, 5], [0, 0]]))
    assert np.all(np.isfinite(shut)) and shut[0] > shut[1]
    single = bradley_terry(_votes(rows[:3]), n_boot=50).to_pylist()  # one rater: no interval
    assert single and all(r["ci_low"] is None for r in single)


def test_rater_consistency_and_votes_per_item():
    rows = [
        {"item": "i001", "rater": "r1", "left_variant": "A", "right_variant": "B", "chosen_variant": "A"},
        {"item": "i001", "rater": "r1", "repeat": True, "left_variant": "B", "right_variant": "A",
         "chosen_variant": "A"},  # same variant, other side: consistent
        {"item": "i002", "rater": "r1", "left_variant": "A", "right_variant": "B", "chosen_variant": "A"},
        {"item": "i002", "rater": "r1", "repeat": True, "left_variant": "B", "right_variant": "A",
         "chosen_variant": "B"},  # same side, other variant: inconsistent
        {"item": "i001", "rater": "r2", "left_variant": "B", "right_variant": "A", "chosen_variant": "B"},
        {"item": "i001", "rater": "r2", "repeat": True, "left_variant": "A", "right_variant": "B",
         "chosen_variant": "B"},
        {"item": "i001", "rater": "r2", "question": "text", "left_variant": "B", "right_variant": "A",
         "chosen_variant": "B"},
    ]
    cons = {(r["rater"], r["question"]): r for r in rater_consistency(_votes(rows)).to_pylist()}
    assert cons[("all", "all")]["n_repeated"] == 3 and cons[("all", "all")]["n_consistent"] == 2
    assert math.isclose(cons[("all", "motion")]["consistency"], 2 / 3)
    assert cons[("r1", "all")]["consistency"] == 0.5 and cons[("r2", "all")]["consistency"] == 1.0
    study = {"st": {"items": [{"id": f"i00{k}", "pair": ["A", "B"], "video": "v", "prompt": "p",
                               "generation_seed": 0} for k in (1, 2, 3)]}}
    items = {r["item"]: r for r in item_votes(_votes(rows), study).to_pylist()}
    assert (items["i001"]["n_votes"], items["i001"]["n_raters"], items["i001"]["n_repeat_votes"]) == (3, 2, 2)
    assert items["i003"]["n_votes"] == 0  # an item nobody voted on is listed
