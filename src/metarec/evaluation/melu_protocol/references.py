"""Closed-form references: damped bias models tuned on held-out users."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metarec.evaluation.melu_protocol.features import RatingFeatures
from metarec.evaluation.melu_protocol.tasks import UserTask

_DAMPING_GRID = (0.0, 1.0, 2.0, 5.0, 10.0, 25.0)  # the bias baselines' tuning budget


# ---- closed-form references ------------------------------------------------------------------


@dataclass(frozen=True)
class BiasReference:
    """The baseline predictor ``mu + b_i + b_u`` with damped means (Koren, "Factor in the
    Neighbors", TKDD 2010, section 2.1), or one of its parts.

    ``b_i = sum(r - mu) / (n_i + item_damping)`` over the book's training ratings (0 for a book
    never rated in training: the item-cold case); ``b_u = sum(r - mu - b_i) / (n_s +
    user_damping)`` over the user's support.
    """

    use_item: bool
    use_user: bool
    item_damping: float = 0.0
    user_damping: float = 0.0

    def predict(self, features: RatingFeatures, task: UserTask) -> np.ndarray:
        """``(n_q,)`` predicted query ratings."""
        b_query = self._item_bias(features, task.query_items)
        b_user = 0.0
        if self.use_user:
            residual = task.support_ratings - features.mu
            residual = residual - self._item_bias(features, task.support_items)
            b_user = float(residual.sum() / (len(residual) + self.user_damping))
        return np.full(len(task.query_items), features.mu + b_user) + b_query

    def _item_bias(self, features: RatingFeatures, items: np.ndarray) -> np.ndarray | float:
        if not self.use_item:
            return 0.0
        total = features.item_count[items] + self.item_damping
        # A book never rated in training has no bias (0 / 0 when undamped).
        return np.divide(features.item_sum[items], total, out=np.zeros(len(items)), where=total > 0)


def tune_reference(
    method: str, features: RatingFeatures, validation: Sequence[UserTask]
) -> BiasReference:
    """The damping(s) of a reference with the lowest mean validation MAE (its tuning budget)."""
    use_item = method in ("bias", "item-mean")
    use_user = method in ("bias", "user-mean")
    grid = [
        BiasReference(use_item, use_user, item_damping, user_damping)
        for item_damping in (_DAMPING_GRID if use_item else (0.0,))
        for user_damping in (_DAMPING_GRID if use_user else (0.0,))
    ]

    def validation_mae(reference: BiasReference) -> float:
        errors = [
            np.abs(reference.predict(features, t) - t.query_ratings).mean() for t in validation
        ]
        return float(np.mean(errors))

    return min(grid, key=validation_mae)
