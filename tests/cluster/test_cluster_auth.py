"""README's Jobs flow with Ray's token authentication on, against a real head on this machine.

A head started the way cluster.yaml starts one (`RAY_AUTH_MODE=token`, dashboard on 127.0.0.1), its token in a
file of the test's own (as ~/.ray/auth_token is on a laptop and, through file_mounts, on every node). Then, as a
user would: without the token `ray job submit` is refused; with it, a tiny-preset sweep submitted with
`--working-dir .` from a copy of the repository (so .rayignore decides what is uploaded) runs and its tables land.
The head runs in the foreground (`ray start --block`) of a process this test owns, so stopping it stops only
the Ray this test started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import videoio
from helpers import REPO

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH", "RAY_ADDRESS")) and k != "RAY_JOB_CONFIG_JSON_ENV_VAR"}
    # the project's console scripts on PATH, as `pip install` puts them on a cluster node's
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **extra)
    return env


@pytest.fixture(scope="module")
def token_head():
    """A local head with token auth: (dashboard URL, token file, the token)."""
    if not Path(RAY).exists():
        pytest.fail(f"the ray CLI is missing next to {sys.executable}")
    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's unix sockets live under it
    token = secrets.token_hex(32)
    token_file = tmp / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    dash = _free_port()
    env = _clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    log = open(tmp / "head.log", "wb")
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
         "--num-cpus=2", "--num-gpus=0", f"--temp-dir={tmp / 'ray'}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the Jobs API answers (with the token) once the dashboard is up
            ok = subprocess.run([RAY, "job", "list", "--address", url], env=env, capture_output=True, text=True,
                                timeout=60)
            if ok.returncode == 0:
                break
            if head.poll() is not None:
                pytest.fail("the head exited:\n" + (tmp / "head.log").read_text()[-3000:])
            time.sleep(2)
        else:
            pytest.fail("the head's Jobs API did not come up in 120 s:\n" + (tmp / "head.log").read_text()[-3000:])
        yield url, token_file, token
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops the processes it started
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_job_without_the_token_is_refused(token_head, tmp_path):
    url, _, _ = token_head
    home = tmp_path / "home"  # no ~/.ray/auth_token there either
    home.mkdir()
    out = subprocess.run([RAY, "job", "submit", "--address", url, "--", "echo", "hello"], capture_output=True,
                         text=True, timeout=120, env=_clean_env(HOME=str(home)))
    assert out.returncode != 0
    assert "authentication" in (out.stdout + out.stderr).lower(), out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.slow
def test_readmes_job_flow_runs_a_sweep_with_the_token(token_head, tmp_path):
    url, token_file, token = token_head
    work = tmp_path / "motion-sweep"  # a copy of the repository, as `--working-dir .` from its root ships it
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".git", "*.pyc", "__pycache__", "*.egg-info"))
    (work / "results").mkdir()
    (work / "results" / "big-old-run.bin").write_bytes(os.urandom(1 << 20))  # left out by .rayignore
    (work / "specs").mkdir(exist_ok=True)
    videoio.write_video(work / "specs" / "square.mp4", videoio.moving_shape_video(10, 64, 64))
    storage = tmp_path / "tables"  # on this machine: the head and its workers see it
    (work / "specs" / "auth.yaml").write_text(yaml.safe_dump({
        "name": "with-token", "preset": "tiny", "storage": str(storage),
        "data": [{"video": "square.mp4", "source_prompt": "a red square slides", "prompts": ["a ball rolls"]}],
        "axes": {"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["none"]},
        "inversion": {"steps": 2, "ddim_steps": 2}, "generation": {"steps": 2}}))
    env = _clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file), RAY_ADDRESS=url)
    out = subprocess.run([RAY, "job", "submit", "--working-dir", ".", "--", "motion-sweep", "run",
                          "specs/auth.yaml", "--address", "auto"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "tables:" in text and token not in text  # the driver's output came back; the token never shows
    from sweep.results.tables import load

    rows = load(storage / "with-token")
    assert rows.num_rows == 1 and rows.column("status").to_pylist() == ["ok"]
