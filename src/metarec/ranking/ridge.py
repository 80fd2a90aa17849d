"""One category under a ridge model: fold the support in, score every item, rank top-K.

:class:`RidgeRanker` is metarec-ridge's single path from a category's support to ranked items,
as :class:`~metarec.ranking.CategoryRanker` is the MLP models': the benchmark's
:class:`~metarec.evaluation.ridge.MetarecRidge` scores launches with :meth:`RidgeRanker.scores`,
and the library, the CLI and the service rank users with :meth:`RidgeRanker.top_k_many`.

Adapting is the closed-form solve (:func:`metarec.meta.ridge.fold_in`): each item's vector from
its supporters, shrunk toward the prior its content predicts. Its result, the category's
``params``, is two tensors: ``item_vectors`` (n_items, f) and ``counts`` (n_items,) support
positives per item. Zero-shot (``adapt=False``) solves with an empty support: every item at its
prior. Scores are ``x_u . v_j + b log(1 + n_j)`` (and, with no support at all, the model's
zero-shot content term over the users' ``profiles``) plus the popularity tie-break every
fold-in method uses (:func:`metarec.ranking.popularity.tie_broken`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from metarec.data.catalog import Catalog
from metarec.errors import ConfigError
from metarec.features.affinity import ContentIndex
from metarec.meta.ridge import (
    RidgeSupport,
    fold_in,
    ridge_scores,
    uses_content,
    zero_shot_affinity,
)
from metarec.meta.ridge_model import RidgeModel
from metarec.models.scorer import Params
from metarec.ranking.metrics import ranking_metrics
from metarec.ranking.popularity import tie_broken
from metarec.seeds import derived_seed
from metarec.tasks import CategoryData, Split

BIAS_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0)
"""Support biases a launch may choose (:func:`support_bias`): ALS preferences are on a 0-1
scale and log(1 + n_j) on 0-7, so these run from fold-in alone to popularity first."""
MIN_HELD_OUT = 20  # held-out users below which a launch keeps the model's bias


@dataclass(frozen=True)
class RidgeRanker:
    """A category, the users' factors, and the item vectors that rank it.

    Attributes:
        model: the ridge model.
        category: the category's data.
        factors: (n_store_users, f) every user's factors from their history outside it.
        params: ``item_vectors`` and ``counts`` (see the module docstring).
        adapted: whether ``params`` were solved from a support (False: zero-shot).
        profiles: (n_store_users, d) every user's content profile from the same history
            (``model.user_profiles``); read only where the scores use the content term.
        content: the category's items for that term (None where the scores do not use it).
    """

    model: RidgeModel
    category: CategoryData
    factors: Tensor
    params: Params
    adapted: bool
    profiles: Tensor | None = None
    content: ContentIndex | None = None

    @classmethod
    def launch(
        cls,
        model: RidgeModel,
        category: CategoryData,
        support: RidgeSupport,
        factors: Tensor,
        gram: Tensor,
        *,
        adapt: bool = True,
        params: Params | None = None,
        profiles: Tensor | None = None,
    ) -> RidgeRanker:
        """Solve the category's item vectors from ``support`` (or take ``params`` as solved).

        Args:
            model: the ridge model.
            category: the category.
            support: its support positives (:func:`category_support`).
            factors, gram: every user's factors and their gram (``model.user_factors``).
            adapt: False solves with no support at all (zero-shot: each item at its prior).
            params: the category's solved params when already known (read back from disk).
            profiles: every user's content profile (``model.user_profiles``); required where
                the model has a zero-shot content term (``model.uses_profiles``).

        Raises:
            ConfigError: the scores need ``profiles`` and none were given.
        """
        adapted = params is not None or adapt
        if params is None:
            if not adapt:
                support = RidgeSupport.empty(category.n_items)
            with torch.no_grad():
                vectors = fold_in(model.params, factors, support, category.item_x, gram=gram)
            params = {"item_vectors": vectors, "counts": support.counts}
            if adapt and model.bias_from_support:
                params["support_bias"] = support_bias(model, category, support, factors, gram)
        content = None
        if uses_content(model.params, params["counts"]):
            if profiles is None:
                raise ConfigError(
                    "this model's zero-shot scores need every user's content profile: pass "
                    "profiles=model.user_profiles(catalog, history) to RidgeRanker.launch"
                )
            content = ContentIndex(category.item_x, model.space.dense_columns())
        return cls(model, category, factors, params, adapted, profiles, content)

    def scores(self, users: np.ndarray) -> Tensor:
        """(b, n_items) float32 scores of every item for store users ``users`` (b,)."""
        index = torch.as_tensor(users, dtype=torch.long)
        rows = self.factors[index]
        meta = self.model.params
        if "support_bias" in self.params:  # chosen at this launch (see support_bias)
            meta = {**meta, "support_bias": self.params["support_bias"]}
        affinity = None
        if self.content is not None:
            assert self.profiles is not None  # launch() requires them with a content index
            affinity = zero_shot_affinity(meta, self.content, self.profiles[index])
        with torch.no_grad():
            dots = ridge_scores(
                meta, rows, self.params["item_vectors"], self.params["counts"], affinity
            )
        return tie_broken(
            dots, self.params["counts"], seed=self.model.config.seed, key=self.category.name
        )

    def top_k_many(
        self, users: np.ndarray, seen: list[Tensor], ks: list[int]
    ) -> list[tuple[Tensor, Tensor]]:
        """Each user's top-``k`` item positions and scores, best first, never a ``seen`` item.

        Exact over every item: a ridge score is one dot product per item, so no retrieval
        short list is needed.
        """
        if len(users) == 0:
            return []
        scores = self.scores(users)
        rows = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, s in enumerate(seen)])
        scores[rows, torch.cat(seen).long()] = -torch.inf
        top = torch.topk(scores, min(max(ks), scores.shape[1]), dim=1)
        out = []
        for i, k in enumerate(ks):
            allowed = top.values[i] != -torch.inf  # seen items; a NaN stays, to be reported
            positions, values = top.indices[i][allowed][:k], top.values[i][allowed][:k]
            out.append((positions, values))
        return out


def support_bias(
    model: RidgeModel,
    category: CategoryData,
    support: RidgeSupport,
    factors: Tensor,
    gram: Tensor,
) -> Tensor:
    """The support bias of :data:`BIAS_GRID` that best predicts held-out support (a launch's
    own cross-validation), for models trained where no validation category could choose it.

    A seeded quarter of the users with support is held out: the items are solved from the
    others' support, and each bias is scored by the NDCG@10 of the held-out users' own support
    items over every item of the category. Ties keep the smaller bias (fold-in first); fewer
    than :data:`MIN_HELD_OUT` held-out users keep the model's own bias.
    """
    if category.n_items <= 10:  # NDCG@10 cannot tell biases apart
        return model.params["support_bias"].clone()
    users = torch.unique(support.users)
    rng = np.random.default_rng(derived_seed(model.config.seed, f"support-bias:{category.name}"))
    held = users[torch.from_numpy(rng.permutation(len(users))[: len(users) // 4])]
    if len(held) < MIN_HELD_OUT:
        return model.params["support_bias"].clone()
    out = torch.isin(support.users, held)
    rest = RidgeSupport(
        support.users[~out], support.items[~out], support.weights[~out], support.n_items
    )
    with torch.no_grad():
        vectors = fold_in(model.params, factors, rest, category.item_x, gram=gram)
        dots = ridge_scores(
            {**model.params, "support_bias": torch.zeros((), dtype=torch.float64)},
            factors[held],
            vectors,
            rest.counts,
        )
    row_of = torch.full((int(held.max()) + 1,), -1, dtype=torch.long)
    row_of[held] = torch.arange(len(held))
    relevant = torch.zeros(dots.shape, dtype=torch.bool)
    relevant[row_of[support.users[out]], support.items[out]] = True
    popularity = torch.log1p(rest.counts)
    best = (-1.0, 0.0)
    for bias in BIAS_GRID:
        values = ranking_metrics(dots + bias * popularity, relevant, (10,))[("ndcg", 10)]
        score = float(np.nanmean(values))
        if score > best[0]:
            best = (score, bias)
    return torch.tensor(best[1], dtype=torch.float64)


def category_support(catalog: Catalog, category: CategoryData, split: Split) -> RidgeSupport:
    """The split's support positives of ``category`` as the solve reads them, with each
    positive's feedback weight from ``catalog``."""
    positives = catalog.positives_in([category.name])
    n_items = len(catalog.items)
    codes = positives["user_idx"].to_numpy() * n_items + positives["item_idx"].to_numpy()
    order = np.argsort(codes, kind="stable")
    users = category.users[category.pos_user[split.support]]
    items = category.pos_item[split.support]
    found = np.searchsorted(codes[order], users * n_items + category.item_idx[items])
    weights = positives["weight"].to_numpy(dtype=np.float64)[order][found]
    return RidgeSupport(
        users=torch.as_tensor(users, dtype=torch.long),
        items=torch.as_tensor(items, dtype=torch.long),
        weights=torch.as_tensor(weights),
        n_items=category.n_items,
    )
