"""The factorial effects (`sweep.report.effects`): exact contrasts of planted cell means, the test over videos'
type-I error and power in a seeded simulation (and the mixed model's Wald p going anti-conservative where the
effect differs between videos), variance shares recovered, degenerate sweeps explained in notes, the removals
copied from compare, and `report` writing the table, its summary.md section and its page."""

import itertools
import re
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers.sweeps import make_spec, run_fake
from sweep.report import compare, effects, report
from sweep.report.effects import EFFECTS_TEST, contrasts
from sweep.report.stats import MIN_VIDEOS, paired_test
from sweep.results.schemas import EFFECTS_SCHEMA
from sweep.results.tables import load

FACTORS = {"qk": ("1d", "2d"), "v": ("2d", "1d"), "debias": ("difference", "normalize", "none")}
CELLS = list(itertools.product(*FACTORS.values()))  # the order of `contrasts`' weights
IS_2D_MQK = np.array([qk == "2d" for qk, _, _ in CELLS], float)


def grid_table(y: np.ndarray, cells=CELLS, metric: str = "motion_fidelity") -> pa.Table:
    """Samples rows of the both-embeddings factorial: y[video, prompt, seed, cell] (ok rows, one checkpoint)."""
    n_videos, n_prompts, n_seeds, n_cells = y.shape
    vi, pi, si, ci = (a.ravel() for a in np.meshgrid(*map(np.arange, y.shape), indexing="ij"))
    cell = [cells[c] for c in ci]
    n = len(ci)
    return pa.table({
        "sweep": ["s"] * n, "variant": [f"qk={q} v={v} debias={d}" for q, v, d in cell],
        "video": [f"v{i}" for i in vi], "prompt": [f"p{i}-{j}" for i, j in zip(vi, pi)],
        "generation_seed": si.astype(np.int64), "checkpoint_step_applied": np.full(n, 10, np.int64),
        "qk_applied": [c[0] for c in cell], "v_applied": [c[1] for c in cell], "debias_applied": [c[2] for c in cell],
        "status": ["ok"] * n, metric: y.ravel(), "preset": ["toy"] * n, "pretrained_metrics": [True] * n})


def simulate(rng, reps: int, n_videos: int, n_prompts: int, effect: float = 0.0, spread: float = 0.0) -> np.ndarray:
    """y[rep, video, prompt, cell]: a video intercept (sd 0.3), a prompt intercept (sd 0.1), noise (sd 0.1) and
    `effect` on 2D MQK, which varies between videos with sd `spread` (a video × MQK design interaction)."""
    return (rng.normal(0, 0.3, (reps, n_videos, 1, 1)) + rng.normal(0, 0.1, (reps, n_videos, n_prompts, 1))
            + rng.normal(0, 0.1, (reps, n_videos, n_prompts, len(CELLS)))
            + (effect + rng.normal(0, spread, (reps, n_videos, 1, 1))) * IS_2D_MQK)


def video_ps(y: np.ndarray, terms=slice(None), n_boot: int = 999) -> tuple[np.ndarray, np.ndarray]:
    """What `effects` computes for each term, the contrasts vectorised over replicates: (p[rep, term],
    estimate[rep, term]) for the terms (indices into `contrasts`' list) asked for."""
    weights = np.array([t["weights"] for t in contrasts(tuple(FACTORS), FACTORS)]).T[:, terms]  # cells × terms
    per_video = (y @ weights).mean(axis=2)  # rep × video × term
    p = np.array([[paired_test(per_video[r, :, t], n_boot, seed=r).p for t in range(per_video.shape[2])]
                  for r in range(len(y))])
    return p, per_video.mean(axis=1)


def rows(found, metric="motion_fidelity", **match) -> dict[str, dict]:
    return {r["term"]: r for r in found.table.to_pylist()
            if r["metric"] == metric and all(r[k] == v for k, v in match.items())}


# --------------------------------------------------------------------------------------------------
# The numbers.

