"""The study's statistics, on first presentations only (repeats measure consistency).

Votes cluster by rater (a rater who prefers a variant tends to prefer it on every item), so every interval and test
here takes the rater, not the vote, as the independent unit:

* per pair and question, the win rate with a 95% Wilson interval at the effective sample size (votes over the
  design effect of the rater clusters, never below 1) and a Rao–Scott design-effect-corrected score test of 1/2,
  both on t with raters − 1 degrees of freedom (`pairwise`, `clustered_win_rate`);
* Bradley–Terry log-strengths per question, fitted by Hunter's MM algorithm with 0.5 pseudo-wins each way on every
  compared pair, per connected component of the compared pairs (no comparison links two components, so their
  strengths have no common order: a `component` column says which), with 95% intervals from a rater-clustered
  sandwich variance on t with raters − 1 df, or a percentile bootstrap over raters when asked (`bradley_terry`,
  `bradley_terry_clustered`). A variant that never won (or never lost) has no finite maximum-likelihood strength:
  its interval is one-sided, −∞ (or +∞) to a profile-likelihood bound;
* rater consistency on the repeated items (`rater_consistency`); votes per item (`item_votes`);
* per variant, `user_preference` (the report's column): the Bradley–Terry probability of beating a variant drawn at
  random from the others of its component, i.e. the share of votes it would win had it met each of them equally
  often, so it does not depend on whom it happened to meet; its interval is the sandwich one on the logit scale.

`study_results` computes them all for one study or every study of a sweep. The simulations behind these choices
(type-I error and coverage with 15 raters × 4 votes) are in tests/test_sweep/study/test_stats_simulation.py.
"""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
from scipy import optimize, stats
from scipy.linalg import null_space
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, logit

from .definition import list_studies, load_study, open_store
from .schemas import BRADLEY_TERRY_SCHEMA, CONSISTENCY_SCHEMA, ITEMS_SCHEMA, PAIRS_SCHEMA, USER_PREFERENCE_SCHEMA
from .votes import load_votes

CONFIDENCE = 0.95
PRIOR = 0.5  #: Bradley–Terry pseudo-wins each way per compared pair (keeps every strength finite)
WIN_RATE_METHOD = ("rater-clustered: Wilson 95% interval at votes / design effect (over raters, ≥ 1) and "
                   "Rao–Scott-corrected score test of 1/2, t on raters − 1 df")
_FIT = "MM fit (Hunter 2004), 0.5 pseudo-wins each way per compared pair"
_SANDWICH = "95% interval from a rater-clustered sandwich variance (≥ the independent-votes one), t on raters − 1 df"
_NO_INTERVAL = "no interval or test (< 2 raters)"
_ONE_SIDED = {"no wins": "never won: one-sided, −∞ to the 95% profile-likelihood bound (the ML estimate is −∞; "
                         "votes taken as independent)",
              "no losses": "never lost: one-sided, the 95% profile-likelihood bound to +∞ (the ML estimate is +∞; "
                           "votes taken as independent)"}


def _first(votes: pa.Table) -> list[dict]:
    return [r for r in votes.to_pylist() if not r["repeat"]]


# --------------------------------------------------------------------------------------------------
# A win rate with raters as the unit.

