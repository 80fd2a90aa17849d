"""Uncertainty of per-user metric means, and paired comparisons (PROTOCOL.md §2 item 6).

Inputs are the per-user arrays of :func:`metarec.ranking.metrics.ranking_metrics`, after
dropping the users whose value is NaN (no relevant candidate). NaN is refused here rather than
skipped, so that ``n_users`` in a report always counts exactly the users that were averaged.
The choices (percentile bootstrap, Wilcoxon signed-rank) are argued in ``docs/METRICS.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

from metarec.errors import ConfigError, DataError

# Resampled values are gathered in batches of about this many entries (16 MB of int64 indices,
# 16 MB of float64 values), so memory stays flat even for pooled evaluations over hundreds of
# thousands of users.
_DRAWS_PER_CHUNK = 2_000_000


def bootstrap_ci(
    values: np.ndarray, *, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` with a percentile-bootstrap confidence interval (resampling users).

    Reference: Efron & Tibshirani, *An Introduction to the Bootstrap* (1993), ch. 13.

    Args:
        values: ``(n_users,)`` finite per-user values.
        n_resamples: bootstrap resamples (1,000 is usual for a 95% interval).
        alpha: 1 - confidence level; the interval is the ``alpha/2`` and ``1 - alpha/2``
            quantiles of the resampled means.
        seed: seed of a generator private to this call (the global RNG is never touched), so
            the same inputs always give the same interval.

    Returns:
        ``(mean, low, high)``: the sample mean (not the mean of the resamples) and the interval.

    Raises:
        DataError: ``values`` is empty, not 1-D, or not finite (drop NaN users first).
        ConfigError: ``n_resamples < 1`` or ``alpha`` outside (0, 1).
    """
    return bootstrap_cis([values], n_resamples=n_resamples, alpha=alpha, seed=seed)[0]


def bootstrap_cis(
    arrays: Sequence[np.ndarray], *, n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
) -> list[tuple[float, float, float]]:
    """:func:`bootstrap_ci` of each array, each as if called alone with ``seed``.

    ``scipy.stats.bootstrap`` does the resampling; the percentile interval is taken from its
    resampled means (``bootstrap_distribution``) with ``np.quantile``. The resampled users
    depend only on ``(seed, n_users, n_resamples)``, so arrays of the same length (a launch's
    metrics and cutoffs, over the same users) are resampled together (``paired``): one set of
    draws, which is most of a bootstrap's cost (53M indices for ML-1M's pooled 0-shot users).
    The draws come in batches of about ``_DRAWS_PER_CHUNK`` indices; the stream, and so the
    interval, does not depend on the batch size.
    """
    arrays = [_as_user_values(values, "values") for values in arrays]
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
    out: list[tuple[float, float, float] | None] = [None] * len(arrays)
    by_length: dict[int, list[int]] = {}
    for i, values in enumerate(arrays):
        by_length.setdefault(values.shape[0], []).append(i)
    for n_users, members in by_length.items():
        if n_users == 1:  # every resample is the one user (scipy refuses a single observation)
            for i in members:
                value = float(arrays[i][0])
                out[i] = (value, value, value)
            continue
        batch = max(1, _DRAWS_PER_CHUNK // (n_users * len(members)))  # gathers held at once
        result = scipy_stats.bootstrap(
            tuple(arrays[i] for i in members),
            _means,
            n_resamples=n_resamples,
            batch=batch,
            vectorized=True,
            paired=True,
            axis=-1,
            confidence_level=1.0 - alpha,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        # the interval from the resampled means with numpy's quantile: scipy's own rounds the
        # last bit so that a constant array's low bound can exceed its high one
        means = np.atleast_2d(result.bootstrap_distribution)
        for j, i in enumerate(members):
            low, high = np.quantile(means[j], [alpha / 2.0, 1.0 - alpha / 2.0])
            out[i] = (float(arrays[i].mean()), float(low), float(high))
    return [interval for interval in out if interval is not None]


def _means(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Each resampled array's mean (``scipy.stats.bootstrap``'s statistic, one row per array)."""
    return np.stack([sample.mean(axis=axis) for sample in samples])


def paired_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value that two methods differ, paired over the same users.

    Wilcoxon signed-rank test on the per-user differences ``a - b``. Users with a zero
    difference are dropped (Wilcoxon's original treatment); on the rest scipy takes the exact
    null distribution for up to 50 untied differences, exhaustive permutations for up to 13 tied
    ones, and the tie-corrected normal approximation otherwise; all deterministic. Per-user
    ranking metrics are bounded, lumpy and skewed (most users sit at 0 or a few values), so a
    test that needs no normality is the safer default. It tests whether the differences are
    centred on zero, not the difference of means that the bootstrap intervals describe.

    Reference: Wilcoxon, "Individual comparisons by ranking methods", Biometrics Bulletin 1945.

    Args:
        a: ``(n_users,)`` finite per-user values of method A.
        b: ``(n_users,)`` the same users' values of method B, in the same order.

    Returns:
        The p-value in [0, 1]; exactly 1.0 when every difference is zero.

    Raises:
        DataError: the arrays are empty, not 1-D, of different lengths, or not finite.
    """
    a = _as_user_values(a, "a")
    b = _as_user_values(b, "b")
    if a.shape != b.shape:
        raise DataError(
            f"paired test needs the same users in a and b, got {a.shape[0]} and {b.shape[0]} "
            "values; align both methods on the users that have a value for each"
        )
    differences = a - b
    # Users with equal values are dropped here rather than by scipy, which would otherwise
    # switch to the normal approximation whenever any zero difference is present.
    differences = differences[differences != 0.0]
    if differences.size == 0:
        return 1.0  # no evidence of any difference; scipy would divide 0 by 0 here
    return float(scipy_stats.wilcoxon(differences).pvalue)


def _as_user_values(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] == 0:
        raise DataError(
            f"{name} must be a non-empty 1-D array of per-user values, got shape {values.shape}"
        )
    if not np.isfinite(values).all():
        raise DataError(
            f"{name} holds {int((~np.isfinite(values)).sum())} non-finite value(s); drop users "
            "without a relevant candidate first (values[~np.isnan(values)])"
        )
    return values


def gain_in_standard_errors(candidate: np.ndarray, reference: np.ndarray | None) -> float:
    """Mean paired difference of per-user values over its standard error (inf: no reference;
    users undefined in either are left out)."""
    if reference is None:
        return math.inf
    difference = candidate - reference
    difference = difference[np.isfinite(difference)]
    if len(difference) < 2:
        return 0.0
    gain = float(difference.mean())
    error = float(difference.std(ddof=1)) / math.sqrt(len(difference))
    if error == 0.0:
        return math.inf if gain > 0 else 0.0
    return gain / error
