"""The report's statistics (`sweep.report.stats`) against hand-computed values: the exact sign-flip p against a
brute-force enumeration, its CI as the inverted test, the random sign flips beyond 20 videos, the smallest p and
p_holm a design allows, Holm's adjustment (NaN left out of the family, as statsmodels on the rest), and clear
errors for NaN input. The seeded simulations (coverage, agreement) are in test_stats_simulation.py."""

import itertools
import math

import numpy as np
import pytest

from sweep.report import holm, signed_rank_p, video_ci
from sweep.report import stats
from sweep.report.stats import MIN_VIDEOS, fewest_videos, paired_test, smallest_p, smallest_p_holm

D7 = np.array([0.30, -0.10, 0.50, 0.20, 0.45, -0.05, 0.25])


def brute_force_sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p of the mean: the share of all 2^n sign patterns whose |sum| reaches the data's."""
    sums = [abs(np.dot(signs, d)) for signs in itertools.product((1, -1), repeat=len(d))]
    return float(np.mean(np.array(sums) >= abs(d.sum()) - 1e-12))


def test_the_sign_flip_p_is_the_exact_enumeration():
    assert paired_test(D7).p_sign_flip == pytest.approx(brute_force_sign_flip_p(D7), abs=1e-12)
    assert paired_test(D7[:4] - 0.2).p_sign_flip == pytest.approx(brute_force_sign_flip_p(D7[:4] - 0.2), abs=1e-12)
    # all of one sign: only the data and its mirror image reach it, 2/2^n
    assert paired_test(np.abs(D7)).p_sign_flip == pytest.approx(2 / 2 ** 7)


def test_the_ci_is_the_set_of_means_that_neither_test_rejects():
    """Shifting the data by δ tests "mean = δ" with the same draws: p >= 0.05 just inside either end of the CI,
    p < 0.05 just outside; and p is the larger of the two tests."""
    t = paired_test(D7)
    assert t.low < D7.mean() < t.high and t.p == max(t.p_sign_flip, t.p_bootstrap)
    eps = 1e-9
    for inside in (t.low + eps, t.high - eps):
        assert paired_test(D7 - inside).p >= 0.05
    for outside in (t.low - eps, t.high + eps):
        assert paired_test(D7 - outside).p < 0.05
    # the sign-flip part alone is Hartigan's: with 6 videos (c = 1 of 63 subset means) it is [min, max]
    six = D7[:6]
    alone = paired_test(np.full(6, 0.3))  # no spread: no bootstrap, the sign-flip interval is [0.3, 0.3]
    assert (alone.low, alone.high, alone.p_bootstrap) == (0.3, 0.3, None) and alone.p == pytest.approx(2 / 64)
    t6 = paired_test(six)
    assert t6.low <= six.min() and t6.high >= six.max()


def test_five_videos_give_no_ci_because_the_exact_test_cannot_reach_005():
    """The reviewer's example (CI [0.0006, 0.0052] excluding 0 with p = 0.0625) cannot happen: with 5 videos the
    smallest p is 2/2^5 = 0.0625 and the 95 % CI is withheld."""
    t = paired_test(np.array([0.001, 0.002, 0.004, 0.005, 0.006]))
    assert (t.low, t.high) == (None, None) and t.note == "n too small: 5 videos < 6"
    assert t.p_sign_flip == pytest.approx(0.0625) and t.p >= 0.0625 and smallest_p(5) == 0.0625
    assert MIN_VIDEOS == fewest_videos(0.95) == 6 and fewest_videos(0.90) == 5 and fewest_videos(0.99) == 8
    assert video_ci(np.arange(7.0), confidence=0.99)[2] == "n too small: 7 videos < 8"


def test_zero_differences_give_p_one_and_a_zero_ci():
    t = paired_test(np.zeros(6))
    assert (t.low, t.high, t.p, t.p_sign_flip, t.p_bootstrap) == (0.0, 0.0, 1.0, 1.0, None)
    assert signed_rank_p(np.zeros(6)) == 1.0


