"""The sweep end to end on a local Ray bound to 127.0.0.1: a demo-shaped grid through `motion-sweep run` (its
terminal too), resume, reuse, and one sweep that meets every bad input (injected generation faults, a corrupt
video) and is retried."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FAULT_PROMPT = "FAULTY"  # generations whose prompt holds this raise inside the worker (tests/helpers/fault_injection.py)
TRANSIENT_PROMPT = "TRANSIENT"  # ... fail only twice (the batch, then the one-by-one retry): a passing fault


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    from helpers import fault_injection
    from sweep.run.preflight import init_ray

    env = fault_injection.runtime_env([{"stage": "generate", "prompt": FAULT_PROMPT},
                                       {"stage": "generate", "prompt": TRANSIENT_PROMPT, "times": 2}],
                                      tmp_path_factory.mktemp("faults"))
    started = init_ray("local", num_cpus=2, runtime_env=env)
    yield ray
    if started:
        ray.shutdown()


#: A demo-shaped grid, smaller: the demo's two videos and prompts, MQK 1d with MV 2d or removed, two debias
#: settings (removing MV leaves nothing to debias: 8 grid points → 6 canonical variants, 4 inversions).
SMALL_GRID = {"qk": ["1d"], "v": ["2d"], "remove": ["none", "v"], "debias": ["difference", "none"], "seed": [0]}


def small_demo_spec(storage: Path, name: str = "demo"):
    """The demo's spec (`motion-sweep demo --preset tiny` at a few steps) on SMALL_GRID: the same plumbing in a
    quarter of the trials (the whole demo runs end to end in tests/test_sweep/test_cli.py, slow tier)."""
    from sweep.demo import demo_spec
    from sweep.spec import Spec

    spec = demo_spec(storage, name=name, preset="tiny", inversion_steps=3, ddim_steps=2, generation_steps=2)
    return Spec.model_validate({**spec.model_dump(), "axes": SMALL_GRID})


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo-shaped grid through `motion-sweep run` in a subprocess, as a user runs it (its own local Ray, no
    faults): the terminal's test and the runner's tests share this one run → (spec, plan, the finished process)."""
    import yaml

    from helpers.terminal import motion_sweep
    from sweep.run.plan import make_plan

    folder = tmp_path_factory.mktemp("demo")
    spec = small_demo_spec(folder / "results")
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return spec, make_plan(spec), motion_sweep("run", str(path), "--num-cpus", "2", cwd=folder)


def sweep_folder(spec) -> str:
    from sweep.results.store import Store

    return Store(spec.storage).uri_of(spec.name)  # what RunSummary.storage holds


def test_the_demo_plans_the_seed_grid_over_two_videos(tmp_path):
    """The whole demo's plan (no Ray): 2 videos × 36 grid points → 20 canonical variants, 8 inversions each."""
    from sweep.demo import demo_spec
    from sweep.run.plan import make_plan

    plan = make_plan(demo_spec(tmp_path, preset="tiny", inversion_steps=3, ddim_steps=2, generation_steps=2))
    assert len(plan.trials) == 16 and len(plan.ddim_inversions) == 2 and not any(t.base for t in plan.trials)
    assert len(plan.generations()) == 40  # 2 videos × 20 canonical variants × 1 checkpoint
    assert len(plan.grid_points) == 72  # 36 per video × prompt
    assert {t.inversion["steps"] for t in plan.trials} == {3}


