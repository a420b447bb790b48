"""How the report writes its numbers, said once for summary.md and the HTML page: a number at its precision,
the significance marks of a Holm-adjusted p, the CI texts ("[lo, hi]" or why there is none), a summary row's label.
"""

from __future__ import annotations

import math
from typing import Optional

from .stats import STEP

N_TOO_SMALL = "n too small"  #: what a CI withheld for too few videos reads


def num(v: Optional[float], digits: int = 4, sign: bool = False) -> str:
    """A number as shown: `digits` decimals (with its sign when `sign`); ±∞ as "−∞"/"∞" (a one-sided interval's open
    end); "–" when missing or NaN."""
    if v is not None and math.isinf(v):
        return "−∞" if v < 0 else "∞"
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def digits_of(metric: str) -> int:
    """Decimals a metric is shown with (FID's values are in the hundreds)."""
    return 2 if metric == "fid" else 4


def stars(p: Optional[float]) -> str:
    """The significance marks of a Holm-adjusted p: ** under 0.01, * under 0.05 (markdown escapes them)."""
    return "" if p is None else "**" if p < 0.01 else "*" if p < 0.05 else ""


def interval(low: Optional[float], high: Optional[float], sign: bool = False) -> str:
    """A CI as "[low, high]"."""
    return f"[{num(low, sign=sign)}, {num(high, sign=sign)}]"


def mean_ci(rec: dict, metric: str, min_videos: int) -> str:
    """A summary row's CI of `metric`: "[lo, hi]", N_TOO_SMALL when withheld for too few videos, else ""."""
    if rec.get(f"{metric}_low") is not None:
        return interval(rec[f"{metric}_low"], rec.get(f"{metric}_high"))
    return N_TOO_SMALL if rec.get(f"{metric}_mean") is not None and rec["n_videos"] < min_videos else ""


def difference_ci(rec: dict) -> str:
    """A comparison row's CI of the difference: "[lo, hi]" signed, else why there is none."""
    if rec["ci_low"] is not None:
        return interval(rec["ci_low"], rec["ci_high"], sign=True)
    return N_TOO_SMALL if (rec["ci_note"] or "").startswith(N_TOO_SMALL) else rec["ci_note"] or "–"


def row_labels(recs: list[dict]) -> list[str]:
    """A label per summary row: its variant, with its sweep and step where the rows have several."""
    several_steps = len({r.get(STEP) for r in recs}) > 1
    several_sweeps = len({r.get("sweep") for r in recs}) > 1
    return [(f"{r['sweep']}: " if several_sweeps else "") + str(r["variant"])
            + (f" @ {r.get(STEP)}" if several_steps else "") for r in recs]
