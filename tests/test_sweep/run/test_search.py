"""Search mode: the `search:` block, its Tune space and ASHA rungs, a sample's plan (shared keys), the objective,
and a small search end to end on a local Ray (tiny preset, 2 CPUs)."""

from __future__ import annotations

import math
import types
from pathlib import Path

import pytest

import videoio

SEARCH = {"objective": {"metric": "motion_fidelity", "penalty": {"appearance_leakage": 0.5}},
          "space": {"inversion.lr": {"loguniform": [0.002, 0.05]}, "inversion.steps": [200, 300, 400],
                    "qk": ["1d", "2d"]},
          "algorithm": "random", "scheduler": {"asha": {"rungs": [100, 200, 300, 400]}}, "samples": 32,
          "eval": {"prompts": 2, "seeds": 1}}


def spec_dict(tmp_path: Path, **extra) -> dict:
    video = tmp_path / "v.mp4"
    if not video.exists():
        videoio.write_video(video, videoio.moving_shape_video(10, 64, 64))
    return {"name": "searched", "preset": "tiny", "storage": str(tmp_path / "results"),
            "data": [{"video": str(video), "source_prompt": "a square moves",
                      "prompts": ["a ball rolls", "a car drives", "a dog runs"]}], **extra}


def test_the_issue_example_validates_and_every_problem_is_listed(tmp_path):
    from sweep.spec import Spec, SpecError

    spec = Spec.model_validate(spec_dict(tmp_path, search=SEARCH))
    assert not spec.has_grid  # no axes: search only
    assert spec.search.space["inversion.lr"] == {"loguniform": [0.002, 0.05]}
    assert spec.search.space["qk"] == {"choice": ["1d", "2d"]} and spec.search.rungs == [100, 200, 300, 400]
    assert spec.search.objective.mode == "max"
    assert Spec.model_validate(spec_dict(tmp_path, search=SEARCH, axes={"qk": ["1d"]})).has_grid  # besides a grid
    bad = {**SEARCH, "space": {"inversion.steps": {"uniform": [100, 400]}, "qk": ["3d"], "inversion.lr":
                               {"loguniform": [0, 1]}, "inversion.placement": [["up_blocks.1"]], "colour": [1]},
           "objective": {"metric": "appearance_leakage", "mode": "max", "penalty": {"fid": 1}}}
    with pytest.raises(SpecError) as err:
        Spec.model_validate(spec_dict(tmp_path, search=bad))
    text = str(err.value)
    for expected in ("inversion.steps: uniform draws real numbers but inversion.steps takes integers",
                     "'3d' is not accepted", "loguniform needs low > 0", "inversion.placement: not a searchable",
                     "colour: not a searchable", "penalty on ['fid']"):
        assert expected in text, expected
    with pytest.raises(SpecError, match="mode must be 'min'"):
        Spec.model_validate(spec_dict(tmp_path, search={**SEARCH, "objective": {"metric": "appearance_leakage",
                                                                              "mode": "max"}}))
    with pytest.raises(SpecError, match=r"rungs: \[500\] exceed the longest inversion \(400 steps\)"):
        Spec.model_validate(spec_dict(tmp_path, search={**SEARCH, "scheduler": {"asha": {"rungs": [100, 500]}}}))


def test_space_becomes_tune_domains(tmp_path):
    from ray import tune

    from sweep.run.search import base_point, param_space
    from sweep.spec import Spec

    spec = Spec.model_validate(spec_dict(tmp_path, search={**SEARCH, "space": {
        **SEARCH["space"], "generation.guidance": {"uniform": [5, 15]}, "seed": {"randint": [0, 3]}}}))
    space = param_space(spec)
    assert isinstance(space["inversion.lr"], tune.search.sample.Float)
    assert space["inversion.lr"].lower == 0.002 and space["inversion.lr"].upper == 0.05
    assert space["inversion.steps"].categories == [200, 300, 400]
    assert space["seed"].upper == 4  # the spec's bounds are inclusive, Tune's upper bound is not
    assert isinstance(space["generation.guidance"].sampler, tune.search.sample.Uniform)
    point = base_point(spec)  # the fixed settings ride along, so Tune's table shows every hyperparameter
    assert space["inversion.ddim_steps"] == point["inversion.ddim_steps"] == 50 and space["remove"] == "none"


