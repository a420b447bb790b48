"""Seeded simulations behind sweep.study.stats (issue 25), vectorised with numpy:

1. votes cluster by rater: with 15 raters × 4 votes, no true difference and a rater spread (SD of a rater's logit
   preference) of 2, the win rate's test keeps its type-I error ≤ 0.06 and its interval covers ≥ 0.93, where
   votes taken as independent (Wilson, binomial test) do not;
2. user_preference is on a common scale: two equally good variants get the same value however often each met a
   variant that lost every vote, and its interval covers Bradley–Terry's value;
3. Bradley–Terry's edge cases: a disconnected comparison graph is fitted per component (or refused by the bare
   fit), and a variant that never won gets a one-sided interval that covers its strength.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats
from scipy.special import expit, logit

from sweep.study.schemas import VOTES_SCHEMA
from sweep.study.stats import (bradley_terry, bradley_terry_clustered, bradley_terry_fit, clustered_win_rate,
                               user_preference)

RATERS, VOTES = 15, 4
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # E over a standard normal rater effect


def _marginal(logit_p: float, spread: float) -> float:
    """The population's win rate: E[expit(logit_p + spread·Z)]."""
    return float((expit(logit_p + spread * _NODES) * _WEIGHTS).sum() / _WEIGHTS.sum())


def _pair_votes(seed: int, spread: float, reps: int, beta: float = 0.0, votes: np.ndarray | None = None):
    """(wins, votes) per simulated study (rows) and rater (columns): rater r picks the first variant with
    probability expit(beta + u_r), u_r ~ N(0, spread²)."""
    rng = np.random.default_rng(seed)
    n = np.full((reps, RATERS), VOTES) if votes is None else votes
    return rng.binomial(n, expit(beta + rng.normal(0, spread, (reps, RATERS)))), n


# --------------------------------------------------------------------------------------------------
# 1. Type-I error and coverage with raters as clusters.

@pytest.mark.parametrize("spread", [0.0, 1.0, 2.0])
def test_win_rate_type_one_error_and_coverage_with_rater_spread(spread):
    wins, n = _pair_votes(25, spread, reps=4000)
    res = clustered_win_rate(wins, n)
    type_one = np.mean(res["p"] < 0.05)
    coverage = np.mean((res["ci_low"] <= 0.5) & (0.5 <= res["ci_high"]))
    assert type_one <= 0.06 and coverage >= 0.93, (type_one, coverage)
    if spread == 2.0:  # the figures for votes taken as independent (the code before): 0.80 and 14.5%
        k, total = wins.sum(axis=1), n.sum(axis=1)
        binomial_p = np.minimum(1, 2 * np.minimum(stats.binom.cdf(k, total, 0.5), stats.binom.sf(k - 1, total, 0.5)))
        z, rate = stats.norm.ppf(0.975), k / total
        centre = (rate + z * z / (2 * total)) / (1 + z * z / total)
        half = z * np.sqrt(rate * (1 - rate) / total + z * z / (4 * total ** 2)) / (1 + z * z / total)
        assert np.mean(binomial_p < 0.05) > 0.12 and np.mean(np.abs(centre - 0.5) <= half) < 0.85


def test_win_rate_coverage_with_unequal_raters_and_a_true_difference():
    """Raters giving 1 to 7 votes, a true preference (logit 1) and spread 2: the interval covers the population's
    win rate (the mean over raters of their chance to pick the first variant, 0.663)."""
    votes = np.random.default_rng(3).integers(1, 8, (4000, RATERS))
    wins, n = _pair_votes(26, 2.0, reps=4000, beta=1.0, votes=votes)
    res = clustered_win_rate(wins, n)
    truth = _marginal(1.0, 2.0)
    assert np.mean((res["ci_low"] <= truth) & (truth <= res["ci_high"])) >= 0.93
    one = clustered_win_rate(np.array([3.0]), np.array([4.0]))  # one rater: no spread to measure, no interval
    assert np.isnan(one["ci_low"]) and np.isnan(one["p"])
    with pytest.raises(ValueError, match="between 0 and their votes"):
        clustered_win_rate(np.array([5, 1]), np.array([4, 4]))


# --------------------------------------------------------------------------------------------------
# 2. user_preference on a common scale.

