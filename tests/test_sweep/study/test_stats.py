"""The study's statistics (sweep.study.stats) on hand-made votes tables: win rates with raters as the unit (the
formulas by hand), Bradley–Terry against the maximum-likelihood fit, rater consistency, votes per item, and
user_preference on Bradley–Terry's scale. Seeded simulations (type-I error, coverage, shut-outs, disconnected
comparisons) are in test_stats_simulation.py.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from sweep.study.schemas import USER_PREFERENCE_SCHEMA, VOTES_SCHEMA
from sweep.study.stats import (bradley_terry, bradley_terry_clustered, bradley_terry_fit, item_votes, pairwise,
                               rater_consistency, user_preference)


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


def test_pairwise_win_rates_with_raters_as_the_unit():
    from scipy.stats import binomtest, t

    rows = []
    for rater, wins in (("r0", 4), ("r1", 1), ("r2", 2)):  # A vs B, 4 votes each: A wins 4, 1 and 2
        rows += [{"item": f"i{k:03d}", "rater": rater, "left_variant": "A", "right_variant": "B",
                  "chosen_variant": "A" if k < wins else "B"} for k in range(4)]
    rows.append({"item": "i000", "rater": "r0", "repeat": True, "left_variant": "B", "right_variant": "A",
                 "chosen_variant": "B"})  # a repeat: excluded from win rates
    rows.append({"item": "i100", "rater": "r0", "left_variant": "C", "right_variant": "A", "chosen_variant": "C"})
    pairs = pairwise(_votes(rows), {"st": {"compare": ["A", "B", "C"], "questions": [{"id": "motion"}]}})
    ab = pairs.to_pylist()[0]
    assert (ab["variant_a"], ab["variant_b"], ab["n_votes"], ab["wins_a"], ab["wins_b"]) == ("A", "B", 12, 7, 5)
    # by hand: p = 7/12; rater residuals w − p·n = 5/3, −4/3, −1/3; clustered variance 3/2 · (42/9) / 12² = 7/144;
    # binomial variance p(1−p)/12 = 35/1728; design effect 2.4, so 5 votes' worth; t on 2 df
    p, n_eff, z = 7 / 12, 5.0, t.ppf(0.975, 2)
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff ** 2)) / (1 + z * z / n_eff)
    assert ab["win_rate_a"] == p and math.isclose(ab["design_effect"], 2.4)
    assert math.isclose(ab["ci_low"], centre - half) and math.isclose(ab["ci_high"], centre + half)
    assert math.isclose(ab["p"], 2 * t.sf((p - 0.5) / math.sqrt(0.25 / n_eff), 2))
    naive = binomtest(7, 12).proportion_ci(method="wilson")  # votes as independent: far narrower
    assert ab["ci_high"] - ab["ci_low"] > 1.5 * (naive.high - naive.low)
    assert "rater" in ab["method"] and ab["n_raters"] == 3 and ab["n_items"] == 4
    ac = pairs.to_pylist()[1]
    assert (ac["variant_a"], ac["variant_b"], ac["wins_a"], ac["wins_b"]) == ("A", "C", 0, 1)  # the --compare order
    assert ac["ci_low"] is None and ac["p"] is None and "< 2 raters" in ac["method"]  # one rater: no spread to see

    # two variants: user_preference is Bradley–Terry's P(A beats B) = (wins + ½ pseudo-win) / (votes + 1)
    pref = {r["variant"]: r for r in user_preference(_votes(rows[:12])).to_pylist()}
    assert math.isclose(pref["A"]["user_preference"], 7.5 / 13) and math.isclose(pref["B"]["user_preference"], 5.5 / 13)
    assert pref["A"]["n_votes"] == 12 and pref["A"]["n_wins"] == 7
    assert pref["A"]["ci_low"] < 7.5 / 13 < pref["A"]["ci_high"]
    assert USER_PREFERENCE_SCHEMA.names[:3] == ["variant", "user_preference", "n_votes"]
    assert "Bradley–Terry" in __import__("vocabulary").METRICS["user_preference"].description


def test_user_preference_pools_questions_and_splits_checkpoints():
    rng = np.random.default_rng(1)
    rows = []
    for rater in range(6):
        for k in range(8):
            for question in ("motion", "text"):
                a, b = [("A", "B"), ("A", "C"), ("B", "C")][k % 3]
                rows.append({"item": f"i{k}", "rater": f"r{rater}", "question": question, "left_variant": a,
                             "right_variant": b, "chosen_variant": a if rng.random() < 0.7 else b})
    votes = _votes(rows)
    table = user_preference(votes, steps={("st", "A"): 200, ("st", "B"): 200, ("st", "C"): 0})
    assert table.schema.equals(USER_PREFERENCE_SCHEMA, check_metadata=True)
    got = {r["variant"]: r for r in table.to_pylist()}
    assert {v: r["checkpoint"] for v, r in got.items()} == {"A": 200, "B": 200, "C": 0}
    assert all(r["questions"] == "motion,text" and r["component"] == 0 for r in got.values())
    # the same numbers as the array-level fit, a rater's votes on both questions being one cluster
    per = np.zeros((6, 3, 3))
    for r in rows:
        loser = r["right_variant"] if r["chosen_variant"] == r["left_variant"] else r["left_variant"]
        per[int(r["rater"][1:]), "ABC".index(r["chosen_variant"]), "ABC".index(loser)] += 1
    fit = bradley_terry_clustered(per)
    assert np.allclose([got[v]["user_preference"] for v in "ABC"], fit["preference"])
    assert np.allclose([got[v]["ci_low"] for v in "ABC"], fit["preference_low"])
    assert math.isclose(sum(r["user_preference"] for r in got.values()), 1.5)  # mean ½ over 3 variants


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
    sandwich = bradley_terry(votes, {"st": {"compare": names}}).to_pylist()  # the default: clustered sandwich
    assert [r["log_strength"] for r in sandwich] == [r["log_strength"] for r in bt]
    assert all(r["ci_low"] < t - truth.mean() < r["ci_high"] for r, t in zip(sandwich, truth))
    assert all("rater-clustered sandwich" in r["method"] and r["component"] == 0 for r in sandwich)

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
