"""The scorer's input for a (user, book) row of the rating protocol."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from metarec.config import FeatureConfig
from metarec.evaluation.melu_protocol.constants import N_SCALARS
from metarec.evaluation.melu_protocol.tasks import UserTask
from metarec.features.items import FeatureSpace, Vocab
from metarec.meta import Batch

_FEATURE_DAMPING = 5.0  # pseudo-ratings at the mean in the scorer's item-residual feature


# ---- features: the scorer's input for a (user, book) row -------------------------------------


@dataclass(frozen=True)
class RatingFeatures:
    """Everything the scorer sees, fitted on the meta-training (not validation) users only.

    A row for user u and book i is ``[x_i, z_u, scalars]``: the book's attribute encoding
    (authors, publisher, year id; :class:`~metarec.features.items.FeatureSpace`), the user's
    location one-hot, and five scalars: the user's mean support residual ``r - mu`` and
    ``log1p`` of their support size, the book's damped mean residual in the training ratings and
    ``log1p`` of its training count, and a similarity-weighted support residual
    ``sum_j (x_i . x_j)(r_j - mu) / n_s`` (a kNN signal over attributes). Support rows are built
    leave-one-out (the row's own rating is out of the user scalars), and rows of training users
    leave their own rating out of the book's statistics, so no row sees its own label.

    Attributes:
        item_x: ``(n_items, d_item)`` book encodings.
        user_x: ``(n_users, d_user)`` location one-hots.
        mu: mean training rating.
        item_sum: ``(n_items,)`` sum of ``r - mu`` over training ratings of each book.
        item_count: ``(n_items,)`` training ratings of each book.
    """

    item_x: Tensor
    user_x: Tensor
    mu: float
    item_sum: np.ndarray
    item_count: np.ndarray

    @property
    def dim(self) -> int:
        """Width of a row."""
        return self.item_x.shape[1] + self.user_x.shape[1] + N_SCALARS

    @classmethod
    def fit(
        cls,
        items: pd.DataFrame,
        users: pd.DataFrame,
        train: pd.DataFrame,
        config: FeatureConfig,
    ) -> RatingFeatures:
        """Fit encoders and book statistics on ``train`` ratings (user_idx, item_idx, rating)."""
        rated = items.loc[items["item_idx"].isin(train["item_idx"].unique())]
        item_x = FeatureSpace.fit(rated, config).encode(items)
        locations = [_location(v) for v in users["extra"]]
        seen = set(train["user_idx"].unique())
        vocab = Vocab.fit(
            (
                [loc]
                for loc, idx in zip(locations, users["user_idx"], strict=True)
                if loc and idx in seen
            ),
            config.max_vocab_per_field,
            config.oov_buckets,
        )
        user_x = torch.zeros((len(users), vocab.size))
        for row, loc in enumerate(locations):
            if loc:
                user_x[row, vocab.slot(loc)] = 1.0
        mu = float(train["rating"].mean())
        n_items = len(items)
        item_idx = train["item_idx"].to_numpy()
        residual = train["rating"].to_numpy(dtype=np.float64) - mu
        return cls(
            item_x=item_x,
            user_x=user_x,
            mu=mu,
            item_sum=np.bincount(item_idx, weights=residual, minlength=n_items),
            item_count=np.bincount(item_idx, minlength=n_items).astype(np.float64),
        )

    def rows(self, task: UserTask, *, own_in_stats: bool) -> tuple[Batch, Batch]:
        """The task's support and query rows; targets are ``rating - mu``.

        Args:
            task: the user's task.
            own_in_stats: the task's ratings are in the book statistics (a training user):
                each row then leaves its own rating out of them.

        Returns:
            ``(support, query)``: ``x: (n_s, dim)`` and ``(n_q, dim)``, ``y`` and ``mask``.
        """
        xs = self.item_x[torch.from_numpy(task.support_items)]
        xq = self.item_x[torch.from_numpy(task.query_items)]
        res_s = torch.from_numpy(task.support_ratings - self.mu).float()
        res_q = torch.from_numpy(task.query_ratings - self.mu).float()
        n_s = len(res_s)
        # Support rows: leave-one-out over the user's own support (their label is not an input).
        others = max(n_s - 1, 1)
        gram = xs @ xs.T
        user_s = (res_s.sum() - res_s) / others
        taste_s = (gram @ res_s - gram.diagonal() * res_s) / others
        user_q = (res_s.sum() / max(n_s, 1)).expand(len(res_q))
        taste_q = (xq @ xs.T) @ res_s / max(n_s, 1)
        own_s, own_q = (res_s, res_q) if own_in_stats else (None, None)
        support = self._batch(task, xs, task.support_items, res_s, user_s, n_s - 1, taste_s, own_s)
        query = self._batch(task, xq, task.query_items, res_q, user_q, n_s, taste_q, own_q)
        return support, query

    def _batch(
        self,
        task: UserTask,
        x_items: Tensor,
        items: np.ndarray,
        target: Tensor,
        user_residual: Tensor,
        n_support: int,
        taste: Tensor,
        own: Tensor | None = None,
    ) -> Batch:
        item_sum = torch.from_numpy(self.item_sum[items]).float()
        item_count = torch.from_numpy(self.item_count[items]).float()
        if own is not None:
            item_sum, item_count = item_sum - own, item_count - 1.0
        scalars = torch.stack(
            [
                user_residual,
                torch.full_like(target, math.log1p(max(n_support, 0))),
                item_sum / (item_count + _FEATURE_DAMPING),
                torch.log1p(item_count),
                taste,
            ],
            dim=-1,
        )
        user = self.user_x[task.user_idx].expand(len(items), -1)
        x = torch.cat([x_items, user, scalars], dim=-1)
        return Batch(x, target, torch.ones_like(target))


def _location(extra: object) -> str | None:
    if not isinstance(extra, str) or not extra:
        return None
    value = json.loads(extra).get("location")
    return None if value is None else str(value)
