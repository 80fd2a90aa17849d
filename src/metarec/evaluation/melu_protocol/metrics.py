"""Metrics within a user's query (hand-computed values in the tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ---- metrics within a user's query -----------------------------------------------------------


def ndcg_within(predicted: np.ndarray, actual: np.ndarray, k: int, tie_key: np.ndarray) -> float:
    """nDCG@k of a user's query books ordered by predicted rating (graded gains).

    ``DCG@k = sum_{r=1..min(k,n)} (2^{rel_r} - 1) / log2(r + 1)`` with ``rel_r`` the actual
    rating of the book ranked r-th; ``IDCG@k`` is the same sum over the books sorted by actual
    rating; the value is ``DCG / IDCG`` (0 when IDCG is 0, which ratings >= 1 never give).

    Args:
        predicted: ``(n,)`` predicted ratings.
        actual: ``(n,)`` actual ratings.
        k: cutoff, >= 1.
        tie_key: ``(n,)`` breaks equal predictions (lower first): a seeded random key, the same
            for every method, so a constant predictor scores a random order's nDCG.

    Returns:
        nDCG@k in [0, 1].
    """
    order = np.lexsort((tie_key, -predicted))[:k]
    discounts = 1.0 / np.log2(np.arange(2, len(order) + 2))
    gains = np.exp2(actual) - 1.0
    ideal = float(np.sort(gains)[::-1][: len(order)] @ discounts)
    return float(gains[order] @ discounts) / ideal if ideal > 0 else 0.0


def user_metrics(
    predicted: np.ndarray, actual: np.ndarray, ks: Sequence[int], tie_key: np.ndarray
) -> dict[tuple[str, int | None], float]:
    """MAE, RMSE and nDCG@k of one user's query predictions."""
    error = predicted - actual
    out: dict[tuple[str, int | None], float] = {
        ("mae", None): float(np.abs(error).mean()),
        ("rmse", None): float(np.sqrt((error**2).mean())),
    }
    for k in ks:
        out[("ndcg", k)] = ndcg_within(predicted, actual, k, tie_key)
    return out
