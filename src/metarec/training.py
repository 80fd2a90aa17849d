"""From a store to a meta-trained model: the library's ``train``, with validation by ranking.

The data flow of ``metarec train``::

    Store ──load_catalog──▶ Catalog ──split_categories──▶ train / validation / hold-out
                                                  │
                          meta.train_on(train) ◀──┴── CategoryValidation(validation): NDCG@10
                                                       of CategoryRanker's full ranking

Validation ranks each validation category exactly as the benchmark and serving do (through
:class:`~metarec.ranking.CategoryRanker`), so the selected model is the one that ranks best.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from metarec.config import TrainConfig
from metarec.data.catalog import Catalog
from metarec.data.store import Store
from metarec.features.encoder import ItemEncoder, load_catalog
from metarec.meta.checkpoint import Checkpointing
from metarec.meta.distributed import World
from metarec.meta.model import MetaModel, train_on
from metarec.ranking import category_scores, ranking_metrics
from metarec.tasks import (
    CategoryData,
    eligible_count,
    evaluation_masks,
    split_categories,
    split_k_shot,
)

VALIDATION_K = 10


def validation_ndcg(model: MetaModel, categories: Sequence[CategoryData], shots: int) -> float:
    """Mean NDCG@10 over the users of ``categories`` at ``shots`` (model selection)."""
    values: list[np.ndarray] = []
    for category in categories:
        split = split_k_shot(category, shots)
        users = np.flatnonzero(split.eligible)
        if len(users) == 0 or category.n_items <= VALIDATION_K + shots:
            continue
        scores = category_scores(model, category, split, users)
        relevant, exclude = evaluation_masks(category, split, users)
        values.append(
            ranking_metrics(scores, relevant, (VALIDATION_K,), exclude=exclude)[
                ("ndcg", VALIDATION_K)
            ]
        )
    if not values:
        return math.nan
    return float(np.nanmean(np.concatenate(values)))


class CategoryValidation:
    """NDCG@10 of a candidate model on validation categories, seen from the training ones.

    The validation categories' users are profiled from the training categories only (sealed as a
    launch would be). Their data is built once, with the first candidate's item encoder (every
    candidate of one run shares it).

    Args:
        catalog: the store's catalogue.
        names: the validation categories.
        train: the training categories (the users' visible history).
        shots: support positives per user.
    """

    def __init__(self, catalog: Catalog, names: Sequence[str], train: Sequence[str], shots: int):
        self.catalog, self.names, self.train, self.shots = catalog, list(names), list(train), shots
        self._encoder: ItemEncoder | None = None
        self._data: list[CategoryData] = []

    def __call__(self, model: MetaModel) -> float:
        return validation_ndcg(model, self._categories(model), self.shots)

    def _categories(self, model: MetaModel) -> list[CategoryData]:
        if self._encoder is not model.encoder:
            built = model.category_data(self.catalog, self.names, visible=self.train)
            self._data = [c for c in built.values() if eligible_count(c, self.shots) > 0]
            self._encoder = model.encoder
        return self._data


def train(
    store: Store,
    config: TrainConfig,
    *,
    progress: bool = True,
    validate_every: int = 50,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
    catalog: Catalog | None = None,
) -> MetaModel:
    """Meta-train a model on a store's categories, sealing ``config.hold_out``.

    Args:
        store: an open store, or a Parquet export opened with
            :func:`metarec.data.export.open_export` (``exclude=config.hold_out`` reads no
            sealed category's interactions at all).
        config: the training config.
        progress: show progress bars.
        validate_every: meta-steps between validations (NDCG@10 on validation categories).
        checkpoint: checkpoint folder, cadence and resume flag (see
            :func:`metarec.meta.model.train_on`).
        world: the ranks of a distributed run (see :func:`metarec.meta.model.train_on`).
        catalog: ``load_catalog(store, config)`` when the caller has it already.

    Returns:
        The meta-model whose params scored best on the validation categories (the last ones
        when there are none).

    Raises:
        DataError: not enough data to build any meta-training task.

    Warns:
        UserWarning: the store holds numbers outside the range ingest accepts (stored before it
            checked ranges); the store's reads skip them, and `metarec check` lists them.
    """
    bad = store.bad_counts()
    if bad:
        shown = ", ".join(f"{n} in {column}" for column, n in bad.items())
        warnings.warn(
            f"store {store.path} holds values outside the range the model can carry ({shown}); "
            f"training skips those interactions (and reads such item numbers as unknown). "
            f"List them with `metarec check --store {store.path}`, then fix or re-ingest them",
            stacklevel=2,
        )
    catalog = load_catalog(store, config) if catalog is None else catalog
    splits = split_categories(catalog, config)
    validation = CategoryValidation(
        catalog, splits["validation"], splits["train"], config.tasks.shots
    )
    return train_on(
        catalog,
        config,
        splits,
        progress=progress,
        validate_every=validate_every,
        # split_categories validates only on categories with users to score at tasks.shots
        validate=validation if splits["validation"] else None,
        checkpoint=checkpoint,
        world=world,
    )
