"""Paired comparisons against a baseline (`sweep.report.compare`): zero differences, planted effects, too few
videos for a CI, Holm over every comparison of a metric and the smallest p_holm the design allows, pairing over
shared units, the base model and hyperparameter groups, and a sweep without the paper's method."""

import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers.reports import NONE, PAPER, TWO_VARIANTS
from helpers.sweeps import make_spec, run_fake
from sweep.report import BaselineError, compare, holm, report, summarize
from sweep.report.compare import design_limits
from sweep.report.stats import PAIRED_CI_METHOD, TEST
from sweep.results.tables import load
from sweep.run.plan import BASE_VARIANT


def unit_noise(g, scale: float = 0.05) -> float:
    """A fixed value per unit (video, prompt), the same for every variant: what pairing cancels."""
    return scale * (zlib.crc32(f"{g.columns['video']}/{g.prompt}".encode()) % 100) / 100


def rows_of(comparisons: pa.Table, metric: str = "text_similarity") -> list[dict]:
    return [r for r in comparisons.to_pylist() if r["metric"] == metric]


def test_a_variant_identical_to_the_baseline_differs_by_zero_with_p_one(tmp_path):
    spec = make_spec(tmp_path, n_videos=6, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec, metric=lambda g: 0.3 + unit_noise(g))
    (r,) = rows_of(compare(load(spec.storage), n_boot=200))
    assert (r["baseline"], r["variant"], r["checkpoint"]) == (PAPER, NONE, 20)  # default: the paper's method
    assert r["mean_difference"] == 0 and r["p"] == 1 and r["p_holm"] == 1
    assert (r["ci_low"], r["ci_high"]) == (0, 0) and r["n_units"] == 12 and r["n_videos"] == 6


def test_a_planted_effect_over_8_videos_is_detected(tmp_path):
    """+0.1 on every unit (plus small independent noise). With 8 videos the smallest two-sided exact sign-flip p
    is 2/2^8 = 0.0078, so p_holm < 0.01 needs a family of one comparison: one variant, one checkpoint."""
    spec = make_spec(tmp_path, n_videos=8, axes=TWO_VARIANTS, checkpoints=[20])
    rng = np.random.default_rng(0)
    noise = {}

    def metric(g):
        key = (g.variant, g.columns["video"], g.prompt)
        noise.setdefault(key, rng.normal(0, 0.01))
        return 0.3 + unit_noise(g) + noise[key] + (0.1 if g.variant == NONE else 0.0)

    run_fake(spec, metric=metric)
    (r,) = rows_of(compare(load(spec.storage), n_boot=2000))
    assert r["p_holm"] < 0.01 and r["family_size"] == 1 and (r["test"], r["ci_method"]) == (TEST, PAIRED_CI_METHOD)
    assert r["p"] == r["p_sign_flip"] == r["min_p"] == r["min_p_holm"] == 2 / 256  # every video positive
    assert r["p_bootstrap"] <= r["p"] and r["p_wilcoxon"] == pytest.approx(2 / 256)  # exact Wilcoxon agrees here
    assert r["ci_low"] < 0.1 < r["ci_high"] and r["ci_low"] > 0
    assert r["mean_difference"] == pytest.approx(0.1, abs=0.01)


def test_three_videos_give_no_ci(tmp_path, capsys):
    spec = make_spec(tmp_path, n_videos=3, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec, metric=lambda g: 0.3 + unit_noise(g) + (0.1 if g.variant == NONE else 0))
    (r,) = rows_of(compare(load(spec.storage), n_boot=200))
    assert r["ci_low"] is None and r["ci_high"] is None and r["ci_note"] == "n too small: 3 videos < 6"
    assert r["p"] >= 2 / 8 == r["min_p"]  # p stays: the sign-flip test's smallest with 3 videos
    assert r["mean_difference"] == pytest.approx(0.1) and r["n_videos"] == 3
    report(Path(spec.storage) / spec.name, tmp_path / "out", n_boot=200)
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith(f"| {NONE}") and "text_similarity" in x)
    assert "n too small" in line and "[" not in line


