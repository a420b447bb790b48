"""benchmarks/gpu_check.py runs end to end at a tiny size on the CPU (the code a GPU owner runs cannot rot), and
writes measured and predicted figures side by side."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_at_tiny_size(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--gen-steps", "3",
                           "--repeats", "2", "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "inversion step" in proc.stdout and "generation" in proc.stdout
    report = json.loads(out.read_text())
    assert report["preset"] == "tiny" and report["device"] == "cpu" and report["setting"] == "4x64x64"
    rows = report["inversion"]
    assert {(r["precision"], r["checkpointing"]) for r in rows} == {(p, c) for p in ("fp32", "bf16")
                                                                      for c in (True, False)}
    for r in rows:
        m, p = r["measured"], r["predicted"]
        assert m["step_seconds"] > 0 and m["tflop"] > 0 and m["step_peak_gib"] > 0
        # the cost model's figures for the same step, beside the measured ones, within its validation error
        assert abs(p["tflop"] - m["tflop"]) / m["tflop"] <= 0.15, r
        assert abs(p["step_peak_gib"] - m["step_peak_gib"]) / m["step_peak_gib"] <= 0.15, r
    plain = {r["precision"]: r["measured"]["step_peak_gib"] for r in rows if not r["checkpointing"]}
    ckpt = {r["precision"]: r["measured"]["step_peak_gib"] for r in rows if r["checkpointing"]}
    assert all(ckpt[p] < plain[p] for p in plain)  # checkpointing saves activation memory
    gen = report["generation"]
    assert gen["measured"]["seconds_per_video"] > 0 and gen["measured"]["tflop_per_video"] > 0
    assert abs(gen["predicted"]["unet_step_tflop"] - gen["measured"]["unet_step_tflop"]) \
        <= 0.15 * gen["measured"]["unet_step_tflop"]
