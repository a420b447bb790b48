"""The CLI as a user runs it (`python -m sweep.cli …` in a subprocess, local Ray on 127.0.0.1), and what its
terminal must show: progress while trials finish, none of Tune's own output, the paper-style table and the
report's path at the end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

#: What Tune prints on its own (Ray 2.60): none of it belongs in a quiet terminal.
TUNE_NOISE = ("Experiment state snapshotting", "driver_artifacts", "To visualize your results with TensorBoard",
              "Configuration for experiment", "Trial status")


def motion_sweep(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "sweep.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_quiet_progress_then_answer(result: subprocess.CompletedProcess, trials: int, sweep: Path) -> None:
    """A successful `run` or `demo` of `trials` trials whose results are in the folder `sweep`."""
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
