"""A served category's ranker, under either kind of model a folder holds.

An MLP meta-model ranks with :class:`~metarec.ranking.CategoryRanker` (inner-loop adaptation,
folded scorer, retrieval); a ridge model with :class:`~metarec.ranking.ridge.RidgeRanker` (the
closed-form solve over every user's factors from their history outside the category). Both
are launched here from a category's view, so :class:`~metarec.serving.recommender.Recommender`
keeps one adapt / rank path for either.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
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

_FACTOR_TABLES = 8  # categories whose users' ridge factors are kept (n_users x f each)


class Launcher:
    """Launches rankers for one model over one catalogue (thread-safe: caches only grow or
    are replaced whole).

    Args:
        model: the served model.
        catalog: the store's catalogue.
    """

    def __init__(self, model: AnyModel, catalog: Catalog) -> None:
        self.model, self.catalog = model, catalog
        self._items: np.ndarray | None = None
        self._factors: OrderedDict[str, tuple[Tensor, Tensor, Tensor | None]] = OrderedDict()

    def launch(self, view: CategoryView, params: Params | None, *, adapt: bool) -> Ranker:
        """The view's ranker: from ``params`` when given (an adaptation read back), else adapted
        on the view's support (``adapt``) or at the model's start (zero-shot)."""
        split = split_launch(view.data)
        model = self.model
        if isinstance(model, RidgeModel):
            factors, gram, profiles = self.user_factors(view.data.name)
            support = category_support(self.catalog, view.data, split)
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
        return CategoryRanker.launch(model, view.data, split, state=view.state, params=params)

    def user_factors(self, category: str) -> tuple[Tensor, Tensor, Tensor | None]:
        """Every user's ridge factors from their history outside ``category``, the gram, and
        their content profiles from the same history where the model reads them."""
        assert isinstance(self.model, RidgeModel)
        found = self._factors.get(category)
        if found is None:
            if self._items is None:
                self._items = self.model.factors_for(self.catalog)
            outside = ~self.catalog.in_categories([category])
            history = self.catalog.positives.loc[outside]
            factors_gram = self.model.user_factors(self.catalog, history, self._items)
            profiles = None
            if self.model.uses_profiles:
                profiles = self.model.user_profiles(self.catalog, history)
            found = (*factors_gram, profiles)
            factors = self._factors.copy()
            factors[category] = found
            while len(factors) > _FACTOR_TABLES:
                factors.popitem(last=False)
            self._factors = factors
        return found
