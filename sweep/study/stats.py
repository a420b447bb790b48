"""The study's statistics, on first presentations only (repeats measure consistency):

* per pair and question, the win rate with a Wilson 95% interval and a two-sided exact binomial test against 1/2
  (`pairwise`);
* Bradley–Terry strengths per question, fitted by Hunter's MM algorithm with 0.5 pseudo-wins each way on every
  compared pair, with 95% percentile intervals from a bootstrap over raters (`bradley_terry`);
* rater consistency on the repeated items (`rater_consistency`); votes per item (`item_votes`);
* per variant, the share of votes won (`user_preference`, the report's `user_preference` column).

`study_results` computes them all for one study or every study of a sweep.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from .definition import list_studies, load_study, open_store
from .schemas import BRADLEY_TERRY_SCHEMA, CONSISTENCY_SCHEMA, ITEMS_SCHEMA, PAIRS_SCHEMA, USER_PREFERENCE_SCHEMA
from .votes import load_votes


def _first(votes: pa.Table) -> list[dict]:
    return [r for r in votes.to_pylist() if not r["repeat"]]


def _wilson(k: int, n: int) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """(ci_low, ci_high, p) of k successes in n: Wilson 95% interval, two-sided exact binomial test of 1/2."""
    if n == 0:
        return None, None, None
    from scipy.stats import binomtest

    res = binomtest(k, n, 0.5, alternative="two-sided")
    ci = res.proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high), float(res.pvalue)


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


def pairwise(votes: pa.Table, study_defs: Optional[dict[str, dict]] = None) -> pa.Table:
    """Per study, question and pair of variants: win rate of variant_a, Wilson 95% CI, two-sided binomial p."""
    rows = _first(votes)
    order = _pair_order(rows, study_defs or {})
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        a, b = order[(r["study"], tuple(sorted((r["left_variant"], r["right_variant"]))))]
        groups.setdefault((r["study"], r["question"], a, b), []).append(r)
    out = []
    for (study, question, a, b), rs in sorted(groups.items(), key=lambda kv: _sort_key(kv[0], study_defs)):
        wins_a = sum(r["chosen_variant"] == a for r in rs)
        lo, hi, p = _wilson(wins_a, len(rs))
        out.append({"study": study, "question": question, "variant_a": a, "variant_b": b, "n_votes": len(rs),
                    "wins_a": wins_a, "wins_b": len(rs) - wins_a, "win_rate_a": wins_a / len(rs), "ci_low": lo,
                    "ci_high": hi, "p": p, "n_raters": len({r["rater"] for r in rs}),
                    "n_items": len({r["item"] for r in rs})})
    return pa.Table.from_pylist(out, schema=PAIRS_SCHEMA)


def _sort_key(key: tuple, study_defs: Optional[dict]) -> tuple:
    study, question = key[0], key[1]
    qs = [q["id"] for q in (study_defs or {}).get(study, {}).get("questions", [])]
    return (study, qs.index(question) if question in qs else len(qs), question, *key[2:])


def bradley_terry_fit(wins: np.ndarray, compared: Optional[np.ndarray] = None, prior: float = 0.5,
                      max_iter: int = 10_000, tol: float = 1e-10) -> np.ndarray:
    """Log-strengths θ (mean 0) from a wins matrix (wins[i, j]: times i beat j) by Hunter's (2004) MM algorithm:
    p_i ← W_i / Σ_j n_ij / (p_i + p_j). `prior` pseudo-wins are added each way on every compared pair (the
    `compared` mask, default where there are votes), which keeps θ finite when a variant never wins."""
    wins = np.asarray(wins, dtype=float)
    mask = (wins + wins.T) > 0 if compared is None else np.asarray(compared, bool)
    w = wins + prior * mask
    n = w + w.T
    total = w.sum(axis=1)
    p = np.ones(len(w))
    for _ in range(max_iter):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1), p)
        new = new / np.exp(np.mean(np.log(new)))
        done = np.max(np.abs(np.log(new) - np.log(p))) < tol
        p = new
        if done:
            break
    theta = np.log(p)
    return theta - theta.mean()


def bradley_terry(votes: pa.Table, study_defs: Optional[dict[str, dict]] = None, n_boot: int = 1000,
                  seed: int = 0) -> pa.Table:
    """Bradley–Terry log-strength per variant, per study and question, over every pair; 95% percentile
    intervals from `n_boot` resamples of raters (with replacement: a rater's votes stay together)."""
    rows = _first(votes)
    out = []
    keys = sorted({(r["study"], r["question"]) for r in rows}, key=lambda k: _sort_key(k, study_defs))
    for study, question in keys:
        rs = [r for r in rows if r["study"] == study and r["question"] == question]
        compare = (study_defs or {}).get(study, {}).get("compare") or []
        seen = {v for r in rs for v in (r["left_variant"], r["right_variant"])}
        variants = [v for v in compare if v in seen] + sorted(seen - set(compare))
        vi = {v: i for i, v in enumerate(variants)}
        raters = sorted({r["rater"] for r in rs})
        ri = {r: i for i, r in enumerate(raters)}
        per = np.zeros((len(raters), len(variants), len(variants)))
        for r in rs:
            win = r["chosen_variant"]
            lose = r["right_variant"] if win == r["left_variant"] else r["left_variant"]
            per[ri[r["rater"]], vi[win], vi[lose]] += 1
        wins = per.sum(axis=0)
        compared = (wins + wins.T) > 0
        theta = bradley_terry_fit(wins, compared)
        lo = hi = None
        if len(raters) >= 2 and n_boot > 0:
            rng = np.random.default_rng(seed)
            boots = np.empty((n_boot, len(variants)))
            for b in range(n_boot):
                counts = np.bincount(rng.integers(0, len(raters), len(raters)), minlength=len(raters))
                boots[b] = bradley_terry_fit(np.tensordot(counts, per, axes=1), compared)
            lo, hi = np.percentile(boots, 2.5, axis=0), np.percentile(boots, 97.5, axis=0)
        method = (f"MM fit (Hunter 2004), 0.5 pseudo-wins each way per compared pair; 95% percentile bootstrap "
                  f"over raters ({n_boot} resamples)" if lo is not None else
                  "MM fit (Hunter 2004), 0.5 pseudo-wins each way per compared pair; no interval (< 2 raters)")
        for v, i in vi.items():
            out.append({"study": study, "question": question, "variant": v, "log_strength": float(theta[i]),
                        "ci_low": None if lo is None else float(lo[i]), "ci_high": None if hi is None else float(hi[i]),
                        "strength": float(np.exp(theta[i])), "n_votes": int(wins[i].sum() + wins[:, i].sum()),
                        "n_wins": int(wins[i].sum()), "method": method})
    return pa.Table.from_pylist(out, schema=BRADLEY_TERRY_SCHEMA)


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


def user_preference(votes: pa.Table | str | os.PathLike, *, study: Optional[str] = None,
                    question: Optional[str | Sequence[str]] = None) -> pa.Table:
    """variant → user_preference (share of forced-choice votes won, first presentations) with n_votes, n_wins and
    a Wilson 95% interval. `votes`: a votes table or a sweep folder; `study`/`question` restrict (default: every
    study and question pooled). Joins the summary table on `variant`."""
    if not isinstance(votes, pa.Table):
        votes = load_votes(votes, study)
    rows = [r for r in _first(votes) if (study is None or r["study"] == study)]
    if question is not None:
        wanted = {question} if isinstance(question, str) else set(question)
        rows = [r for r in rows if r["question"] in wanted]
    variants = sorted({v for r in rows for v in (r["left_variant"], r["right_variant"])})
    out = []
    for v in variants:
        rs = [r for r in rows if v in (r["left_variant"], r["right_variant"])]
        wins = sum(r["chosen_variant"] == v for r in rs)
        lo, hi, _ = _wilson(wins, len(rs))
        out.append({"variant": v, "user_preference": wins / len(rs), "n_votes": len(rs), "n_wins": wins,
                    "ci_low": lo, "ci_high": hi, "n_raters": len({r["rater"] for r in rs}),
                    "questions": ",".join(sorted({r["question"] for r in rs})),
                    "studies": ",".join(sorted({r["study"] for r in rs}))})
    return pa.Table.from_pylist(out, schema=USER_PREFERENCE_SCHEMA)


def study_results(sweep: str | os.PathLike, name: Optional[str] = None, *, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, pa.Table]:
    """Every result table of a study (or of all studies of the sweep when `name` is None):
    {"pairs", "bradley_terry", "consistency", "items", "user_preference", "votes"}."""
    store = open_store(sweep)
    names = [name] if name else list_studies(store)
    defs = {n: load_study(store, n) for n in names}
    votes = load_votes(store, name)
    return {"pairs": pairwise(votes, defs), "bradley_terry": bradley_terry(votes, defs, n_boot=n_boot, seed=seed),
            "consistency": rater_consistency(votes), "items": item_votes(votes, defs),
            "user_preference": user_preference(votes, study=name), "votes": votes}
