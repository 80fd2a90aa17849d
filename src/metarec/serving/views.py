"""A launched category as ranking reads it: its data at some time, support, retrieval index.

A :class:`CategoryView` depends on the store's data and the model's item encoder, never on the
scorer's parameters, so it is built once per version of the data and shared by every set of
parameters that ranks the category (the meta-initialisation, each adaptation, a hot-swapped
model with the same features). What does depend on the parameters, the retrieval projection, is
kept inside it per parameters key and replaced whole (copy on write), so a reader never sees one
change.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from metarec.ranking.retrieval import ItemIndex, Projection
from metarec.tasks import CategoryData, SupportState

ViewKey = tuple[str, int | None]  # (category, as_of): the category as an adaptation saw it
ParamsKey = tuple[str, int]  # (model version, adaptation version; 0 for the meta-initialisation)
_KEEP_PROJECTIONS = 4  # per category: current and recent parameters (hot swaps back and forth)


@dataclass
class CategoryView:
    """What ranking one category needs besides parameters.

    Attributes:
        data, state: the category and its support state (every positive so far is support).
        index: the retrieval index (None when the category is small enough to score exactly).
        item_ids, titles: (n_items,) external ids and titles by item position.
        popular: (m,) positions by launch popularity, best first, ties in a seeded random order
            (:func:`metarec.ranking.popularity_scores`): the unknown-user fallback.
        popular_scores: (m,) their support counts.
        projections: retrieval projections by the parameters they were fitted for.
    """

    data: CategoryData
    state: SupportState
    index: ItemIndex | None
    item_ids: np.ndarray
    titles: np.ndarray
    popular: Tensor
    popular_scores: Tensor
    projections: dict[ParamsKey, Projection] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def projection(self, key: ParamsKey) -> Projection | None:
        """The projection fitted for ``key``, else the latest one (still a valid short list:
        the exact re-rank uses the right parameters), else None."""
        projections = self.projections
        found = projections.get(key)
        if found is None and projections:
            found = next(reversed(projections.values()))
        return found

    def add_projection(self, key: ParamsKey, projection: Projection) -> None:
        with self._lock:
            kept = {k: v for k, v in self.projections.items() if k != key}
            kept[key] = projection
            self.projections = dict(list(kept.items())[-_KEEP_PROJECTIONS:])


class LazyViews:
    """Views built on first use, once each even when many threads ask at the same time."""

    def __init__(self, views: dict[ViewKey, CategoryView] | None = None) -> None:
        self._views: dict[ViewKey, CategoryView] = dict(views or {})
        self._guard = threading.Lock()
        self._building: dict[ViewKey, threading.Lock] = {}

    def snapshot(self) -> dict[ViewKey, CategoryView]:
        return dict(self._views)

    def get(self, key: ViewKey, build: Callable[[ViewKey], CategoryView]) -> CategoryView:
        found = self._views.get(key)
        if found is not None:
            return found
        with self._guard:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:
            found = self._views.get(key)
            if found is None:
                found = build(key)
                self._views[key] = found
        return found


def popularity_order(scores: Tensor, counts: Tensor, keep: int) -> tuple[Tensor, Tensor]:
    """The ``keep`` best positions by ``scores`` (popularity with tie jitter) and their counts."""
    order = torch.sort(scores, descending=True, stable=True).indices[:keep].clone()
    return order, counts[order].clone()
