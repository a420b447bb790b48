"""Tune-native runs: what Tune sees of a trial, checkpoints and resume, restore of an interrupted run, tracking
callbacks, and the pinned private-module edit that keeps credentials out of Ray's logs.

The Ray tests start one local Ray (bound to 127.0.0.1, 2 CPUs) with faults injected in its workers through a
worker_process_setup_hook (tests/helpers/fault_injection.py), and stop only what they started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import videoio
from helpers import fault_injection

KILL_PROMPT = "a square moves (killed)"  # the trial whose worker dies once, at step 5
KILL_STEP = 5


def spec_dict(tmp_path: Path, name: str, source_prompt: str = "a square moves", **extra) -> dict:
    video = tmp_path / "v.mp4"
    if not video.exists():
        videoio.write_video(video, videoio.moving_shape_video(10, 64, 64))
    return {"name": name, "preset": "tiny", "storage": str(tmp_path / "results"),
            "data": [{"video": str(video), "source_prompt": source_prompt, "prompts": ["a ball rolls"]}],
            "axes": {"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["none"]},
            "inversion": {"steps": 4, "ddim_steps": 2}, "generation": {"steps": 2},
            "resources": {"cpu": 1}, **extra}


# --------------------------------------------------------------------------------------------------
# Without Ray.

def test_a_trial_config_holds_its_real_hyperparameters(tmp_path):
    from sweep.run.plan import make_plan
    from sweep.run.tune import trial_config
    from sweep.spec import Spec

    spec = Spec.model_validate({**spec_dict(tmp_path, "cfg"), "axes": {
        "qk": ["1d"], "v": ["2d"], "remove": ["none", "both"], "debias": ["difference", "none"],
        "inversion.lr": [0.01]}})
    configs = {t.base: trial_config(t) for t in make_plan(spec).trials}
    optimised, base = configs[False], configs[True]
    assert optimised["qk"] == "1d" and optimised["v"] == "2d" and optimised["remove"] == "none"
    assert optimised["seed"] == 0 and optimised["inversion.lr"] == 0.01 and optimised["inversion.steps"] == 4
    assert optimised["inversion.placement"] == ["down_blocks.2", "up_blocks.1"]
    assert optimised["generations"] == [["difference", "a ball rolls", 0], ["none", "a ball rolls", 0]]
    assert {"trial_id", "video", "inversion.frames", "inversion.ddim_steps", "inversion.loss"} <= set(optimised)
    # the base model: nothing optimised, so no learning rate (None is left out: TensorBoard's HParams refuse it)
    assert base["remove"] == "both" and "inversion.lr" not in base and "seed" not in base
    assert None not in base.values() and None not in optimised.values()


@pytest.fixture
def one_thread():
    """One torch thread, as in a Ray worker with 1 CPU (the same reduction order; and on a busy 2-core machine
    two spinning threads cost far more than they give)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_split_and_resumed_inversion_equals_the_uninterrupted_one(tiny_pipe, tmp_path, one_thread):
    from model import InversionConfig, prepare_reference, train_embeddings
    from model.inversion import TrainState

    reference = prepare_reference(tiny_pipe, videoio.moving_shape_video(8, 64, 64), 8, 64, 64, ddim_steps=2)
    config = InversionConfig(steps=6, lr=0.2, seed=3, checkpoints=(3,), loss="debiased_temporal")
    whole = train_embeddings(tiny_pipe, reference.latents, "a square", config)
    first = train_embeddings(tiny_pipe, reference.latents, "a square", config, stop_at=3)
    assert first.step == 3 and sorted(first.checkpoints) == [3] and len(first.losses) == 3
    saved = TrainState.load(first.state.save(tmp_path / "state"))  # through the disk, as a Tune checkpoint goes
    rest = train_embeddings(tiny_pipe, reference.latents, "a square", config, resume=saved)
    # CPU, fp32, the same draws: bit-identical (embeddings, AdamW moments, losses)
    assert rest.step == 6 and rest.losses == whole.losses and sorted(rest.checkpoints) == [6]
    for name, value in whole.embeddings.state_dict().items():
        assert torch.equal(rest.embeddings.state_dict()[name], value), name
    for a, b in zip(whole.state.optimizer["state"].values(), rest.state.optimizer["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(whole.state.generator, rest.state.generator)
    with pytest.raises(ValueError, match="cannot resume"):
        train_embeddings(tiny_pipe, reference.latents, "a square", InversionConfig(steps=2), resume=saved)


def test_tune_block_declares_metric_and_mode(tmp_path):
    from sweep.spec import Spec, SpecError

    base = spec_dict(tmp_path, "tuneblock")
    spec = Spec.model_validate(base)
    assert (spec.tune.metric, spec.tune.mode, spec.tune.checkpoint_every) == ("motion_fidelity", "max", 50)
    spec = Spec.model_validate({**base, "tune": {"metric": "appearance_leakage", "checkpoint_every": 10}})
    assert spec.tune.mode == "min"  # the metric's own direction
    with pytest.raises(SpecError) as err:
        Spec.model_validate({**base, "tune": {"metric": "fid", "checkpoint_every": 0}})
    text = str(err.value)
    assert "not a per-sample metric" in text and "checkpoint_every" in text
    with pytest.raises(SpecError, match="mode must be 'max'"):
        Spec.model_validate({**base, "tune": {"metric": "text_similarity", "mode": "min"}})


def test_tracking_uses_tunes_own_callbacks_and_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    from ray.air.integrations import wandb as ray_wandb
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.air.integrations.wandb import WandbLoggerCallback

    from sweep.run.tune import TrackingError, tracking_callbacks
    from sweep.spec import Spec, SpecError

    spec = Spec.model_validate({**spec_dict(tmp_path, "tracked"), "tracking": {
        "wandb": {"project": "motion", "entity": "lab"},
        "mlflow": {"tracking_uri": "http://127.0.0.1:5000", "experiment_name": "mi", "tags": {"team": "video"}}}})
    assert tracking_callbacks(Spec.model_validate(spec_dict(tmp_path, "untracked"))) == []
    real = importlib.util.find_spec
    for missing in ("wandb", "mlflow"):  # not installed here (or pretend they are not)
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, _m=missing: None if n == _m else object())
        with pytest.raises(TrackingError, match=f"pip install {missing}"):
            tracking_callbacks(spec)
    # with the packages "installed", the callbacks are Tune's, configured from the spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: object() if n in ("wandb", "mlflow") else real(n, *a))
    monkeypatch.setattr(ray_wandb, "wandb", types.SimpleNamespace())  # what Tune's callbacks import on creation
    monkeypatch.setitem(sys.modules, "mlflow", types.ModuleType("mlflow"))
    wandb_cb, mlflow_cb = tracking_callbacks(spec)
    assert isinstance(wandb_cb, WandbLoggerCallback) and isinstance(mlflow_cb, MLflowLoggerCallback)
    assert (wandb_cb.project, wandb_cb.group, wandb_cb.kwargs) == ("motion", "tracked", {"entity": "lab"})
    assert (mlflow_cb.tracking_uri, mlflow_cb.experiment_name) == ("http://127.0.0.1:5000", "mi")
    assert mlflow_cb.tags == {"sweep": "tracked", "team": "video"}
    with pytest.raises(SpecError, match="tracking_uri holds credentials"):
        Spec.model_validate({**spec_dict(tmp_path, "x"), "tracking": {"mlflow": {"tracking_uri": "http://u:pw@h"}}})
    with pytest.raises(SpecError, match="project"):
        Spec.model_validate({**spec_dict(tmp_path, "x"), "tracking": {"wandb": {}}})


def test_the_credentials_edit_is_pinned_to_the_ray_version(monkeypatch):
    """sweep.run.preflight edits a private Tune constant (no public switch in Ray 2.60). When Ray changes, this fails:
    check ray/tune/execution/class_cache.py again and move CREDENTIALS_PATCH_RAY (and the pyproject pin)."""
    import ray
    from ray.tune.execution import class_cache

    from sweep.run.preflight import CREDENTIAL_ENV, CREDENTIALS_PATCH_RAY, keep_credentials_out_of_ray

    assert ray.__version__ == CREDENTIALS_PATCH_RAY, "Ray changed: re-check sweep.run.preflight.keep_credentials_out_of_ray"
    # Ray's own value, from a fresh interpreter: an earlier sweep in this process has already edited it
    code = "from ray.tune.execution import class_cache as c; print(json.dumps(sorted(c.ENV_VARS_TO_PROPAGATE)))"
    original = json.loads(subprocess.run([sys.executable, "-c", "import json; " + code], check=True,
                                         capture_output=True, text=True).stdout)
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(original))
    assert set(CREDENTIAL_ENV) <= class_cache.ENV_VARS_TO_PROPAGATE  # what Tune would copy (and Ray log)
    for name in CREDENTIAL_ENV:
        monkeypatch.setenv(name, "fake-" + name)

    def trainable_env() -> dict:  # the runtime_env Tune gives a trainable's actor class
        class Trainable:
            pass
        return class_cache._ActorClassCache().get(Trainable)._default_options["runtime_env"]["env_vars"]
    assert set(CREDENTIAL_ENV) <= set(trainable_env())
    keep_credentials_out_of_ray()
    assert not set(CREDENTIAL_ENV) & set(trainable_env())


