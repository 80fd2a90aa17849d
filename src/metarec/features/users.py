"""Cross-category user profiles: what a user liked *elsewhere* is the signal for a new category.

A user's profile for category ``c`` is the weighted mean of the feature vectors of the items they
liked in every visible category except ``c``. Sums are kept per user once; the part in ``c`` is
subtracted on demand, so profiles for any target category cost one pass over that category's
positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ProfileTable:
    """Weighted sums of liked items' features per user, over the visible categories.

    Attributes:
        sums: (n_users, d) sum of weight * x over visible positives.
        weights: (n_users,) sum of weights over visible positives.
        counts: (n_users,) number of visible positives.
    """

    sums: torch.Tensor
    weights: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def build(
        cls,
        user_idx: np.ndarray,
        item_idx: np.ndarray,
        weight: np.ndarray,
        item_x: torch.Tensor,
        n_users: int,
    ) -> ProfileTable:
        """Sum features of the given (already filtered to visible) positives per user.

        Args:
            user_idx, item_idx, weight: (n,) the visible positives.
            item_x: (n_items, d) features of every item.
            n_users: number of users in the store.
        """
        # copies: pandas hands out read-only arrays, which torch refuses to wrap
        users = torch.tensor(user_idx, dtype=torch.long)
        w = torch.tensor(weight, dtype=torch.float32)
        x = item_x[torch.tensor(item_idx, dtype=torch.long)] * w[:, None]
        sums = torch.zeros(n_users, item_x.shape[1]).index_add_(0, users, x)
        weights = torch.zeros(n_users).index_add_(0, users, w)
        counts = torch.zeros(n_users).index_add_(0, users, torch.ones_like(w))
        return cls(sums, weights, counts)

    def without(
        self,
        users: torch.Tensor,
        in_category_sums: torch.Tensor,
        in_category_weights: torch.Tensor,
        in_category_counts: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Profiles of ``users`` with one category's positives removed.

        Args:
            users: (m,) user indices.
            in_category_sums: (m, d) those users' weighted sums inside the target category
                (zeros when the category is not visible, e.g. a sealed test category).
            in_category_weights, in_category_counts: (m,) likewise.

        Returns:
            profile: (m, d) weighted mean over the other categories (zeros without history);
            n_other: (m,) number of positives in the other categories.
        """
        sums = self.sums[users] - in_category_sums
        weights = (self.weights[users] - in_category_weights).clamp_min(0)
        counts = (self.counts[users] - in_category_counts).clamp_min(0)
        profile = sums / weights.clamp_min(1e-6)[:, None]
        profile = torch.where(counts[:, None] > 0, profile, torch.zeros_like(profile))
        return profile, counts
