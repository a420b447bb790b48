"""motion-sweep orchestration: spec -> plan -> Ray Tune trials -> Arrow result tables.

Importing `sweep` is cheap: the submodules (and torch/ray behind the trainable) load on first use.

    from sweep import load_spec, make_plan, load, summarize
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "load_spec": "spec", "Spec": "spec", "SpecError": "spec",
    "make_plan": "plan", "plan_summary": "plan", "Plan": "plan", "Trial": "plan",
    "Store": "store",
    "load": "tables", "write_part": "tables", "describe_tables": "tables", "compact": "tables",
    "summarize": "report", "compare": "report", "report": "report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