def test_searchers_are_tunes_and_optuna_says_how_to_install(tmp_path, monkeypatch):
    import importlib.util

    from ray.tune.search.basic_variant import BasicVariantGenerator

    from sweep.run.search import SearchError, make_searcher
    from sweep.spec import Spec

    assert isinstance(make_searcher(Spec.model_validate(spec_dict(tmp_path, search=SEARCH))), BasicVariantGenerator)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "optuna" else real(n, *a))
    optuna = Spec.model_validate(spec_dict(tmp_path, search={**SEARCH, "algorithm": "optuna"}))
    with pytest.raises(SearchError, match=r"pip install 'motion-sweep\[search\]'"):
        make_searcher(optuna)


def test_rungs_are_asha_milestones_geometric_or_not(tmp_path):
    from ray.tune.schedulers import TrialScheduler

    from sweep.run.search import asha_plan, make_scheduler
    from sweep.spec import Spec

    def scheduler_for(rungs, **asha):
        search = {**SEARCH, "space": {"qk": ["1d", "2d"]}, "scheduler": {"asha": {"rungs": rungs, **asha}}}
        spec = Spec.model_validate(spec_dict(tmp_path, search=search, inversion={"steps": max(rungs)}))
        scheduler = make_scheduler(spec)
        scheduler.set_search_properties("objective", "max")
        # ASHA's own milestones (one bracket) in its clock, next to what each rung reports on that clock
        return sorted(m for m, _ in scheduler._brackets[0]._rungs), asha_plan(spec), scheduler

    milestones, plan, _ = scheduler_for([4, 8, 16])
    assert plan["time_attr"] == "inversion_step" and milestones == [4, 8, 16] and plan["reduction_factor"] == 2
    milestones, plan, scheduler = scheduler_for([100, 200, 300, 400])
    assert plan["time_attr"] == "asha_time" and milestones == sorted(plan["times"].values()) == [1, 2, 4, 8]
    times = plan["times"]
    milestones, plan, _ = scheduler_for([10, 30, 90, 270], reduction_factor=3)
    assert plan["time_attr"] == "inversion_step" and milestones == [10, 30, 90, 270]
    milestones, plan, _ = scheduler_for([10, 30, 90, 270], reduction_factor=2)  # not the rungs' ratio
    assert plan["time_attr"] == "asha_time" and milestones == sorted(plan["times"].values()) == [1, 2, 4, 8]

    # only a rung's report (it carries the objective) counts; the worse of two samples stops at the rung
    good, bad = types.SimpleNamespace(trial_id="good"), types.SimpleNamespace(trial_id="bad")
    for trial in (good, bad):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, bad, {"inversion_step": 100, "loss": 0.3}) == TrialScheduler.CONTINUE
    first = {"inversion_step": 100, "asha_time": times[100]}
    assert scheduler.on_trial_result(None, good, {**first, "objective": 0.9}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, bad, {**first, "objective": 0.1}) == TrialScheduler.STOP


def test_a_sample_is_planned_like_the_grid_point_it_is(tmp_path):
    from sweep.run.plan import make_plan
    from sweep.run.search import eval_steps, sample_spec, sample_trials
    from sweep.spec import Spec

    spec = Spec.model_validate(spec_dict(tmp_path, search=SEARCH))
    config = {"qk": "2d", "v": "2d", "remove": "none", "debias": "difference", "seed": 0,
              "inversion.lr": 0.01, "inversion.steps": 300}
    assert eval_steps(spec, 300) == [100, 200, 300]
    sub = sample_spec(spec, config)
    assert [item.prompts for item in sub.data] == [["a ball rolls", "a car drives"]]  # the eval set
    trials, ddims = sample_trials(spec, config, {})
    assert len(trials) == 1 and trials[0].checkpoints == [100, 200, 300] and set(ddims) == {trials[0].ddim_key}
    assert len(trials[0].generations) == 3 * 2  # rungs × eval prompts
    assert trials[0].generations[0].columns["inversion.lr_applied"] == 0.01
    grid = Spec.model_validate(spec_dict(tmp_path, axes={"qk": ["2d"], "inversion.lr": [0.01, 0.02]},
                                         inversion={"steps": 300, "checkpoints": [200, 300]}))
    shared = {g.sample_key for g in make_plan(grid).generations()} & {g.sample_key for g in trials[0].generations}
    assert len(shared) == 2 * 2  # steps 200, 300 × two prompts: the same content keys, so results are shared


