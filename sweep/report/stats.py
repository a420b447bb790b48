"""The report's statistics, said once: the CI and test of a mean over videos, Holm's adjustment, what a design can
detect, the best value of a column, per-video means, and reading a table's columns for them.

* a metric of a group is the mean over videos of the per-video mean (prompts of one video are not
  independent), and a paired comparison's estimate the mean over videos of per-video mean differences;
* both are tested (`paired_test`) with two tests of "the mean is δ": an exact sign-flip permutation test (exact
  when values are symmetric about δ, as a variant that changes nothing makes each video's difference; all 2^n
  sign patterns up to EXACT_MAX_VIDEOS videos, seeded random ones beyond) and a studentized bootstrap
  (bootstrap-t) resampling videos (right when values are skewed, where sign flips are not). p is the larger of
  the two; the CI (`video_ci` for a summary's mean, the same interval) is the set of δ that neither test
  rejects, so "the CI excludes 0" and "p < 1 − confidence" say the same thing. Chosen by measured coverage
  (tests/test_sweep/report/test_stats_simulation.py): 0.96 (normal) and 0.95 (skewed values) at 8 videos, where
  the BCa bootstrap used before covered 0.89 and 0.86 and its Wilcoxon test agreed with it in 62 % of runs;
* the exact test cannot go below 2/2^n (`smallest_p`), so a 95 % CI needs 6 videos (MIN_VIDEOS; `fewest_videos`
  for other levels), and Holm over m comparisons cannot go below m times that (`smallest_p_holm`);
* the Wilcoxon signed-rank p stays beside it (`signed_rank_p`): it tests a pseudo-median, not the mean the CI is
  of, so it may disagree with the CI.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from vocabulary import METRICS, applied

MIN_VIDEOS = 6  #: fewer videos than this: no CI ("n too small"): with 5 the exact test's smallest p is 2/2^5 > 0.05
EXACT_MAX_VIDEOS = 20  #: up to this many videos the sign-flip test enumerates all 2^n patterns (2^20: 1M, ~0.1 s)
CI_METHOD = "interval of the values that neither an exact sign-flip test nor a bootstrap-t test over videos rejects"
PAIRED_CI_METHOD = CI_METHOD + " (it excludes 0 exactly when p < 1 − confidence)"
TEST = ("the larger p of an exact sign-flip permutation test and a bootstrap-t test of the mean per-video "
        "difference")
STEP = applied("checkpoint_step")  #: the checkpoint column: summaries and comparisons are per step


@dataclass(frozen=True)
class MeanTest:
    """`paired_test`'s answer: the CI of the mean over videos (None with `note` saying why) and the p of "the mean
    is 0", with the two tests it is the larger of (p_bootstrap None when the values have no spread)."""
    low: Optional[float]
    high: Optional[float]
    note: Optional[str]
    p: Optional[float]
    p_sign_flip: Optional[float]
    p_bootstrap: Optional[float]


@dataclass(frozen=True)
class _Inverted:
    """One resampling test of "mean = δ" inverted: the δ it does not reject (±inf when unbounded), p at δ = 0."""
    low: float
    high: float
    p: float


def _per_video_values(values: Any, what: str) -> np.ndarray:
    """Per-video values as float64, refusing NaN/inf: a silent NaN CI or p would hide a missing video."""
    x = np.asarray(values, np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} takes one value per video (a 1-D array), got shape {x.shape}")
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise ValueError(f"{what}: {bad} of {len(x)} per-video values are NaN/inf; leave out the videos without a "
                         "value (stats.finite) before calling it")
    return x