def test_planted_cell_means_give_the_exact_contrasts():
    """y = unit intercept + 0.3 (2D MQK) + 0.2 (debias none) − 0.12 (both) + small noise. A main effect averages
    over the other factors' levels: MQK design 2d − 1d = 0.3 − 0.12/3, debias none − difference = 0.2 − 0.12/2; the
    interaction (2d − 1d) × (none − difference) = −0.12; every other term 0 (up to the noise). The mixed model's
    estimate of each contrast equals it on this balanced design."""
    rng = np.random.default_rng(3)
    cells = np.array(CELLS)
    mqk, none = (cells[:, 0] == "2d").astype(float), (cells[:, 2] == "none").astype(float)
    y = (rng.normal(0, 0.3, (6, 2, 1, 1)) + 0.3 * mqk + 0.2 * none - 0.12 * mqk * none
         + rng.normal(0, 1e-4, (6, 2, 1, len(CELLS))))
    found = rows(effects(grid_table(y), metrics=["motion_fidelity"], n_boot=500))
    expected = {"MQK design: 2d − 1d": 0.3 - 0.12 / 3, "debias: none − difference": 0.2 - 0.12 / 2,
                "MQK design × debias: (2d − 1d) × (none − difference)": -0.12}
    contrast_rows = {t: r for t, r in found.items() if r["kind"] in ("main", "interaction")}
    assert len(contrast_rows) == 1 + 1 + 2 + 1 + 2 + 2  # mains (MQK, MV, debias ×2), MQK×MV, MQK×debias, MV×debias
    for term, r in contrast_rows.items():
        assert r["estimate"] == pytest.approx(expected.get(term, 0.0), abs=2e-4), term
        assert r["mixed_estimate"] == pytest.approx(r["estimate"], abs=1e-9), term
        assert (r["n_videos"], r["n_units"], r["n_variants"], r["subset"]) == (6, 12, 12, "MQK and MV")
        assert r["method"] == EFFECTS_TEST and r["ci_low"] is not None  # 6 videos: a CI
    mqk = found["MQK design: 2d − 1d"]
    assert mqk["p"] == 2 / 64 and mqk["ci_low"] > 0  # every video agrees: the smallest p of 6 videos, CI above 0
    assert found["MQK design: 2d − 1d"]["wald_low"] < 0.26 < found["MQK design: 2d − 1d"]["wald_high"]


def test_the_test_over_videos_holds_its_level_and_recovers_a_planted_effect():
    """Seeded simulation, 8 videos × 2 prompts × the 12 cells, 400 replicates per scenario. Null: the 9 terms reject
    at p < 0.05 in 2.5–6 % of the 3600 tests (the exact sign-flip part alone: at most 6/128 = 4.7 %), each term in
    at most 8 %, also when the MQK design's effect differs between videos around a mean of 0 (sd 0.2). Planted +0.1
    on 2D MQK: recovered within 0.005 on average and found (p < 0.05) in at least 95 % of replicates."""
    rng = np.random.default_rng(0)
    null_p, null_est = video_ps(simulate(rng, 400, 8, 2))
    assert 0.025 <= (null_p < 0.05).mean() <= 0.06 and ((null_p < 0.05).mean(axis=0) <= 0.08).all()
    assert np.abs(null_est.mean(axis=0)).max() < 0.005
    varying_p, _ = video_ps(simulate(rng, 400, 8, 2, spread=0.2), terms=[0])  # term 0: MQK design 2d − 1d
    assert (varying_p < 0.05).mean() <= 0.06
    planted_p, planted_est = video_ps(simulate(rng, 400, 8, 2, effect=0.1), terms=[0, 1])
    assert planted_est[:, 0].mean() == pytest.approx(0.1, abs=0.005) and (planted_p[:, 0] < 0.05).mean() >= 0.95
    assert (planted_p[:, 1] < 0.05).mean() <= 0.08  # MV design: still null


def test_p_is_the_test_over_videos_while_the_wald_p_goes_anti_conservative_when_the_effect_varies():
    """The mixed model (random intercept per video) takes the MQK design's effect as the same in every video; when
    it differs between videos (sd 0.2 around a mean of 0) its Wald p rejects far too often (measured: 63 % of 200
    replicates at 8 videos), while the test over videos, the table's `p`, keeps its level. 30 replicates here."""
    y = simulate(np.random.default_rng(1), 30, 8, 2, spread=0.2)
    mqk_weights = contrasts(tuple(FACTORS), FACTORS)[0]["weights"]
    wald, perm = [], []
    for rep in range(len(y)):
        r = rows(effects(grid_table(y[rep][:, :, None, :]), metrics=["motion_fidelity"], n_boot=999))[
            "MQK design: 2d − 1d"]
        assert r["p"] == paired_test((y[rep] @ mqk_weights).mean(axis=1), 999).p  # the per-video contrasts' test
        wald.append(r["p_wald"])
        perm.append(r["p"])
    assert np.mean(np.array(wald) < 0.05) >= 0.3 and np.mean(np.array(perm) < 0.05) <= 0.15


