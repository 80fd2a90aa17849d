"""A served category's ranker, under either kind of model a folder holds.

An MLP meta-model ranks with :class:`~metarec.ranking.CategoryRanker` (inner-loop adaptation,
folded scorer, retrieval); a ridge model with :class:`~metarec.ranking.ridge.RidgeRanker` (the
closed-form solve over every user's factors from their history outside the category). Both
are launched here from a category's view, so :class:`~metarec.serving.recommender.Recommender`
keeps one adapt / rank path for either.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pandas as pd
from torch import Tensor

from metarec.data.catalog import Catalog
from metarec.meta.model import AnyModel
from metarec.meta.ridge_model import RidgeModel
from metarec.models.scorer import Params
from metarec.ranking import CategoryRanker
from metarec.ranking.ridge import RidgeRanker, category_support
from metarec.serving.views import CategoryView
from metarec.tasks import split_launch

Ranker = CategoryRanker | RidgeRanker

_FACTOR_TABLES = 8  # categories whose users' ridge factors (or profiles) are kept
# An MLP learner's adaptation holds every support row through its inner steps: about 40 kB a
# positive with the benchmark's model (300,000 positives: 12 GB, 53 s; 20,000: under 1 GB).
# A live category's support only grows, so the service adapts on a uniform sample of it.
MAX_ADAPT_POSITIVES = 20_000
T = TypeVar("T")


class Launcher:
    """Launches rankers for one model over one catalogue (thread-safe: caches only grow or
    are replaced whole).

    Args:
        model: the served model.
        catalog: the store's catalogue.
        max_adapt_positives: an MLP learner adapts on at most this many of a category's
            positives (a seeded uniform sample); None: on every one.
    """

    def __init__(
        self,
        model: AnyModel,
        catalog: Catalog,
        *,
        max_adapt_positives: int | None = MAX_ADAPT_POSITIVES,
    ) -> None:
        self.model, self.catalog = model, catalog
        self.max_adapt_positives = max_adapt_positives
        self._items: np.ndarray | None = None
        self._factors: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self._profiles: OrderedDict[str, Tensor] = OrderedDict()

    def launch(self, view: CategoryView, params: Params | None, *, adapt: bool) -> Ranker:
        """The view's ranker: from ``params`` when given (an adaptation read back), else adapted
        on the view's support (``adapt``) or at the model's start (zero-shot)."""
        split = split_launch(view.data)
        model = self.model
        if isinstance(model, RidgeModel):
            name = view.data.name
            factors, gram = self.user_factors(name)
            support = category_support(self.catalog, view.data, split)
            counts = params["counts"] if params is not None else support.counts if adapt else None
            # a category ranked with no support at all reads the users' content profiles
            empty = counts is None or not bool(counts.any())
            profiles = self.user_profiles(name) if model.uses_profiles and empty else None
            return RidgeRanker.launch(
                model,
                view.data,
                support,
                factors,
                gram,
                adapt=adapt,
                params=params,
                profiles=profiles,
            )
        if params is None and not adapt:
            params = model.start_params(view.data)
        return CategoryRanker.launch(
            model,
            view.data,
            split,
            state=view.state,
            params=params,
            max_positives=self.max_adapt_positives,
        )

    def user_factors(self, category: str) -> tuple[Tensor, Tensor]:
        """Every user's ridge factors from their history outside ``category``, and the gram."""
        model = self.model
        assert isinstance(model, RidgeModel)

        def build(history: pd.DataFrame) -> tuple[Tensor, Tensor]:
            if self._items is None:
                self._items = model.factors_for(self.catalog)
            return model.user_factors(self.catalog, history, self._items)

        return self._cached("_factors", category, build)

    def user_profiles(self, category: str) -> Tensor:
        """Every user's content profile from their history outside ``category`` (the zero-shot
        content term's; kept only for categories ranked with no support)."""
        model = self.model
        assert isinstance(model, RidgeModel)
        return self._cached(
            "_profiles", category, lambda history: model.user_profiles(self.catalog, history)
        )

    def _cached(self, table: str, category: str, build: Callable[[pd.DataFrame], T]) -> T:
        """``self.<table>[category]``, built from the history outside the category when
        missing; the table is replaced whole (never changed in place, for concurrent readers),
        keeping the newest :data:`_FACTOR_TABLES` categories."""
        tables: OrderedDict[str, T] = getattr(self, table)
        found = tables.get(category)
        if found is None:
            history = self.catalog.positives.loc[~self.catalog.in_categories([category])]
            found = build(history)
            grown = tables.copy()
            grown[category] = found
            while len(grown) > _FACTOR_TABLES:
                grown.popitem(last=False)
            setattr(self, table, grown)
        return found
