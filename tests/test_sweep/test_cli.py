"""sweep/cli.py, as a user sees it in the terminal: `run` and `demo` print progress (a line per finished trial with
the run's counts and an ETA), no Tune noise (its repeated snapshot warning, its TensorBoard hint at a driver-side
folder, its status tables), and end on the paper-style table and where the report is; `--verbose` brings Tune's own
output back. The fast tier's check of a quiet `run` is test_runner.py's (on the run its runner tests share); these
are the slow tier's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import videoio
from helpers.terminal import assert_quiet_progress_then_answer, motion_sweep


def tiny_spec(folder: Path, name: str) -> Path:
    """One video, the paper's method: 1 trial on the tiny preset, a few steps (Tune's tables show any trial)."""
    video = videoio.write_video(folder / "v0.mp4", videoio.moving_shape_video(10, 64, 64, direction=(1.0, 0.0)))
    data = [{"video": str(video), "source_prompt": "a square moves", "prompts": ["a ball rolls"]}]
    spec = {"name": name, "preset": "tiny", "storage": str(folder / "results"), "data": data,
            "axes": {"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["difference"]},
            "inversion": {"steps": 4, "ddim_steps": 2}, "generation": {"steps": 2}, "resources": {"cpu": 1}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow  # (the fast tier checks the quiet terminal on test_runner.py's demo-shaped `run`)
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