def test_holm_runs_over_every_comparison_of_one_metric(tmp_path):
    spec = make_spec(tmp_path, n_videos=6)  # 3 variants × 2 checkpoints against the paper's method
    run_fake(spec, metric=lambda g: 0.3 + unit_noise(g) + {PAPER: 0, NONE: 0.05}.get(g.variant, -0.02 * len(g.prompt)))
    comparisons = compare(load(spec.storage), n_boot=100)
    for metric in ("text_similarity", "motion_fidelity"):
        family = rows_of(comparisons, metric)
        assert len(family) == 6 and {r["family_size"] for r in family} == {6}
        assert [r["p_holm"] for r in family] == pytest.approx(holm([r["p"] for r in family]))
        assert {r["min_p_holm"] for r in family} == {min(1.0, 6 * 2 / 2 ** 6)}  # 6 comparisons of 6 videos


def test_the_design_limit_is_said_per_sweep(tmp_path):
    """8 videos, 6 comparisons per metric: p_holm cannot go below 6 × 2/256 = 0.047, so * is possible, ** is not;
    with 6 videos not even * is (6 × 2/64 = 0.19)."""
    for name, n_videos in (("eight", 8), ("six", 6)):
        spec = make_spec(tmp_path, name=name, n_videos=n_videos)
        run_fake(spec, metric=lambda g: 0.3 + unit_noise(g) + {PAPER: 0, NONE: 0.05}.get(g.variant, 0.02))
    comparisons = compare(load(tmp_path / "results"), n_boot=999)  # (with 200, the bootstrap's 2/201 would bind)
    assert design_limits(comparisons) == {
        "eight": "eight: With 8 videos and 6 comparisons per metric, p_holm cannot go below 0.0469: ** (p_holm < "
                 "0.01) is out of reach, so a missing ** is the design's limit.",
        "six": "six: With 6 videos and 6 comparisons per metric, p_holm cannot go below 0.188: no comparison can be "
               "marked *, so a missing star is the design's limit, not an absent effect."}
    eight = [r for r in comparisons.to_pylist() if r["sweep"] == "eight"]
    assert {r["min_p_holm"] for r in eight} == {6 * 2 / 256} and all(r["p_holm"] >= 6 * 2 / 256 for r in eight)
    assert design_limits(comparisons.filter(pa.compute.equal(comparisons["sweep"], "six")))["six"].startswith("With 6")


def test_pairing_is_over_shared_units_and_error_rows_never_enter(tmp_path):
    spec = make_spec(tmp_path, n_videos=5, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec, metric=lambda g: 0.3 + unit_noise(g) + (0.1 if g.variant == NONE else 0),
             fail=lambda g: g.variant == NONE and g.prompt == "p0a")
    table = load(spec.storage)
    (r,) = rows_of(compare(table, n_boot=200))
    assert (r["n_units"], r["n_unmatched"], r["n_videos"]) == (9, 1, 5)
    assert r["mean_difference"] == pytest.approx(0.1)
    # an error row carrying a (bogus) value, as an old writer might have left: still ignored
    bogus = table.filter(pa.compute.equal(table["status"], "error"))
    bogus = bogus.set_column(bogus.schema.get_field_index("text_similarity"), "text_similarity",
                             pa.array([100.0] * bogus.num_rows))
    (again,) = rows_of(compare(pa.concat_tables([table, bogus]), n_boot=200))
    assert again["mean_difference"] == pytest.approx(0.1) and again["n_units"] == 9


