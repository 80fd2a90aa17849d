"""Content kNN: rank a new category's items by attribute similarity to what the user liked.

The classic content-based profile recommender (Lops, de Gemmis, Semeraro, "Content-based
Recommender Systems: State of the Art and Trends", Recommender Systems Handbook, 2011), made for
a category launch: an item's vector is its attribute and category-path features
(``launch.category.item_x``, built by :class:`metarec.features.FeatureSpace`); a user has two
centroids, of what they liked in the visible categories (their profile) and of their support
items here. The score blends the cosines to the two::

    score(u, i) = (1 - w) cos(x_i, p_u) + w cos(x_i, s_u) + tie-break * popularity(i)

A missing centroid (no history elsewhere, no support here) has cosine zero. With IDF weighting
each categorical feature is scaled by ``log((1 + n) / (1 + df))`` over the category's ``n`` items,
so features every item shares (the category path itself) drop out and rare ones (an author)
count most; numeric features keep weight one. Nothing is learned from the training categories:
the method sees the launch only. Pure torch.
IDF weights: :func:`metarec.features.affinity.feature_weights`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from metarec.baselines.base import Family, FitContext, Launch
from metarec.baselines.mf import with_tie_break
from metarec.features.affinity import feature_weights
from metarec.tasks import CategoryData


class ContentKNN:
    """Cosine between an item's attributes and the user's profile elsewhere and support here.

    Example:
        >>> method = ContentKNN(support_weight=0.5, idf=True)
        >>> method.fit(context)  # doctest: +SKIP
        >>> scores = method.scores(launch)  # (len(launch.users), n_items)  # doctest: +SKIP
    """

    name: ClassVar[str] = "content-knn"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [
        {"support_weight": 0.5, "idf": True},
        {"support_weight": 0.5, "idf": False},
        {"support_weight": 0.8, "idf": True},
        {"support_weight": 0.2, "idf": True},
    ]

    def __init__(self, support_weight: float = 0.5, idf: bool = True) -> None:
        self.support_weight = support_weight
        self.idf = idf
        self.dense: torch.Tensor | None = None  # numeric and text columns: no IDF
        self.seed = 0

    def fit(self, context: FitContext) -> None:
        """Nothing to learn; note which feature columns are dense, and the tie-break seed."""
        self.dense = context.features.space.dense_columns()
        self.seed = context.seed

    def scores(self, launch: Launch) -> torch.Tensor:
        """(len(launch.users), n_items) blended cosines plus the popularity tie-break."""
        category = launch.category
        d = category.item_x.shape[1]
        dense = torch.zeros(d, dtype=torch.bool) if self.dense is None else self.dense
        weights = feature_weights(category.item_x, dense, idf=self.idf)
        items = _unit(category.item_x * weights)
        positions = torch.as_tensor(launch.positions, dtype=torch.long)
        profile = _unit(category.profile[positions, :d] * weights)
        support = _unit(support_centroids(category)[positions] * weights)
        w = self.support_weight
        blended = (1 - w) * profile @ items.T + w * support @ items.T
        return with_tie_break(blended, launch, self.seed)


def support_centroids(category: CategoryData) -> torch.Tensor:
    """(n_users, d) mean features of each user's positives in ``category`` (a launch: support)."""
    users = torch.as_tensor(category.pos_user, dtype=torch.long)
    items = torch.as_tensor(category.pos_item, dtype=torch.long)
    sums = torch.zeros(category.n_users, category.item_x.shape[1])
    sums.index_add_(0, users, category.item_x[items])
    counts = torch.bincount(users, minlength=category.n_users).clamp_min(1)
    return sums / counts[:, None]


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length; zero rows stay zero (their cosine with anything is 0)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