def clustered_win_rate(wins: np.ndarray, votes: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, np.ndarray]:
    """Win rate of a pair's first variant with raters as clusters. `wins`, `votes`: per rater (last axis; leading
    axes are independent problems, e.g. simulated studies). Returns arrays {win_rate, ci_low, ci_high, p,
    design_effect, n_effective, n_raters}; interval and p are NaN under 2 raters (no spread to measure).

    The design effect is the cluster-robust variance of the ratio Σwins/Σvotes (CR1: raters/(raters−1) Σ residual²)
    over the binomial one, floored at 1 (fewer than ~30 raters cannot show that votes are *more* independent than
    independent; a unanimous pair has no spread to measure). The interval is Wilson's at n/design effect with the t
    quantile on raters − 1 df (Korn & Graubard's degrees-of-freedom adjustment); the test is its dual: the score
    test of 1/2 with the Rao–Scott first-order correction, on the same t."""
    wins, votes = np.asarray(wins, dtype=float), np.asarray(votes, dtype=float)
    if wins.shape != votes.shape:
        raise ValueError(f"wins {wins.shape} and votes {votes.shape} must have one entry per rater each")
    if np.any(votes < 0) or np.any(wins < 0) or np.any(wins > votes):
        raise ValueError("each rater's wins must lie between 0 and their votes")
    n = votes.sum(axis=-1)
    raters = (votes > 0).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = wins.sum(axis=-1) / n
        resid = wins - rate[..., None] * votes
        v_cluster = raters / (raters - 1) * (resid ** 2).sum(axis=-1) / n ** 2
        v_binom = rate * (1 - rate) / n
        deff = np.maximum(np.where(v_binom > 0, v_cluster / v_binom, 1.0), 1.0)
        n_eff = n / deff
        df = np.where(raters >= 2, raters - 1, np.nan)
        z = stats.t.ppf(0.5 + confidence / 2, df)
        centre = (rate + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
        half = z * np.sqrt(rate * (1 - rate) / n_eff + z * z / (4 * n_eff ** 2)) / (1 + z * z / n_eff)
        p = 2 * stats.t.sf(np.abs(rate - 0.5) / np.sqrt(0.25 / n_eff), df)
    return {"win_rate": rate, "ci_low": np.clip(centre - half, 0, 1), "ci_high": np.clip(centre + half, 0, 1),
            "p": np.minimum(p, 1.0), "design_effect": deff, "n_effective": n_eff, "n_raters": raters}


def _pair_order(votes_rows: list[dict], study_defs: dict[str, dict]) -> dict[tuple, tuple[str, str]]:
    """Canonical (variant_a, variant_b) of each study's pair: the --compare order when known."""
    order: dict[tuple, tuple[str, str]] = {}
    for r in votes_rows:
        pair = tuple(sorted((r["left_variant"], r["right_variant"])))
        key = (r["study"], pair)
        if key not in order:
            compare = study_defs.get(r["study"], {}).get("compare") or []
            a, b = pair
            if a in compare and b in compare and compare.index(b) < compare.index(a):
                a, b = b, a
            order[key] = (a, b)
    return order


def _number(v) -> Optional[float]:
    return None if v is None or not np.isfinite(v) else float(v)


def pairwise(votes: pa.Table, study_defs: Optional[dict[str, dict]] = None) -> pa.Table:
    """Per study, question and pair of variants: win rate of variant_a with its 95% interval and the two-sided test
    of 1/2, raters as the unit (`clustered_win_rate`; the `method` column says so)."""
    rows = _first(votes)
    order = _pair_order(rows, study_defs or {})
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        a, b = order[(r["study"], tuple(sorted((r["left_variant"], r["right_variant"]))))]
        groups.setdefault((r["study"], r["question"], a, b), []).append(r)
    out = []
    for (study, question, a, b), rs in sorted(groups.items(), key=lambda kv: _sort_key(kv[0], study_defs)):
        raters = sorted({r["rater"] for r in rs})
        wins, n = np.zeros(len(raters)), np.zeros(len(raters))
        for r in rs:
            k = raters.index(r["rater"])
            n[k] += 1
            wins[k] += r["chosen_variant"] == a
        res = clustered_win_rate(wins, n)
        wins_a = int(wins.sum())
        out.append({"study": study, "question": question, "variant_a": a, "variant_b": b, "n_votes": len(rs),
                    "wins_a": wins_a, "wins_b": len(rs) - wins_a, "win_rate_a": wins_a / len(rs),
                    "ci_low": _number(res["ci_low"]), "ci_high": _number(res["ci_high"]), "p": _number(res["p"]),
                    "design_effect": float(res["design_effect"]), "n_raters": len(raters),
                    "n_items": len({r["item"] for r in rs}),
                    "method": WIN_RATE_METHOD if len(raters) >= 2 else _NO_INTERVAL})
    return pa.Table.from_pylist(out, schema=PAIRS_SCHEMA)


def _sort_key(key: tuple, study_defs: Optional[dict]) -> tuple:
    study, question = key[0], key[1]
    qs = [q["id"] for q in (study_defs or {}).get(study, {}).get("questions", [])]
    return (study, qs.index(question) if question in qs else len(qs), question, *key[2:])


# --------------------------------------------------------------------------------------------------
# Bradley–Terry.

def _mm(wins: np.ndarray, mask: np.ndarray, prior: float, max_iter: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Hunter's MM iteration on (..., K, K) wins matrices at once (a bootstrap's resamples): θ with mean 0."""
    w = wins + prior * mask
    n = w + np.swapaxes(w, -1, -2)
    total = w.sum(axis=-1)
    p = np.ones(w.shape[:-1])
    for _ in range(max_iter):
        denom = (n / (p[..., :, None] + p[..., None, :])).sum(axis=-1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1), p)
        new = new / np.exp(np.mean(np.log(new), axis=-1, keepdims=True))
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    theta = np.log(p)
    return theta - theta.mean(axis=-1, keepdims=True)


def compared_components(compared: np.ndarray) -> np.ndarray:
    """Component label of each variant in the graph of compared pairs (0 for the first variant's, then in order
    of first appearance)."""
    _, labels = connected_components(np.asarray(compared, bool), directed=False)
    first = {lab: k for k, lab in reversed(list(enumerate(labels)))}
    rank = {lab: r for r, lab in enumerate(sorted(first, key=first.get))}
    return np.array([rank[lab] for lab in labels])


def bradley_terry_fit(wins: np.ndarray, compared: Optional[np.ndarray] = None, prior: float = PRIOR,
                      max_iter: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Log-strengths θ (mean 0) from a wins matrix (wins[i, j]: times i beat j) by Hunter's (2004) MM algorithm:
    p_i ← W_i / Σ_j n_ij / (p_i + p_j). `prior` pseudo-wins are added each way on every compared pair (the
    `compared` mask, default where there are votes), which keeps θ finite when a variant never wins.

    Refuses (ValueError) a comparison graph in several pieces (the pieces' order is undefined) and, with
    prior=0, wins where some variants never beat the rest (their maximum-likelihood strength is infinite)."""
    wins = np.asarray(wins, dtype=float)
    if wins.ndim != 2 or wins.shape[0] != wins.shape[1] or np.any(wins < 0):
        raise ValueError(f"wins must be a square matrix of non-negative counts, not shape {wins.shape}")
    mask = (wins + wins.T) > 0 if compared is None else np.asarray(compared, bool)
    labels = compared_components(mask | mask.T)
    if labels.max() > 0:
        groups = "; ".join(str(np.flatnonzero(labels == c).tolist()) for c in range(labels.max() + 1))
        raise ValueError(f"the compared pairs fall into {labels.max() + 1} groups with no comparison between them "
                         f"(variants {groups}): strengths across groups have no defined order. Fit each group on "
                         "its own (`bradley_terry` does, with a `component` column) or compare a pair across groups")
    if prior <= 0:
        n_strong, strong = connected_components(wins > 0, directed=True, connection="strong")
        if n_strong > 1:
            beaten = [c for c in range(n_strong) if not np.any(wins[np.ix_(strong == c, strong != c)] > 0)]
            stuck = np.flatnonzero(np.isin(strong, beaten)).tolist()
            raise ValueError(f"no maximum-likelihood strengths: variant(s) {stuck} never beat any variant outside "
                             "their group, so their log-strength is −∞. Pass prior > 0 (pseudo-wins each way per "
                             f"compared pair, e.g. the default {PRIOR}) and read their intervals as one-sided "
                             "(`bradley_terry` gives a profile-likelihood bound)")
    return _mm(wins, mask, prior, max_iter, tol)


def _loglik(theta: np.ndarray, wins: np.ndarray) -> tuple[float, np.ndarray]:
    """Bradley–Terry log-likelihood of a wins matrix and its gradient."""
    d = theta[None, :] - theta[:, None]  # d[i, j] = θj − θi
    q = wins * expit(d)                  # wins[i, j] · P(j beats i)
    return -float((wins * np.logaddexp(0, d)).sum()), q.sum(axis=1) - q.sum(axis=0)


def _profile(wins: np.ndarray, i: int, t: float) -> tuple[float, np.ndarray]:
    """The profile log-likelihood of centred θ_i at t, and the θ (mean 0) that attains it: the others share −t and
    move freely within the sum-zero subspace. A 1e-8 ridge keeps them finite when they too run off to infinity
    (it moves the log-likelihood by < 1e-4)."""
    k = len(wins)
    others = [j for j in range(k) if j != i]
    basis = null_space(np.ones((1, k - 1)))  # (k − 1) × (k − 2)

    def theta_of(z: np.ndarray) -> np.ndarray:
        theta = np.empty(k)
        theta[i], theta[others] = t, -t / (k - 1) + basis @ z
        return theta

    def neg(z: np.ndarray) -> tuple[float, np.ndarray]:
        theta = theta_of(z)
        ll, grad = _loglik(theta, wins)
        return -ll + 1e-8 * theta @ theta, -(basis.T @ grad[others]) + 2e-8 * basis.T @ theta[others]

    z = optimize.minimize(neg, np.zeros(k - 2), jac=True, method="BFGS").x if k > 2 else np.zeros(0)
    theta = theta_of(z)
    return _loglik(theta, wins)[0], theta


def _one_sided(wins: np.ndarray, i: int, start: float, side: int, confidence: float = CONFIDENCE
               ) -> tuple[float, Optional[np.ndarray]]:
    """The finite end of variant i's one-sided profile-likelihood interval when its ML estimate is at −∞ (side −1:
    it never won) or +∞ (side +1: it never lost), and θ there; ±inf (and None) when the profile never falls that
    far. The cut is −2 log(1 − confidence), not χ²₁'s 3.84: for a shut-out the likelihood ratio is the chance of
    the shut-out itself, so this is Clopper–Pearson's one-sided bound for 0 wins in n (χ²₁ would give 85%)."""
    cut = -2 * np.log(1 - confidence)
    far = start + side * 40.0
    top = _profile(wins, i, far)[0]  # the supremum, approached at the infinite end
    f = lambda t: 2 * (top - _profile(wins, i, t)[0]) - cut  # noqa: E731
    inside = far
    for step in range(60):  # walk from the estimate away from the infinite end until the profile drops below the cut
        near = start - side * step
        if f(near) > 0:
            bound = optimize.brentq(f, *sorted((inside, near)), xtol=1e-6)
            return bound, _profile(wins, i, bound)[1]
        inside = near
    return -side * np.inf, None


def _round_robin(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each variant's mean over the others of P(it beats them), and the gradient (row i: ∂g_i/∂θ)."""
    k = len(theta)
    p = expit(theta[:, None] - theta[None, :])
    d = p * p.T  # ∂P_ij/∂θ_i
    grad = -d / (k - 1)
    grad[np.diag_indices(k)] = (d.sum(axis=1) - 0.25) / (k - 1)
    return (p.sum(axis=1) - 0.5) / (k - 1), grad


def _covariances(per: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rater-clustered, independent-votes) covariances of centred θ: the CR1 sandwich H⁺ (R/(R−1) Σ_r s_r s_rᵀ) H⁺
    (s_r a rater's score) and the model's H⁺. Callers take the larger variance of each quantity, the design effect
    ≥ 1 of `clustered_win_rate`: raters who all vote alike leave the sandwich near 0."""
    raters = len(per)
    p = expit(theta[:, None] - theta[None, :])
    n = per + np.swapaxes(per, 1, 2)
    scores = (per - n * p).sum(axis=2)
    info = n.sum(axis=0) * p * p.T
    inv = np.linalg.pinv(np.diag(info.sum(axis=1)) - info)
    return inv @ (raters / (raters - 1) * scores.T @ scores) @ inv, inv


def bradley_terry_clustered(per_rater: np.ndarray, prior: float = PRIOR, confidence: float = CONFIDENCE,
                            n_boot: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """Bradley–Terry on one connected set of variants from per-rater wins (per_rater[r, i, j]: times rater r chose
    i over j): {theta, theta_low, theta_high, preference, preference_low, preference_high, one_sided}.

    theta: `bradley_terry_fit` with `prior` pseudo-wins (mean 0). preference: the probability of beating a variant
    drawn at random from the others (`_round_robin`). Intervals: the rater-clustered sandwich variance (never below
    the independent-votes one) with the t quantile on raters − 1 df (θ directly, preference on the logit scale),
    or with n_boot > 0 the percentile bootstrap over raters (θ only; measured to under-cover with 15 raters). A
    variant with no wins (no losses) gets −∞ (+∞) to its profile-likelihood bound, preference 0 (1) to the
    preference there: one_sided names it. NaN intervals under 2 raters."""
    per = np.asarray(per_rater, dtype=float)
    per = per[per.sum(axis=(1, 2)) > 0]
    wins = per.sum(axis=0)
    compared = (wins + wins.T) > 0
    theta = bradley_terry_fit(wins, compared, prior)
    pref, grad = _round_robin(theta)
    k, raters = len(theta), len(per)
    nan = np.full(k, np.nan)
    out = {"theta": theta, "preference": pref, "theta_low": nan.copy(), "theta_high": nan.copy(),
           "preference_low": nan.copy(), "preference_high": nan.copy(), "one_sided": np.array([""] * k, object)}
    if raters < 2:
        return out
    tq = stats.t.ppf(0.5 + confidence / 2, raters - 1)
    clustered, independent = _covariances(per, theta)
    se = np.sqrt(np.maximum(np.diag(clustered), np.diag(independent)))
    var_pref = [np.einsum("ij,jk,ik->i", grad, cov, grad) for cov in (clustered, independent)]
    se_logit = np.sqrt(np.maximum(*var_pref)) / (pref * (1 - pref))
    out["preference_low"] = expit(logit(pref) - tq * se_logit)
    out["preference_high"] = expit(logit(pref) + tq * se_logit)
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(raters, np.full(raters, 1 / raters), n_boot)
        boots = _mm(np.tensordot(counts, per, axes=1), compared, prior)
        out["theta_low"], out["theta_high"] = np.percentile(boots, [50 - 50 * confidence, 50 + 50 * confidence], axis=0)
    else:
        out["theta_low"], out["theta_high"] = theta - tq * se, theta + tq * se
    for i in range(k):
        won, lost = wins[i].sum(), wins[:, i].sum()
        if won and lost:
            continue
        side = -1 if not won else 1
        bound, at = _one_sided(wins, i, theta[i], side, confidence)
        pref_bound = float(side > 0) if at is None else _round_robin(at)[0][i]
        if side < 0:
            out["theta_low"][i], out["theta_high"][i] = -np.inf, bound
            out["preference_low"][i], out["preference_high"][i] = 0.0, pref_bound
        else:
            out["theta_low"][i], out["theta_high"][i] = bound, np.inf
            out["preference_low"][i], out["preference_high"][i] = pref_bound, 1.0
        out["one_sided"][i] = "no wins" if side < 0 else "no losses"
    return out


def _per_rater(rows: list[dict], entity) -> tuple[list, list, np.ndarray]:
    """(entities, cluster ids, per-rater wins array) of votes; entity(vote, variant) names a compared thing."""
    entities = sorted({entity(r, v) for r in rows for v in (r["left_variant"], r["right_variant"])}, key=str)
    clusters = sorted({(r["sweep"], r["rater"]) for r in rows})
    ei, ci = {e: k for k, e in enumerate(entities)}, {c: k for k, c in enumerate(clusters)}
    per = np.zeros((len(clusters), len(entities), len(entities)))
    for r in rows:
        lose = r["right_variant"] if r["chosen_variant"] == r["left_variant"] else r["left_variant"]
        per[ci[(r["sweep"], r["rater"])], ei[entity(r, r["chosen_variant"])], ei[entity(r, lose)]] += 1
    return entities, clusters, per


def _fit_components(per: np.ndarray, n_boot: int = 0, seed: int = 0) -> list[tuple[int, int, list[int], dict]]:
    """[(component, n_components, variant indices, bradley_terry_clustered result)] per connected component."""
    wins = per.sum(axis=0)
    labels = compared_components((wins + wins.T) > 0)
    n = int(labels.max()) + 1 if len(labels) else 0
    out = []
    for c in range(n):
        idx = np.flatnonzero(labels == c).tolist()
        out.append((c, n, idx, bradley_terry_clustered(per[:, idx][:, :, idx], n_boot=n_boot, seed=seed)))
    return out


def _method(base: str, raters: int, component: int, n_components: int, one_sided: str) -> str:
    parts = [base if raters >= 2 else f"{_FIT}; {_NO_INTERVAL}"]
    if one_sided and raters >= 2:
        parts.append(_ONE_SIDED[one_sided])
    if n_components > 1:
        parts.append(f"component {component} of {n_components}: no comparison links the components, so values are "
                     "comparable only within one")
    return "; ".join(parts)


def bradley_terry(votes: pa.Table, study_defs: Optional[dict[str, dict]] = None, n_boot: int = 0,
                  seed: int = 0) -> pa.Table:
    """Bradley–Terry log-strength per variant, per study, question and connected component of the compared pairs
    (`bradley_terry_clustered`): 95% intervals from the rater-clustered sandwich, or with n_boot > 0 from
    `n_boot` percentile-bootstrap resamples of raters; one-sided for a variant that never won or never lost."""
    rows = _first(votes)
    out = []
    keys = sorted({(r["study"], r["question"]) for r in rows}, key=lambda k: _sort_key(k, study_defs))
    for study, question in keys:
        rs = [r for r in rows if r["study"] == study and r["question"] == question]
        compare = (study_defs or {}).get(study, {}).get("compare") or []
        seen, _, per = _per_rater(rs, lambda r, v: v)
        order = [seen.index(v) for v in compare if v in seen] + [k for k, v in enumerate(seen) if v not in compare]
        per = per[:, order][:, :, order]
        names = [seen[k] for k in order]
        base = f"{_FIT}; " + (f"95% percentile bootstrap over raters ({n_boot} resamples)" if n_boot > 0 else _SANDWICH)
        for c, n_comp, idx, fit in _fit_components(per, n_boot, seed):
            sub = per[:, idx][:, :, idx]
            wins = sub.sum(axis=0)
            raters = int((sub.sum(axis=(1, 2)) > 0).sum())
            for k, i in enumerate(idx):
                out.append({"study": study, "question": question, "variant": names[i],
                            "log_strength": float(fit["theta"][k]), "ci_low": _bound(fit["theta_low"][k]),
                            "ci_high": _bound(fit["theta_high"][k]), "strength": float(np.exp(fit["theta"][k])),
                            "n_votes": int(wins[k].sum() + wins[:, k].sum()), "n_wins": int(wins[k].sum()),
                            "component": c, "method": _method(base, raters, c, n_comp, fit["one_sided"][k])})
    return pa.Table.from_pylist(out, schema=BRADLEY_TERRY_SCHEMA)


def _bound(v: float) -> Optional[float]:
    """An interval end as stored: NaN (no interval) as null, ±inf kept (a one-sided interval)."""
    return None if np.isnan(v) else float(v)


def rater_consistency(votes: pa.Table) -> pa.Table:
    """Share of repeated (item, question) answers choosing the same variant both times, sides un-swapped:
    overall per question ('all' raters), overall, and per rater."""
    rows = votes.to_pylist()
    first = {(r["study"], r["rater"], r["item"], r["question"]): r["chosen_variant"] for r in rows if not r["repeat"]}
    pairs = [(r["study"], r["rater"], r["question"], first[k] == r["chosen_variant"]) for r in rows if r["repeat"]
             and (k := (r["study"], r["rater"], r["item"], r["question"])) in first]
    out = []

    def add(study, rater, question, sel):
        n = len(sel)
        c = sum(sel)
        out.append({"study": study, "rater": rater, "question": question, "n_repeated": n, "n_consistent": c,
                    "consistency": c / n if n else None})

    for study in sorted({p[0] for p in pairs}):
        ps = [p for p in pairs if p[0] == study]
        for q in sorted({p[2] for p in ps}):
            add(study, "all", q, [p[3] for p in ps if p[2] == q])
        add(study, "all", "all", [p[3] for p in ps])
        for rater in sorted({p[1] for p in ps}):
            add(study, rater, "all", [p[3] for p in ps if p[1] == rater])
    return pa.Table.from_pylist(out, schema=CONSISTENCY_SCHEMA)


def item_votes(votes: pa.Table, study_defs: Optional[dict[str, dict]] = None) -> pa.Table:
    """Votes per item (every item of the study definitions, with zeros, plus any other voted item)."""
    rows = votes.to_pylist()
    items: dict[tuple, dict] = {}
    for study, d in (study_defs or {}).items():
        for it in d["items"]:
            items[(study, it["id"])] = {"study": study, "item": it["id"], "variant_a": it["pair"][0],
                                        "variant_b": it["pair"][1], "video": it["video"], "prompt": it["prompt"],
                                        "generation_seed": it["generation_seed"]}
    for r in rows:
        items.setdefault((r["study"], r["item"]), {
            "study": r["study"], "item": r["item"], "variant_a": min(r["left_variant"], r["right_variant"]),
            "variant_b": max(r["left_variant"], r["right_variant"]), "video": r["video"], "prompt": r["prompt"],
            "generation_seed": r["generation_seed"]})
    by_item: dict[tuple, list[dict]] = {}
    for r in rows:
        by_item.setdefault((r["study"], r["item"]), []).append(r)
    out = []
    for key, info in sorted(items.items()):
        rs = by_item.get(key, [])
        first = [r for r in rs if not r["repeat"]]
        out.append({**info, "n_votes": len(first), "n_raters": len({r["rater"] for r in first}),
                    "n_repeat_votes": len(rs) - len(first)})
    return pa.Table.from_pylist(out, schema=ITEMS_SCHEMA)


def shown_at(defs: Mapping[str, dict]) -> dict[tuple[str, str], int]:
    """{(study, variant): the checkpoint step its clips were shown at} from study definitions (items'
    `checkpoints`; the base model's 0)."""
    return {(study, v): int(c) for study, d in defs.items() for item in d.get("items", [])
            for v, c in (item.get("checkpoints") or {}).items()}


def user_preference(votes: pa.Table | str | os.PathLike, *, study: Optional[str] = None,
                    question: Optional[str | Sequence[str]] = None,
                    steps: Optional[Mapping[tuple[str, str], int]] = None) -> pa.Table:
    """variant → user_preference: the Bradley–Terry probability of beating a variant drawn at random from the others
    compared with it (the share of votes it would win had it met each equally often), with a rater-clustered 95%
    interval, n_votes and n_wins (first presentations). Questions (and studies) are pooled into one fit, a rater's
    votes staying one cluster; a graph of comparisons in pieces is fitted per piece (`component`).

    `votes`: a votes table or a sweep folder; `study`/`question` restrict. `steps` ({(study, variant): step},
    `shown_at`; read from the studies when `votes` is a folder) makes a variant at two checkpoints two entries,
    with a `checkpoint` column. Joins the summary table on `variant` (and `checkpoint`)."""
    if not isinstance(votes, pa.Table):
        store = open_store(votes)
        if steps is None:
            steps = shown_at({n: load_study(store, n) for n in list_studies(store) if study in (None, n)})
        votes = load_votes(store, study)
    rows = [r for r in _first(votes) if (study is None or r["study"] == study)]
    if question is not None:
        wanted = {question} if isinstance(question, str) else set(question)
        rows = [r for r in rows if r["question"] in wanted]
    steps = steps or {}
    entities, _, per = _per_rater(rows, lambda r, v: (v, steps.get((r["study"], v))))
    base = f"Bradley–Terry probability of beating a random other variant ({_FIT}); {_SANDWICH}, logit scale"
    out = []
    for c, n_comp, idx, fit in _fit_components(per):
        sub = per[:, idx][:, :, idx]
        raters = int((sub.sum(axis=(1, 2)) > 0).sum())
        for k, i in enumerate(idx):
            variant, step = entities[i]
            rs = [r for r in rows if variant in (r["left_variant"], r["right_variant"])
                  and steps.get((r["study"], variant)) == step]
            out.append({"variant": variant, "user_preference": float(fit["preference"][k]),
                        "n_votes": int(sub[:, k].sum() + sub[:, :, k].sum()), "n_wins": int(sub[:, k].sum()),
                        "ci_low": _bound(fit["preference_low"][k]), "ci_high": _bound(fit["preference_high"][k]),
                        "n_raters": len({(r["sweep"], r["rater"]) for r in rs}),
                        "questions": ",".join(sorted({r["question"] for r in rs})),
                        "studies": ",".join(sorted({r["study"] for r in rs})), "checkpoint": step,
                        "component": c, "method": _method(base, raters, c, n_comp, fit["one_sided"][k])})
    out.sort(key=lambda r: (r["variant"], -1 if r["checkpoint"] is None else r["checkpoint"]))
    return pa.Table.from_pylist(out, schema=USER_PREFERENCE_SCHEMA)


def study_results(sweep: str | os.PathLike, name: Optional[str] = None, *, n_boot: int = 0,
                  seed: int = 0) -> dict[str, pa.Table]:
    """Every result table of a study (or of all studies of the sweep when `name` is None):
    {"pairs", "bradley_terry", "consistency", "items", "user_preference", "votes"}. n_boot > 0: Bradley–Terry
    intervals from a percentile bootstrap over raters instead of the clustered sandwich."""
    store = open_store(sweep)
    names = [name] if name else list_studies(store)
    defs = {n: load_study(store, n) for n in names}
    votes = load_votes(store, name)
    return {"pairs": pairwise(votes, defs), "bradley_terry": bradley_terry(votes, defs, n_boot=n_boot, seed=seed),
            "consistency": rater_consistency(votes), "items": item_votes(votes, defs),
            "user_preference": user_preference(votes, study=name, steps=shown_at(defs)), "votes": votes}
