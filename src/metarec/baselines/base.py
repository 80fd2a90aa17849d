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

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import pandas as pd
import torch

from metarec.config import TrainConfig
from metarec.data.catalog import Catalog
from metarec.errors import DataError
from metarec.meta.model import MetaModel, prepare_model
from metarec.tasks import CategoryData, Split, split_k_shot, support_state

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
            fitted on the training categories (:func:`metarec.meta.prepare_model`); baselines
            that need item features use ``features.encoder``.
        train_data: the training categories as :class:`CategoryData` (profiles from the training
            categories only).
        quick: short training for smoke runs.
        seed: the run's seed.
        validate: scores a method on the fold's validation categories (mean NDCG@10, higher is
            better); methods may call it for model selection (early stopping), nothing else.
        validate_users: the same validation, user by user (NaN where undefined; the same users
            in the same order at every call), for paired comparisons of two candidates.
        validate_zero_users: the validation categories launched with no support (zero shots),
            user by user; for choices that matter only there.
        memo: results that depend on the fold alone, shared by the methods fitted on it (e.g.
            the pooled-pretraining trajectory both pretraining variants select from).
    """

    catalog: Catalog
    config: TrainConfig
    train: list[str]
    features: MetaModel
    train_data: dict[str, CategoryData]
    quick: bool
    seed: int
    validate: Callable[[Method], float] | None = None
    validate_users: Callable[[Method], np.ndarray] | None = None
    validate_zero_users: Callable[[Method], np.ndarray] | None = None
    # not an init field: dataclasses.replace gives the changed context an empty memo
    memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, repr=False)


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
        features: the fold's features (what ``category`` was built with).
    """

    name: str
    shots: int | None
    catalog: Catalog
    visible: list[str]
    users: np.ndarray
    category: CategoryData = field(repr=False)
    features: MetaModel = field(repr=False)

    @property
    def split(self) -> Split:
        """Every positive of the sealed category is support; the evaluated users are eligible."""
        eligible = np.zeros(self.category.n_users, dtype=bool)
        eligible[self.positions] = True
        n = len(self.category.pos_user)
        return Split(np.ones(n, dtype=bool), np.zeros(n, dtype=bool), eligible, self.shots)

    @property
    def positions(self) -> np.ndarray:
        """Positions of :attr:`users` in ``category.users``."""
        return np.searchsorted(self.category.users, self.users)

    def category_for(self, model: MetaModel) -> CategoryData:
        """This launch's category built with another model's features (same sealing)."""
        same = model.config.features == self.features.config.features
        if same and model.encoder.same_as(self.features.encoder):
            return self.category
        return model.category_data(
            self.catalog, [self.name], visible=self.visible, extra_users=self.users
        )[self.name]


def visible_history(launch: Launch) -> tuple[tuple[object, ...], pd.DataFrame]:
    """The positives of the launch's visible categories, and a key that names them.

    Every launch of a fold (each category, each shot count) sees the same visible history, so
    methods that derive user factors from it cache them under this key (the categories and a
    checksum of the (user, item) pairs).
    """
    history = launch.catalog.positives_in(launch.visible)
    key = (
        tuple(sorted(launch.visible)),
        zlib.crc32(history["user_idx"].to_numpy(dtype=np.int64).tobytes()),
        zlib.crc32(history["item_idx"].to_numpy(dtype=np.int64).tobytes()),
    )
    return key, history


class LaunchMemo:
    """The last launch's work that does not depend on its users, kept while the harness scores
    that launch's users block by block (``evaluation.cases.SCORE_BLOCK``).

    A launch handed back with other ``users`` (``dataclasses.replace``) shares its catalogue
    and category objects, which is what the key compares (by identity, with the fitted state
    ``owner`` passes: new parameters are a new launch's work).
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._value: Any = None

    def get(self, launch: Launch, state: object, build: Callable[[], Any]) -> Any:
        key = (launch.catalog, launch.category, state)
        if self._key is None or any(a is not b for a, b in zip(self._key, key, strict=True)):
            self._key, self._value = None, None  # never a half-updated pair
            self._value, self._key = build(), key
        return self._value


def launch_popularity(launch: Launch) -> torch.Tensor:
    """(n_items,) support count of each item of the launching category (its popularity)."""
    return support_state(launch.category, launch.split).pop


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
    validate: Callable[[Method], float] | None = None,
    validate_users: Callable[[Method], np.ndarray] | None = None,
    validate_zero_users: Callable[[Method], np.ndarray] | None = None,
) -> FitContext:
    """Seal a catalogue to its training categories and fit the fold's shared features.

    Args:
        catalog: the whole store's catalogue.
        config: shared settings.
        train: the fold's meta-training categories.
        quick: short training for smoke runs.
    """
    sealed = catalog.restricted_to(train)
    splits = {"train": list(train), "validation": [], "hold_out": []}
    features = prepare_model(sealed, config, splits)
    return FitContext(
        catalog=sealed,
        config=config,
        train=list(train),
        features=features,
        train_data=features.category_data(sealed, train, visible=train),
        quick=quick,
        seed=config.seed,
        validate=validate,
        validate_users=validate_users,
        validate_zero_users=validate_zero_users,
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
    full = features.category_data(catalog, [name], visible=visible)[name]
    split = split_k_shot(full, shots)
    return _seal(catalog, full, split, visible=visible, features=features), split


def make_window_launch(
    catalog: Catalog,
    name: str,
    share: float,
    *,
    visible: list[str],
    features: MetaModel,
) -> tuple[Launch, Split]:
    """Seal one category at its real launch (PROTOCOL.md §3).

    The category launches with its first interaction; everything in its first ``share`` of
    positives by time (across all users) is the support, and the users with positives after that
    window are evaluated on those later positives.

    Raises:
        DataError: some positive of the category has no timestamp.
    """
    full = features.category_data(catalog, [name], visible=visible)[name]
    if np.isnan(full.pos_time).any():
        raise DataError(
            f"category {name!r} has interactions without timestamps; the launch protocol needs "
            "times on every interaction (use the leave-categories-out protocol instead)"
        )
    cutoff = np.quantile(full.pos_time, share, method="lower") if len(full.pos_time) else 0.0
    support = full.pos_time <= cutoff
    later = ~support
    eligible = np.bincount(full.pos_user[later], minlength=full.n_users) > 0
    split = Split(support, later & eligible[full.pos_user], eligible, None)
    return _seal(catalog, full, split, visible=visible, features=features), split


def _seal(
    catalog: Catalog,
    full: CategoryData,
    split: Split,
    *,
    visible: list[str],
    features: MetaModel,
) -> Launch:
    """The launch a method sees: visible categories' positives plus this split's support."""
    name = full.name
    users = full.users[split.eligible]
    n_items = len(catalog.items)
    support_codes = (
        full.users[full.pos_user[split.support]].astype(np.int64) * n_items
        + full.item_idx[full.pos_item[split.support]]
    )
    pos_users = catalog.positives["user_idx"].to_numpy().astype(np.int64)
    pos_items = catalog.positives["item_idx"].to_numpy()
    in_launch = (catalog.item_category == name)[pos_items]  # per item, then per positive
    is_support = in_launch & np.isin(pos_users * n_items + pos_items, support_codes)
    sealed = catalog.restricted(catalog.items_in(visible)[pos_items] | is_support)
    category = features.category_data(sealed, [name], visible=visible, extra_users=users)[name]
    return Launch(
        name=name,
        shots=split.shots,
        catalog=sealed,
        visible=list(visible),
        users=users,
        category=category,
        features=features,
    )
