"""Support / query splits of a category's positives (PROTOCOL.md §2, step 4).

k-shot per user: each eligible user's first ``shots`` positives (by time) are the support set and
the rest the query set. Eligible users have at least ``shots + 1`` positives in the category, so
every one of them has something to predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metarec.config import TrainConfig
from metarec.data.catalog import Catalog
from metarec.seeds import derived_seed
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


def evaluation_masks(
    category: CategoryData, split: Split, users: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevant, exclude) boolean (b, n_items) masks: query positives, and support items."""
    b, n = len(users), category.n_items
    row_of = np.full(category.n_users, -1)
    row_of[users] = np.arange(b)
    relevant = torch.zeros((b, n), dtype=torch.bool)
    exclude = torch.zeros((b, n), dtype=torch.bool)
    for mask, target in ((split.query, relevant), (split.support, exclude)):
        rows = row_of[category.pos_user[mask]]
        keep = rows >= 0
        target[rows[keep], category.pos_item[mask][keep]] = True
    return relevant, exclude


def split_categories(catalog: Catalog, config: TrainConfig) -> dict[str, list[str]]:
    """Meta-train / meta-validation / hold-out categories (seeded; hold-out as configured).

    A category needs ``min_users`` users with more than the evaluation shots to be worth a
    validation slot; smaller categories still train. About a fifth of the eligible ones
    (at least one when there are four or more) validate.

    Raises:
        UnknownCategoryError, DataError: a held-out category is not in the store, or has no items.
    """
    for name in config.hold_out:
        catalog.require_category(name)
    rest = [c for c in catalog.categories if c not in set(config.hold_out)]
    counts = catalog.positives_in(rest).assign(
        category=lambda d: catalog.item_category[d["item_idx"].to_numpy()]
    )
    per_user = counts.groupby(["category", "user_idx"]).size()
    enough = (per_user >= config.tasks.shots + 1).groupby(level=0).sum()
    eligible = sorted(c for c in rest if enough.get(c, 0) >= config.tasks.min_users)
    rng = np.random.default_rng(derived_seed(config.seed, "validation-split"))
    n_val = max(1, round(len(eligible) / 5)) if len(eligible) >= 4 else 0
    validation = sorted(rng.permutation(eligible)[:n_val].tolist()) if n_val else []
    train = [c for c in rest if c not in set(validation)]
    return {"train": train, "validation": validation, "hold_out": list(config.hold_out)}
