"""motion-sweep orchestration: spec -> plan -> Ray Tune trials -> Arrow result tables -> report.

    spec.py     the sweep spec (YAML, validated before any Ray work)
    run/        planning, the trial loop, Tune adapters, preflight, the runner (the one place that builds the Tuner)
    results/    the content-addressed store and the Parquet tables (no Ray, no torch)
    report/     statistics, summaries, markdown, the HTML report
    study/      the user-preference study (definition, votes, statistics, server, page)
    demo.py     `motion-sweep demo`'s specs;  cli.py  the `motion-sweep` command line

Importing `sweep` is cheap: the names below load their module (and torch/ray behind the trials) on first use.

    from sweep import load_spec, make_plan, load, summarize, compare, report, Store
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

_LAZY = {
    "load_spec": "spec", "Spec": "spec", "SpecError": "spec",
    "make_plan": "run.plan", "plan_summary": "run.plan", "Plan": "run.plan", "Trial": "run.plan",
    "run_sweep": "run.runner",
    "Store": "results.store",
    "load": "results.tables", "write_part": "results.tables", "compact": "results.tables",
    "describe_tables": "results.schemas",
    "summarize": "report", "compare": "report", "report": "report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------
# Modules that moved when sweep/ became sub-packages. Code written against the old names (a notebook's
# `from sweep.tables import load`) keeps working: each old name is a small module that finds the name in the
# modules it became, with a DeprecationWarning naming the new place, or an error naming where to look.

MOVED = {  # each old module -> the modules it became, those that define names before those that import them
    "sweep.tables": ("sweep.results.schemas", "sweep.results.parts", "sweep.results.tables"),
    "sweep.store": ("sweep.results.store", "sweep.results.leases"),
    "sweep.plan": ("sweep.run.videos", "sweep.run.plan"),
    "sweep.runner": ("sweep.run.preflight", "sweep.run.videos", "sweep.run.tune", "sweep.run.runner"),
    "sweep.trainable": ("sweep.results.leases", "sweep.run.workers", "sweep.run.artefacts", "sweep.run.trial",
                        "sweep.run.tune"),
    "sweep.search": ("sweep.run.search", "sweep.demo"),
    "sweep.html_report": ("sweep.report.html", "sweep.report.page", "sweep.report.plots", "sweep.report.gallery"),
}


def _moved_attribute(old: str, name: str) -> Any:
    for new in MOVED[old]:
        module = importlib.import_module(new)
        if hasattr(module, name):
            warnings.warn(f"{old}.{name} moved to {new}.{name}; import it from there", DeprecationWarning,
                          stacklevel=3)
            return getattr(module, name)
    raise AttributeError(f"{old} was split up and {name!r} is in none of {', '.join(MOVED[old])} (renamed?); "
                         "see docs/architecture.md for where each thing lives now")


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        return importlib.machinery.ModuleSpec(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        module = types.ModuleType(spec.name, f"Moved: {', '.join(MOVED[spec.name])}.")
        module.__getattr__ = lambda name, _old=spec.name: _moved_attribute(_old, name)
        return module

    def exec_module(self, module) -> None:
        pass


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
