"""Turn (user, item) pairs of a category into scorer rows: support, query and ranking inputs.

Every row goes through :func:`metarec.features.rows.pair_features`. Support positives are built
*leave-one-out* (the row's own item is removed from the user's in-category profile and from the
item's support count), so the inner loop cannot learn "an item is liked because it is liked";
query rows and ranking candidates see the full support, exactly as at launch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metarec.features.rows import pair_features, unit_rows
from metarec.tasks.batch import Batch
from metarec.tasks.category import CategoryData
from metarec.tasks.split import Split


@dataclass(frozen=True)
class SupportState:
    """What a category's support set tells: item counts, who liked what, user support profiles.

    An item of a new category has no collaborative factors of its own; it is represented by the
    mean collaborative profile of the support users who liked it (``item_cf_sum / pop``).

    Attributes:
        pop: (n_items,) support count of each item.
        pop_max: () largest count (0 without support).
        item_cf_sum: (n_items, r) sum of the collaborative profiles of the item's supporters.
        user_sum: (n_users, d + r) sum of the representations of the user's support items.
        user_n: (n_users,) number of the user's support items.
        codes: sorted ``user_pos * n_items + item_pos`` of the support pairs.
        item_unit_sum: (n_items, r) sum of the supporters' collaborative profiles scaled to
            unit length: a user's dot product with it is their summed cosine similarity to the
            item's supporters (the rows' affinity feature).
    """

    pop: torch.Tensor
    pop_max: torch.Tensor
    item_cf_sum: torch.Tensor
    user_sum: torch.Tensor
    user_n: torch.Tensor
    codes: torch.Tensor
    item_unit_sum: torch.Tensor

    def item_repr(self, category: CategoryData, items: torch.Tensor) -> torch.Tensor:
        """(m, d + r) representations ``[attributes, mean supporter profile]`` of items."""
        return torch.cat([category.item_x[items], self.item_cf(items)], dim=-1)

    def item_cf(self, items: torch.Tensor) -> torch.Tensor:
        """(m, r) the mean collaborative profile of each item's supporters (0 without any)."""
        return self.item_cf_sum[items] / self.pop[items].clamp_min(1.0)[:, None]


def support_state(category: CategoryData, split: Split) -> SupportState:
    """Summarise the support positives of ``split``."""
    users = torch.as_tensor(category.pos_user[split.support], dtype=torch.long)
    items = torch.as_tensor(category.pos_item[split.support], dtype=torch.long)
    n, r = category.n_items, category.cf_dim
    pop = torch.bincount(items, minlength=n).float()
    item_cf_sum = torch.zeros(n, r).index_add_(0, items, _cf_profile(category, users))
    item_unit_sum = torch.zeros(n, r).index_add_(0, items, cf_unit(category, users))
    partial = SupportState(
        pop=pop,
        pop_max=pop.max() if n else torch.tensor(0.0),
        item_cf_sum=item_cf_sum,
        user_sum=torch.zeros(0),
        user_n=torch.bincount(users, minlength=category.n_users).float(),
        codes=category.positive_codes(split.support),
        item_unit_sum=item_unit_sum,
    )
    reprs = partial.item_repr(category, items)
    user_sum = torch.zeros(category.n_users, reprs.shape[1]).index_add_(0, users, reprs)
    return SupportState(
        pop=partial.pop,
        pop_max=partial.pop_max,
        item_cf_sum=item_cf_sum,
        user_sum=user_sum,
        user_n=partial.user_n,
        codes=partial.codes,
        item_unit_sum=item_unit_sum,
    )


def _cf_profile(category: CategoryData, users: torch.Tensor) -> torch.Tensor:
    return category.profile[users, category.item_x.shape[1] :]


def cf_unit(category: CategoryData, users: torch.Tensor) -> torch.Tensor:
    """(m, r) the users' collaborative profiles scaled to unit length (zero stays zero)."""
    return unit_rows(_cf_profile(category, users))