# --------------------------------------------------------------------------------------------------
# On Ray.

@pytest.fixture(scope="module")
def faulty_ray(tmp_path_factory):
    """A local Ray whose workers die (os._exit) the first time KILL_PROMPT's inversion ends step KILL_STEP."""
    import ray

    from sweep.run.preflight import init_ray

    folder = tmp_path_factory.mktemp("faults")
    env = fault_injection.runtime_env([{"stage": "invert", "source_prompt": KILL_PROMPT, "step": KILL_STEP,
                                        "action": "exit", "once": True}], folder)
    started = init_ray("local", num_cpus=2, runtime_env=env)
    yield folder
    if started:
        ray.shutdown()


def _uninterrupted_inversion(store, ddim_key: str, source_prompt: str, config) -> tuple[dict, list]:
    """In a Ray worker: the trial's optimisation in one go, from the reference the trial used."""
    import tempfile

    from model import load_pipeline
    from model.inversion import Reference, train_embeddings  # the real one (the worker's `model.` is wrapped)

    pipe = load_pipeline("tiny", device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        reference = Reference.load(store.download(store.ddim_path(ddim_key), Path(tmp) / "ref.safetensors"))
    result = train_embeddings(pipe, reference.latents, source_prompt, config)
    return result.checkpoints, result.losses


@pytest.mark.slow
def test_a_worker_killed_mid_inversion_resumes_from_its_last_checkpoint(faulty_ray, tmp_path):
    import ray

    from model import InversionConfig, MotionEmbeddings
    from sweep.results.store import Store
    from sweep.results.tables import load
    from sweep.run.plan import make_plan
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    spec = Spec.model_validate(spec_dict(tmp_path, "killed", source_prompt=KILL_PROMPT,
                                         inversion={"steps": 8, "checkpoints": [4, 8], "ddim_steps": 2},
                                         tune={"checkpoint_every": 2, "checkpoint_min_seconds": 0}))
    summary = run_sweep(spec, verbose=0, max_failures=2)
    assert summary.failed == {}
    calls = [c for c in fault_injection.starts(faulty_ray) if c["source_prompt"] == KILL_PROMPT]
    pids = list(dict.fromkeys(c["pid"] for c in calls))
    assert len(pids) == 2, calls  # the worker died once; the retry ran in a new process
    first, retry = [c for c in calls if c["pid"] == pids[0]], [c for c in calls if c["pid"] == pids[1]]
    assert [c["from"] for c in first] == [0, 2, 4]  # segments to the Tune checkpoints at 2 and 4, died in 4→6
    assert retry[0]["from"] == 4  # continued from the last checkpoint, not from step 0
    # ... at once: it took over the lease its dead attempt held (sweep.results.leases), not waited out its TTL
    from sweep.results.leases import LEASE_TTL_S

    assert retry[0]["time"] - first[-1]["time"] < LEASE_TTL_S / 2, (first, retry)

    # the embeddings and loss curve equal an uninterrupted run's, made in a Ray worker like the trial's (across
    # processes with other thread settings, float32 sums differ at ~1e-6 already before the kill)
    trial = make_plan(spec).trials[0]
    store = Store(spec.storage)
    inv = trial.inversion
    config = InversionConfig(qk="1d", v="2d", placement=tuple(inv["placement"]), slots=inv["slots"], steps=8,
                             lr=inv["lr"], weight_decay=inv["weight_decay"], loss=inv["loss"], checkpoints=(4, 8))
    task = ray.remote(num_cpus=1)(_uninterrupted_inversion)
    expected, losses = ray.get(task.remote(store, trial.ddim_key, KILL_PROMPT, config))
    for step in (4, 8):
        local = store.download(store.inversion_step_path(trial.inversion_key, step), tmp_path / f"{step}.st")
        got, _ = MotionEmbeddings.load(local)
        assert got.state_dict().keys() == expected[step].keys()
        for name, value in got.state_dict().items():
            assert torch.equal(value, expected[step][name]), (step, name)
    curve = load(summary.storage, "inversions").column("loss_curve").to_pylist()[0]
    assert curve == np.float32(losses).tolist()

    # what Tune holds: the experiment under STORAGE/NAME/tune/NAME, the config's hyperparameters, the loss at
    # every step and the metrics at each checkpoint step, a checkpoint kept
    assert summary.experiment_path == str(Path(spec.storage) / "killed" / "tune" / "killed")
    frame = summary.results.get_dataframe()
    assert frame["config/qk"].tolist() == ["1d"] and frame["config/inversion.steps"].tolist() == [8]
    assert frame["config/trial_id"].tolist() == [trial.trial_id]
    history = summary.results[0].metrics_dataframe
    assert set(range(1, 9)) <= set(history.dropna(subset=["loss"])["inversion_step"])
    assert sorted(set(history.dropna(subset=["motion_fidelity"])["checkpoint_step"])) == [4, 8]
    assert list(Path(summary.experiment_path).glob("*/checkpoint_*"))


@pytest.mark.slow
def test_an_interrupted_tune_run_is_restored_and_the_tables_end_complete(faulty_ray, tmp_path):
    from sweep.results.tables import load
    from sweep.run.plan import make_plan
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    spec = Spec.model_validate({**spec_dict(tmp_path, "interrupted"),
                                "axes": {"qk": ["1d", "2d"], "remove": ["none", "qk"], "debias": ["none"]}})
    plan = make_plan(spec)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, verbose=0, max_concurrent=1,
                  callbacks=[fault_injection.interrupt_once(tmp_path / "interrupted")])
    parts = Path(spec.storage) / "interrupted" / "samples"
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    assert 1 <= len(done) < len(plan.trials)

    again = run_sweep(spec, verbose=0)
    assert again.restored and again.failed == {} and again.skipped == len(done)
    assert len(again.results) == len(plan.trials)  # the restored run's ResultGrid has every trial
    rows = load(again.storage)
    keys = rows.column("sample_key").to_pylist()
    assert len(keys) == len(set(keys)) == len(plan.generations())  # complete, no duplicate rows
    for name, mtime in done.items():  # a trial finished before the interruption was not redone
        assert (parts / name).stat().st_mtime_ns == mtime

    third = run_sweep(spec, verbose=0)  # a finished run is history, not restored: nothing to run
    assert third.ran == 0 and not third.restored and third.experiment_path == again.experiment_path
