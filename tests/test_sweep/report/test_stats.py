"""The report's small statistics (`sweep.report.stats`): Holm's adjustment against a hand-computed example."""

import pytest

from sweep.report import holm


def test_holm_equals_a_hand_computed_example():
    # sorted: 0.005×4 = 0.02, 0.01×3 = 0.03, 0.03×2 = 0.06, 0.04×1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []
