"""The ablation's factorial effects: which design factor matters, by how much, and whether factors interact (the
`effects` table).

    from sweep.report import effects
    found = effects(load(path), load(path, "comparisons"))
    found.table    # one row per sweep × subset × metric × checkpoint × term (schemas.EFFECTS_SCHEMA)
    found.notes    # what was not fitted, and why

The seed grid crosses MQK design × MV design × debias on shared units (video, prompt, generation seed). A factor
exists only where its embedding does (MQK design where MQK is not removed, debias where there is an MV), so the
grid holds three complete factorials (SUBSETS): both embeddings (MQK design × MV design × debias), MV removed
(MQK design) and MQK removed (MV design × debias). Per subset × metric × checkpoint, on the units that have
every cell of it (a variant's optimisation seeds averaged within a unit):

* a term is a contrast of cell means: a main effect "b − a" (a: the paper's level) averaged over the other
  factors' levels, a two-way interaction the difference of differences "(b − a) × (d − c)" averaged over the
  third factor;
* estimate: the mean over videos of each video's mean contrast (prompts of one video are not independent); its
  CI and p are `stats.paired_test`'s over those per-video contrasts, as `compare` tests its differences: p the
  larger of an exact sign-flip permutation test (flipping a video's contrast = swapping the two levels inside
  that video, for every unit of it) and a bootstrap-t test, the CI the values neither rejects (withheld with too
  few videos); p is Holm-adjusted over every factorial term of the metric in the sweep;
* beside them, the linear mixed model (statsmodels MixedLM, REML, on every observation of those units):
  sum-coded fixed effects (main and two-way), a random intercept per video, a variance component per prompt
  within video (and per generation seed within prompt where prompts have several; each where it can be told
  apart): its estimate of the same contrast with a Wald CI and p, and the variance shares of video, prompt, seed
  and the residual (kind "variance"). Its Wald p takes each contrast as constant across videos up to residual
  noise; when the effect differs between videos that is anti-conservative (tests/test_sweep/report/
  test_effects.py measures it), so `p` is the test over videos and `p_wald` stands beside it.

Removing a component is not a factor level: the removals (MQK, MV, both) are the paired comparisons against
the paper's method that `compare` already made; their rows are copied here (kind "removal", compare's test in
`method`), not computed again. statsmodels loads on first use (a fit), not with the report's imports.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pyarrow as pa

from sweep.results.schemas import EFFECTS_SCHEMA
from sweep.results.tables import code_version
from vocabulary import DEBIAS_MODES, METRICS, OFF, PAPER_METHOD, QK_DESIGNS, SAMPLE_METRICS, V_DESIGNS

from .compare import variant_settings
from .stats import CI_METHOD, MIN_VIDEOS, STEP, TEST, column, float_column, holm, paired_test, video_means

#: The test of `p` (`stats.paired_test`, over per-video contrasts instead of per-video differences).
EFFECTS_TEST = TEST.replace("mean per-video difference", "mean per-video contrast")
OPTIMISERS = ("lbfgs", "bfgs", "powell", "nm")  #: MixedLM's optimisers, tried in turn until one fits
FACTORS = {"qk": "MQK design", "v": "MV design", "debias": "debias"}
LEVEL_ORDER = {"qk": QK_DESIGNS, "v": V_DESIGNS, "debias": DEBIAS_MODES}  # the paper's level first
REMOVALS = {  # applied (qk, v, debias) of a removal variant -> its term; the rest stays the paper's method
    (OFF, PAPER_METHOD["v"], PAPER_METHOD["debias"]): "remove: MQK",
    (PAPER_METHOD["qk"], OFF, OFF): "remove: MV",
    (OFF, OFF, OFF): "remove: both (the base model)",
}


@dataclass(frozen=True)
class Subset:
    """A complete factorial inside the grid: the variants where its factors exist."""
    name: str
    qk_on: bool
    v_on: bool
    factors: tuple[str, ...]

    def holds(self, method: tuple) -> bool:
        qk, v, _ = method
        return (qk != OFF) == self.qk_on and (v != OFF) == self.v_on


SUBSETS = (Subset("MQK and MV", True, True, ("qk", "v", "debias")),
           Subset("MV removed", True, False, ("qk",)),
           Subset("MQK removed", False, True, ("v", "debias")))
REMOVAL_SUBSET = "removals (paired, against the paper's method)"


class Effects(NamedTuple):
    table: pa.Table    #: schemas.EFFECTS_SCHEMA
    notes: list[str]   #: factors with one level, incomplete factorials, fits that failed


def effects(table: pa.Table, comparisons: Optional[pa.Table] = None, metrics: Sequence[str] = SAMPLE_METRICS, *,
            n_boot: int = 9999, seed: int = 0, confidence: float = 0.95, min_videos: int = MIN_VIDEOS,
            mixed_model: bool = True) -> Effects:
    """The factorial effects of the samples `table` (see the module doc), plus the removal rows of `comparisons`
    (compare's output) where their baseline is the paper's method. n_boot, seed, confidence, min_videos: as
    `stats.paired_test` takes them; `mixed_model=False` skips the MixedLM columns and variance rows."""
    status = column(table, "status")
    ok = [i for i, s in enumerate(status) if s == "ok"]
    cols = {c: column(table, c) for c in ("sweep", "variant", "video", "prompt", "generation_seed", STEP, "preset",
                                          "pretrained_metrics")}
    values = {m: float_column(table, m) for m in metrics}
    values = {m: x for m, x in values.items() if ok and np.isfinite(x[ok]).any()}  # never computed: no rows
    now = dt.datetime.now(dt.timezone.utc)

    def provenance(rows: Sequence[int]) -> dict:
        """The preset(s) of the rows, and whether every one had trained metric backbones."""
        known = [cols["pretrained_metrics"][i] for i in rows if cols["pretrained_metrics"][i] is not None]
        return {"preset": ", ".join(sorted({str(cols["preset"][i]) for i in rows if cols["preset"][i] is not None}))
                or None, "pretrained_metrics": all(known) if known else None}

    rows: list[dict] = []
    notes: list[str] = []
    fit_notes: dict[tuple[str, str], list[str]] = defaultdict(list)  # (where, note) -> metrics it holds for
    settings_of: dict[str, dict] = {}
    for sweep in sorted({cols["sweep"][i] for i in ok}, key=str):
        in_sweep = [i for i in ok if cols["sweep"][i] == sweep]
        settings = settings_of[sweep] = variant_settings(table, in_sweep)
        by_setting: dict[str, list[str]] = defaultdict(list)
        for variant, info in settings.items():
            by_setting[_setting_label(info["hyper"])].append(variant)
        for setting, variants in sorted(by_setting.items()):
            where = f"sweep {sweep!r}" + (f", {setting}" if setting else "")
            for subset in SUBSETS:
                members = {v: dict(zip(("qk", "v", "debias"), settings[v]["method"])) for v in variants
                           if subset.holds(settings[v]["method"])}
                if not members:
                    continue
                levels = {f: _ordered({cell[f] for cell in members.values()}, f) for f in subset.factors}
                single = [f for f in subset.factors if len(levels[f]) == 1]
                if single:
                    notes.append(f"effects, {where}, {subset.name}: "
                                 + "; ".join(f"{FACTORS[f]} has one level ({levels[f][0]})" for f in single)
                                 + ": no rows for it")
                factors = tuple(f for f in subset.factors if len(levels[f]) > 1)
                if not factors:
                    continue
                member_rows = [i for i in in_sweep if cols["variant"][i] in members]
                for checkpoint in sorted({cols[STEP][i] for i in member_rows}, key=lambda c: (c is None, c)):
                    at_step = [i for i in member_rows if cols[STEP][i] == checkpoint]
                    context = {"sweep": sweep, "setting": setting, "subset": subset.name, "checkpoint": checkpoint,
                               **provenance(at_step)}
                    for m, x in values.items():
                        obs = [(cols["video"][i], cols["prompt"][i], cols["generation_seed"][i],
                                tuple(members[cols["variant"][i]][f] for f in factors), float(x[i]))
                               for i in at_step if np.isfinite(x[i])]
                        fit_rows, note = _fit(obs, factors, levels, n_boot=n_boot, seed=seed, confidence=confidence,
                                              min_videos=min_videos, mixed_model=mixed_model)
                        if note:
                            fit_notes[(f"{where}, {subset.name} at step {checkpoint}", note)].append(m)
                        for r in fit_rows:
                            rows.append({**context, **r, "metric": m, "n_variants": len(
                                {cols["variant"][i] for i in at_step if np.isfinite(x[i])})})
    notes += [f"effects, {place} ({', '.join(ms)}): {note}" for (place, note), ms in fit_notes.items()]
    for sweep, m in {(r["sweep"], r["metric"]) for r in rows}:
        family = [r for r in rows if r["sweep"] == sweep and r["metric"] == m and r["kind"] != "variance"]
        for r, adjusted in zip(family, holm([r["p"] for r in family])):
            r["p_holm"] = adjusted
            r["family_size"] = sum(x["p"] is not None for x in family)
    if comparisons is not None:
        for r in _removal_rows(comparisons, settings_of):
            pair = {r.pop("variant"), r.pop("baseline")}
            rows.append({**r, **provenance([i for i in ok if cols["sweep"][i] == r["sweep"]
                                            and cols["variant"][i] in pair])})
    for r in rows:
        r["higher_is_better"] = METRICS[r["metric"]].higher_is_better if r["metric"] in METRICS else None
        r.setdefault("code_version", code_version())
        r.setdefault("created_at", now)
    return Effects(pa.Table.from_pylist(rows, schema=EFFECTS_SCHEMA), list(dict.fromkeys(notes)))


KINDS = ("main", "interaction", "removal", "variance")  #: the order rows are shown in


def term_order(row: dict) -> tuple[int, int]:
    """Sort key of an effects row among the rows of one metric and checkpoint (a stable sort keeps the order of
    the terms inside a kind): the subsets as SUBSETS lists them, the removals after; main effects, interactions,
    removals, variance shares."""
    subsets = [s.name for s in SUBSETS] + [REMOVAL_SUBSET]
    return (subsets.index(row["subset"]) if row.get("subset") in subsets else len(subsets),
            KINDS.index(row["kind"]) if row.get("kind") in KINDS else len(KINDS))


def contrasts(factors: Sequence[str], levels: dict[str, Sequence[str]]) -> list[dict]:
    """The terms of a factorial: [{kind, factor, term, weights}] with weights over the cells in
    itertools.product order of the factors' levels (the first level of each is its reference): each non-reference
    level against the reference, averaged over the other factors; each pair of such contrasts' difference of
    differences, averaged over the remaining factors."""
    shape = tuple(len(levels[f]) for f in factors)
    out = []
    for i, f in enumerate(factors):
        for b in range(1, shape[i]):
            w = np.zeros(shape)
            w[_at(i, b, len(shape))] += 1.0
            w[_at(i, 0, len(shape))] -= 1.0
            out.append({"kind": "main", "factor": FACTORS[f], "term": f"{FACTORS[f]}: {levels[f][b]} − {levels[f][0]}",
                        "weights": (w / (np.prod(shape) / shape[i])).ravel()})
    for i, j in itertools.combinations(range(len(factors)), 2):
        f, g = factors[i], factors[j]
        for b, d in itertools.product(range(1, shape[i]), range(1, shape[j])):
            w = np.zeros(shape)
            for (li, lj), sign in (((b, d), 1.0), ((0, d), -1.0), ((b, 0), -1.0), ((0, 0), 1.0)):
                w[_at2(i, li, j, lj, len(shape))] += sign
            out.append({"kind": "interaction", "factor": f"{FACTORS[f]} × {FACTORS[g]}",
                        "term": f"{FACTORS[f]} × {FACTORS[g]}: ({levels[f][b]} − {levels[f][0]}) × "
                                f"({levels[g][d]} − {levels[g][0]})",
                        "weights": (w / (np.prod(shape) / (shape[i] * shape[j]))).ravel()})
    return out


# --------------------------------------------------------------------------------------------------
# One fit: a subset's factorial, one metric, one checkpoint.

def _fit(obs: list[tuple], factors: tuple[str, ...], levels: dict, *, n_boot: int, seed: int, confidence: float,
         min_videos: int, mixed_model: bool) -> tuple[list[dict], Optional[str]]:
    """Rows of one factorial fit from observations (video, prompt, generation seed, cell, value); (rows, note)."""
    if not obs:  # the metric has no value at this step
        return [], None
    cells = list(itertools.product(*(levels[f] for f in factors)))
    index = {c: k for k, c in enumerate(cells)}
    by_unit: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for video, prompt, gseed, cell, y in obs:
        by_unit[(video, prompt, gseed)][index[cell]].append(y)
    seen = {k for unit in by_unit.values() for k in unit}
    if len(seen) < len(cells):
        missing = [" ".join(f"{f}={lv}" for f, lv in zip(factors, cells[k]))
                   for k in range(len(cells)) if k not in seen]
        return [], f"no sample of {'; '.join(missing)}: the factorial is incomplete, no fit"
    units = sorted((u for u, got in by_unit.items() if len(got) == len(cells)), key=str)
    dropped = len(by_unit) - len(units)
    if not units:
        return [], "no unit (video, prompt, generation seed) has every cell: no fit"
    means = np.array([[np.mean(by_unit[u][k]) for k in range(len(cells))] for u in units])  # units × cells
    videos = [u[0] for u in units]
    terms = contrasts(factors, levels)
    rows = []
    for t in terms:
        per_video = video_means(videos, means @ t["weights"])
        tested = paired_test(per_video, n_boot, seed, confidence, min_videos)
        rows.append({"kind": t["kind"], "factor": t["factor"], "term": t["term"], "estimate": float(per_video.mean()),
                     "ci_low": tested.low, "ci_high": tested.high, "ci_method": CI_METHOD, "ci_note": tested.note,
                     "confidence": confidence, "n_boot": n_boot, "method": EFFECTS_TEST, "p": tested.p,
                     "n_videos": len(per_video), "n_units": len(units)})
    notes = [f"{dropped} unit{'' if dropped == 1 else 's'} without every cell dropped"] if dropped else []
    if mixed_model:
        complete = set(units)
        kept = [o for o in obs if o[:3] in complete]
        mixed, mixed_notes = _mixed_fit(kept, cells, index, factors, terms, confidence)
        notes += mixed_notes
        for r, fitted in zip(rows, mixed["terms"]):
            r.update(fitted, mixed_model=mixed["description"])
        for name, (variance, share) in mixed["variance"].items():
            rows.append({"kind": "variance", "factor": name, "term": f"variance share: {name}", "estimate": share,
                         "variance": variance, "method": mixed["description"], "n_videos": len(set(videos)),
                         "n_units": len(units), "mixed_model": mixed["description"]})
    note = "; ".join(notes) or None
    for r in rows:
        r["note"] = note
    return rows, None


def _mixed_fit(obs: list[tuple], cells: list[tuple], index: dict, factors: tuple[str, ...], terms: list[dict],
               confidence: float) -> tuple[dict, list[str]]:
    """statsmodels MixedLM (REML) of the observations: {"terms": [Wald columns per term], "variance": {component:
    (variance, share)}, "description"}, and notes (warnings it raised, components it could not tell apart)."""
    empty = {"terms": [{} for _ in terms], "variance": {}, "description": None}
    videos = sorted({o[0] for o in obs}, key=str)
    y = np.array([o[4] for o in obs])
    if len(videos) < 2:
        return empty, ["mixed model not fitted: one video"]
    if np.ptp(y) == 0:
        return empty, ["mixed model not fitted: every value is the same"]
    from scipy.stats import norm
    from statsmodels.regression.mixed_linear_model import MixedLM, VCSpec

    shape = tuple(len(set(c[i] for c in cells)) for i in range(len(factors)))
    x_cells = _sum_coded(cells, shape)
    order = sorted(range(len(obs)), key=lambda k: str(obs[k][0]))  # VCSpec wants the groups in sorted order
    obs = [obs[k] for k in order]
    y = y[order]
    groups = np.array([videos.index(o[0]) for o in obs])
    x = x_cells[[index[o[3]] for o in obs]]
    # a component enters where it can be told apart from the one above it: some video has several prompts,
    # some prompt several generation seeds
    prompts = {(o[0], o[1]) for o in obs}
    seeds = {o[:3] for o in obs}
    components = []
    if len(prompts) > len(videos):
        components.append(("prompt", lambda o: o[:2]))
    if len(seeds) > len(prompts):
        components.append(("seed", lambda o: o[:3]))
    notes = []
    if len(prompts) == len(videos):
        notes.append("one prompt per video: the prompt's variance is inside the video's")
    names, colnames, mats = [], [], []
    for name, key in components:
        names.append(name)
        colnames.append([])
        mats.append([])
        for g in range(len(videos)):
            keys = [key(o) for o, gi in zip(obs, groups) if gi == g]
            levels = sorted(set(keys), key=str)
            colnames[-1].append([str(lv) for lv in levels])
            mats[-1].append(np.array([[float(k == lv) for lv in levels] for k in keys]))
    description = ("MixedLM REML: sum-coded " + " + ".join(FACTORS[f] for f in factors)
                   + (" + two-way interactions" if len(factors) > 1 else "") + "; random intercept per video"
                   + "".join(f"; variance component per {n} within {'video' if n == 'prompt' else 'prompt'}"
                             for n in names) + "; Wald z CI and p")
    result, failures = None, []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = MixedLM(y, x, groups, exog_re=np.ones((len(y), 1)),  # the random intercept per video
                        exog_vc=VCSpec(names, colnames, mats) if names else None)
        for method in OPTIMISERS:  # statsmodels' own list moves on only when one does not converge, not on errors
            try:
                result = model.fit(reml=True, method=[method])
                break
            except (np.linalg.LinAlgError, ValueError, ZeroDivisionError, OverflowError) as exc:
                failures.append(f"{method}: {type(exc).__name__}: {exc}")
    notes += list(dict.fromkeys(_warning_text(w.message) for w in caught))
    if result is None:
        return empty, notes + [f"mixed model failed ({'; '.join(failures)})"]
    if failures:
        notes.append(f"mixed model fitted by {method} ({'; '.join(failures)})")
    beta = np.asarray(result.fe_params, np.float64)
    cov = np.asarray(result.cov_params(), np.float64)[: len(beta), : len(beta)]
    z = float(norm.ppf(0.5 + confidence / 2))
    fitted = []
    for t in terms:
        contrast = t["weights"] @ x_cells
        estimate = float(contrast @ beta)
        se = math.sqrt(contrast @ cov @ contrast) if np.all(np.isfinite(cov)) and contrast @ cov @ contrast >= 0 \
            else math.nan
        if math.isfinite(se) and se > 0:
            p = float(math.erfc(abs(estimate) / se / math.sqrt(2)))
            fitted.append({"mixed_estimate": estimate, "wald_low": estimate - z * se, "wald_high": estimate + z * se,
                           "p_wald": p})
        else:
            fitted.append({"mixed_estimate": estimate})
    if any("wald_low" not in f for f in fitted):
        notes.append("no Wald CI: the fit's covariance is singular")
    parts = {"video": float(np.asarray(result.cov_re)[0, 0])}
    for name, v in zip(names, np.atleast_1d(np.asarray(result.vcomp, np.float64))):
        parts[name] = float(v)
    parts["residual"] = float(result.scale)
    total = sum(parts.values())
    variance = {k: (v, v / total if total > 0 else None) for k, v in parts.items()}
    if len(videos) < MIN_VIDEOS:
        notes.append(f"{len(videos)} videos: the video variance is a rough estimate")
    return {"terms": fitted, "variance": variance, "description": description}, notes


def _sum_coded(cells: list[tuple], shape: tuple[int, ...]) -> np.ndarray:
    """The fixed-effects design of each cell: intercept, each factor sum-coded (its last level −1 in every column),
    and the products of every two factors' columns."""
    k = len(shape)
    level_index = [{lv: n for n, lv in enumerate(dict.fromkeys(c[i] for c in cells))} for i in range(k)]
    coded = []
    for i, size in enumerate(shape):
        code = np.vstack([np.eye(size - 1), -np.ones(size - 1)])
        coded.append(code[[level_index[i][c[i]] for c in cells]])
    columns = [np.ones((len(cells), 1)), *coded]
    for i, j in itertools.combinations(range(k), 2):
        columns.append(np.einsum("na,nb->nab", coded[i], coded[j]).reshape(len(cells), -1))
    return np.hstack(columns)


# --------------------------------------------------------------------------------------------------
# Removals: compare's paired rows, relabelled.

def _removal_rows(comparisons: pa.Table, settings_of: dict[str, dict]) -> list[dict]:
    """compare's rows of each removal variant against a paper-method baseline, as effects rows."""
    paper = (PAPER_METHOD["qk"], PAPER_METHOD["v"], PAPER_METHOD["debias"])
    out = []
    for r in comparisons.to_pylist():
        settings = settings_of.get(r["sweep"], {})
        variant, base = settings.get(r["variant"]), settings.get(r["baseline"])
        if variant is None or base is None or base["method"] != paper or variant["method"] not in REMOVALS:
            continue
        out.append({
            "sweep": r["sweep"], "setting": _setting_label(base["hyper"]), "subset": REMOVAL_SUBSET, "kind": "removal",
            "factor": "removal", "term": REMOVALS[variant["method"]], "metric": r["metric"],
            "checkpoint": r["checkpoint"], "estimate": r["mean_difference"], "ci_low": r["ci_low"],
            "ci_high": r["ci_high"], "ci_method": r["ci_method"], "ci_note": r["ci_note"],
            "confidence": r["confidence"], "n_boot": r["n_boot"], "method": r["test"] or TEST, "p": r["p"],
            "p_holm": r["p_holm"], "family_size": r["family_size"], "n_videos": r["n_videos"],
            "n_units": r["n_units"], "n_variants": 2,
            "note": f"compare's row: {r['variant']} − {r['baseline']} (p_holm: Holm over compare's rows)",
            "variant": r["variant"], "baseline": r["baseline"],
            "code_version": r["code_version"], "created_at": r["created_at"]})
    return out


# --------------------------------------------------------------------------------------------------
# Small helpers.

def _at(axis: int, level: int, ndim: int) -> tuple:
    return tuple(level if a == axis else slice(None) for a in range(ndim))


def _at2(i: int, li: int, j: int, lj: int, ndim: int) -> tuple:
    return tuple(li if a == i else lj if a == j else slice(None) for a in range(ndim))


def _ordered(found: set, factor: str) -> list[str]:
    """A factor's levels, the paper's first (the reference of every contrast), then vocabulary order."""
    known = LEVEL_ORDER[factor]
    first = [PAPER_METHOD[factor]] if PAPER_METHOD[factor] in found else []
    return first + sorted((lv for lv in found if lv not in first),
                          key=lambda lv: (known.index(lv) if lv in known else len(known), str(lv)))


def _setting_label(hyper: dict) -> str:
    """A variant's hyperparameter setting as text ('' when the sweep has no hyperparameter axes)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(hyper.items()))


def _warning_text(message: Warning | str) -> str:
    """A warning as one short line (statsmodels' convergence warnings run to paragraphs)."""
    text = " ".join(str(message).split())
    return "mixed model: " + (text if len(text) <= 160 else text[:157] + "...")
