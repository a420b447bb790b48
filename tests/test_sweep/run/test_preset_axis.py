"""The base model as an axis: `axes: {preset: [...]}` repeats the ablation on each preset, each with its own frames,
size and weights (a spec value still wins); planned, keyed, stored, compared and shown per preset."""

from __future__ import annotations

import pytest

from helpers.sweeps import make_spec, run_fake
from sweep.run.plan import make_plan
from sweep.spec import Spec, SpecError
from vocabulary import PRESETS


def _spec(tmp_path, **over) -> Spec:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded by the planner")
    raw = {"name": "two-models", "storage": str(tmp_path / "results"),
           "data": [{"video": str(video), "source_prompt": "a car turns", "prompts": ["a bus turns"]}],
           "axes": {"preset": ["zeroscope", "videocrafter2"], "qk": ["1d", "2d"], "remove": ["none", "both"]},
           "inversion": {"steps": 400}}
    for key, value in over.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return Spec.model_validate(raw)


def test_each_preset_brings_its_own_frames_size_and_weights(tmp_path):
    spec = _spec(tmp_path)
    assert spec.preset == "zeroscope" and spec.presets == ["zeroscope", "videocrafter2"]  # the axis's first
    plan = make_plan(spec)
    by_preset = {}
    for d in plan.ddim_inversions:
        by_preset[d.preset] = (d.config["frames"], d.config["height"], d.config["width"], d.base_model)
    zs, vc = PRESETS["zeroscope"], PRESETS["videocrafter2"]
    assert by_preset == {"zeroscope": (zs.num_frames, zs.height, zs.width, zs.model),
                         "videocrafter2": (vc.num_frames, vc.height, vc.width, vc.model)}
    assert {t.preset for t in plan.trials} == {"zeroscope", "videocrafter2"}
    # 2 presets × (2 MQK designs + the base model) trials; nothing shared across base models
    assert len(plan.trials) == 6 and len({t.ddim_key for t in plan.trials}) == 2
    assert all(t.columns["preset"] == t.preset and t.base_model == PRESETS[t.preset].model for t in plan.trials)
    for g in plan.generations():
        assert g.variant.endswith(f"preset={g.columns['preset']}") and g.columns["base_model"] == \
            PRESETS[g.columns["preset"]].model
    # the same design on two base models: two variants with two keys
    keys = {(g.variant, g.variant_key) for g in plan.generations()}
    assert len(keys) == len({v for v, _ in keys}) == 6 == len({k for _, k in keys})
    grid = plan.grid_table()
    assert sorted(set(grid.column("preset").to_pylist())) == ["videocrafter2", "zeroscope"]
    assert grid.num_rows == 2 * 2 * 2 * 2  # presets × qk × remove × checkpoints (250, 400)


def test_a_spec_value_wins_over_each_presets_default(tmp_path):
    plan = make_plan(_spec(tmp_path, inversion={"steps": 400, "frames": 8, "height": 256}))
    assert {(d.preset, d.config["frames"], d.config["height"], d.config["width"]) for d in plan.ddim_inversions} == {
        ("zeroscope", 8, 256, 576), ("videocrafter2", 8, 256, 512)}


def test_one_preset_sweeps_keep_their_keys_and_have_no_preset_in_variant_ids(tmp_path):
    """A sweep without the axis plans as before (the grid table still says which preset answered)."""
    spec = _spec(tmp_path, preset="zeroscope", axes={"qk": ["1d", "2d"]})
    plan = make_plan(spec)
    assert all("preset=" not in g.variant for g in plan.generations())
    assert set(plan.grid_table().column("preset").to_pylist()) == {"zeroscope"}
    swept_once = make_plan(_spec(tmp_path, preset=None, axes={"preset": ["zeroscope"], "qk": ["1d", "2d"]}))
    # the same work: the same trials and samples (a one-value axis only names the preset in the ids)
    assert {t.trial_id for t in swept_once.trials} == {t.trial_id for t in plan.trials}
    assert {g.sample_key for g in swept_once.generations()} == {g.sample_key for g in plan.generations()}


@pytest.mark.parametrize("over, problem", [
    ({"preset": None, "axes": {"qk": ["1d"]}}, "preset: required"),
    ({"model": "/models/zeroscope"}, "give one folder per preset"),
    ({"model": {"modelscope": "/models/ms"}}, "not presets of this sweep"),
    ({"axes": {"preset": ["zeroscope", "sora"]}}, "sora"),
])
def test_bad_preset_axes_name_the_fix(tmp_path, over, problem):
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, **over)
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_a_model_mapping_points_each_preset_at_its_weights(tmp_path):
    spec = _spec(tmp_path, model={"videocrafter2": "/models/vc2"})
    assert spec.base_model_for("videocrafter2") == "/models/vc2"
    assert spec.base_model_for("zeroscope") == PRESETS["zeroscope"].model
    plan = make_plan(spec)
    assert {d.preset: d.base_model for d in plan.ddim_inversions}["videocrafter2"] == "/models/vc2"


