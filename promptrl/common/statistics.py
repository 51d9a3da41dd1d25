"""Sample statistics of measured returns: the sample std (ddof=1) and t confidence intervals of a
mean (Student's t quantiles from SciPy)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

CONFIDENCE = 0.95
"""The default level of confidence intervals (and of the tables' paired tests)."""


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (``ddof=1``) of ``values``; None for fewer than two."""
    return statistics.stdev(values) if len(values) > 1 else None


def mean_ci(values: Sequence[float], level: float = CONFIDENCE) -> tuple[float, float] | None:
    """The ``level`` confidence interval of the mean of ``values`` (t distribution, ``n - 1`` degrees
    of freedom); None for fewer than two values."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n = len(values)
    if n < 2:
        return None
    from scipy.stats import t  # imported here: SciPy's stats module takes a while to import

    mean = statistics.fmean(values)
    half = float(t.ppf(0.5 + level / 2.0, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half
