"""metarec-ridge's training episodes: seeded launches of the fold's training categories.

An episode is a training category, a shot count, the k-shot split of PROTOCOL.md §2 and up to
``query_users`` of its users scored over every item, with the users seen through an ALS that
never saw the category (``"cross-fit"``) or through the half-step without it (``"leave-out"``);
a zero-shot episode launches the category with no support and scores the zero-shot content
term (:mod:`metarec.evaluation.ridge` documents both uses).
"""

from __future__ import annotations

import functools
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch

from metarec.baselines.base import FitContext
from metarec.baselines.mf import QUICK_ALS_ITERATIONS, als_model, fit_factors, solve_rows
from metarec.features.affinity import ContentIndex
from metarec.meta.ridge import (
    RidgeSupport,
    fold_in,
    lambda_loss,
    listwise_loss,
    ridge_scores,
    zero_shot_affinity,
)
from metarec.models.scorer import Params
from metarec.seeds import derived_seed
from metarec.tasks import CategoryData, evaluation_masks, split_k_shot


class EpisodeSettings(Protocol):
    """What the episodes read of the method (:class:`~metarec.evaluation.ridge.MetarecRidge`)."""

    item_factors: np.ndarray | None
    factors: int
    regularization: float
    alpha: float
    iterations: int
    query_users: int
    episodes: str  # "cross-fit" or "leave-out"
    loss: str  # "lambda" or "softmax"


