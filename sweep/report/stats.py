"""The report's statistics, said once: CIs over videos, the paired test, Holm's adjustment, the best value of a
column, per-video means, and reading a table's columns for them.

* a metric of a group is the mean over videos of the per-video mean (prompts of one video are not
  independent); its CI is a BCa bootstrap resampling videos (`scipy.stats.bootstrap`), withheld ("n too
  small") under MIN_VIDEOS videos;
* a paired comparison tests per-video mean differences with the Wilcoxon signed-rank test, Holm-adjusted over
  every comparison of one metric.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from vocabulary import METRICS, applied

MIN_VIDEOS = 5  #: fewer videos than this: no CI (printed "n too small"), the bootstrap would be meaningless
TEST = "Wilcoxon signed-rank over per-video mean differences"
CI_METHOD = "BCa bootstrap resampling videos"
STEP = applied("checkpoint_step")  #: the checkpoint column: summaries and comparisons are per step


def video_ci(values: np.ndarray, n_boot: int = 9999, seed: int = 0, confidence: float = 0.95,
             min_videos: int = MIN_VIDEOS) -> tuple[Optional[float], Optional[float], Optional[str]]:
    """CI of the mean of per-video values (BCa bootstrap over videos): (low, high, None), or
    (None, None, why) when it is withheld (fewer than `min_videos` videos, or n_boot=0)."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n < min_videos:
        return None, None, f"n too small: {n} video{'' if n == 1 else 's'} < {min_videos}"
    if n_boot <= 0:
        return None, None, "no bootstrap (n_boot=0)"
    if np.ptp(values) == 0:  # every video agrees: no spread to resample (BCa would divide by zero)
        return float(values[0]), float(values[0]), None
    from scipy.stats import bootstrap

    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the percentile fallback below
        res = bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="BCa", rng=rng)
        lo, hi = res.confidence_interval
        if not (np.isfinite(lo) and np.isfinite(hi)):
            res = bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=confidence,
                            method="percentile", rng=np.random.default_rng(seed))
            lo, hi = res.confidence_interval
    return float(lo), float(hi), None


def signed_rank_p(differences: np.ndarray) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p of per-video differences (exact for small n); 1 when all are 0."""
    d = np.asarray(differences, np.float64)
    if len(d) == 0:
        return None
    if not np.any(d):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d).pvalue)


def holm(p_values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjustment: the k-th smallest of m p-values becomes max_{j<=k} min(1, (m-j+1) p_(j)).
    None entries are not tests: they stay None and do not count in m."""
    order = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])
    out: list[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        out[i] = running
    return out


def best_rows(values: Sequence[Optional[float]], metric: str, digits: int = 4) -> set[int]:
    """Indices of the best value(s) of a column (ties at the shown precision all count), respecting the
    metric's direction (higher is better except FID, KID, appearance leakage...)."""
    shown = [(i, round(v, digits)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not shown:
        return set()
    pick = max if METRICS[metric].higher_is_better else min
    best = pick(v for _, v in shown)
    return {i for i, v in shown if v == best}


def finite(value: Optional[float]) -> bool:
    """Whether a value can enter a statistic (neither missing nor NaN/inf)."""
    return value is not None and math.isfinite(value)


def video_means(videos: Sequence, values: Sequence[float]) -> np.ndarray:
    """The mean of each video's values (videos in first-seen order)."""
    by_video: dict[Any, list[float]] = defaultdict(list)
    for v, x in zip(videos, values):
        by_video[v].append(float(x))
    return np.array([np.mean(x) for x in by_video.values()])


def per_video(units: dict[tuple, float]) -> dict[Any, float]:
    """{video: mean over its units}, units keyed (video, ...)."""
    by_video: dict[Any, list[float]] = defaultdict(list)
    for unit, value in units.items():
        by_video[unit[0]].append(value)
    return {v: float(np.mean(x)) for v, x in by_video.items()}


def mean_over_videos(per_video_values: dict) -> Optional[float]:
    """The mean of `per_video`'s values; None without videos."""
    return float(np.mean(list(per_video_values.values()))) if per_video_values else None


def column(table: pa.Table, name: str) -> list:
    """A column as a list; a list of None when the table lacks it (older rows, other tables)."""
    return table[name].to_pylist() if name in table.column_names else [None] * table.num_rows


def float_column(table: pa.Table, name: str) -> np.ndarray:
    """A numeric column as float64, null as NaN; all NaN when the table lacks it."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table[name]
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
        raise ValueError(f"metric column {name!r} is {col.type}, not numeric")
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
