"""Sample statistics of measured returns: the sample std (ddof=1) and t confidence intervals of a
mean, with the t distribution's tail and quantile computed here (no SciPy needed)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

CONFIDENCE = 0.95
"""The default level of confidence intervals (and of the tables' paired tests)."""


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for aa in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def _beta_regularized(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_tail(t: float, df: float) -> float:
    """``P(T > t)`` for Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (e.g. 2.776 for
    ``t_quantile(0.975, 4)``), by bisection on the exact tail (:func:`t_tail`) to machine precision.

    >>> round(t_quantile(0.975, 14), 3)
    2.145
    """
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    q = 1.0 - p  # the upper tail to reach
    lo, hi = 0.0, 1.0
    while t_tail(hi, df) > q:
        lo, hi = hi, 2.0 * hi
    while True:
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            return hi
        lo, hi = (mid, hi) if t_tail(mid, df) > q else (lo, mid)


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (``ddof=1``) of ``values``; None for fewer than two."""
    return statistics.stdev(values) if len(values) > 1 else None


def mean_ci(values: Sequence[float], level: float = CONFIDENCE) -> tuple[float, float] | None:
    """The ``level`` confidence interval of the mean of ``values`` (t distribution, ``n - 1`` degrees
    of freedom); None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(0.5 + level / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half