def test_the_mixed_model_recovers_the_variance_shares():
    """30 videos × 3 prompts × 2 generation seeds × 12 cells with planted variances video 0.09, prompt 0.0225,
    seed 0.01 (a seed's shift shared by every variant), residual 0.01: shares 0.68 / 0.17 / 0.075 / 0.075."""
    rng = np.random.default_rng(2)
    y = (rng.normal(0, 0.3, (30, 1, 1, 1)) + rng.normal(0, 0.15, (30, 3, 1, 1)) + rng.normal(0, 0.1, (30, 3, 2, 1))
         + rng.normal(0, 0.1, (30, 3, 2, len(CELLS))))
    found = rows(effects(grid_table(y), metrics=["motion_fidelity"], n_boot=0), kind="variance")
    total = 0.09 + 0.0225 + 0.01 + 0.01
    planted = {"video": 0.09, "prompt": 0.0225, "seed": 0.01, "residual": 0.01}
    assert set(found) == {f"variance share: {c}" for c in planted}
    for component, variance in planted.items():
        r = found[f"variance share: {component}"]
        assert r["estimate"] == pytest.approx(variance / total, abs=0.12 if component == "video" else 0.04), component
        assert r["variance"] == pytest.approx(variance, rel=0.5), component
    assert sum(r["estimate"] for r in found.values()) == pytest.approx(1.0)
    assert "variance component per prompt within video" in found["variance share: video"]["method"]


# --------------------------------------------------------------------------------------------------
# Degenerate sweeps.

def test_a_factor_with_one_level_gets_no_row_and_a_note():
    one_mqk = [c for c in CELLS if c[0] == "1d"]
    y = np.random.default_rng(4).normal(0.5, 0.1, (5, 1, 1, len(one_mqk)))
    found = effects(grid_table(y, cells=one_mqk), metrics=["motion_fidelity"], n_boot=0)
    assert "effects, sweep 's', MQK and MV: MQK design has one level (1d): no rows for it" in found.notes
    terms = {r["term"] for r in found.table.to_pylist()}
    assert not any("MQK design" in t for t in terms) and "MV design × debias: (1d − 2d) × (none − difference)" in terms


def test_an_incomplete_factorial_is_not_fitted_and_a_unit_missing_a_cell_is_dropped():
    y = np.random.default_rng(5).normal(0.5, 0.1, (5, 2, 1, len(CELLS)))
    table = grid_table(y)
    missing_cell = np.array([v == "qk=2d v=1d debias=none" for v in table["variant"].to_pylist()])
    found = effects(table.filter(pa.array(~missing_cell)), metrics=["motion_fidelity"], n_boot=0)
    assert found.table.num_rows == 0
    assert found.notes == ["effects, sweep 's', MQK and MV at step 10 (motion_fidelity): no sample of qk=2d v=1d "
                           "debias=none: the factorial is incomplete, no fit"]
    one_unit = missing_cell & (np.array(table["prompt"].to_pylist()) == "p0-0")  # one unit lacks one cell
    r = rows(effects(table.filter(pa.array(~one_unit)), metrics=["motion_fidelity"], n_boot=0))["MV design: 1d − 2d"]
    assert (r["n_units"], r["n_videos"]) == (9, 5) and r["note"].startswith("1 unit without every cell dropped")


def test_two_videos_fit_quietly_and_say_what_they_cannot_tell():
    """The toy demo's shape: 2 videos, one prompt each. No CI (n too small), p at best 0.5, the mixed model's
    warnings in the note column, not on the terminal."""
    y = np.random.default_rng(6).normal(0.5, 0.3, (2, 1, 1, len(CELLS))) + 0.5 * IS_2D_MQK
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        found = rows(effects(grid_table(y), metrics=["motion_fidelity"], n_boot=999))
    r = found["MQK design: 2d − 1d"]
    assert r["ci_low"] is None and r["ci_note"] == f"n too small: 2 videos < {MIN_VIDEOS}" and r["p"] >= 0.5
    assert "one prompt per video" in r["note"] and "2 videos: the video variance is a rough estimate" in r["note"]
    assert r["p_wald"] is not None and set(found) >= {"variance share: video", "variance share: residual"}


