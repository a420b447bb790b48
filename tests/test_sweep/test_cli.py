"""sweep/cli.py, as a user sees it in the terminal: `run` and `demo` print progress (a line per finished trial with
the run's counts and an ETA), no Tune noise (its repeated snapshot warning, its TensorBoard hint at a driver-side
folder, its status tables), and end on the paper-style table and where the report is; `--verbose` brings Tune's own
output back."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import videoio

#: What Tune prints on its own (Ray 2.60): none of it belongs in a quiet terminal.
TUNE_NOISE = ("Experiment state snapshotting", "driver_artifacts", "To visualize your results with TensorBoard",
              "Configuration for experiment", "Trial status")


def motion_sweep(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def tiny_spec(folder: Path, name: str) -> Path:
    """Two videos × (the paper's method, MQK removed): 4 trials on the tiny preset, a few steps each."""
    data = []
    for i, direction in enumerate([(1.0, 0.0), (0.0, 1.0)]):
        path = folder / f"v{i}.mp4"
        videoio.write_video(path, videoio.moving_shape_video(10, 64, 64, direction=direction, texture_seed=i))
        data.append({"video": str(path), "source_prompt": f"a square moves ({i})", "prompts": ["a ball rolls"]})
    spec = {"name": name, "preset": "tiny", "storage": str(folder / "results"), "data": data,
            "axes": {"qk": ["1d"], "v": ["2d"], "remove": ["none", "qk"], "debias": ["difference"]},
            "inversion": {"steps": 4, "ddim_steps": 2}, "generation": {"steps": 2}, "resources": {"cpu": 1}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def assert_quiet_progress_then_answer(result: subprocess.CompletedProcess, trials: int, sweep: Path) -> None:
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert not [n for n in TUNE_NOISE if n in out], out[-3000:]
    lines = [line for line in result.stderr.splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    assert len(lines) == trials and lines[-1].startswith(f"[{trials}/{trials}] ")
    assert all(re.search(r"\(\d+ running, 0 failed, \d+ samples written(, ETA \S+)?\)$", line) for line in lines)
    assert any("ETA" in line for line in lines[:-1])
    stdout = result.stdout.rstrip().splitlines()
    assert stdout[-1].startswith(f"report: {sweep / 'report' / 'index.html'}")
    table = [line for line in stdout if line.startswith("| ")]
    assert table[0].startswith("| variant") and "Motion fidelity ↑" in table[0]
    assert any("(baseline)" in line for line in table)
    assert (sweep / "summary.md").read_text().count("## ") >= 3  # the whole markdown goes to summary.md
    assert (sweep / "report" / "index.html").is_file()


def test_run_prints_progress_and_ends_on_the_table_and_the_report_path(tmp_path):
    result = motion_sweep("run", str(tiny_spec(tmp_path, "quiet")), "--num-cpus", "2", cwd=tmp_path)
    assert_quiet_progress_then_answer(result, trials=4, sweep=tmp_path / "results" / "quiet")


@pytest.mark.slow  # (the quiet run above is the fast tier's check of the terminal)
def test_verbose_shows_tunes_own_output(tmp_path):
    result = motion_sweep("run", str(tiny_spec(tmp_path, "loud")), "--num-cpus", "2", "--verbose", "--no-report",
                          cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "Configuration for experiment" in out and "Trial status" in out
    assert not (tmp_path / "results" / "loud" / "summary.md").exists()  # --no-report


@pytest.mark.slow
def test_the_demo_prints_progress_and_ends_on_the_table_and_the_report_path(tmp_path):
    result = motion_sweep("demo", "--preset", "tiny", "--storage", str(tmp_path / "out"), "--num-cpus", "2",
                          cwd=tmp_path)
    assert_quiet_progress_then_answer(result, trials=16, sweep=tmp_path / "out" / "demo-tiny")
    assert "RANDOM-WEIGHT METRIC BACKBONES" in result.stdout  # the table says what its numbers are