def test_objective_counts_each_penalty_in_its_metrics_bad_direction():
    from vocabulary import objective_value

    maximise = {"metric": "motion_fidelity", "mode": "max", "penalty": {"appearance_leakage": 0.5}}
    assert objective_value({"motion_fidelity": 0.8, "appearance_leakage": 0.4}, maximise) == pytest.approx(0.6)
    minimise = {"metric": "appearance_leakage", "mode": "min", "penalty": {"motion_fidelity": 0.5}}
    assert objective_value({"motion_fidelity": 0.8, "appearance_leakage": 0.4}, minimise) == pytest.approx(0.0)
    assert objective_value({"appearance_leakage": 0.4}, maximise) == -math.inf  # every generation failed: the worst
    assert objective_value({}, minimise) == math.inf


@pytest.mark.slow
def test_a_small_search_with_asha_end_to_end(tmp_path):
    """The demo's search, interrupted after its first sample ends and continued with Tuner.restore."""
    import ray

    from helpers import fault_injection
    from sweep.demo import demo_search_spec
    from sweep.results.tables import load
    from sweep.run.preflight import init_ray
    from sweep.run.runner import run_sweep

    spec = demo_search_spec(tmp_path, samples=4)  # `motion-sweep demo --search` (6 samples), rungs 4, 8, 16
    started = init_ray("local", num_cpus=2)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(spec, verbose=0, callbacks=[fault_injection.interrupt_once(tmp_path / "interrupted")])
        summary = run_sweep(spec, verbose=0)
        again = run_sweep(spec, verbose=0)
    finally:
        if started:
            ray.shutdown()
    assert summary.search_restored and summary.failed == {} and summary.trials == 0  # no grid: search only
    assert summary.search_experiment_path == str(Path(spec.storage) / spec.name / "tune" / f"{spec.name}-search")
    found = summary.search
    assert found["trials"] == 4 and found["errors"] == 0 and found["stopped_early"] >= 1  # ASHA stopped some
    assert found["best"]["step"] in (4, 8, 16) and set(found["best"]["config"]) == {"inversion.lr", "qk"}
    assert all(Path(p).is_file() for p in found["best"]["embeddings"])  # the winner's best step is kept
    compute = found["compute"]
    assert compute["inversion_steps_to_end"] == 4 * 16 and compute["inversion_steps_run"] < 4 * 16

    table = load(summary.storage, "search")
    assert table.num_rows == 4 and table.column("is_best").to_pylist().count(True) == 1
    per_trial = {r["search"]: r for r in table.to_pylist()}
    for row in per_trial.values():
        assert row["rungs"] == [4, 8, 16][:len(row["rungs"])] and row["steps_run"] == row["rungs"][-1]
        assert row["stopped_early"] == (row["steps_run"] < 16) and len(row["objectives"]) == len(row["rungs"])

    samples = load(summary.storage).to_pylist()  # every evaluated checkpoint's rows, marked by `search`
    assert len(samples) == sum(len(r["rungs"]) for r in per_trial.values())
    assert {r["search"] for r in samples} == set(per_trial) and {r["status"] for r in samples} == {"ok"}
    assert len({(r["search"], r["sample_key"]) for r in samples}) == len(samples)  # no duplicate rows
    for r in samples:
        assert r["checkpoint_step_applied"] in per_trial[r["search"]]["rungs"]
        assert r["inversion.lr_applied"] == pytest.approx(per_trial[r["search"]]["inversion.lr"])
    frame = summary.search_results.get_dataframe()  # Tune's view: the sampled values in the config
    assert {"config/inversion.lr", "config/qk", "objective"} <= set(frame.columns)

    assert again.search == found and again.search_results is None  # a finished search is not run again
