"""A trial's GPU memory and time before launch (sweep.run.gpu_budget): the cost model's predictions for every trial of
a plan on the GPU types cluster.yaml names, `plan`'s table and JSON keys, and the warning `plan` and `run` print when
a trial cannot fit the GPU share its `resources.gpu` asks for. No torch, no Ray: the cost model is pure Python."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO
from sweep.cli import main
from sweep.run import gpu_budget
from sweep.run.gpu_budget import (budget_json, cluster_workers, fit_warnings, format_budget, gpu_type_of, plan_budget,
                                  predict_plan)
from sweep.run.plan import make_plan
from sweep.spec import Spec
from vocabulary import GPU_TYPES

PAPER_AXES = {"qk": ["1d", "2d"], "v": ["2d", "1d"], "remove": ["none", "qk", "v", "both"],
              "debias": ["difference", "normalize", "none"], "seed": [0]}


def make_spec(tmp_path: Path, gpu: float = 1.0, preset: str = "zeroscope", axes=None, **blocks) -> Spec:
    """The paper's setting (the preset's 24×320×576, 400 steps, checkpoints 250 and 400, 3 prompts per video) over
    one fake video."""
    video = tmp_path / "video0.mp4"
    video.write_bytes(b"video 0")
    raw = {"name": "gpu", "preset": preset, "storage": str(tmp_path / "results"),
           "data": [{"video": str(video), "source_prompt": "a dog runs",
                     "prompts": ["a cat runs", "a fox runs", "a bear runs"]}],
           "axes": PAPER_AXES if axes is None else axes, "inversion": {"checkpoints": [250, 400]},
           "resources": {"gpu": gpu, "cpu": 4}, **blocks}
    return Spec.model_validate(raw)


def write_spec(tmp_path: Path, spec: Spec) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    return path


@pytest.fixture(scope="module")
def workers():
    return cluster_workers(REPO / "cluster.yaml")


def test_cluster_yaml_gpu_types(workers):
    by_name = {w.node_type: w for w in workers}
    assert set(by_name) == {"gpu-a10g", "gpu-a100-80gb"}  # the CPU head is not a GPU type
    assert (by_name["gpu-a10g"].instance_type, by_name["gpu-a10g"].gpu, by_name["gpu-a10g"].gpus) == \
        ("g5.2xlarge", "A10G", 1)
    assert (by_name["gpu-a100-80gb"].gpu, by_name["gpu-a100-80gb"].gpus) == ("A100-80GB", 8)
    assert gpu_budget.gpu_types_of(workers) == ["A10G", "A100-80GB"]
    assert {gpu_type_of(i) for i in ("g5.xlarge", "g5.12xlarge")} == {"A10G"}
    assert gpu_type_of("p4d.24xlarge") == "A100-40GB" and gpu_type_of("m5.xlarge") is None
    assert all(g in GPU_TYPES for g in gpu_budget.INSTANCE_GPUS.values())


def test_cluster_yaml_is_found_or_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./cluster.yaml: the repository's
    assert gpu_budget.find_cluster_yaml() == REPO / "cluster.yaml"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"head_node_type": "head", "available_node_types": {
        "head": {"resources": {"CPU": 0, "GPU": 0}, "node_config": {"InstanceType": "m5.xlarge"}},
        "big": {"resources": {"GPU": 4}, "max_workers": 2, "node_config": {"InstanceType": "p4d.24xlarge"}}}}))
    assert [(w.node_type, w.gpu, w.gpus, w.max_workers) for w in cluster_workers(other)] == \
        [("big", "A100-40GB", 4, 2)]
    with pytest.raises(FileNotFoundError):
        cluster_workers(tmp_path / "missing.yaml")


def test_the_default_worker_is_the_smallest_gpu_that_holds_the_paper_trial(tmp_path, workers):
    """cluster.yaml launches one GPU type by default, and it is the smallest (cheapest per trial) of the types it
    names that holds the paper-setting trial with resources.gpu 1 (README "Run on a cluster"); at ZeroScope XL's
    576×1024 the trial does not fit it, and the warning names the fixes."""
    launched = [w for w in workers if w.max_workers > 0]
    assert [w.gpu for w in launched] == ["A10G"], "cluster.yaml launches the A10G worker by default"
    plan = make_plan(make_spec(tmp_path, gpu=1))
    budget = predict_plan(plan, gpu_budget.gpu_types_of(workers))
    assert len(budget.trials) == len(plan.trials) == 9
    largest = {g: max(t.predicted_gpu_memory_gib_high[g] for t in budget.trials) for g in ("A10G", "A100-80GB")}
    holds = [w for w in workers if largest[w.gpu] <= GPU_TYPES[w.gpu].memory_gib]
    assert min(holds, key=lambda w: GPU_TYPES[w.gpu].memory_gib).node_type == launched[0].node_type, largest
    assert fit_warnings(budget, 1.0, workers) == []
    xl = predict_plan(make_plan(make_spec(tmp_path, gpu=1, inversion={"checkpoints": [250, 400], "height": 576,
                                                                       "width": 1024})), ["A10G", "A100-80GB"])
    assert max(t.predicted_gpu_memory_gib["A10G"] for t in xl.trials) > GPU_TYPES["A10G"].memory_gib
    assert max(t.predicted_gpu_memory_gib_high["A100-80GB"] for t in xl.trials) <= GPU_TYPES["A100-80GB"].memory_gib
    [text] = fit_warnings(xl, 1.0, workers, target="A10G")
    assert "inversion.frames: " in text and "gpu-a100-80gb" in text and "max_workers" in text


def test_the_memory_warning_fires_for_too_small_a_share_and_not_for_one_that_fits(tmp_path, workers):
    plan = make_plan(make_spec(tmp_path, gpu=1))
    budget = predict_plan(plan, gpu_budget.gpu_types_of(workers))
    gpu = gpu_budget.checked_gpu_types(workers)[0]
    memory = GPU_TYPES[gpu].memory_gib
    peak = max(t.predicted_gpu_memory_gib_high[gpu] for t in budget.trials)
    too_small = round(0.5 * peak / memory, 2)  # half of what the largest trial needs
    fits = math.ceil(peak / memory * 100) / 100  # just enough

    warnings = fit_warnings(budget, too_small, workers)
    assert len(warnings) == 1  # one line for the GPU type, not one per trial
    text = warnings[0]
    largest = budget.largest()
    assert largest.trial_id in text and "zeroscope 24×320×576" in text
    assert f"up to {largest.predicted_gpu_memory_gib_high[gpu]:.1f}" in text
    assert f"{too_small:g} × {gpu} {memory:g} GiB" in text
    assert "resources.gpu" in text and "inversion.frames" in text  # the fixes
    assert fit_warnings(budget, fits, workers) == []
    assert fit_warnings(budget, 0.0, workers) == []  # a CPU run asks for no GPU


def test_the_frames_the_warning_suggests_do_fit(tmp_path, workers):
    from model.cost import predict_trial

    plan = make_plan(make_spec(tmp_path, gpu=1))
    budget = predict_plan(plan, ["A10G"])
    share = 0.75
    [text] = fit_warnings(budget, share, workers, target="A10G")
    frames = int(text.split("inversion.frames: ")[1].split(" ")[0])
    t = budget.largest()
    # generation sets the peak: the video's 3 prompts in one call; one per call is named with its figure
    assert t.dominant == "generation" and "3 clips per pipeline call" in text
    one = float(text.split("one prompt and seed per video it would be up to ")[1].split(" GiB")[0])
    assert one < t.memory_high("A10G")
    assert 1 <= frames < 24
    fit = predict_trial(t.preset, gpu="A10G", **{**t.inputs, "frames": frames})
    over = predict_trial(t.preset, gpu="A10G", **{**t.inputs, "frames": frames + 1})
    available = share * GPU_TYPES["A10G"].memory_gib
    assert fit.peak_memory_gib_high <= available < over.peak_memory_gib_high


def test_a_targeted_gpu_type_is_the_one_checked(tmp_path, workers):
    plan = make_plan(make_spec(tmp_path))
    budget = predict_plan(plan, ["A10G", "A100-80GB"])
    peak = max(t.predicted_gpu_memory_gib_high["A100-80GB"] for t in budget.trials)
    share = round(1.1 * peak / GPU_TYPES["A100-80GB"].memory_gib, 3)  # fits an A100 80 GB's share, not an A10G's
    assert share * GPU_TYPES["A10G"].memory_gib < peak
    assert fit_warnings(budget, share, workers, target="A100-80GB") == []
    [line] = fit_warnings(budget, share, workers, target="A10G")
    assert "A10G" in line and "gpu-a100-80gb" in line  # the worker that fits is named
    with pytest.raises(ValueError, match="unknown GPU type"):
        plan_budget(plan, REPO / "cluster.yaml", target="B200")


def test_a_share_above_one_buys_no_more_memory_than_one_gpu(tmp_path, workers):
    spec = make_spec(tmp_path, inversion={"checkpoints": [250, 400], "frames": 32, "height": 576, "width": 1024,
                                          "slots": 32})
    budget = predict_plan(make_plan(spec), ["A10G"])
    assert budget.largest().predicted_gpu_memory_gib_high["A10G"] > GPU_TYPES["A10G"].memory_gib
    [line] = fit_warnings(budget, 2.0, workers, target="A10G")
    assert "a trial uses one GPU" in line and "resources.gpu: " not in line


def test_plan_json_carries_predictions_keyed_by_gpu_type(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = make_spec(tmp_path, gpu=0.25)
    assert main(["plan", str(write_spec(tmp_path, spec)), "--json"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert set(data["predicted_gpu_memory_gib"]) == set(data["predicted_gpu_seconds"]) == {"A10G", "A100-80GB"}
    assert all(v > 0 for v in data["predicted_gpu_memory_gib"].values())
    gpu = data["gpu"]
    assert len(gpu["trials"]) == data["trials"] == 9
    row = next(r for r in gpu["trials"] if r["trial_id"] == gpu["largest_trial"])
    assert row["predicted_gpu_memory_gib"] == data["predicted_gpu_memory_gib"]
    for key in ("predicted_gpu_memory_gib", "predicted_gpu_memory_gib_high", "predicted_gpu_seconds",
                "predicted_gpu_seconds_low", "predicted_gpu_seconds_high", "trials_per_gpu"):
        assert set(row[key]) == {"A10G", "A100-80GB"}, key
    assert row["predicted_gpu_memory_gib_high"]["A10G"] >= row["predicted_gpu_memory_gib"]["A10G"]
    low, mid, high = (row[f"predicted_gpu_seconds{s}"]["A10G"] for s in ("_low", "", "_high"))
    assert 0 < low <= mid <= high
    assert row["trials_per_gpu"]["A100-80GB"] == int(80 // row["predicted_gpu_memory_gib_high"]["A100-80GB"])
    base = next(r for r in gpu["trials"] if r["qk"] == r["v"] == "off")  # the base model optimises nothing
    assert base["predicted_gpu_seconds"]["A10G"] < row["predicted_gpu_seconds"]["A10G"]
    total = sum(r["predicted_gpu_seconds"]["A10G"] for r in gpu["trials"])
    assert gpu["total_gpu_seconds"]["A10G"] == pytest.approx(total, abs=1)
    assert "warning" in err and "> 0.25 × A10G" in err  # too small a share (stderr: the JSON stays clean)


def test_plan_prints_one_line_per_setting(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    video2 = tmp_path / "video1.mp4"
    video2.write_bytes(b"video 1")
    spec = make_spec(tmp_path, gpu=1)
    spec = Spec.model_validate({**spec.model_dump(mode="json", exclude_none=True),
                                "data": [*spec.model_dump(mode="json")["data"],
                                         {"video": str(video2), "source_prompt": "a car", "prompts": ["a bus"]}]})
    assert main(["plan", str(write_spec(tmp_path, spec))]) == 0
    out, err = capsys.readouterr()
    block = out[out.index("GPU per trial"):]
    rows = [line for line in block.splitlines() if "zeroscope 24×320×576" in line]
    assert len(rows) == 9 < 18  # 18 trials, 9 settings (2 videos each)
    assert "A10G" in block and "A100-80GB" in block and "whole sweep" in block and "fitted on CPU" in block
    assert err == ""  # resources.gpu 1 fits the default worker: no warning


def test_cpu_presets_get_no_prediction_and_no_warning(tmp_path, capsys):
    spec = make_spec(tmp_path, gpu=0, preset="tiny", inversion={"checkpoints": [10], "steps": 10})
    assert plan_budget(make_plan(spec)) == (None, [])
    assert main(["plan", str(write_spec(tmp_path, spec)), "--json"]) == 0
    out, err = capsys.readouterr()
    assert "predicted_gpu_memory_gib" not in json.loads(out) and err == ""


def test_a_gpu_preset_on_cpu_prints_the_table_and_warns_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = make_spec(tmp_path, gpu=0, axes={"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["difference"]})
    budget, warnings = plan_budget(make_plan(spec))
    assert warnings == [] and len(budget.trials) == 1
    assert "CPU only" in format_budget(budget, 0.0)
    assert budget_json(budget)["gpu"]["trials"][0]["setting"] == "zeroscope 24×320×576 qk=1d v=2d"


def test_run_warns_before_ray_starts(tmp_path, capsys, monkeypatch):
    from sweep.run import runner

    class RayStarted(Exception):
        pass

    def init_ray(*args, **kwargs):
        raise RayStarted

    monkeypatch.setattr(runner, "probe_videos", lambda ddims: {})  # the fake video is never decoded
    monkeypatch.setattr(runner, "init_ray", init_ray)
    spec = make_spec(tmp_path, gpu=0.1, axes={"qk": ["1d"], "v": ["2d"], "remove": ["none"],
                                              "debias": ["difference"]})
    with pytest.raises(RayStarted):
        runner.run_sweep(spec, cluster=str(REPO / "cluster.yaml"))
    err = capsys.readouterr().err
    assert "gpu: warning: trial " in err and "> 0.1 × " in err

    spec = make_spec(tmp_path, gpu=1, axes={"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["difference"]})
    with pytest.raises(RayStarted):
        runner.run_sweep(spec, cluster=str(REPO / "cluster.yaml"))
    assert "warning" not in capsys.readouterr().err


def test_importing_the_budget_imports_no_torch():
    import subprocess

    code = ("import sys; import sweep.run.gpu_budget, model.cost; "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_a_preset_axis_is_predicted_per_preset(tmp_path, workers):
    from sweep.spec import Axes

    if "preset" not in Axes.model_fields:
        pytest.skip("no preset axis in this tree")
    axes = {"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["difference"],
            "preset": ["zeroscope", "videocrafter2"]}
    budget = predict_plan(make_plan(make_spec(tmp_path, axes=axes)), ["A10G"])
    settings = {t.preset: t.setting for t in budget.trials}
    assert settings["zeroscope"] == "zeroscope 24×320×576 qk=1d v=2d"
    if "videocrafter2" in budget.unpredicted:  # a preset the cost model was not fitted for is said, not fatal
        assert budget.unpredicted_trials == 1 and "videocrafter2" in format_budget(budget)
        return
    assert settings["videocrafter2"] == "videocrafter2 16×320×512 qk=1d v=2d"
    small, large = sorted(budget.trials, key=lambda t: t.frames)
    assert small.predicted_gpu_memory_gib["A10G"] < large.predicted_gpu_memory_gib["A10G"]