def test_random_sign_flips_beyond_the_exact_limit(monkeypatch):
    rng = np.random.default_rng(3)
    d = rng.normal(0.4, 1.0, 12)
    exact = paired_test(d).p_sign_flip
    monkeypatch.setattr(stats, "EXACT_MAX_VIDEOS", 10)  # 12 videos: random flips now
    random = paired_test(d, n_boot=20_000, seed=1)
    assert random.p_sign_flip == pytest.approx(exact, abs=0.01) and random.p_sign_flip != exact
    counted = random.p_sign_flip * 20_001 / 2
    assert counted == pytest.approx(round(counted)) and round(counted) >= 1  # (b + 1) / (B + 1), two-sided
    assert paired_test(d, n_boot=20_000, seed=1) == random  # seeded
    monkeypatch.undo()
    far = paired_test(np.full(24, 0.1) + rng.normal(0, 0.001, 24), n_boot=999)  # 24 videos, all positive
    assert far.p_sign_flip == pytest.approx(2 / 1000) and far.p == smallest_p(24, 999) == pytest.approx(2 / 1000)


def test_smallest_p_and_p_holm_a_design_allows():
    assert smallest_p(8) == 2 / 256 and smallest_p(20) == 2 / 10_000  # the bootstrap's 2/(B+1) > 2/2^20 there
    assert smallest_p(13) == 2 / 2 ** 13 and smallest_p(30, n_boot=999) == 2 / 1000
    assert smallest_p(0) is None and smallest_p(8, n_boot=0) is None
    assert smallest_p_holm(8, 12) == pytest.approx(0.09375)  # the 12 comparisons: no star possible
    assert smallest_p_holm(8, 6) == pytest.approx(0.046875) and smallest_p_holm(5, 12) == 0.75
    assert smallest_p_holm(3, 12) == 1.0 and smallest_p_holm(8, 0) is None
    # Holm of 12 comparisons each at the smallest p 8 videos allow
    assert min(holm([smallest_p(8)] * 12)) == pytest.approx(smallest_p_holm(8, 12))


def test_holm_equals_a_hand_computed_example():
    # sorted: 0.005×4 = 0.02, 0.01×3 = 0.03, 0.03×2 = 0.06, 0.04×1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []


def test_holm_leaves_nan_out_of_the_family_and_matches_statsmodels_on_the_rest():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, math.nan, 0.04, None, 0.03]
    adjusted = holm(p)
    assert adjusted[0] == pytest.approx(0.03) and adjusted[2] == adjusted[4] == pytest.approx(0.06)  # m = 3
    assert math.isnan(adjusted[1]) and adjusted[3] is None
    finite = [0.01, 0.04, 0.03, 0.002, 0.2, 0.03]
    assert holm(finite) == pytest.approx(list(multipletests(finite, method="holm")[1]))
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        holm([0.1, 1.5])


@pytest.mark.parametrize("function", [video_ci, signed_rank_p, paired_test])
def test_nan_input_is_an_error_that_says_what_to_do(function):
    with pytest.raises(ValueError, match=r"1 of 6 per-video values are NaN/inf; leave out the videos without a value"):
        function(np.array([0.1, 0.2, np.nan, 0.3, 0.1, 0.2]))


def test_the_ci_moves_and_scales_with_the_values():
    """Location and scale equivariance: a summary's mean (values near 0.3) gets the interval a difference would."""
    x = np.array([0.9, -0.4, 1.7, 0.1, -0.8, 0.3, 2.5, -0.2])
    lo, hi, note = video_ci(x, n_boot=1999, seed=5)
    lo2, hi2, _ = video_ci(0.3 + 0.02 * x, n_boot=1999, seed=5)
    assert note is None and (lo2, hi2) == pytest.approx((0.3 + 0.02 * lo, 0.3 + 0.02 * hi), abs=1e-12)


def test_too_few_resamples_and_no_resamples_say_so():
    x = np.arange(1.0, 9.0)
    assert video_ci(x, n_boot=10) == (None, None, "n_boot=10 is too few resamples for a 95% CI (needs >= 40)")
    assert video_ci(x, n_boot=40)[0] is not None
    t = paired_test(x, n_boot=0)
    assert (t.low, t.p, t.note) == (None, None, "no bootstrap (n_boot=0): no CI and no p")
    assert t.p_sign_flip == pytest.approx(2 / 256)
