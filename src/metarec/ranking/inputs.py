"""What the folded scorer reads of a category's items and of its users, from tasks' structures.

:mod:`metarec.models.folded` scores plain tensors (:class:`~metarec.models.folded.ItemSide`,
:class:`~metarec.models.folded.UserSide`); these functions cut them from a category and its
support state, the way rows are cut by :func:`metarec.tasks.candidate_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metarec.models.folded import ItemSide, UserSide
from metarec.tasks import CategoryData, SupportState


def item_side(category: CategoryData, state: SupportState, items: Tensor | None = None) -> ItemSide:
    """Items of the category as the first layer reads them (``state``: its support).

    Args:
        items: (m,) positions; None for every item (a short list is cut without building
            the whole category's representations).
    """
    if items is None:
        return ItemSide(
            z=state.item_repr(category, torch.arange(category.n_items)),
            pop=state.pop,
            pop_max=state.pop_max,
            unit_sum=state.item_unit_sum,
        )
    return ItemSide(
        z=state.item_repr(category, items),
        pop=state.pop[items],
        pop_max=state.pop_max,
        unit_sum=state.item_unit_sum[items],
    )


def user_side(category: CategoryData, state: SupportState, users: np.ndarray | Tensor) -> UserSide:
    """Users at positions ``users`` (b,) of the category, as the first layer reads them."""
    users = torch.as_tensor(users, dtype=torch.long)
    support_n = state.user_n[users]
    return UserSide(
        profile=category.profile[users],
        support=state.user_sum[users] / support_n.clamp_min(1.0)[:, None],
        n_other=category.n_other[users],
        n_support=support_n,
        cf_dim=category.cf_dim,
    )


@dataclass(frozen=True)
class UserInputs:
    """What the scorer knows about one user in one category (any user of the store).

    Attributes:
        position: the user's position in the category's users (None: no history here yet).
        profile: (D,) mean representation of what the user liked in other categories.
        n_other: () number of those positives.
        support_sum: (D,) sum of the representations of the user's support items here.
        support_n: () number of those items.
        seen: (m,) int64 positions of the items the user already interacted with here (never
            recommended).
    """

    position: int | None
    profile: Tensor
    n_other: Tensor
    support_sum: Tensor
    support_n: Tensor
    seen: Tensor

    def side(self, cf_dim: int) -> UserSide:
        """This user as a batch of one."""
        return UserSide(
            profile=self.profile[None],
            support=(self.support_sum / self.support_n.clamp_min(1.0))[None],
            n_other=self.n_other[None],
            n_support=self.support_n[None],
            cf_dim=cf_dim,
        )
