"""Support / query splits of a category's positives (PROTOCOL.md §2, step 4).

k-shot per user: each eligible user's first ``shots`` positives (by time) are the support set and
the rest the query set. Eligible users have at least ``shots + 1`` positives in the category, so
every one of them has something to predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarec.tasks.category import CategoryData


@dataclass(frozen=True)
class Split:
    """Boolean masks over a category's positives.

    Attributes:
        support: (n_pos,) True for support positives (what a launch has seen).
        query: (n_pos,) True for held-out positives to predict.
        eligible: (n_users,) True for users that take part.
        shots: support size per user (None for a launch split, where it varies).
    """

    support: np.ndarray
    query: np.ndarray
    eligible: np.ndarray
    shots: int | None

    @property
    def n_eligible(self) -> int:
        return int(self.eligible.sum())


def split_k_shot(category: CategoryData, shots: int) -> Split:
    """First ``shots`` positives of every user with at least ``shots + 1`` as support."""
    eligible = category.user_count >= shots + 1
    on = eligible[category.pos_user]
    return Split(
        support=on & (category.pos_rank < shots),
        query=on & (category.pos_rank >= shots),
        eligible=eligible,
        shots=shots,
    )


def split_launch(category: CategoryData) -> Split:
    """Every positive seen so far is support: what adaptation at launch uses (no query)."""
    n = len(category.pos_user)
    return Split(
        support=np.ones(n, dtype=bool),
        query=np.zeros(n, dtype=bool),
        eligible=category.user_count > 0,
        shots=None,
    )


def eligible_count(category: CategoryData, shots: int) -> int:
    """Users with at least ``shots + 1`` positives in the category."""
    return int((category.user_count >= shots + 1).sum())