def test_a_constant_metric_has_zero_effects_and_no_mixed_model():
    found = rows(effects(grid_table(np.full((MIN_VIDEOS, 1, 1, len(CELLS)), 0.9)), metrics=["motion_fidelity"],
                         n_boot=100))
    r = found["debias: none − difference"]
    assert (r["estimate"], r["p"], r["ci_low"], r["ci_high"]) == (0.0, 1.0, 0.0, 0.0)
    assert r["mixed_estimate"] is None and r["note"] == "mixed model not fitted: every value is the same"
    assert not any(t.startswith("variance") for t in found)


# --------------------------------------------------------------------------------------------------
# The removals, and the report.

def test_removals_are_compares_rows_relabelled(tmp_path):
    spec = make_spec(tmp_path, n_videos=6, axes={"qk": ["1d"], "v": ["2d"], "remove": ["none", "qk", "v", "both"],
                                                 "debias": ["difference"]}, checkpoints=[20])
    level = {"qk=1d v=2d debias=difference": 0.8, "qk=off v=2d debias=difference": 0.5, "qk=1d v=off": 0.6,
             "qk=off v=off": 0.1}
    run_fake(spec, metric=lambda g: level[g.variant] + 0.01 * int(g.columns["video"][1:]))
    table = load(spec.storage)
    comparisons = compare(table, n_boot=200)
    found = rows(effects(table, comparisons, n_boot=200), metric="text_similarity", kind="removal")
    assert {t: round(r["estimate"], 6) for t, r in found.items()} == {
        "remove: MQK": -0.3, "remove: MV": -0.2, "remove: both (the base model)": -0.7}
    by_variant = {r["variant"]: r for r in comparisons.to_pylist() if r["metric"] == "text_similarity"}
    r = found["remove: MV"]
    assert (r["p"], r["p_holm"], r["ci_low"], r["method"]) == (
        by_variant["qk=1d v=off"]["p"], by_variant["qk=1d v=off"]["p_holm"], by_variant["qk=1d v=off"]["ci_low"],
        by_variant["qk=1d v=off"]["test"])
    assert r["checkpoint"] == 20 and r["n_videos"] == 6 and r["subset"].startswith("removals")
    assert r["pretrained_metrics"] is False and r["preset"] == "tiny"  # run_fake's rows: random-weight backbones


def test_report_writes_the_effects_table_its_section_and_its_plots(tmp_path):
    spec = make_spec(tmp_path, n_videos=3, axes={"qk": ["1d", "2d"], "v": ["2d"], "remove": ["none", "v"],
                                                 "debias": ["difference", "none"]}, checkpoints=(10, 20))
    run_fake(spec, metric=lambda g: 0.4 + 0.2 * (g.variant.startswith("qk=2d")) + 0.01 * int(g.columns["video"][1:]))
    sweep = Path(spec.storage) / spec.name
    report(sweep, tmp_path / "out", n_boot=50, echo=False)
    table = load(sweep, table="effects")
    assert table.column_names[:len(EFFECTS_SCHEMA)] == EFFECTS_SCHEMA.names
    mqk = [r for r in table.to_pylist() if r["term"] == "MQK design: 2d − 1d" and r["metric"] == "text_similarity"]
    assert {(r["subset"], r["checkpoint"]) for r in mqk} == {(s, c) for s in ("MQK and MV", "MV removed")
                                                             for c in (10, 20)}
    assert all(r["estimate"] == pytest.approx(0.2) and r["n_videos"] == 3 and r["pretrained_metrics"] is False
               for r in mqk)
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "## Factorial effects" in md and "| MQK and MV" in md and "+0.2000" in md
    assert "MV design has one level (2d): no rows for it" in md  # in the notes
    page = (tmp_path / "out" / "report" / "index.html").read_text()
    assert 'id="effects-table"' in page and "Effects on Text similarity" in page
    nav = page[page.index("<nav>"):page.index("</nav>")]
    assert '<a href="#effects">Effects</a>' in nav
    for target in re.findall(r'href="#([^"]+)"', nav):  # every link of the bar lands on the page
        assert f'id="{target}"' in page, target
    (build,) = (tmp_path / "out" / "report").glob("build-*")
    assert (build / "plots" / "effects-text_similarity.svg").exists()
    assert (build / "plots" / "effects-variance.svg").exists()
