"""Summaries (`sweep.report.summary`) of sweeps without a model (tests/helpers/sweeps.py): means, CIs and errors,
missing values counted not averaged, FID/KID only against a reference and marked unreliable with too few frames,
feature sizes that do not match."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from helpers.reports import TWO_VARIANTS
from helpers.sweeps import DIM, make_spec, run_fake, write_reference
from sweep.report import report, summarize, summary_notes
from sweep.results.store import Store
from sweep.results.tables import load
from sweep.run.plan import BASE_VARIANT


def test_summarize_means_cis_errors(tmp_path):
    spec = make_spec(tmp_path, n_videos=6)  # 6: the fewest videos with a 95 % CI (stats.MIN_VIDEOS)
    # per video: v0 -> 0.2 ... v4 -> 0.6, v5 -> 0.4 (so the mean over videos is 0.4)
    value = lambda g: [0.2, 0.3, 0.4, 0.5, 0.6, 0.4][int(g.columns["video"][1:])]  # noqa: E731
    fail = lambda g: g.columns["video"] == "v2" and g.prompt == "p2a" and g.variant == "qk=1d v=off"  # noqa: E731
    run_fake(spec, fail=fail, metric=value)
    summary = summarize(load(spec.storage), references=load(spec.storage, "references"), n_boot=500)
    rows = {(r["variant"], r["checkpoint_step_applied"]): r for r in summary.to_pylist()}
    assert set(rows) == {("qk=1d v=2d debias=difference", 10), ("qk=1d v=2d debias=difference", 20),
                         ("qk=1d v=2d debias=none", 10), ("qk=1d v=2d debias=none", 20),
                         ("qk=1d v=off", 10), ("qk=1d v=off", 20), (BASE_VARIANT, 0)}
    r = rows[("qk=1d v=2d debias=difference", 10)]
    assert (r["n_samples"], r["n_ok"], r["n_errors"], r["n_videos"]) == (12, 12, 0, 6)
    assert r["text_similarity_mean"] == pytest.approx(0.4)
    assert r["text_similarity_low"] < 0.4 < r["text_similarity_high"]
    assert 0.2 <= r["text_similarity_low"] and r["text_similarity_high"] <= 0.6
    assert r["text_similarity_n"] == 12
    e = rows[("qk=1d v=off", 10)]
    assert (e["n_samples"], e["n_ok"], e["n_errors"], e["n_videos"]) == (12, 11, 1, 6)
    assert e["text_similarity_mean"] == pytest.approx(0.4)  # the error row is counted, not averaged
    assert e["text_similarity_n"] == 11
    # FID/KID against the reference videos' frames (6 videos × 8 frames), never the base model's samples
    assert r["fid"] is not None and r["kid"] is not None and r["fid_n_frames"] == 48
    assert r["fid_n_reference_frames"] == 48 and r["fid_dim"] == DIM and r["fid_reliable"] is True
    assert summary_notes(summary) == []


def test_summarize_missing_values_are_counted_not_averaged():
    t = pa.table({"variant": ["a"] * 4, "checkpoint_step_applied": [1] * 4, "video": ["x", "x", "y", "y"],
                  "status": ["ok", "ok", "ok", "error"], "text_similarity": [0.1, None, 0.3, None]})
    (r,) = summarize(t, metrics=["text_similarity"]).to_pylist()
    assert (r["n_samples"], r["n_ok"], r["n_errors"], r["text_similarity_n"]) == (4, 3, 1, 2)
    assert r["text_similarity_mean"] == pytest.approx(0.2)
    assert "fid" not in r  # no feature column: no FID columns


def test_fid_needs_a_reference(tmp_path):
    spec = make_spec(tmp_path, axes={"remove": ["none"]})
    run_fake(spec, references=False)
    table = load(spec.storage)
    summary = summarize(table, references=load(spec.storage, "references"), n_boot=10)
    assert set(summary["fid"].to_pylist()) == {None}
    assert any("no reference frames" in n and "reference_features=" in n for n in summary_notes(summary))
    ref = np.random.default_rng(1).normal(0.0, 1.0, size=(50, DIM))
    summary = summarize(table, reference_features=ref, n_boot=10)
    assert all(v is not None and v > 0 for v in summary["fid"].to_pylist())


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
