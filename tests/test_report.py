"""The report's statistics: paired comparisons, Holm, CIs over videos, FID references, best marks, rendering."""

import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sweep.plan import BASE_VARIANT
from sweep.report import (BaselineError, best_rows, compare, holm, paper_table, reference_frames, report, summarize,
                          summary_notes)
from sweep.tables import COMPARISONS_SCHEMA, load
from sweep.store import Store
from test_results import DIM, make_spec, run_fake, write_reference

PAPER = "qk=1d v=2d debias=difference"
NONE = "qk=1d v=2d debias=none"
TWO_VARIANTS = {"qk": ["1d"], "v": ["2d"], "debias": ["difference", "none"]}  # the baseline and one other


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
    """+0.1 on every unit (plus small independent noise). With 8 videos the smallest two-sided exact Wilcoxon p
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
    assert r["p_holm"] < 0.01 and r["family_size"] == 1 and r["test"].startswith("Wilcoxon")
    assert r["ci_low"] < 0.1 < r["ci_high"] and r["ci_low"] > 0
    assert r["mean_difference"] == pytest.approx(0.1, abs=0.01)


def test_three_videos_give_no_ci(tmp_path, capsys):
    spec = make_spec(tmp_path, n_videos=3, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec, metric=lambda g: 0.3 + unit_noise(g) + (0.1 if g.variant == NONE else 0))
    (r,) = rows_of(compare(load(spec.storage), n_boot=200))
    assert r["ci_low"] is None and r["ci_high"] is None and r["ci_note"] == "n too small: 3 videos < 5"
    assert r["mean_difference"] == pytest.approx(0.1) and r["n_videos"] == 3
    report(Path(spec.storage) / spec.name, tmp_path / "out", n_boot=200)
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if x.startswith(f"| {NONE}") and "text_similarity" in x)
    assert "n too small" in line and "[" not in line


def test_holm_equals_a_hand_computed_example():
    # sorted: 0.005×4 = 0.02, 0.01×3 = 0.03, 0.03×2 = 0.06, 0.04×1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_holm_runs_over_every_comparison_of_one_metric(tmp_path):
    spec = make_spec(tmp_path, n_videos=6)  # 3 variants × 2 checkpoints against the paper's method
    run_fake(spec, metric=lambda g: 0.3 + unit_noise(g) + {PAPER: 0, NONE: 0.05}.get(g.variant, -0.02 * len(g.prompt)))
    comparisons = compare(load(spec.storage), n_boot=100)
    for metric in ("text_similarity", "motion_fidelity"):
        family = rows_of(comparisons, metric)
        assert len(family) == 6 and {r["family_size"] for r in family} == {6}
        assert [r["p_holm"] for r in family] == pytest.approx(holm([r["p"] for r in family]))


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


def test_best_marks_respect_each_metrics_direction():
    assert best_rows([0.2, 0.1, None], "fid") == {1}
    assert best_rows([0.2, 0.1, None], "appearance_leakage") == {1}
    assert best_rows([0.2, 0.1, 0.2], "text_similarity") == {0, 2}  # ties all count
    assert best_rows([None], "kid") == set()
    summary = pa.table({"variant": ["a", "b"], "checkpoint_step_applied": [20, 20],
                        "text_similarity_mean": [0.31, 0.29], "motion_fidelity_mean": [0.9, 0.95],
                        "fid": [600.0, 550.0], "fid_reliable": [True, False]})
    comparisons = pa.Table.from_pylist([
        {"sweep": "s", "baseline": "a", "variant": "b", "metric": "motion_fidelity", "checkpoint": 20, "p": 0.001,
         "p_holm": 0.004},
        {"sweep": "s", "baseline": "a", "variant": "b", "metric": "text_similarity", "checkpoint": 20, "p": 0.02,
         "p_holm": 0.04}], schema=COMPARISONS_SCHEMA)
    lines, legend = paper_table(summary, comparisons)
    assert [c.strip() for c in lines[0].split("|")[3:6]] == ["Text similarity ↑", "Motion fidelity ↑", "FID ↓"]
    a, b = (line.split("|")[1:-1] for line in lines[2:])
    assert a[0].strip() == "a (baseline)" and a[2].strip() == "**0.3100**" and a[4].strip() == "600.00"
    assert b[2].strip() == r"0.2900\*" and b[3].strip() == r"**0.9500**\*\*" and b[4].strip() == "**550.00†**"
    assert any("†" in x for x in legend) and any("no votes" in x for x in legend)
    lines, legend = paper_table(summary.append_column("user_preference", pa.array([0.35, 0.65])), comparisons)
    assert lines[0].split("|")[-2].strip() == "User preference ↑" and lines[3].split("|")[-2].strip() == "**0.6500**"
    assert not any("no votes" in x for x in legend)


# ----------------------------------------------------------------------------------------------- FID/KID
def test_fid_of_the_reference_frames_themselves_is_zero(tmp_path):
    spec = make_spec(tmp_path, n_videos=4, axes=TWO_VARIANTS, prompts="a", checkpoints=[20])
    refs = {f"v{i}": np.random.default_rng(i).normal(size=(8, DIM)) for i in range(4)}
    run_fake(spec, references=False, features=lambda g: refs[g.columns["video"]])
    store = Store(spec.storage)
    for vid, feats in refs.items():
        write_reference(store, spec.name, f"ddim-{vid}", vid, feats)
    summary = summarize(load(spec.storage), references=load(spec.storage, "references"), n_boot=0)
    for r in summary.to_pylist():
        # (KID's unbiased estimate of a set against itself is negative: it drops k(x, x) within a set only)
        assert r["fid"] == pytest.approx(0, abs=1e-6) and r["kid"] is not None
        assert (r["fid_n_frames"], r["fid_n_reference_frames"], r["fid_dim"], r["fid_reliable"]) == (32, 32, DIM, True)
        assert r["fid_reference"].endswith("4 videos, 32 frames")


def test_fid_with_fewer_frames_than_dimensions_is_marked_unreliable(tmp_path, capsys):
    dim = 32
    spec = make_spec(tmp_path, n_videos=2, axes=TWO_VARIANTS, checkpoints=[20])
    rng = np.random.default_rng(0)
    run_fake(spec, references=False, features=lambda g: rng.normal(size=(4, dim)))
    store = Store(spec.storage)
    for i in range(2):
        write_reference(store, spec.name, f"ddim-v{i}", f"v{i}", rng.normal(size=(8, dim)))
    summary = report(Path(spec.storage) / spec.name, tmp_path / "out", n_boot=0)
    assert summary["fid_reliable"].to_pylist() == [False, False] and summary["fid_dim"].to_pylist() == [dim, dim]
    printed = capsys.readouterr().out
    assert "† FID from fewer frames than feature dimensions" in printed and "| 16/16 " in printed


def test_feature_size_mismatches_are_clear_errors(tmp_path):
    spec = make_spec(tmp_path, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec, references=False)
    store = Store(spec.storage)
    write_reference(store, spec.name, "ddim-v0", "v0", np.zeros((8, DIM + 1)))
    table = load(spec.storage)
    with pytest.raises(ValueError, match=f"generated features are {DIM}-d but the reference frames' are {DIM + 1}-d"):
        summarize(table, references=load(spec.storage, "references"), n_boot=0)
    write_reference(store, spec.name, "ddim-v1", "v1", np.zeros((8, DIM)))
    with pytest.raises(ValueError, match="mixed sizes"):
        summarize(table, references=load(spec.storage, "references"), n_boot=0)
    with pytest.raises(ValueError, match="must come from the same FID backbone"):
        summarize(table, reference_features=np.zeros((10, DIM + 2)), n_boot=0)


def test_reference_set_wins_and_duplicates_or_failures_are_never_hidden(tmp_path):
    spec = make_spec(tmp_path, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec)  # the sweep's own reference videos: 3 × 8 frames
    store = Store(spec.storage)
    own, what = reference_frames(load(spec.storage, "references"), ["abl"], "clip:fake")
    assert own.shape == (24, DIM) and "own reference videos: 3 videos, 24 frames" in what
    for i in range(5):
        write_reference(store, spec.name, f"set-k/d{i}", f"d{i}", np.ones((10, DIM)) * i, source="reference_set",
                        content=f"c{i}", reference_set="/data/davis")
    feats, what = reference_frames(load(spec.storage, "references"), ["abl"], "clip:fake")
    assert feats.shape == (50, DIM) and what == "reference set /data/davis: 5 videos, 50 frames"
    assert reference_frames(load(spec.storage, "references"), ["abl"], "inception-v3-compat")[0] is None
    write_reference(store, spec.name, "set-k/d5", "d5", np.ones((10, DIM)), source="reference_set", content="c1")
    with pytest.raises(ValueError, match="'d1' and 'd5' hold the same frames"):
        reference_frames(load(spec.storage, "references"), ["abl"], "clip:fake")
    (Path(spec.storage) / spec.name / "references" / "part-ref-set-k-d5.parquet").unlink()
    # a failed reference set: FID is omitted with the reason, never computed against the sweep's own videos
    write_reference(store, spec.name, "set-z", None, np.zeros((2, DIM)), source="reference_set",
                    created_at="2025-01-01T00:00:00+00:00", status="error", error="reference set: disk gone")
    summary = summarize(load(spec.storage), references=load(spec.storage, "references"), n_boot=0)
    assert set(summary["fid"].to_pylist()) == {None}
    assert any("reference set's features failed (reference set: disk gone)" in n for n in summary_notes(summary))


def test_random_weight_backbones_are_named_in_the_first_line(tmp_path, capsys):
    spec = make_spec(tmp_path, axes=TWO_VARIANTS, checkpoints=[20])
    run_fake(spec)
    report(Path(spec.storage) / spec.name, tmp_path / "out", n_boot=0)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("# Summary: abl — RANDOM-WEIGHT METRIC BACKBONES") and "plumbing" in first
    assert (tmp_path / "out" / "summary.md").read_text().splitlines()[0] == first
