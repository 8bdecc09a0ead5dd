"""Bland-Altman agreement between two measurements of the same quantities.

Typical use: spine area per slice (mm²) or spine volume per case (mL) from the prediction
(``a``) against the ground truth (``b``). Differences are ``a - b``, so a positive bias means
the prediction measures too much.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from spineseg.errors import InputError

LIMITS_Z = 1.96
"""Half-width of the 95 % limits of agreement in SDs of the differences (normal quantile)."""


@dataclass(frozen=True)
class BlandAltmanStats:
    """Agreement statistics of ``n`` paired measurements.

    bias: mean of the differences ``a - b``.
    sd: sample standard deviation of the differences (``ddof=1``).
    lower_limit, upper_limit: 95 % limits of agreement, ``bias -/+ 1.96 sd``.
    n: number of pairs.
    means: ``(a + b) / 2`` per pair, shape ``(n,)`` (the plot's x axis).
    differences: ``a - b`` per pair, shape ``(n,)`` (the plot's y axis).
    """

    bias: float
    sd: float
    lower_limit: float
    upper_limit: float
    n: int
    means: np.ndarray
    differences: np.ndarray

    def summary(self) -> dict[str, float | int]:
        """The scalar statistics as a plain dict (for JSON or a table)."""
        return {
            "bias": self.bias,
            "sd": self.sd,
            "lower_limit": self.lower_limit,
            "upper_limit": self.upper_limit,
            "n": self.n,
        }


def _as_measurements(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(name, f"expected a sequence of numbers, got {values!r}") from exc
    if array.ndim != 1:
        raise InputError(name, f"expected a 1D sequence of measurements, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError(name, f"{int((~np.isfinite(array)).sum())} value(s) are NaN or infinite")
    return array


def bland_altman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> BlandAltmanStats:
    """Bias, SD and 95 % limits of agreement of paired measurements ``a`` and ``b``.

    a, b: 1D sequences of the same length ``n >= 2`` (an SD needs two pairs), finite numbers.
    Raises ``InputError`` naming ``a``/``b`` otherwise.
    """
    first = _as_measurements(a, "a")
    second = _as_measurements(b, "b")
    if first.shape != second.shape:
        raise InputError("a/b", f"need the same number of measurements, got {first.size} and {second.size}")
    if first.size < 2:
        raise InputError("a/b", f"Bland-Altman needs at least 2 pairs, got {first.size}")
    differences = first - second
    bias = float(differences.mean())
    sd = float(differences.std(ddof=1))
    return BlandAltmanStats(
        bias=bias,
        sd=sd,
        lower_limit=bias - LIMITS_Z * sd,
        upper_limit=bias + LIMITS_Z * sd,
        n=int(first.size),
        means=(first + second) / 2.0,
        differences=differences,
    )