def test_paired_test_sees_an_effect_that_video_variance_hides(tmp_path):
    """Videos differ a lot (0 … 0.7); within each, the variant is 0.03 better: the per-variant CIs overlap,
    the paired comparison detects it."""
    spec = make_spec(tmp_path, n_videos=8, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec, metric=lambda g: 0.1 * int(g.columns["video"][1:]) + unit_noise(g, 0.01)
             + (0.03 if g.variant == NONE else 0))
    table = load(spec.storage)
    summary = {r["variant"]: r for r in summarize(table, n_boot=500).to_pylist()}
    assert summary[PAPER]["text_similarity_low"] < summary[NONE]["text_similarity_mean"] < \
        summary[PAPER]["text_similarity_high"]  # unpaired: indistinguishable
    (r,) = rows_of(compare(table, n_boot=2000))
    assert r["p_holm"] < 0.01 and r["ci_low"] > 0 and r["mean_difference"] == pytest.approx(0.03)


def test_the_base_model_matches_every_checkpoint_and_hyperparameter_groups_get_their_baseline(tmp_path):
    spec = make_spec(tmp_path, n_videos=2, axes={"qk": ["1d", "2d"], "remove": ["none", "both"],
                                                 "inversion.lr": [0.01, 0.03]})
    run_fake(spec)
    comparisons = rows_of(compare(load(spec.storage), n_boot=0))
    pairs = {(r["variant"], r["baseline"], r["variant_checkpoint"], r["baseline_checkpoint"]) for r in comparisons}
    p01, p03 = f"{PAPER} inversion.lr=0.01", f"{PAPER} inversion.lr=0.03"
    for step in (10, 20):
        assert ("qk=2d v=2d debias=difference inversion.lr=0.01", p01, step, step) in pairs
        assert ("qk=2d v=2d debias=difference inversion.lr=0.03", p03, step, step) in pairs
        assert (BASE_VARIANT, p01, 0, step) in pairs and (BASE_VARIANT, p03, 0, step) in pairs
    assert len(pairs) == 8  # each qk=2d only against its own lr; the paper variants are baselines, not compared
    assert all(r["n_units"] == 4 for r in comparisons)
    with pytest.raises(BaselineError, match="has no ok samples"):
        compare(load(spec.storage), baseline="qk=3d")


def test_without_the_paper_method_the_report_says_so_and_baseline_flag_works(tmp_path, capsys):
    from sweep.cli import main

    spec = make_spec(tmp_path, axes={"qk": ["2d"], "remove": ["none", "both"]})
    run_fake(spec)
    with pytest.raises(BaselineError, match="no variant with the paper's method"):
        compare(load(spec.storage))
    folder = str(Path(spec.storage) / spec.name)
    assert main(["report", folder, "--out", str(tmp_path / "a"), "--n-boot", "50"]) == 0
    assert "no paired comparisons" in capsys.readouterr().out
    assert main(["report", folder, "--out", str(tmp_path / "b"), "--baseline", BASE_VARIANT, "--n-boot", "50"]) == 0
    assert f"Baseline: `{BASE_VARIANT}` (given)" in capsys.readouterr().out
    assert set(load(folder, "comparisons")["baseline"].to_pylist()) == {BASE_VARIANT}
    assert main(["report", folder, "--baseline", "qk=9d"]) == 2
    assert "baseline 'qk=9d' has no ok samples" in capsys.readouterr().err


def test_paired_comparison_against_the_base_model(tmp_path):
    spec = make_spec(tmp_path)
    value = lambda g: 0.3 if g.variant == BASE_VARIANT else 0.5  # noqa: E731
    run_fake(spec, metric=value)
    comparisons = compare(load(spec.storage), baseline=BASE_VARIANT, n_boot=200)
    assert set(comparisons["baseline"].to_pylist()) == {BASE_VARIANT}
    rows = [r for r in comparisons.to_pylist() if r["metric"] == "text_similarity"]
    assert {(r["variant"], r["checkpoint"]) for r in rows} == {
        (v, c) for v in ("qk=1d v=2d debias=difference", "qk=1d v=2d debias=none", "qk=1d v=off") for c in (10, 20)}
    for r in rows:
        assert r["mean_difference"] == pytest.approx(0.2)
        assert r["n_units"] == 6  # 3 videos × 2 prompts; base's single checkpoint 0 matches every checkpoint
        assert r["baseline_checkpoint"] == 0
