"""The contract every method of the benchmark implements, metarec's own and the baselines.

A method is fitted once per fold on the meta-training categories (:class:`FitContext`), then
scores each sealed category at its launch (:class:`Launch`). Both objects are *sealed by
construction*: a fit context holds only the training categories' positives, and a launch holds
only the launching category's support positives plus the users' histories in visible
categories. A method cannot peek at what it must predict, whatever its code does.

Every method gets the same information: item attributes, the training categories'
interactions, the users' histories in visible categories, and the launch's support. Every
method gets the same tuning budget: the harness fits each setting of :attr:`Method.grid` and keeps
the one with the best NDCG@10 on the validation categories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch

from metarec.config import TrainConfig
from metarec.pipeline import Catalog, MetaModel, prepare_model
from metarec.tasks import CategoryData, Split, split_k_shot

Family = Literal["baseline", "metarec"]


@dataclass(frozen=True)
class FitContext:
    """What a method may learn from in one fold.

    Attributes:
        catalog: items of every category, positives of the training categories only.
        config: the run's shared settings (feedback, features, tasks incl. negatives and shots,
            the inner-loop budget in ``meta``: fine-tuning baselines get exactly that budget).
        train: the meta-training categories.
        features: a model at initialisation whose feature space and collaborative factors were
            fitted on the training categories (:func:`metarec.pipeline.prepare_model`); baselines
            that need item features use ``features.space`` and ``features.factors_for``.
        train_data: the training categories as :class:`CategoryData` (profiles from the training
            categories only).
        quick: short training for smoke runs.
        seed: the run's seed.
    """

    catalog: Catalog
    config: TrainConfig
    train: list[str]
    features: MetaModel
    train_data: dict[str, CategoryData]
    quick: bool
    seed: int


@dataclass(frozen=True)
class Launch:
    """One sealed category at launch, as a method may see it.

    Attributes:
        name: the category.
        shots: support positives per user (0: nothing but the catalogue and the users' history).
        catalog: positives of the visible categories plus this category's support, nothing more.
        visible: the categories whose positives are the users' history.
        users: (b,) global indices of the users to rank for, in the order scores are returned.
        category: the category built with the fold's features (``FitContext.features``): its
            ``users`` include every user in ``users``; its positives are the support only.
    """

    name: str
    shots: int
    catalog: Catalog
    visible: list[str]
    users: np.ndarray
    category: CategoryData = field(repr=False)

    @property
    def positions(self) -> np.ndarray:
        """Positions of :attr:`users` in ``category.users``."""
        return np.searchsorted(self.category.users, self.users)

    def category_for(self, model: MetaModel) -> CategoryData:
        """This launch's category built with another model's features (same sealing)."""
        return self.catalog.category_data(
            [self.name], model, visible=self.visible, extra_users=self.users
        )[self.name]


class Method(Protocol):
    """A recommender for new categories: fitted per fold, then asked to score each launch.

    Implementations take their hyperparameters as keyword arguments; :attr:`grid` lists the
    settings the harness may try on validation categories (the first is the default).
    """

    name: ClassVar[str]
    family: ClassVar[Family]
    grid: ClassVar[list[dict[str, Any]]]

    def fit(self, context: FitContext) -> None:
        """Learn from the fold's training categories."""
        ...

    def scores(self, launch: Launch) -> torch.Tensor:
        """(len(launch.users), launch.category.n_items) scores, higher is better.

        Items are the category's in ``launch.category.item_idx`` order; the harness excludes each
        user's support items itself.
        """
        ...


def fit_context(
    catalog: Catalog,
    config: TrainConfig,
    train: list[str],
    *,
    quick: bool = False,
) -> FitContext:
    """Seal a catalogue to its training categories and fit the fold's shared features.

    Args:
        catalog: the whole store's catalogue.
        config: shared settings.
        train: the fold's meta-training categories.
        quick: short training for smoke runs.
    """
    sealed = catalog.restricted(
        np.isin(catalog.item_category[catalog.positives["item_idx"].to_numpy()], train)
    )
    splits = {"train": list(train), "validation": [], "hold_out": []}
    features = prepare_model(sealed, config, splits)
    return FitContext(
        catalog=sealed,
        config=config,
        train=list(train),
        features=features,
        train_data=sealed.category_data(train, features, visible=train),
        quick=quick,
        seed=config.seed,
    )


def make_launch(
    catalog: Catalog,
    name: str,
    shots: int,
    *,
    visible: list[str],
    features: MetaModel,
) -> tuple[Launch, Split]:
    """Seal one category for a k-shot launch (PROTOCOL.md §2, step 4).

    Users with at least ``shots + 1`` positives in the category take part; each one's first
    ``shots`` positives by time are the support. The returned launch holds the visible
    categories' positives and the support, nothing else; the returned split (over the
    *unsealed* category, for the harness only) also marks the query positives to score against.

    Returns:
        ``(launch, split)``: what the method sees, and the ground truth it must not.
    """
    full = catalog.category_data([name], features, visible=visible)[name]
    split = split_k_shot(full, shots)
    users = full.users[split.eligible]
    n_items = len(catalog.items)
    support_codes = (
        full.users[full.pos_user[split.support]].astype(np.int64) * n_items
        + full.item_idx[full.pos_item[split.support]]
    )
    pos_users = catalog.positives["user_idx"].to_numpy().astype(np.int64)
    pos_items = catalog.positives["item_idx"].to_numpy()
    pos_category = catalog.item_category[pos_items]
    is_support = (pos_category == name) & np.isin(pos_users * n_items + pos_items, support_codes)
    sealed = catalog.restricted(np.isin(pos_category, visible) | is_support)
    category = sealed.category_data([name], features, visible=visible, extra_users=users)[name]
    launch = Launch(
        name=name,
        shots=shots,
        catalog=sealed,
        visible=list(visible),
        users=users,
        category=category,
    )
    return launch, split