def test_demo_rows_match_the_plan_with_no_errors(demo_run):
    from sweep.results.tables import load

    spec, plan, result = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(plan.trials) == 4 and "FAILED" not in result.stderr
    assert f"{spec.name}: 4 trial(s) run, 0 already complete, 2 DDIM inversion(s)" in result.stderr
    storage = sweep_folder(spec)
    table = load(storage)
    assert table.num_rows == len(plan.generations()) == 6  # 2 videos × 3 canonical variants × 1 checkpoint
    assert set(table.column("status").to_pylist()) == {"ok"}
    required = {"sweep", "trial_id", "variant", "qk_applied", "v_applied", "remove_applied", "debias_applied", "video",
                "source_prompt", "prompt", "seed_applied", "checkpoint_step_applied", "text_similarity", "temporal_consistency", "motion_fidelity",
                "motion_fidelity_two_way", "appearance_leakage", "fid_features", "video_path", "status", "error",
                "clip_backbone", "tracker", "pretrained_metrics", "device", "generate_seconds", "score_seconds",
                "code_version"}
    assert required <= set(table.column_names)
    assert table.column("pretrained_metrics").to_pylist() == [False] * 6
    for name in ("text_similarity", "temporal_consistency", "motion_fidelity", "appearance_leakage"):
        assert table.column(name).null_count == 0, name
    paths = table.column("video_path").to_pylist()
    assert len(set(paths)) == 6 and all(Path(p).is_file() for p in paths)
    # every requested grid point is answered: 4 per video × prompt (more points than samples)
    points = load(storage, table="points")
    assert points.num_rows == len(plan.grid_points) == 8 and points.column("text_similarity").null_count == 0
    inversions = load(storage, table="inversions")
    assert inversions.num_rows == 4
    curves = inversions.column("loss_curve").to_pylist()
    assert sorted(len(c) for c in curves) == [3] * 4


def test_run_prints_progress_and_ends_on_the_table_and_the_report_path(demo_run):
    from helpers.terminal import assert_quiet_progress_then_answer

    spec, plan, result = demo_run
    assert_quiet_progress_then_answer(result, trials=len(plan.trials), sweep=Path(sweep_folder(spec)))


def test_rerunning_the_spec_runs_nothing_and_adds_no_rows(demo_run, ray_local):
    from sweep.cli import _print_run
    from sweep.results.tables import load
    from sweep.run.runner import run_sweep

    spec, plan, _ = demo_run
    before = load(sweep_folder(spec)).num_rows
    again = run_sweep(spec, verbose=0)
    assert again.ran == 0 and again.skipped == len(plan.trials) == 4 and again.ddim_inversions == 0
    assert load(sweep_folder(spec)).num_rows == before
    assert _print_run(again) == 0  # a sweep with no failed trial and no error row is a success


def test_a_new_sweep_reuses_inversions_and_samples(demo_run, ray_local):
    """Another sweep over the same videos inverts nothing again (store files untouched)."""
    from sweep.results.store import Store
    from sweep.results.tables import load
    from sweep.run.runner import run_sweep

    spec, plan, _ = demo_run
    store = Store(spec.storage)
    metas = {t.inversion_key: store.local_path(store.inversion_meta_path(t.inversion_key)).stat().st_mtime_ns
             for t in plan.trials if not t.base}
    other = small_demo_spec(Path(spec.storage), name="demo-again")
    summary = run_sweep(other, verbose=0)
    assert summary.failed == {} and summary.ddim_inversions == 0
    for key, mtime in metas.items():
        assert store.local_path(store.inversion_meta_path(key)).stat().st_mtime_ns == mtime
    rows = load(summary.storage)
    assert rows.num_rows == len(plan.generations()) == 6 and set(rows.column("sweep").to_pylist()) == {"demo-again"}
    ours = {r["sample_key"]: r["text_similarity"] for r in load(sweep_folder(spec)).to_pylist()}
    assert all(ours[r["sample_key"]] == r["text_similarity"] for r in rows.to_pylist())


