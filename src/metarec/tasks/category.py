"""One category's items and positives, with features, ready to cut tasks from.

Everything the inner loop, the evaluation and the service need about a category is computed here
once: its items' features, who liked what (ordered by time, seeded random order without time),
and each of those users' profiles from the *other* categories.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch

from metarec.features.users import ProfileTable


@dataclass(frozen=True)
class CategoryData:
    """A category's items, positives and users.

    Attributes:
        name: category path.
        item_idx: (n_items,) global item indices; ``item_pos`` below index into this.
        item_x: (n_items, d) item attribute features.
        users: (n_users,) global user indices of users with a positive here.
        pos_user: (n_pos,) positions into ``users``.
        pos_item: (n_pos,) positions into ``item_idx``.
        pos_rank: (n_pos,) 0-based order of the positive in its user's history here
            (by time; seeded random order where there is no time).
        pos_time: (n_pos,) unix time of each positive (NaN where unknown).
        user_count: (n_users,) positives per user here.
        profile: (n_users, d + r) each user's profile from other categories: mean attribute
            features, then mean collaborative factors (``r = cf_dim``), of what they liked there.
        n_other: (n_users,) each user's positives in other categories.
        name_x: (t,) the projected text embedding of the category's name and description
            (:mod:`metarec.features.text`); None without text features.
    """

    name: str
    item_idx: np.ndarray
    item_x: torch.Tensor
    users: np.ndarray
    pos_user: np.ndarray
    pos_item: np.ndarray
    pos_rank: np.ndarray
    pos_time: np.ndarray
    user_count: np.ndarray
    profile: torch.Tensor
    n_other: torch.Tensor
    name_x: torch.Tensor | None = None

    @cached_property
    def context(self) -> torch.Tensor:
        """(d [+ t],) what is known about the category before any interaction.

        The mean attribute features of its items (the category block of that mean is its path
        in the tree: every prefix, as :class:`~metarec.features.FeatureSpace` encodes it), then
        ``name_x`` when there is one. A category-conditioned model
        (:mod:`metarec.models.conditioning`) starts adapting from an initialisation computed
        from it; it is the same at launch as in meta-training, and needs no support.
        """
        mean = self.item_x.mean(0) if self.n_items else self.item_x.new_zeros(self.item_x.shape[1])
        return mean if self.name_x is None else torch.cat([mean, self.name_x])

    @property
    def cf_dim(self) -> int:
        return self.profile.shape[1] - self.item_x.shape[1]

    @property
    def n_items(self) -> int:
        return len(self.item_idx)

    @property
    def n_users(self) -> int:
        return len(self.users)

    def user_position(self, user_idx: int) -> int | None:
        """Position of a global user index in ``users``; None without a positive here."""
        found = np.searchsorted(self.users, user_idx)
        if found < len(self.users) and self.users[found] == user_idx:
            return int(found)
        return None

    def positive_codes(self, mask: np.ndarray | None = None) -> torch.Tensor:
        """Sorted ``user_pos * n_items + item_pos`` codes of (a subset of) the positives."""
        u, i = self.pos_user, self.pos_item
        if mask is not None:
            u, i = u[mask], i[mask]
        codes = torch.as_tensor(u, dtype=torch.long) * self.n_items + torch.as_tensor(i)
        return torch.sort(codes).values


def order_positives(positives: pd.DataFrame, seed: int) -> np.ndarray:
    """Rank of each positive within its user's history: by time, ties and missing times random.

    The random part comes from ``seed`` alone, so the same data always gives the same order.

    Args:
        positives: rows with user_idx, timestamp (nullable).
        seed: seed of the tie-breaking order.

    Returns:
        (n,) int64 0-based rank within the user, aligned with ``positives``' rows.
    """
    n = len(positives)
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(n)
    ts = positives["timestamp"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.inf)
    users = positives["user_idx"].to_numpy()
    order = np.lexsort((tiebreak, ts, users))
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    run_lengths = np.diff(np.r_[starts, n])
    ranks_sorted = np.arange(n) - np.repeat(starts, run_lengths)
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = ranks_sorted
    return ranks


def build_categories(
    items: pd.DataFrame,
    positives: pd.DataFrame,
    item_x: torch.Tensor,
    profile_x: torch.Tensor,
    profiles: ProfileTable,
    categories: Iterable[str],
    *,
    profile_includes: Iterable[str],
    seed: int,
    extra_users: np.ndarray | None = None,
    name_x: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, CategoryData]:
    """Assemble :class:`CategoryData` for the given categories.

    Args:
        items: the store's items table (item_idx, category, ...).
        positives: positives (user_idx, item_idx, timestamp, weight), see
            :func:`metarec.features.feedback.positives`.
        item_x: (n_items_total, d) attribute features of every item, indexed by item_idx.
        profile_x: (n_items_total, d + r) what ``profiles`` sums per liked item (attributes and
            collaborative factors).
        profiles: per-user sums over the visible categories.
        categories: which categories to build.
        profile_includes: the categories whose positives are inside ``profiles``: a category's
            own positives are subtracted from its users' profiles only if they were added.
        seed: seed of the tie-breaking order of positives without time.
        extra_users: global indices of users to include even without a positive here (users
            to rank for at zero shots, or users new to the category).
        name_x: category -> (t,) projected text embedding of its name (text features on).
    """
    included = set(profile_includes)
    item_category = items.set_index("item_idx")["category"]
    pos_category = item_category.reindex(positives["item_idx"].to_numpy()).to_numpy()
    out: dict[str, CategoryData] = {}
    for name in categories:
        cat_items = np.sort(items.loc[items["category"] == name, "item_idx"].to_numpy())
        here = pos_category == name
        pos = positives.loc[here]
        users = np.unique(pos["user_idx"].to_numpy())
        if extra_users is not None:
            users = np.union1d(users, extra_users)
        pos_user = np.searchsorted(users, pos["user_idx"].to_numpy())
        pos_item = np.searchsorted(cat_items, pos["item_idx"].to_numpy())
        x = item_x[torch.as_tensor(cat_items, dtype=torch.long)]
        u_t = torch.as_tensor(users, dtype=torch.long)
        if name in included:
            w = torch.tensor(pos["weight"].to_numpy(), dtype=torch.float32)
            pu = torch.as_tensor(pos_user, dtype=torch.long)
            liked = torch.tensor(pos["item_idx"].to_numpy(), dtype=torch.long)
            gx = profile_x[liked] * w[:, None]
            in_sums = torch.zeros(len(users), profile_x.shape[1]).index_add_(0, pu, gx)
            in_w = torch.zeros(len(users)).index_add_(0, pu, w)
            in_n = torch.zeros(len(users)).index_add_(0, pu, torch.ones_like(w))
        else:
            in_sums = torch.zeros(len(users), profile_x.shape[1])
            in_w = in_n = torch.zeros(len(users))
        profile, n_other = profiles.without(u_t, in_sums, in_w, in_n)
        out[name] = CategoryData(
            name=name,
            item_idx=cat_items,
            item_x=x,
            users=users,
            pos_user=pos_user.astype(np.int64),
            pos_item=pos_item.astype(np.int64),
            pos_rank=order_positives(pos, seed),  # order within this category only
            pos_time=pos["timestamp"].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan),
            user_count=np.bincount(pos_user, minlength=len(users)),
            profile=profile,
            n_other=n_other,
            name_x=None if name_x is None else name_x[name],
        )
    return out
