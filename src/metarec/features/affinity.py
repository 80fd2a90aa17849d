"""Content affinity: how close an item's attributes are to what a user liked elsewhere.

The score of the classic content-based profile recommender (Lops, de Gemmis, Semeraro,
"Content-based Recommender Systems: State of the Art and Trends", 2011), shared by the
``content-knn`` baseline and the content term of metarec-ridge (:mod:`metarec.meta.ridge`)::

    affinity(u, j) = cos(w * p_u, w * x_j)

with ``p_u`` the user's profile (any positive multiple of the mean features of what they liked
in the visible categories), ``x_j`` the item's features and ``w`` IDF weights over the
category's items: features every item shares (the category path itself) drop out and rare ones
(an author) count most; dense features (numeric, text: ``FeatureSpace.dense_columns``) keep
weight one. A zero profile has affinity zero.
"""

from __future__ import annotations

import torch

from metarec.features.rows import unit_rows


def feature_weights(item_x: torch.Tensor, dense: torch.Tensor, *, idf: bool) -> torch.Tensor:
    """(d,) weight of each feature: IDF over the category's items, one for dense ones.

    Args:
        item_x: (n_items, d) the category's item features.
        dense: (d,) bool, the numeric and text columns (``FeatureSpace.dense_columns``).
        idf: False gives every feature weight one.
    """
    n, d = item_x.shape
    weights = torch.ones(d)
    if idf:
        df = (item_x != 0).sum(dim=0).float()
        weights = torch.log((1.0 + n) / (1.0 + df))
        weights[dense] = 1.0
    return weights


def content_affinity(
    profiles: torch.Tensor, item_x: torch.Tensor, dense: torch.Tensor
) -> torch.Tensor:
    """(b, n_items) IDF-weighted ``cos(w * p_u, w * x_j)`` of profiles (b, d) and items (n, d)."""
    return ContentIndex(item_x, dense).affinity(profiles)


class ContentIndex:
    """A category's items ready for :func:`content_affinity` against many profiles: the IDF
    weights and the weighted unit item rows, computed once per category.

    Example:
        >>> index = ContentIndex(category.item_x, space.dense_columns())  # doctest: +SKIP
        >>> scores = index.affinity(profiles)  # (b, n_items)  # doctest: +SKIP
    """

    def __init__(self, item_x: torch.Tensor, dense: torch.Tensor, *, idf: bool = True) -> None:
        x = item_x if item_x.dtype == torch.float64 else item_x.float()  # float64 kept (tests)
        self.weights = feature_weights(item_x, dense, idf=idf).to(x.dtype)
        self.items = unit_rows(x * self.weights)

    def affinity(self, profiles: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """(b, n_items) cosines of the profiles (b, d) with the items, IDF-weighted; with
        ``scale`` (d,) each feature's product is weighted before the sum (ones: the cosine)."""
        users = unit_rows(profiles.to(self.items.dtype) * self.weights)
        if scale is not None:
            users = users * scale.to(users.dtype)
        return users @ self.items.T