def _alpha(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    return round(1.0 - confidence, 12)  # 0.05, not 0.050000000000000044: p = 0.05 must not count as below it


def fewest_videos(confidence: float = 0.95) -> int:
    """The fewest videos with a bounded CI at `confidence`: the exact sign-flip test's smallest p, 2/2^n, must be
    below 1 − confidence (6 at 95 %, 8 at 99 %)."""
    return math.floor(math.log2(2 / _alpha(confidence)) + 1e-9) + 1


def _invert(points: np.ndarray, n_draws: int, alpha: float, always: int = 0) -> _Inverted:
    """A resampling test of "mean = δ" and the interval of δ it does not reject, from `points`: each draw other
    than the data's own is at least as extreme upward as the data when its point is <= δ (downward when >= δ);
    `always` further draws tie with the data at every δ. The data count as a draw ((b + 1) / (B + 1)), n_draws in
    all: p_up(δ) = (1 + always + #{point <= δ}) / n_draws, p = min(1, 2 min(p_up, p_down)), and
    {δ: p(δ) >= alpha} = [c-th smallest point, c-th largest point]; p(0) < alpha exactly when 0 is outside."""
    up = (1 + always + np.count_nonzero(points <= 0)) / n_draws
    down = (1 + always + np.count_nonzero(points >= 0)) / n_draws
    p = float(min(1.0, 2.0 * min(up, down)))
    c = math.ceil(alpha * n_draws / 2 - 1e-9) - 1 - always  # -1e-9: alpha n / 2 = 250 gives 249, not 250
    if c < 1:
        return _Inverted(-math.inf, math.inf, p)
    ends = np.partition(points, [c - 1, len(points) - c])
    return _Inverted(float(ends[c - 1]), float(ends[len(points) - c]), p)


def _sign_flip(d: np.ndarray, n_flips: int, rng: np.random.Generator, alpha: float) -> Optional[_Inverted]:
    """The sign-flip test of the mean, inverted. Flipping the signs of a subset A of the δ-centred values makes
    the sum at least as large as the data's when A's mean is <= δ, so the points are the subsets' means
    (Hartigan's subset means): all 2^n - 1 non-empty subsets up to EXACT_MAX_VIDEOS videos, else n_flips random
    sign patterns (an empty one ties at every δ). None when there are too many videos and no n_flips."""
    n = len(d)
    if n <= EXACT_MAX_VIDEOS:
        sums, sizes = np.zeros(1), np.zeros(1, np.int64)
        for x in d:  # every subset: those without this video, then those with it
            sums, sizes = np.concatenate([sums, sums + x]), np.concatenate([sizes, sizes + 1])
        return _invert(sums[1:] / sizes[1:], 2 ** n, alpha)
    if n_flips <= 0:
        return None
    flips = rng.random((n_flips, n)) < 0.5
    sizes = flips.sum(axis=1)
    sums = flips.astype(np.float64) @ d
    some = sizes > 0
    return _invert(sums[some] / sizes[some], n_flips + 1, alpha, always=int(np.count_nonzero(~some)))


def _bootstrap_t(d: np.ndarray, n_boot: int, rng: np.random.Generator, alpha: float) -> Optional[_Inverted]:
    """The studentized bootstrap of the mean, inverted: T* = (mean* - mean) / se* over n_boot resamples of the
    videos, and a resample is at least as extreme upward as the data at δ when T* >= (mean - δ) / se, i.e. when
    mean - T* se <= δ: those are the points. A resample without spread has T* = ±inf (0 when its mean is the
    data's). None without spread in the data or without resamples."""
    n = len(d)
    if n_boot <= 0 or n < 2 or np.ptp(d) == 0:
        return None
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(n)
    resamples = d[rng.integers(0, n, size=(n_boot, n))]
    shift = resamples.mean(axis=1) - mean
    se_star = resamples.std(axis=1, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = np.where(se_star > 0, shift / se_star, np.sign(shift) * np.inf)
    t_star = np.nan_to_num(t_star, nan=0.0, posinf=np.inf, neginf=-np.inf)  # sign(0) * inf
    return _invert(mean - t_star * se, n_boot + 1, alpha)


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the random sign flips and the bootstrap resamples."""
    flips, boot = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(flips), np.random.default_rng(boot)


def paired_test(values: np.ndarray, n_boot: int = 9999, seed: int = 0, confidence: float = 0.95,
                min_videos: int = MIN_VIDEOS) -> MeanTest:
    """The test over videos of per-video values (a comparison's per-video mean differences, variant − baseline):
    p of "the mean is 0", the larger of the exact sign-flip test's and the bootstrap-t test's, and the CI of the
    mean, the values neither test rejects (both inverted with the same draws, so the CI excludes 0 exactly when
    p < 1 − confidence). The CI is withheld (note says why) under max(min_videos, fewest_videos(confidence))
    videos, when it is unbounded, or without resamples (n_boot=0: no p either); p stays with few videos. Values
    that all agree have no bootstrap: the sign-flip test alone. NaN/inf values raise ValueError."""
    d = _per_video_values(values, "paired_test")
    alpha, n = _alpha(confidence), len(d)
    if n == 0:
        return MeanTest(None, None, "no matched units", None, None, None)
    flip_rng, boot_rng = _rngs(seed)
    flip, boot = _sign_flip(d, n_boot, flip_rng, alpha), _bootstrap_t(d, n_boot, boot_rng, alpha)
    p_flip, p_boot = (flip.p if flip else None), (boot.p if boot else None)
    if n_boot <= 0:
        return MeanTest(None, None, "no bootstrap (n_boot=0): no CI and no p", None, p_flip, None)
    tests = [t for t in (flip, boot) if t is not None]
    p = max(t.p for t in tests)
    low, high = min(t.low for t in tests), max(t.high for t in tests)
    fewest = max(min_videos, fewest_videos(confidence))
    if n < fewest:
        note = f"n too small: {n} video{'' if n == 1 else 's'} < {fewest}"
    elif not (math.isfinite(low) and math.isfinite(high)):
        note = _unbounded_note(n_boot, confidence)
    else:
        return MeanTest(low, high, None, p, p_flip, p_boot)
    return MeanTest(None, None, note, p, p_flip, p_boot)


def video_ci(values: np.ndarray, n_boot: int = 9999, seed: int = 0, confidence: float = 0.95,
             min_videos: int = MIN_VIDEOS) -> tuple[Optional[float], Optional[float], Optional[str]]:
    """CI of the mean of per-video values: `paired_test`'s (the values that neither the exact sign-flip test nor
    the bootstrap-t test rejects): (low, high, None), or (None, None, why) when it is withheld (fewer than
    max(min_videos, fewest_videos(confidence)) videos, n_boot too small, or unbounded). Values that all agree
    give (value, value). NaN/inf values raise ValueError."""
    tested = paired_test(_per_video_values(values, "video_ci"), n_boot, seed, confidence, min_videos)
    return tested.low, tested.high, tested.note


def _unbounded_note(n_boot: int, confidence: float) -> str:
    """Why a CI with enough videos is unbounded: too few draws for the level, or resamples without spread."""
    needed = math.floor(2 / _alpha(confidence) - 1 + 1e-9) + 1  # n_boot + 1 draws must exceed 2 / alpha
    if n_boot < needed:
        return f"n_boot={n_boot} is too few resamples for a {confidence:.0%} CI (needs >= {needed})"
    return "CI unbounded: too many resamples without spread (tied per-video values)"


def smallest_p(n_videos: int, n_boot: int = 9999) -> Optional[float]:
    """The smallest p `paired_test` can give with n_videos videos: its sign-flip test's 2/2^n (exact up to
    EXACT_MAX_VIDEOS videos) or 2/(n_boot + 1) with random flips, and its bootstrap's 2/(n_boot + 1), whichever is
    larger. None without videos or resamples (no p)."""
    if n_videos < 1 or n_boot <= 0:
        return None
    flip = 2.0 / 2 ** n_videos if n_videos <= EXACT_MAX_VIDEOS else 2.0 / (n_boot + 1)
    return min(1.0, max(flip, 2.0 / (n_boot + 1)))


def smallest_p_holm(n_videos: int, family_size: int, n_boot: int = 9999) -> Optional[float]:
    """The smallest Holm-adjusted p among family_size comparisons with n_videos videos: Holm multiplies the
    smallest p by the family size, so family_size × smallest_p (at most 1). With 8 videos and 12 comparisons:
    12 × 2/256 = 0.094, so no comparison can reach p_holm < 0.05."""
    p = smallest_p(n_videos, n_boot)
    return None if p is None or family_size < 1 else min(1.0, family_size * p)


def signed_rank_p(differences: np.ndarray) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p of per-video differences (exact for small n); 1 when all are 0; None
    without differences. It tests a pseudo-median, not the mean the CI is of. NaN/inf raise ValueError."""
    d = _per_video_values(differences, "signed_rank_p")
    if len(d) == 0:
        return None
    if not np.any(d):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d).pvalue)


def holm(p_values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjustment: the k-th smallest of m p-values becomes max_{j<=k} min(1, (m-j+1) p_(j)).
    None and NaN entries are not tests: they stay as they are and do not count in m (statsmodels' multipletests
    keeps NaN in place too, but counts it in m)."""
    tests = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    outside = [p_values[i] for i in tests if not 0 <= p_values[i] <= 1]
    if outside:
        raise ValueError(f"p-values must lie in [0, 1], got {outside}")
    out: list[Optional[float]] = list(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(tests, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (len(tests) - rank) * p_values[i]))
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