def test_comparisons_pair_each_variant_with_the_baseline_of_its_own_base_model(tmp_path):
    from sweep.report.compare import compare
    from sweep.results.tables import load

    spec = make_spec(tmp_path, n_videos=6, axes={"preset": ["tiny", "toy"], "qk": ["1d", "2d"], "remove": ["none"]},
                     checkpoints=(20,))
    # toy's variants score 0.2 more: a comparison across base models would see it, one within a preset must not
    store = run_fake(spec, metric=lambda g: (0.7 if g.columns["preset"] == "toy" else 0.5)
                     + (0.05 if g.columns["qk_applied"] == "2d" else 0.0))
    table = load(store.uri)
    assert set(table.column("preset").to_pylist()) == {"tiny", "toy"}
    rows = compare(table, n_boot=50).to_pylist()
    pairs = {(r["variant"], r["baseline"]) for r in rows}
    assert pairs == {("qk=2d v=2d debias=difference preset=tiny", "qk=1d v=2d debias=difference preset=tiny"),
                     ("qk=2d v=2d debias=difference preset=toy", "qk=1d v=2d debias=difference preset=toy")}
    for r in rows:
        if r["metric"] == "motion_fidelity":
            assert r["mean_difference"] == pytest.approx(0.05) and r["n_videos"] == 6


def test_the_report_shows_the_preset_as_an_axis(tmp_path):
    from sweep.report import report

    spec = make_spec(tmp_path, n_videos=2, axes={"preset": ["tiny", "toy"], "qk": ["1d"], "remove": ["none", "v"]},
                     checkpoints=(20,))
    run_fake(spec)
    out = tmp_path / "report"
    summary = report(tmp_path / "results" / spec.name, out, n_boot=20)
    text = (out / "summary.md").read_text()
    for preset in ("tiny", "toy"):
        assert f"qk=1d v=2d debias=difference preset={preset}" in text
        assert f"qk=1d v=off preset={preset}" in text
    gallery = next((out / "report").glob("build-*/gallery.js")).read_text()  # the gallery's filters
    assert '{"key":"preset","label":"preset","values":["tiny","toy"]}' in gallery.replace(" ", "")
    assert summary is not None


@pytest.mark.slow
def test_a_two_preset_sweep_runs_stores_and_reports_per_base_model(tmp_path):
    """tiny and toy stand in for zeroscope and videocrafter2: two pipelines, one worker each in turn."""
    import ray

    from sweep.demo import make_demo_videos
    from sweep.report import report
    from sweep.results.tables import load
    from sweep.run.preflight import init_ray
    from sweep.run.runner import run_sweep

    videos = make_demo_videos(tmp_path / "videos")
    spec = Spec.model_validate({
        "name": "two-models", "storage": str(tmp_path / "results"),
        "data": [{"video": str(path), "source_prompt": "a shape moves", "prompts": ["a red ball moves"]}
                 for path in list(videos.values())[:1]],
        "axes": {"preset": ["tiny", "toy"], "remove": ["none", "both"]},
        "inversion": {"steps": 2, "ddim_steps": 2}, "generation": {"steps": 2}, "resources": {"cpu": 1}})
    plan = make_plan(spec)
    started = init_ray("local", num_cpus=2)
    try:
        summary = run_sweep(spec, verbose=0)
    finally:
        if started:
            ray.shutdown()
    assert summary.failed == {} and summary.ran == len(plan.trials) == 4 and summary.ddim_inversions == 2
    samples = load(summary.storage)
    assert samples.num_rows == len(plan.generations()) == 4
    assert set(samples.column("status").to_pylist()) == {"ok"}
    rows = samples.to_pylist()
    assert {(r["preset"], r["variant"]) for r in rows} == {
        ("tiny", "qk=1d v=2d debias=difference preset=tiny"), ("tiny", "qk=off v=off preset=tiny"),
        ("toy", "qk=1d v=2d debias=difference preset=toy"), ("toy", "qk=off v=off preset=toy")}
    assert {r["preset"]: r["base_model"] for r in rows} == {"tiny": "", "toy": ""}
    inversions = load(summary.storage, table="inversions").to_pylist()
    assert sorted(r["preset"] for r in inversions) == ["tiny", "tiny", "toy", "toy"]
    points = load(summary.storage, table="points")
    assert points.num_rows == 4 and sorted(set(points.column("preset").to_pylist())) == ["tiny", "toy"]
    out = tmp_path / "report"
    report(summary.storage, out, n_boot=20)
    assert "preset=toy" in (out / "summary.md").read_text()
