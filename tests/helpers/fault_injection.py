"""Fault injection for the sweep tests, installed in every Ray worker by a runtime_env `worker_process_setup_hook`
(the production code has no hook for it: this module wraps `model.train_embeddings` / `model.generate` in the
worker processes only).

    ray.init(num_cpus=2, runtime_env=fault_injection.runtime_env([{"stage": "generate", "prompt": "FAULTY"}], tmp))

Faults (dicts):
* {"stage": "generate", "prompt": S, "times": n}: a generation batch holding a prompt that contains S raises
  (the first n such batches only, when "times" is given: a transient fault, e.g. a CUDA out-of-memory).
* {"stage": "invert", "source_prompt": S, "qk": D, "step": K, "action": "raise" | "exit", "once": bool}:
  the optimisation of a trial whose source prompt contains S (and, if given, whose MQK design is D) fails
  when step K ends: "raise" an exception (the trial errors and Tune retries it), "exit" `os._exit` (the
  worker process dies, as on a reclaimed spot node); "once": only the first time (a marker file in the folder).

Every call of train_embeddings is logged to <folder>/starts.jsonl (pid, source prompt, qk, the step it resumes
from, where it stops, the wall-clock time), so a test can see a retried trial start from its last checkpoint,
and when.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "MOTION_SWEEP_TEST_FAULTS"  # read only here, in the workers: the faults and the marker/log folder


def runtime_env(faults: list[dict], folder: str | os.PathLike) -> dict:
    """Ray's job runtime_env that installs `faults` in every worker (tests/ on the workers' path)."""
    tests = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    return {"worker_process_setup_hook": "helpers.fault_injection.install",
            "env_vars": {ENV: json.dumps({"faults": faults, "dir": str(folder)}), "PYTHONPATH": path}}


def starts(folder: str | os.PathLike) -> list[dict]:
    """The logged train_embeddings calls, in order."""
    log = Path(folder) / "starts.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _first_time(folder: Path, name: str) -> bool:
    try:
        os.close(os.open(folder / f"fault-{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def install() -> None:
    """The worker_process_setup_hook: wrap the model functions the trials call."""
    raw = os.environ.get(ENV)
    if not raw:
        return
    setup = json.loads(raw)
    faults, folder = setup["faults"], Path(setup["dir"])
    import model
    from model import generation, inversion

    real_train, real_generate = inversion.train_embeddings, generation.generate

    def train_embeddings(pipe, latents, source_prompt, config, callback=None, base_model="", **kwargs):
        resume = kwargs.get("resume")
        with open(folder / "starts.jsonl", "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "source_prompt": source_prompt, "qk": config.qk,
                                  "from": resume.step if resume is not None else 0,
                                  "stop_at": kwargs.get("stop_at"), "time": time.time()}) + "\n")
        mine = [(i, f) for i, f in enumerate(faults) if f["stage"] == "invert"
                and f.get("source_prompt", "") in source_prompt and f.get("qk", config.qk) == config.qk]

        def on_step(step: int, loss: float) -> None:
            if callback:
                callback(step, loss)
            for i, fault in mine:
                if step != fault.get("step", 2):
                    continue
                if fault.get("once") and not _first_time(folder, f"invert-{i}-{source_prompt}-{config.qk}"):
                    continue
                if fault.get("action") == "exit":
                    os._exit(1)  # the worker dies mid-inversion: no exception, no cleanup
                raise RuntimeError(f"injected fault at step {step} of {source_prompt!r} qk={config.qk}")
        return real_train(pipe, latents, source_prompt, config, on_step, base_model, **kwargs)

    def generate(pipe, inverted_noise, prompts, seeds, *args, **kwargs):
        for i, fault in enumerate(faults):
            if fault["stage"] == "generate" and any(fault["prompt"] in p for p in prompts):
                if "times" in fault and not any(_first_time(folder, f"generate-{i}-{k}")
                                                for k in range(fault["times"])):
                    continue
                raise RuntimeError(f"injected fault at generation of {prompts}")
        return real_generate(pipe, inverted_noise, prompts, seeds, *args, **kwargs)

    model.train_embeddings = train_embeddings  # sweep.run.trial calls them as `model.<name>`
    model.generate = generate


def interrupt_once(marker: Path, after: int = 1):
    """A Tune callback that raises KeyboardInterrupt when the `after`-th trial completes (the driver interrupted
    mid-run), once: Tune keeps a run's callbacks and restores them with it, so a marker file disarms it."""
    from ray import tune

    class Interrupt(tune.Callback):
        def __init__(self):
            self.completed = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.completed += 1
            if self.completed >= after and not marker.exists():
                marker.touch()
                raise KeyboardInterrupt("interrupted by the test")
    return Interrupt()
