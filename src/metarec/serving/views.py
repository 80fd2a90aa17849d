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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from metarec.data.catalog import Catalog
from metarec.features import ProfileTable
from metarec.meta.model import AnyModel
from metarec.ranking import CategoryRanker, UserInputs, popularity_scores
from metarec.ranking.retrieval import (
    ItemIndex,
    Projection,
    build_index,
    category_fingerprint,
    fit_projection,
    user_query,
)
from metarec.tasks import CategoryData, SupportState, build_categories, split_launch, support_state

ViewKey = tuple[str, int | None]  # (category, as_of): the category as an adaptation saw it
ParamsKey = tuple[str, int]  # (model version, adaptation version; 0 for the meta-initialisation)
_KEEP_PROJECTIONS = 4  # per category: current and recent parameters (hot swaps back and forth)
_QUERY_SAMPLE = 256  # users whose queries fit a retrieval projection


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
        liked_order, liked_starts: the positives by user: user position ``p`` liked the items
            ``data.pos_item[liked_order[liked_starts[p]:liked_starts[p + 1]]]`` (a request
            reads its user's slice instead of scanning every positive of the category).
        disliked: store user index -> (m,) positions of the items they interacted with here
            without liking them (excluded from their lists unless the recommender keeps them).
        others: the users' profiles the view was built from: over every category for a view
            of the data as it is now (this one's positives are in it, and a user new here has
            none of them to take out), over the other categories for a view as of a time.
        projections: retrieval projections by the parameters they were fitted for.
    """

    data: CategoryData
    state: SupportState
    index: ItemIndex | None
    item_ids: np.ndarray
    titles: np.ndarray
    popular: Tensor
    popular_scores: Tensor
    liked_order: np.ndarray
    liked_starts: np.ndarray
    others: ProfileTable
    disliked: dict[int, np.ndarray] = field(default_factory=dict)
    projections: dict[ParamsKey, Projection] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def liked(self, position: int) -> np.ndarray:
        """Positions of the items user position ``position`` liked here (positives order)."""
        begin, end = self.liked_starts[position], self.liked_starts[position + 1]
        return self.data.pos_item[self.liked_order[begin:end]]

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


def build_view(
    catalog: Catalog,
    model: AnyModel,
    key: ViewKey,
    *,
    item_x: Tensor,
    profile_x: Tensor,
    others: ProfileTable,
    includes_category: bool,
    short_list: int | None,
    previous: CategoryView | None = None,
) -> CategoryView:
    """The category ``key[0]`` as it was at ``key[1]`` (every positive so far when None).

    Args:
        catalog, model: the store's catalogue and the served model (its encoder and seed).
        item_x, profile_x: the catalogue's items under the model's encoder.
        others: users' profiles over every other category (a launch sees all of them), or,
            with ``includes_category``, over every category: this one's positives are then
            taken out of each user's profile here (``build_categories``' ``profile_includes``).
        short_list: a category with more items gets a retrieval index (None: never).
        previous: the view of the same key on older data: its index and projections are kept
            while the category's items and support are unchanged.
    """
    category, as_of = key
    positives = catalog.positives
    if as_of is not None:
        later = catalog.item_category[positives["item_idx"].to_numpy()] == category
        later &= positives["timestamp"].fillna(as_of + 1).to_numpy() > as_of
        positives = positives.loc[~later]
    seed = model.config.seed
    data = build_categories(
        catalog.items,
        positives,
        item_x,
        profile_x,
        others,
        [category],
        profile_includes=[category] if includes_category else [],
        seed=seed,
        name_x=model.encoder.name_x(catalog, [category]),
    )[category]
    state = support_state(data, split_launch(data))
    index, projections = None, {}
    if short_list is not None and data.n_items > short_list:
        old = None if previous is None else previous.index
        if (
            previous is not None
            and old is not None
            and old.fingerprint == category_fingerprint(data)
        ):
            index, projections = old, dict(previous.projections)  # same items and support
        else:
            index = build_index(data, state, seed=seed)
    ranked = popularity_scores(state.pop, seed=seed, key=category)
    popular = torch.sort(ranked, descending=True, stable=True).indices
    liked_order = np.argsort(data.pos_user, kind="stable")
    return CategoryView(
        data=data,
        state=state,
        index=index,
        item_ids=catalog.items["item_id"].to_numpy()[data.item_idx],
        titles=catalog.items["title"].to_numpy()[data.item_idx],
        popular=popular,
        popular_scores=state.pop[popular],
        disliked=_disliked(catalog, data),
        others=others,
        liked_order=liked_order,
        liked_starts=np.searchsorted(
            data.pos_user[liked_order], np.arange(len(data.users) + 1), side="left"
        ),
        projections=projections,
    )


def _disliked(catalog: Catalog, data: CategoryData) -> dict[int, np.ndarray]:
    """Each user's item positions in ``data`` they interacted with but did not like."""
    pairs = catalog.non_positive
    if pairs is None or pairs.empty:
        return {}
    items = pairs["item_idx"].to_numpy()
    here = np.isin(items, data.item_idx)
    positions = np.searchsorted(data.item_idx, items[here])
    users = pairs["user_idx"].to_numpy()[here]
    if len(users) == 0:  # the store's dislikes all lie in other categories
        return {}
    order = np.argsort(users, kind="stable")
    users, positions = users[order], positions[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    return {
        int(users[a]): positions[a:b]
        for a, b in zip(starts, [*starts[1:], len(users)], strict=True)
    }


def user_inputs_many(
    view: CategoryView,
    user_idxs: Sequence[int],
    *,
    keep_disliked: bool = False,
) -> list[UserInputs]:
    """What the scorer knows about each store user of ``user_idxs`` in the view's category; a
    user with no history there is profiled from their other categories only (``view.others``:
    they have no positive here to take out), all such users in one operation (a served batch;
    one operation per user cost 25 us each).

    A user's ``seen`` items, never recommended, are every item they interacted with here:
    liked, and (unless ``keep_disliked``) rated below the threshold or otherwise not liked.
    """
    data, state = view.data, view.state
    positions = [data.user_position(u) for u in user_idxs]
    new = [i for i, position in enumerate(positions) if position is None]
    profiles: dict[int, tuple[Tensor, Tensor]] = {}
    if new:
        d = data.profile.shape[1]
        profile, n_other = view.others.without(
            torch.tensor([user_idxs[i] for i in new]),
            torch.zeros(len(new), d),
            torch.zeros(len(new)),
            torch.zeros(len(new)),
        )
        profiles = {i: (profile[row], n_other[row]) for row, i in enumerate(new)}
    out = []
    for i, (user_idx, position) in enumerate(zip(user_idxs, positions, strict=True)):
        seen = _seen(view, user_idx, position, keep_disliked)
        if position is None:
            profile, n_other = profiles[i]
            zero_sum = torch.zeros(profile.shape[0])
            out.append(UserInputs(None, profile, n_other, zero_sum, torch.zeros(()), seen))
            continue
        out.append(
            UserInputs(
                position,
                data.profile[position],
                data.n_other[position],
                state.user_sum[position],
                state.user_n[position],
                seen,
            )
        )
    return out


def seen_items(view: CategoryView, user_idx: int, *, keep_disliked: bool = False) -> Tensor:
    """(m,) positions of every item store user ``user_idx`` interacted with in the view's
    category, sorted: liked, and (unless ``keep_disliked``) rated below the threshold or
    otherwise not liked. What a ridge ranker needs of a user; :func:`user_inputs_many` carries
    it."""
    return _seen(view, user_idx, view.data.user_position(user_idx), keep_disliked)


def _seen(view: CategoryView, user_idx: int, position: int | None, keep_disliked: bool) -> Tensor:
    """:func:`seen_items` with the user's position in the view's data already looked up."""
    disliked = np.empty(0, dtype=np.int64) if keep_disliked else view.disliked.get(user_idx)
    if disliked is None:
        disliked = np.empty(0, dtype=np.int64)
    if position is None:
        return torch.from_numpy(np.unique(disliked).astype(np.int64))
    return torch.from_numpy(np.union1d(view.liked(position), disliked).astype(np.int64))


def fit_view_projection(
    view: CategoryView,
    ranker: CategoryRanker,
    inputs: Callable[[int], UserInputs],
    *,
    n_users: int,
    seed: int,
    rank: int,
) -> Projection:
    """Fit the view's retrieval projection to the queries of a seeded sample of users under the
    ranker's parameters: half with support here (when there are), the rest from the whole store,
    as requests come."""
    assert view.index is not None
    data = view.data
    rng = np.random.default_rng(seed)
    inside = rng.permutation(data.users)[: _QUERY_SAMPLE // 2]
    anyone = rng.choice(n_users, min(n_users, _QUERY_SAMPLE - len(inside)), replace=False)
    queries = []
    for user_idx in np.union1d(inside, anyone):
        user = inputs(int(user_idx))
        params = ranker.user_params(user)
        queries.append(user_query(params, view.index, user, data.cf_dim).attributes)
    # a store without users: the item side alone decides
    stacked = torch.stack(queries) if queries else torch.zeros(1, view.index.gram.shape[0])
    return fit_projection(data, view.state, view.index, stacked, rank=rank)
