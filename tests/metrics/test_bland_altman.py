"""Bland-Altman statistics on numbers small enough to do on paper."""

from __future__ import annotations

import numpy as np
import pytest

from spineseg.errors import InputError
from spineseg.metrics import bland_altman


def test_three_pairs_by_hand() -> None:
    # a - b = [2, 4, 6]: bias 4; deviations [-2, 0, 2], sum of squares 8, / (3 - 1) = 4, SD 2.
    # limits: 4 -/+ 1.96 * 2 = 0.08 and 7.92. Means: (12+10)/2 = 11, 22, 33.
    stats = bland_altman([12.0, 24.0, 36.0], [10.0, 20.0, 30.0])
    assert stats.bias == pytest.approx(4.0)
    assert stats.sd == pytest.approx(2.0)
    assert stats.lower_limit == pytest.approx(0.08)
    assert stats.upper_limit == pytest.approx(7.92)
    assert stats.n == 3
    np.testing.assert_allclose(stats.means, [11.0, 22.0, 33.0])
    np.testing.assert_allclose(stats.differences, [2.0, 4.0, 6.0])
    assert stats.summary() == {
        "bias": pytest.approx(4.0),
        "sd": pytest.approx(2.0),
        "lower_limit": pytest.approx(0.08),
        "upper_limit": pytest.approx(7.92),
        "n": 3,
    }


def test_negative_bias_when_the_first_measures_less() -> None:
    # a - b = [-1, -3]: bias -2; deviations [1, -1], sum of squares 2, / 1 = 2, SD sqrt(2).
    stats = bland_altman(np.array([4.0, 5.0]), np.array([5.0, 8.0]))
    assert stats.bias == pytest.approx(-2.0)
    assert stats.sd == pytest.approx(2**0.5)
    assert stats.upper_limit == pytest.approx(-2.0 + 1.96 * 2**0.5)


def test_perfect_agreement_has_zero_width_limits() -> None:
    stats = bland_altman([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (stats.bias, stats.sd, stats.lower_limit, stats.upper_limit) == (0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1.0], [2.0], "at least 2 pairs"),
        ([], [], "at least 2 pairs"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], "same number"),
        ([1.0, float("nan")], [1.0, 2.0], "NaN"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1D"),
        (["x", "y"], [1.0, 2.0], "numbers"),
    ],
)
def test_bad_inputs(a: list, b: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        bland_altman(a, b)