def _study(rng, theta, spread, votes_per_rater, pair_weights):
    """Per-rater wins (raters × K × K) of a simulated study: each vote a pair drawn with `pair_weights`, rater r
    choosing i over j with probability expit(θi − θj + u_ri − u_rj), u_r ~ N(0, spread²/2) per variant (a pair's
    logit then has SD `spread`)."""
    k = len(theta)
    pairs = np.array([(i, j) for i in range(k) for j in range(i + 1, k)])
    u = rng.normal(0, spread / math.sqrt(2), (RATERS, k))
    pick = pairs[rng.choice(len(pairs), size=(RATERS, votes_per_rater), p=pair_weights)]
    i, j = pick[..., 0], pick[..., 1]
    i_wins = rng.random(i.shape) < expit(theta[i] - theta[j] + np.take_along_axis(u, i, 1)
                                         - np.take_along_axis(u, j, 1))
    per = np.zeros((RATERS, k, k))
    np.add.at(per, (np.arange(RATERS)[:, None], np.where(i_wins, i, j), np.where(i_wins, j, i)), 1)
    return per


def test_user_preference_does_not_depend_on_whom_a_variant_met():
    """A and B equally good, C loses every vote; A meets C five times as often as B does. Pooling wins (the code
    before) puts A 0.17 above B; the Bradley–Terry scale puts both at 3/4 (P(beats the other) ½, P(beats C) 1)."""
    rng = np.random.default_rng(5)
    theta = np.array([0.0, 0.0, -50.0])
    pooled_gap, gap, covered = [], [], np.zeros(2)
    for _ in range(150):
        per = _study(rng, theta, 2.0, 12, [0.4, 0.5, 0.1])
        wins = per.sum(axis=0)
        pooled = wins.sum(axis=1) / (wins.sum(axis=1) + wins.sum(axis=0))
        fit = bradley_terry_clustered(per)
        pooled_gap.append(pooled[0] - pooled[1])
        gap.append(fit["preference"][0] - fit["preference"][1])
        covered += (fit["preference_low"][:2] <= 0.75) & (0.75 <= fit["preference_high"][:2])
        assert fit["one_sided"][2] == "no wins" and fit["preference_low"][2] == 0
    assert np.mean(pooled_gap) > 0.12 and abs(np.mean(gap)) < 0.03
    assert np.all(covered / 150 >= 0.9)


def test_user_preference_interval_coverage_with_rater_spread():
    """Three variants (θ 0.5, 0, −0.5), 15 raters × 12 votes, spread 2: the rater-clustered interval covers the
    Bradley–Terry preference of the population's win rates."""
    theta = np.array([0.5, 0.0, -0.5])
    marginal = np.array([[_marginal(a - b, 2.0) if a != b else 0.0 for b in theta] for a in theta])
    truth = bradley_terry_clustered(marginal[None] * 1e6)["preference"]  # the fit to the population (exact: 1e6 votes)
    rng = np.random.default_rng(11)
    covered = np.zeros(3)
    for _ in range(500):
        fit = bradley_terry_clustered(_study(rng, theta, 2.0, 12, None))
        covered += (fit["preference_low"] <= truth) & (truth <= fit["preference_high"])
    assert np.all(covered / 500 >= 0.93), covered / 500


# --------------------------------------------------------------------------------------------------
# 3. Bradley–Terry's edge cases.

def _votes(per: np.ndarray, names: str) -> pa.Table:
    """A votes table from per-rater wins."""
    base = {"sweep": "s", "study": "st", "repeat": False, "question": "motion", "question_text": "q",
            "response_ms": 1, "time": None, "video": "v", "prompt": "p", "generation_seed": 0, "source": "test",
            "code_version": "x"}
    rows = []
    for r, i, j in zip(*np.nonzero(per)):
        for k in range(int(per[r, i, j])):
            rows.append({**base, "item": f"{names[i]}{names[j]}{k}", "rater": f"r{r:02d}", "left_variant": names[i],
                         "right_variant": names[j], "choice": "left", "chosen_variant": names[i]})
    return pa.Table.from_pylist(rows, schema=VOTES_SCHEMA)


def test_disconnected_comparisons_are_fitted_per_component():
    rng = np.random.default_rng(8)
    theta = np.array([0.6, -0.6, 0.3, -0.3])  # pairs AB AC AD BC BD CD: A–B and C–D compared, never across
    per = _study(rng, theta, 1.0, 12, [1 / 2, 0, 0, 0, 0, 1 / 2])
    with pytest.raises(ValueError, match="2 groups with no comparison between them.*no defined order"):
        bradley_terry_fit(per.sum(axis=0))
    bt = bradley_terry(_votes(per, "ABCD")).to_pylist()
    by = {r["variant"]: r for r in bt}
    assert {v: r["component"] for v, r in by.items()} == {"A": 0, "B": 0, "C": 1, "D": 1}
    for pair in ("AB", "CD"):  # each component centred on its own, with a finite interval
        assert math.isclose(by[pair[0]]["log_strength"], -by[pair[1]]["log_strength"], abs_tol=1e-9)
        assert all(np.isfinite([by[v]["ci_low"], by[v]["ci_high"]]).all() for v in pair)
    assert all("component" in r["method"] and "comparable only within one" in r["method"] for r in bt)
    pref = {r["variant"]: r for r in user_preference(_votes(per, "ABCD")).to_pylist()}
    assert math.isclose(pref["A"]["user_preference"] + pref["B"]["user_preference"], 1.0)
    assert math.isclose(pref["C"]["user_preference"] + pref["D"]["user_preference"], 1.0)
    assert [pref[v]["component"] for v in "ABCD"] == [0, 0, 1, 1]


def test_shut_out_gets_a_one_sided_interval():
    """The issue's study: 15 raters × 4 votes on each pair of A, B, C; C loses every vote. Its interval was the
    prior's (width 0.05); now −∞ to the profile-likelihood bound, and prior=0 says why it cannot fit."""
    rng = np.random.default_rng(5)
    per = np.zeros((RATERS, 3, 3))
    for r in range(RATERS):
        a_wins = rng.binomial(4, expit(rng.normal(0, 2)))
        per[r, 0, 1], per[r, 1, 0], per[r, 0, 2], per[r, 1, 2] = a_wins, 4 - a_wins, 4, 4
    c = next(r for r in bradley_terry(_votes(per, "ABC")).to_pylist() if r["variant"] == "C")
    assert c["ci_low"] == -math.inf and c["ci_high"] - c["log_strength"] > 0.5 and "never won" in c["method"]
    with pytest.raises(ValueError, match=r"variant\(s\) \[2\] never beat.*Pass prior > 0"):
        bradley_terry_fit(per.sum(axis=0), prior=0)
    # two variants, B shut out in 40 votes: the bound on P(B beats A) is Clopper–Pearson's one-sided 1 − 0.05^(1/40)
    two = np.zeros((10, 2, 2))
    two[:, 0, 1] = 4
    fit = bradley_terry_clustered(two)
    assert fit["preference_low"][1] == 0 and math.isclose(fit["preference_high"][1], 1 - 0.05 ** (1 / 40), rel_tol=1e-5)
    assert fit["preference_high"][0] == 1 and math.isclose(fit["preference_low"][0], 0.05 ** (1 / 40), rel_tol=1e-5)
    assert list(fit["one_sided"]) == ["no losses", "no wins"]


@pytest.mark.parametrize("spread", [0.0, 1.0])
def test_rarely_winning_variant_interval_covers(spread):
    """B wins a vote against A with chance 0.02 (15 raters × 4 votes): a third of the studies are shut-outs. The
    bootstrap over raters (the code before) covered B's strength in 65% (spread 0) and 83% (spread 1) of studies,
    its shut-out intervals coming from the prior alone; the one-sided bound keeps coverage ≥ 0.93."""
    rng = np.random.default_rng(9)
    truth = logit(_marginal(logit(0.02), spread)) / 2  # B's θ, centred over two variants
    covered = shut_outs = 0
    for _ in range(400):
        b_wins = rng.binomial(VOTES, expit(logit(0.02) + rng.normal(0, spread, RATERS)))
        per = np.zeros((RATERS, 2, 2))
        per[:, 1, 0], per[:, 0, 1] = b_wins, VOTES - b_wins
        fit = bradley_terry_clustered(per)
        covered += fit["theta_low"][1] <= truth <= fit["theta_high"][1]
        shut_outs += b_wins.sum() == 0
    assert shut_outs >= 40 and covered / 400 >= 0.93, (shut_outs, covered / 400)
