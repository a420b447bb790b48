"""The rules between the rooms (pyproject.toml's import-linter contracts, docs/architecture.md): they hold, a broken
one is caught, the single-file modules import nothing of the project, and writing a report never loads torch or Ray."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO

PACKAGES = ("model", "evaluation", "toyworld", "sweep")
PROJECT = {*PACKAGES, "vocabulary", "videoio"}


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the tree at `root` (its pyproject.toml, its packages first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", "--no-logo", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """The packages and pyproject.toml, copied (without the shipped weights) so a test can break them."""
    root = tmp_path_factory.mktemp("tree")
    skip = shutil.ignore_patterns("__pycache__", "toy_world", "*.md")
    for name in PACKAGES:
        shutil.copytree(REPO / name, root / name, ignore=skip)
    for name in ("pyproject.toml", "vocabulary.py", "videoio.py"):
        shutil.copy(REPO / name, root / name)
    return root


#: (file, the import planted at its end, the contract that must catch it)
PLANTED = [
    ("model/embeddings.py", "import evaluation", "The rooms, top to bottom"),
    ("evaluation/clip.py", "from model import presets", "The rooms, top to bottom"),
    ("model/config.py", "import toyworld", "The rooms, top to bottom"),
    ("sweep/results/tables.py", "import ray", "Results (store, tables) import neither Ray nor torch"),
    ("sweep/results/store.py", "import torch", "Results (store, tables) import neither Ray nor torch"),
    ("sweep/report/__init__.py", "from sweep.run import plan", "Report and study code never reach the run code"),
    ("sweep/study/stats.py", "import sweep.report", "Inside the sweep"),
    ("sweep/run/trial.py", "from sweep import cli", "Nothing imports a command line"),
    ("sweep/run/plan.py", "from . import trial", "No two modules import each other"),
    ("evaluation/motion.py", "import ray", "The method and the metrics know nothing of Ray"),
]


@pytest.mark.parametrize("file, line, contract", PLANTED, ids=[f"{f}:{line}" for f, line, _ in PLANTED])
def test_a_planted_violation_is_caught(tree_copy, file, line, contract):
    path = tree_copy / file
    original = path.read_text()
    path.write_text(original + f"\n{line}  # planted by the test\n")
    try:
        result = lint_imports(tree_copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0, f"{line!r} in {file} broke no contract:\n{result.stdout}"
    broken = [block for block in result.stdout.split("\n\n") if "BROKEN" in block]
    assert any(contract in " ".join(block.split()) for block in broken), result.stdout


@pytest.mark.parametrize("module", ["vocabulary.py", "videoio.py"])
def test_the_single_file_modules_import_nothing_of_the_project(module):
    imported = set()
    for node in ast.walk(ast.parse((REPO / module).read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & PROJECT, f"{module} imports {sorted(imported & PROJECT)}"


def test_writing_a_report_loads_neither_torch_nor_ray(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from helpers.sweeps import make_spec, run_fake
        from sweep.report import report
        spec = make_spec(Path({str(tmp_path)!r}), n_videos=5)
        run_fake(spec)
        report(spec.storage, n_boot=50, echo=False)
        print(sorted(m for m in ("torch", "ray") if m in sys.modules))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "results" / "report" / "index.html").is_file()