def pair_rows(
    category: CategoryData,
    state: SupportState,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    leave_one_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scorer inputs for pairs.

    Args:
        users: (m,) user positions in the category.
        items: (m,) item positions in the category.
        leave_one_out: (m,) bool, True where the pair is itself a support positive: the pair is
            then removed from the item's count and supporter profile and from the user's
            support profile.

    Returns:
        (m, d_in) rows.
    """
    z = state.item_repr(category, items)
    user_sum = state.user_sum[users]
    user_n = state.user_n[users]
    pop = state.pop[items]
    unit = cf_unit(category, users)
    unit_sum = state.item_unit_sum[items]
    if leave_one_out is not None and bool(leave_one_out.any()):
        # only the rows left out change (a batch holds its negatives beside its positives)
        out = torch.nonzero(leave_one_out).squeeze(1)
        left_users, left_items = users[out], items[out]
        unit_sum[out] = unit_sum[out] - unit[out]
        user_sum[out] = user_sum[out] - z[out]
        user_n[out] = user_n[out] - 1.0
        pop[out] = pop[out] - 1.0
        cf_sum = state.item_cf_sum[left_items] - _cf_profile(category, left_users)
        cf = cf_sum / pop[out].clamp_min(1.0)[:, None]
        z[out] = torch.cat([category.item_x[left_items], cf], dim=-1)
    support_profile = user_sum / user_n.clamp_min(1.0)[:, None]
    return pair_features(
        z,
        category.profile[users],
        support_profile,
        pop,
        state.pop_max.expand(len(items)),
        category.n_other[users],
        user_n,
        (unit * unit_sum).sum(-1),
    )


def candidate_rows(
    category: CategoryData, state: SupportState, users: torch.Tensor
) -> torch.Tensor:
    """Scorer inputs of every item of the category for each user (full ranking).

    Args:
        users: (b,) user positions.

    Returns:
        (b, n_items, d_in) rows.
    """
    return candidate_rows_for(
        category,
        state,
        profile=category.profile[users],
        n_other=category.n_other[users],
        support_sum=state.user_sum[users],
        support_n=state.user_n[users],
    )


def candidate_rows_for(
    category: CategoryData,
    state: SupportState,
    *,
    profile: torch.Tensor,
    n_other: torch.Tensor,
    support_sum: torch.Tensor,
    support_n: torch.Tensor,
) -> torch.Tensor:
    """Like :func:`candidate_rows` for users given by their profiles (any user, even one with
    nothing in this category yet).

    Args:
        profile: (b, d + r) profiles from other categories; n_other: (b,) their positive counts.
        support_sum: (b, d + r) sums of the users' support items here; support_n: (b,) counts.

    Returns:
        (b, n_items, d_in) rows.
    """
    z = state.item_repr(category, torch.arange(category.n_items))
    support_profile = support_sum / support_n.clamp_min(1.0)[:, None]
    return pair_features(
        z[None, :, :],
        profile[:, None, :],
        support_profile[:, None, :],
        state.pop[None, :],
        state.pop_max,
        n_other[:, None],
        support_n[:, None],
        unit_rows(profile[:, category.item_x.shape[1] :]) @ state.item_unit_sum.T,
    )


def sample_negatives(
    category: CategoryData,
    users: torch.Tensor,
    n_negatives: int,
    forbidden: torch.Tensor,
    generator: torch.Generator,
    retries: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform negative items of the category per user, avoiding ``forbidden`` pairs.

    Args:
        users: (m,) user positions.
        forbidden: sorted codes ``user_pos * n_items + item_pos`` that must not be negatives
            (the user's known positives).

    Returns:
        items (m, n_negatives) positions and valid (m, n_negatives) bool: a draw still forbidden
        after ``retries`` re-draws is masked out rather than mislabelled.
    """
    m, n = len(users), category.n_items
    items = torch.randint(n, (m, n_negatives), generator=generator)
    base = users[:, None] * n
    bad = _isin_sorted(base + items, forbidden)
    for _ in range(retries):
        if not bad.any():
            break
        redraw = torch.randint(n, (int(bad.sum()),), generator=generator)
        items[bad] = redraw
        bad = _isin_sorted(base + items, forbidden)
    return items, ~bad


def _isin_sorted(values: torch.Tensor, sorted_codes: torch.Tensor) -> torch.Tensor:
    if len(sorted_codes) == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    pos = torch.searchsorted(sorted_codes, values).clamp_max(len(sorted_codes) - 1)
    return sorted_codes[pos] == values


def labelled_rows(
    category: CategoryData,
    state: SupportState,
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    n_negatives: int,
    forbidden: torch.Tensor,
    generator: torch.Generator,
    leave_one_out: bool,
) -> Batch:
    """Positive pairs plus sampled negatives as one labelled batch.

    Args:
        users, items: (m,) positive pairs (positions).
        forbidden: sorted codes never to use as negatives.
        leave_one_out: whether the positives are support positives (see module docstring).

    Returns:
        A batch of m * (1 + n_negatives) rows: positives first, then negatives.
    """
    neg_items, valid = sample_negatives(category, users, n_negatives, forbidden, generator)
    neg_users = users[:, None].expand_as(neg_items).reshape(-1)
    # positives and negatives in one pass (each row's values do not depend on the others)
    x = pair_rows(
        category,
        state,
        torch.cat([users, neg_users]),
        torch.cat([items, neg_items.reshape(-1)]),
        leave_one_out=torch.arange(len(users) + len(neg_users)) < len(users)
        if leave_one_out
        else None,
    )
    y = torch.cat([torch.ones(len(users)), torch.zeros(neg_users.shape[0])])
    mask = torch.cat([torch.ones(len(users)), valid.reshape(-1).float()])
    return Batch(x, y, mask)


def support_batch(
    category: CategoryData,
    state: SupportState,
    split: Split,
    *,
    n_negatives: int,
    generator: torch.Generator,
    max_positives: int | None = None,
) -> Batch:
    """The support rows adaptation trains on; negatives avoid only what support reveals."""
    idx = np.flatnonzero(split.support)
    if max_positives is not None and len(idx) > max_positives:
        pick = torch.randperm(len(idx), generator=generator)[:max_positives].numpy()
        idx = np.sort(idx[pick])
    users = torch.as_tensor(category.pos_user[idx], dtype=torch.long)
    items = torch.as_tensor(category.pos_item[idx], dtype=torch.long)
    return labelled_rows(
        category,
        state,
        users,
        items,
        n_negatives=n_negatives,
        forbidden=state.codes,
        generator=generator,
        leave_one_out=True,
    )