@pytest.fixture(scope="module")
def bad_input_run(ray_local, tmp_path_factory):
    """One sweep that meets every bad input at once (shared by the three tests below) → (spec, summary, its rows
    as first written). One good video under two source prompts: the square's second prompt fails at generation
    every time (FAULT_PROMPT); the circle's second prompt fails only twice (TRANSIENT_PROMPT: the batch, then
    alone), so it passes when retried. And a corrupt video."""
    import videoio
    from sweep.results.tables import load
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    tmp_path = tmp_path_factory.mktemp("bad-inputs")
    good = videoio.write_video(tmp_path / "good.mp4", videoio.moving_shape_video(10, 64, 64))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not really a video")
    spec = Spec.model_validate({
        "name": "faults", "preset": "tiny", "storage": str(tmp_path / "results"),
        # only one trial holds the transient prompt: two trials that both held it would share its two failures
        # between them (whichever runs first), and each would then pass on its one-by-one retry
        "data": [{"video": str(good), "source_prompt": "a square",
                  "prompts": ["a ball rolls", f"a {FAULT_PROMPT} prompt", "a car drives"]},
                 {"video": str(good), "source_prompt": "a circle",
                  "prompts": ["a ball rolls", f"a {TRANSIENT_PROMPT} prompt"]},
                 {"video": str(bad), "source_prompt": "a square", "prompts": ["a ball rolls"]}],
        "axes": {"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["none"]},
        "inversion": {"steps": 2, "ddim_steps": 2}, "generation": {"steps": 2},
    })
    summary = run_sweep(spec, verbose=0)
    return spec, summary, load(summary.storage).to_pylist()


def test_an_injected_generation_failure_costs_one_row(bad_input_run):
    _, summary, rows = bad_input_run
    rows = [r for r in rows if r["source_prompt"] == "a square" and r["video"] == "good"]
    assert len(rows) == 3
    assert not {r["trial_id"] for r in rows} & set(summary.failed)  # the trial itself did not fail
    bad = [r for r in rows if r["status"] == "error"]
    assert len(bad) == 1 and FAULT_PROMPT in bad[0]["prompt"] and "injected fault" in bad[0]["error"]
    assert bad[0]["text_similarity"] is None
    assert all(r["text_similarity"] is not None for r in rows if r["status"] == "ok")


def test_error_rows_fail_the_run_until_retried_and_retry_errors_replaces_them(bad_input_run, capsys):
    from sweep.cli import _print_run
    from sweep.results.tables import load
    from sweep.run.runner import run_sweep

    spec, first, rows = bad_input_run
    # three error rows, one per trial: the square's (FAULT_PROMPT), the circle's (TRANSIENT_PROMPT, met twice:
    # batch, then alone) and the corrupt video's
    assert first.error_rows == 3 and len(first.error_trials) == 3
    assert _print_run(first) == 1
    err = capsys.readouterr().err
    assert "3 error row(s) in 3 trial(s)" in err and "--retry-errors" in err and first.storage in err
    before = {r["sample_key"]: r for r in rows}
    assert sorted(r["status"] for r in before.values()) == ["error"] * 3 + ["ok"] * 3
    [transient] = [k for k, r in before.items() if TRANSIENT_PROMPT in r["prompt"]]
    [faulty] = [k for k, r in before.items() if FAULT_PROMPT in r["prompt"]]

    again = run_sweep(spec, verbose=0)  # a plain re-run: nothing to do, and still not a success
    assert again.ran == 0 and again.error_rows == 3 and _print_run(again) == 1
    capsys.readouterr()

    retried = run_sweep(spec, verbose=0, retry_errors=True)
    # the transient fault is spent: its row comes back ok; the other two fail again, each still one row
    assert retried.retried == 3 and retried.error_rows == 2 and _print_run(retried) == 1
    after = {r["sample_key"]: r for r in load(first.storage).to_pylist()}
    assert after.keys() == before.keys()  # replaced, not added
    assert after[transient]["status"] == "ok" and after[transient]["text_similarity"] is not None
    assert after[faulty]["status"] == "error" and "injected fault" in after[faulty]["error"]
    for key, row in before.items():
        if row["status"] == "ok":  # the samples that had succeeded come back from the store unchanged
            assert after[key]["text_similarity"] == row["text_similarity"]
    inversions = [r for r in load(first.storage, table="inversions").to_pylist()
                  if r["trial_id"] == before[transient]["trial_id"]]
    assert len(inversions) == 1 and inversions[0]["cached"]  # its embeddings were not learned again


def test_cli_plan_json_and_validation_errors(tmp_path):
    import videoio

    video = videoio.write_video(tmp_path / "v.mp4", videoio.moving_shape_video(10, 64, 64))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""
name: cli
preset: tiny
storage: {tmp_path / 'results'}
data:
  - video: {video}
    source_prompt: a square moves
    prompts: [a ball rolls]
axes: {{qk: [1d, 2d], v: [2d, 1d], remove: [none, qk, v], debias: [difference, normalize, none], seed: [0]}}
""")
    cli = [sys.executable, "-m", "sweep.cli"]
    r = subprocess.run(cli + ["plan", str(spec), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout)
    assert {k: counts[k] for k in ("grid_points", "canonical_variants", "inversions", "generations",
                                   "naive_inversions", "naive_generations", "cached_inversions",
                                   "cached_generations")} == {
        "grid_points": 36, "canonical_variants": 20, "inversions": 8, "generations": 40, "naive_inversions": 36,
        "naive_generations": 72, "cached_inversions": 0, "cached_generations": 0}  # 400 steps: checkpoints 250, 400
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace(str(video), str(tmp_path / "missing.mp4")).replace("[1d, 2d]",
                                                                                             "[1d, 3d]"))
    r = subprocess.run(cli + ["run", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "missing.mp4" in r.stderr and "3d" in r.stderr  # every problem at once, before Ray starts


def test_a_corrupt_video_costs_its_own_rows_not_the_sweep(bad_input_run):
    _, summary, rows = bad_input_run
    assert len(rows) == 6
    good = [r for r in rows if r["video"] == "good" and not {FAULT_PROMPT, TRANSIENT_PROMPT} & set(r["prompt"].split())]
    assert len(good) == 3 and {r["status"] for r in good} == {"ok"}
    [bad] = [r for r in rows if r["video"] == "bad"]
    assert bad["status"] == "error" and "cannot decode video" in bad["error"]
    assert len(summary.failed) == 1 and any("bad.mp4" in e for e in summary.failed.values())  # the summary names it
    assert summary.ddim_inversions == 1  # refused by the probe before Ray: no worker ever tried it


def test_bad_videos_are_refused_together_before_ray_starts_and_the_verdict_is_cached(tmp_path, monkeypatch,
                                                                                      capsys):
    import ray

    import videoio
    from sweep.results.tables import load
    from sweep.run import videos
    from sweep.run.plan import make_plan
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    short = videoio.write_video(tmp_path / "short.mp4", videoio.moving_shape_video(4, 64, 64))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    monkeypatch.setenv("MOTION_SWEEP_CACHE", str(tmp_path / "cache"))
    spec = Spec.model_validate({
        "name": "refused", "preset": "tiny", "storage": str(tmp_path / "results"),
        "data": [{"video": str(v), "source_prompt": "a square", "prompts": ["a ball rolls"]} for v in (short, corrupt)],
        "axes": {"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["none"]},
        "inversion": {"steps": 2, "ddim_steps": 2}, "generation": {"steps": 2},
    })
    started = ray.is_initialized()
    summary = run_sweep(spec, verbose=0)
    assert ray.is_initialized() == started  # nothing to schedule: Ray was never started
    err = capsys.readouterr().err
    assert "2 reference video(s) refused before Ray started" in err
    assert "short.mp4 has 4 frames but the sweep needs 8" in err and "cannot decode video" in err
    rows = load(summary.storage).to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"error"} and summary.error_rows == 2
    assert len(list((tmp_path / "cache" / "probes").glob("*.json"))) == 2

    def no_decoding(*a, **k):
        raise AssertionError("probed again")
    monkeypatch.setattr(videoio, "probe_video", no_decoding)
    ddims = make_plan(spec).ddim_inversions
    assert set(videos.probe_videos(ddims)) == {d.ddim_key for d in ddims}  # the same verdicts, from the cache


def test_the_toy_demo_without_its_weights_says_how_to_build_them(tmp_path, monkeypatch, capsys):
    import vocabulary
    from sweep.cli import main

    monkeypatch.setattr(vocabulary, "TOY_WORLD_DIR", tmp_path / "toy_world")
    for argv in (["demo"], ["demo", "--preset", "toy"]):  # the toy world is the default
        assert main([*argv, "--storage", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "python -m toyworld build" in err and "motion-sweep demo --preset tiny" in err
        assert not (tmp_path / "out").exists()  # nothing started, nothing written