class Episodes:
    """Seeded training episodes over the fold's training categories (see the module docstring)."""

    def __init__(
        self,
        context: FitContext,
        data: list[CategoryData],
        confidence: sp.csr_matrix,
        method: EpisodeSettings,
        steps: int,
    ) -> None:
        assert method.item_factors is not None
        self.data = data
        self.method = method
        self.shots = (0, *context.config.tasks.train_shots)
        self.rng = np.random.default_rng(derived_seed(context.seed, "ridge-episodes"))
        self.generator = torch.Generator().manual_seed(derived_seed(context.seed, "ridge-ties"))
        catalog = context.catalog
        codes = (
            catalog.positives["user_idx"].to_numpy() * len(catalog.items)
            + catalog.positives["item_idx"].to_numpy()
        )
        order = np.argsort(codes)
        self._codes, self._weights = codes[order], catalog.positives["weight"].to_numpy()[order]
        self._n_items = len(catalog.items)
        self._confidence = confidence.tocsc()
        self._factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        items = method.item_factors
        self._items = items
        self._gram = items.T @ items
        self._group: dict[str, int] = {}
        self._priors: dict[str, tuple[torch.Tensor, ContentIndex]] = {}  # zero-shot episodes
        self._dense = context.features.space.dense_columns()
        if method.episodes == "cross-fit" and len(data) >= 2:  # one category cannot be halved
            self._cross_fit(context, confidence)

    def _cross_fit(self, context: FitContext, confidence: sp.csr_matrix) -> None:
        """Two halves of the training categories; each half's episodes see users through an
        ALS fitted on the *other* half only, as a launch sees them through one that never saw
        the new category."""
        names = sorted(c.name for c in self.data)
        order = self.rng.permutation(len(names))
        for position, index in enumerate(order):
            self._group[names[index]] = position % 2
        catalog = context.catalog
        method = self.method
        iterations = QUICK_ALS_ITERATIONS if context.quick else method.iterations
        for group in (0, 1):
            other = [n for n, g in self._group.items() if g != group]
            keep = np.isin(catalog.item_category, other).astype(np.float64)
            visible = (confidence @ sp.diags(keep)).tocsr()
            make = functools.partial(
                als_model,
                method.factors,
                method.regularization,
                method.alpha,
                iterations,
                context.seed,
            )
            items = fit_factors(make, visible / method.alpha)[1]
            factors = torch.from_numpy(solve_rows(visible, items, method.regularization))
            self._factors[f"group{group}"] = (factors, factors.T @ factors)

    def users_without(self, category: CategoryData) -> tuple[torch.Tensor, torch.Tensor]:
        """Every user's half-step factors from their history outside ``category``, and the gram."""
        if category.name in self._group:
            return self._factors[f"group{self._group[category.name]}"]
        if category.name not in self._factors:
            inside = np.zeros(self._items.shape[0], dtype=bool)
            inside[category.item_idx] = True
            rest = self._confidence @ sp.diags((~inside).astype(np.float64))
            gram = self._gram - self._items[inside].T @ self._items[inside]
            factors = torch.from_numpy(
                solve_rows(rest.tocsr(), self._items, self.method.regularization, gram=gram)
            )
            self._factors[category.name] = (factors, factors.T @ factors)
        return self._factors[category.name]

    def zero_shot_loss(self, params: Params, sharpness: torch.Tensor) -> torch.Tensor:
        """A zero-shot episode: a training category launched with no support, its users'
        scores with the zero-shot content term (profiles from the other training categories)."""
        category = self.data[int(self.rng.integers(len(self.data)))]
        split = split_k_shot(category, 0)
        eligible = np.flatnonzero(split.eligible)
        chosen = eligible
        if len(eligible) > self.method.query_users:
            chosen = np.sort(self.rng.choice(eligible, self.method.query_users, replace=False))
        relevant, exclude = evaluation_masks(category, split, chosen)
        factors, gram = self.users_without(category)
        if category.name not in self._priors:  # the prior is fixed by now: one solve each
            with torch.no_grad():
                empty = RidgeSupport.empty(category.n_items)
                vectors = fold_in(params, factors, empty, category.item_x, gram=gram)
            self._priors[category.name] = (vectors, ContentIndex(category.item_x, self._dense))
        vectors, index = self._priors[category.name]
        d = category.item_x.shape[1]
        affinity = zero_shot_affinity(params, index, category.profile[chosen, :d].double())
        rows = factors[torch.as_tensor(category.users[chosen], dtype=torch.long)]
        counts = torch.zeros(category.n_items, dtype=torch.float64)
        scores = ridge_scores(params, rows, vectors, counts, affinity) * torch.exp(sharpness)
        return lambda_loss(scores, relevant, exclude, temperature=1.0, generator=self.generator)

    def loss(self, params: Params, sharpness: torch.Tensor) -> torch.Tensor:
        category = self.data[int(self.rng.integers(len(self.data)))]
        shots = int(self.rng.choice(self.shots))
        split = split_k_shot(category, shots)
        eligible = np.flatnonzero(split.eligible)
        if len(eligible) == 0:
            split = split_k_shot(category, 0)
            eligible = np.flatnonzero(split.eligible)
        factors, gram = self.users_without(category)
        global_users = category.users[category.pos_user[split.support]]
        global_items = category.item_idx[category.pos_item[split.support]]
        found = np.searchsorted(self._codes, global_users * self._n_items + global_items)
        support = RidgeSupport(
            users=torch.as_tensor(global_users, dtype=torch.long),
            items=torch.as_tensor(category.pos_item[split.support], dtype=torch.long),
            weights=torch.as_tensor(self._weights[found], dtype=torch.float64),
            n_items=category.n_items,
        )
        chosen = eligible
        if len(eligible) > self.method.query_users:
            chosen = np.sort(self.rng.choice(eligible, self.method.query_users, replace=False))
        relevant, exclude = evaluation_masks(category, split, chosen)
        vectors = fold_in(params, factors, support, category.item_x, gram=gram)
        rows = factors[torch.as_tensor(category.users[chosen], dtype=torch.long)]
        scores = ridge_scores(params, rows, vectors, support.counts)
        scores = scores * torch.exp(sharpness)
        if self.method.loss == "lambda":
            return lambda_loss(scores, relevant, exclude, temperature=1.0, generator=self.generator)
        return listwise_loss(scores, relevant, exclude, temperature=1.0)
