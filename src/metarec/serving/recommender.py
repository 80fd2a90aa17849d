"""The library's front door: load a model, adapt a launched category, recommend top-K.

The CLI and the HTTP service are thin layers over :class:`Recommender`, and every list any of them
returns comes from :meth:`Recommender.recommend`: one fallback policy, one ranking path
(:class:`~metarec.ranking.CategoryRanker`), so the same user, category and state give the same
answer everywhere.

Fallbacks (documented in the README and docs/SERVING.md, and named in every
:class:`Recommendation` with a reason):

- an unknown user gets the category's launch popularity (``fallback="popularity"``);
- a category that was never adapted is ranked by the meta-initialisation
  (``fallback="zero-shot"``; the reason names the command that adapts it);
- an unknown category raises :class:`~metarec.errors.UnknownCategoryError`;
- a category with no items raises :class:`~metarec.errors.DataError`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from metarec.artifacts import Artifact, read_artifact, slugify, update_artifact
from metarec.data.catalog import Catalog
from metarec.errors import DataError, MetarecError, NonFiniteError
from metarec.features import ProfileTable, load_catalog, profiles
from metarec.meta.model import AnyModel, MetaModel
from metarec.ranking import RetrievalSettings, UserInputs
from metarec.ranking.retrieval import Projection
from metarec.ranking.ridge import RidgeRanker
from metarec.serving.adaptations import (
    ADAPTED,
    Adaptation,
    Damaged,
    read_adaptations,
    read_model,
)
from metarec.serving.batched import rank_many
from metarec.serving.rankers import MAX_ADAPT_POSITIVES, Launcher, Ranker
from metarec.serving.recommendation import (
    Recommendation,
    RecommendedItem,
    damaged_reason,
    text_or_none,
    zero_shot_reason,
)
from metarec.serving.views import (
    CategoryView,
    LazyViews,
    ParamsKey,
    ViewKey,
    build_view,
    fit_view_projection,
    seen_items,
    user_inputs_many,
)

if TYPE_CHECKING:
    from metarec.data.store import Store


class Recommender:
    """A meta-model bound to a store's catalogue: adapts categories and ranks their items.

    Thread-safe for concurrent :meth:`recommend` calls (the service's request threads); views of
    categories and retrieval projections are built on first use, once.

    Args:
        model: the meta-model.
        model_dir: its folder (adapted parameters are read from and written there).
        store: the open store with the categories' items and interactions.
        catalog: the store's catalogue, when the caller has just loaded it (else loaded here).
        item_x: (n_items, d) the catalogue's item features under the model's encoder, when the
            caller already has them (else encoded here).
        profile_x: (n_items, d + r) ``item_x`` with the collaborative factors, likewise.
        retrieval: how categories larger than the short list are ranked (the service passes
            its settings; keep the defaults to get the service's answers).
        artifact: ``model_dir`` as just read (else read here, for its adapted categories).
        keep_disliked: also recommend items a user interacted with in the category without
            liking them (rated below the threshold, non-positive events); by default every item
            the user interacted with there is left out of their lists.
        max_adapt_positives: an MLP learner's adaptation trains on at most this many of the
            category's positives (a seeded uniform sample; None: all of them).
    """

    def __init__(
        self,
        model: AnyModel,
        model_dir: Path,
        store: Store,
        *,
        catalog: Catalog | None = None,
        item_x: Tensor | None = None,
        profile_x: Tensor | None = None,
        retrieval: RetrievalSettings | None = None,
        artifact: Artifact | None = None,
        keep_disliked: bool = False,
        max_adapt_positives: int | None = MAX_ADAPT_POSITIVES,
    ) -> None:
        self.model = model
        self.keep_disliked = keep_disliked
        self.max_adapt_positives = max_adapt_positives
        self.model_dir = Path(model_dir)
        self.store = store
        self.retrieval = retrieval or RetrievalSettings()
        self.catalog = catalog if catalog is not None else load_catalog(store, model.config)
        self._item_x = item_x if item_x is not None else model.encoder.item_x(self.catalog)
        if profile_x is None:
            profile_x = model.encoder.profile_x(self.catalog, self._item_x)
        self._profile_x = profile_x
        self._others: dict[str, ProfileTable] = {}
        self._every: ProfileTable | None = None
        self._views = LazyViews()
        self._reusable: dict[ViewKey, CategoryView] = {}
        self._rankers: dict[tuple[ViewKey, ParamsKey], Ranker] = {}
        self._launcher = Launcher(model, self.catalog, max_adapt_positives=max_adapt_positives)
        users = self.catalog.users
        self._user_index = dict(
            zip(users["user_id"].astype(str), users["user_idx"].tolist(), strict=True)
        )
        if artifact is None:
            artifact = read_artifact(self.model_dir, tolerate=ADAPTED)
        # a hash over every file of the meta-model: any change of any file is a new version
        self.model_version = artifact.version[:16]
        found = read_adaptations(artifact)
        self._adapted: dict[str, Adaptation] = found.adapted
        self.damaged: dict[str, Damaged] = found.damaged

    @classmethod
    def open(
        cls,
        model_dir: str | Path,
        store: Store,
        *,
        retrieval: RetrievalSettings | None = None,
        keep_disliked: bool = False,
        max_adapt_positives: int | None = MAX_ADAPT_POSITIVES,
    ) -> Recommender:
        """Load and verify the model folder, then bind it to ``store`` (a damaged adapted group
        only marks its category: see :mod:`metarec.serving.adaptations`)."""
        model, artifact = read_model(model_dir)
        return cls(
            model,
            Path(model_dir),
            store,
            retrieval=retrieval,
            artifact=artifact,
            keep_disliked=keep_disliked,
            max_adapt_positives=max_adapt_positives,
        )

    # ---- new data, new model ------------------------------------------------------------------

    def with_catalog(self, catalog: Catalog, *, changed_items: Iterable[str] = ()) -> Recommender:
        """The same model over a newer catalogue of the same store (after writes to it).

        Item features are re-encoded only for items that are new (the store appends items) or
        named in ``changed_items``; views whose category's items and support did not change keep
        their retrieval index and projections.

        Args:
            catalog: the store's catalogue, loaded after the writes.
            changed_items: external ids of items whose attributes may have changed.
        """
        item_x = self._item_x
        if catalog.items is not self.catalog.items or changed_items:
            old_ids = self.catalog.items["item_id"].to_numpy()
            new_ids = catalog.items["item_id"].to_numpy()
            n_old = len(old_ids)
            if len(new_ids) < n_old or not np.array_equal(new_ids[:n_old], old_ids):
                item_x = self.model.encoder.item_x(catalog)
            else:
                redo = np.flatnonzero(np.isin(new_ids[:n_old], list(set(changed_items))))
                redo = np.concatenate([redo, np.arange(n_old, len(new_ids))])
                if len(redo):
                    item_x = torch.cat(
                        [item_x, item_x.new_zeros(len(new_ids) - n_old, item_x.shape[1])]
                    )
                    text = (
                        None if catalog.text is None else catalog.text.items[torch.from_numpy(redo)]
                    )
                    item_x[torch.from_numpy(redo)] = self.model.space.encode(
                        catalog.items.iloc[redo], text
                    )
        same_items = item_x is self._item_x and catalog.items is self.catalog.items
        other = Recommender(
            self.model,
            self.model_dir,
            self.store,
            catalog=catalog,
            item_x=item_x,
            profile_x=self._profile_x if same_items else None,
            retrieval=self.retrieval,
            keep_disliked=self.keep_disliked,
            max_adapt_positives=self.max_adapt_positives,
        )
        other._reusable = self._views.snapshot()
        return other

    def for_model(
        self, model: AnyModel, model_dir: str | Path, artifact: Artifact | None = None
    ) -> Recommender:
        """Another model bound to the same catalogue (a hot swap); ``artifact``: its folder as
        just read, if at hand.

        When both models represent items the same way, the encoded items, the users' profiles
        and the categories' views are shared, not recomputed: those do not depend on the
        scorer's parameters.
        """
        same = self.shares_features_with(model)
        same_positives = model.config.feedback == self.model.config.feedback
        other = Recommender(
            model,
            Path(model_dir),
            self.store,
            catalog=self.catalog if same_positives else None,
            item_x=self._item_x if model.space.to_json() == self.model.space.to_json() else None,
            profile_x=self._profile_x if same else None,
            retrieval=self.retrieval,
            artifact=artifact,
            keep_disliked=self.keep_disliked,
            max_adapt_positives=self.max_adapt_positives,
        )
        if same:
            other._others, other._every = dict(self._others), self._every
            other._views = LazyViews(self._views.snapshot())
        return other

    def shares_features_with(self, model: AnyModel) -> bool:
        """Whether ``model`` encodes items and profiles exactly as this recommender's model."""
        return (
            model.encoder.same_as(self.model.encoder)
            and model.config.feedback == self.model.config.feedback
            and model.config.seed == self.model.config.seed
        )

    # ---- adaptations --------------------------------------------------------------------------

    def user_index(self, user_id: str) -> int | None:
        """The store index of an external user id; None for a user the store does not know."""
        return self._user_index.get(user_id)

    def adaptation(self, category: str) -> Adaptation | None:
        return self._adapted.get(category)

    def adapted_categories(self) -> set[str]:
        return set(self._adapted)

    def viewed_categories(self) -> set[str]:
        """Categories with a view built (those requests or adaptations have touched)."""
        return {category for category, _ in self._views.snapshot()}

    def adapt(self, category: str, *, as_of: int | datetime | None = None) -> Adaptation:
        """Adapt the meta-model to ``category`` from its positives so far; persist the result.

        Args:
            category: the category path.
            as_of: use only the category's interactions up to this time, unix seconds or a
                datetime (replaying a launch); None uses everything in the store.

        Raises:
            UnknownCategoryError, DataError: see the module docstring; DataError also for an
                ``as_of`` that is not a time.
        """
        if isinstance(as_of, datetime):
            as_of = int(as_of.timestamp())
        elif as_of is not None:
            if isinstance(as_of, bool) or not isinstance(as_of, int | np.integer):
                raise DataError(f"as_of is a time in unix seconds or a datetime, got {as_of!r}")
            as_of = int(as_of)
        view = self.view(category, as_of)
        started = time.perf_counter()
        ranker = self._launcher.launch(view, None, adapt=True)
        seconds = time.perf_counter() - started
        bad = sorted(name for name, value in ranker.params.items() if not value.isfinite().all())
        if bad:
            raise NonFiniteError(
                f"adapting {category!r} gave non-finite parameters ({', '.join(bad[:3])}); "
                "nothing was stored and the previous version keeps serving. Check the "
                f"category's events (`metarec check --store {self.store.path}`)"
            )
        previous = self._adapted.get(category) or self.damaged.get(category)
        adaptation = Adaptation(
            category=category,
            version=(previous.version + 1) if previous else 1,
            support_size=ranker.support_used,
            n_users=int((view.data.user_count > 0).sum()),
            adapted_at=time.time(),
            seconds=seconds,
            as_of=as_of,
            params=ranker.params,
        )
        update_artifact(
            self.model_dir,
            f"adapted/{slugify(category)}",
            ranker.params,
            metadata=adaptation.info(),
        )
        self._adapted[category] = adaptation
        self.damaged.pop(category, None)
        return adaptation

    # ---- views and rankers --------------------------------------------------------------------

    def view(self, category: str, as_of: int | None = None) -> CategoryView:
        """The category as it was at ``as_of`` (every interaction so far when None).

        Raises:
            UnknownCategoryError, DataError: see the module docstring.
        """
        self.catalog.require_category(category)
        return self._views.get((category, as_of), self._build_view)

    def serving_view(self, category: str) -> CategoryView:
        """The view the category is served from: as its adaptation saw it, or as it is now."""
        adaptation = self._adapted.get(category)
        return self.view(category, None if adaptation is None else adaptation.as_of)

    def params_key(self, category: str) -> ParamsKey:
        """Which parameters serve ``category``: (model version, adaptation version or 0)."""
        adaptation = self._adapted.get(category)
        return (self.model_version, 0 if adaptation is None else adaptation.version)

    def ranker(self, category: str) -> Ranker:
        """The category's ranker: its adapted params, or the zero-shot start."""
        view = self.serving_view(category)
        key = ((category, view_as_of(self._adapted.get(category))), self.params_key(category))
        found = self._rankers.get(key)
        if found is None:
            adaptation = self._adapted.get(category)
            params = None if adaptation is None else adaptation.params
            found = self._launcher.launch(view, params, adapt=False)
            self._rankers = {k: v for k, v in self._rankers.items() if k[0][0] != category}
            self._rankers[key] = found
        return found

    def prepare(self, category: str) -> None:
        """Build what serving ``category`` needs (view, ranker, projection) ahead of requests."""
        view = self.serving_view(category)
        self._projection(view, self.ranker(category), self.params_key(category))

    def user_inputs(self, view: CategoryView, user_idx: int) -> UserInputs:
        """What the scorer knows about store user ``user_idx`` in the view's category; a user
        with no history there is profiled from their other categories only."""
        return self.user_inputs_many(view, [user_idx])[0]

    def user_inputs_many(self, view: CategoryView, user_idxs: list[int]) -> list[UserInputs]:
        """:meth:`user_inputs` of many users at once (a served batch)."""
        return user_inputs_many(view, user_idxs, keep_disliked=self.keep_disliked)

    def zero_shot_top_k(self, category: str, user_idx: int, k: int) -> tuple[Tensor, Tensor]:
        """Store user ``user_idx``'s top-``k`` positions and scores in the category's serving
        view as the model ranks it *before* any adaptation (the console's "before" list)."""
        view = self.serving_view(category)
        ranker = self._launcher.launch(view, None, adapt=False)
        inputs = self.user_inputs(view, user_idx)
        if isinstance(ranker, RidgeRanker):
            return ranker.top_k_many(np.array([user_idx]), [inputs.seen], [k])[0]
        return ranker.top_k(
            inputs,
            k,
            index=view.index,
            # the projection only picks the short list; the exact re-rank uses the start params
            projection=view.projection((self.model_version, 0)),
            short_list=self.retrieval.short_list,
        )

    # ---- recommending -------------------------------------------------------------------------

    def recommend(self, user_id: str | int, category: str, k: int = 10) -> Recommendation:
        """Top-``k`` items of ``category`` for ``user_id``, best first (the fallback policy is in
        the module docstring). Items the user already interacted with in the category are not
        recommended (disliked ones are, with ``keep_disliked``). Ids are text, as ingested: an
        integer id is read as its digits (``42`` is user ``"42"``).

        Raises:
            UnknownCategoryError: the category is not in the store.
            DataError: the category has no items, ``k`` is not a whole number >= 1, or the user
                id is neither text nor a whole number.
            NonFiniteError: the model gives a non-finite score.
        """
        (result,) = self.recommend_many(category, [(user_id, k)])
        if isinstance(result, MetarecError):
            raise result
        return result

    def recommend_many(
        self, category: str, requests: Sequence[tuple[str | int, int]]
    ) -> list[Recommendation | MetarecError]:
        """:meth:`recommend` for many ``(user_id, k)`` of one category, ranked in one pass
        (:func:`metarec.serving.batched.rank_many`): the same lists as one call each.

        Returns:
            Per request, its recommendation or the error :meth:`recommend` would raise for it.

        Raises:
            UnknownCategoryError, DataError: the category is unknown or has no items.
        """
        self.catalog.require_category(category)
        adaptation = self._adapted.get(category)
        view = self.serving_view(category)
        n = len(requests)
        results: list[Recommendation | MetarecError | None] = [_bad_request(*r) for r in requests]
        asked = [(_external_id(user_id), k) for user_id, k in requests]
        fallbacks: list[tuple[str | None, str | None]] = [(None, None)] * n
        ranked: list[tuple[Tensor, Tensor] | None] = [None] * n
        personal: list[tuple[int, int, int]] = []  # (request, user, k)
        for i, (user_id, k) in enumerate(asked):
            if results[i] is not None:
                continue
            user_idx = self.user_index(user_id)
            if user_idx is None:
                reason = f"unknown user {user_id!r}: the category's most supported items"
                fallbacks[i] = ("popularity", reason)
                ranked[i] = (view.popular[:k], view.popular_scores[:k])
                continue
            if category in self.damaged:
                fallbacks[i] = ("zero-shot", damaged_reason(category, self.damaged[category]))
            elif adaptation is None:
                fallbacks[i] = ("zero-shot", zero_shot_reason(category))
            personal.append((i, user_idx, k))
        if personal:
            ranker = self.ranker(category)
            ks = [k for *_, k in personal]
            if isinstance(ranker, RidgeRanker):  # exact over every item: no retrieval
                found = ranker.top_k_many(
                    np.array([u for _, u, _ in personal]),
                    [seen_items(view, u, keep_disliked=self.keep_disliked) for _, u, _ in personal],
                    ks,
                )
            else:
                found = rank_many(
                    ranker,
                    self.user_inputs_many(view, [u for _, u, _ in personal]),
                    ks,
                    index=view.index,
                    projection=self._projection(view, ranker, self.params_key(category)),
                    short_list=self.retrieval.short_list,
                )
            for (i, *_), found_top in zip(personal, found, strict=True):
                ranked[i] = found_top
        for i, ((user_id, _), top) in enumerate(zip(asked, ranked, strict=True)):
            if top is None:
                continue
            scores = top[1].numpy()
            if not np.isfinite(scores).all():
                results[i] = NonFiniteError(
                    f"the model gives non-finite scores in {category!r} for {user_id!r}; no "
                    "list was answered. Re-adapt the category, or serve another model"
                )
                continue
            chosen = top[0].numpy()
            items = zip(view.item_ids[chosen], scores.tolist(), view.titles[chosen], strict=True)
            results[i] = Recommendation(
                user_id=user_id,
                category=category,
                items=[RecommendedItem(str(j), float(s), text_or_none(t)) for j, s, t in items],
                model_version=self.model_version,
                adaptation_version=None if adaptation is None else adaptation.version,
                fallback=fallbacks[i][0],
                fallback_reason=fallbacks[i][1],
            )
        answered = [r for r in results if r is not None]
        assert len(answered) == n  # every request is answered or refused
        return answered

    # ---- building -----------------------------------------------------------------------------

    def _build_view(self, key: ViewKey) -> CategoryView:
        category, as_of = key
        every = as_of is None  # a view as of a time must not see the category's later positives
        return build_view(
            self.catalog,
            self.model,
            key,
            item_x=self._item_x,
            profile_x=self._profile_x,
            others=self._profiles_of_all() if every else self._profiles_without(category),
            includes_category=every,
            # a ridge model ranks every item exactly: its views need no retrieval index
            short_list=self.retrieval.short_list if isinstance(self.model, MetaModel) else None,
            previous=self._reusable.pop(key, None),
        )

    def _profiles_of_all(self) -> ProfileTable:
        """Profiles over every category, one table for all views of the data as it is now:
        each view takes its own category's positives out (a launch sees the user's whole
        history elsewhere). A table per category (users x profile width, 0.9 GB at 1e6 users)
        kept for every category served grew with them."""
        if self._every is None:
            self._every = profiles(self.catalog, self._profile_x, self.catalog.categories)
        return self._every

    def _profiles_without(self, category: str) -> ProfileTable:
        """Profiles over every other category (views as of a time only)."""
        found = self._others.get(category)
        if found is None:
            others = [c for c in self.catalog.categories if c != category]
            found = profiles(self.catalog, self._profile_x, others)
            self._others[category] = found
        return found

    def _projection(self, view: CategoryView, ranker: Ranker, key: ParamsKey) -> Projection | None:
        """The view's retrieval projection for ``key``, fitted on first use (None: no index)."""
        if view.index is None or isinstance(ranker, RidgeRanker):
            return None
        found = view.projections.get(key)
        if found is None:
            found = fit_view_projection(
                view,
                ranker,
                lambda user_idx: self.user_inputs(view, user_idx),
                n_users=len(self.catalog.users),
                seed=self.model.config.seed,
                rank=self.retrieval.rank,
            )
            view.add_projection(key, found)
        return found


def view_as_of(adaptation: Adaptation | None) -> int | None:
    """The ``as_of`` of the view serving a category with this adaptation."""
    return None if adaptation is None else adaptation.as_of


def _bad_request(user_id: object, k: object) -> DataError | None:
    """Why one ``(user_id, k)`` request of :meth:`Recommender.recommend_many` cannot be
    answered, or None."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        return DataError(f"k must be a whole number, got {k!r}")
    if k < 1:
        return DataError(f"k must be at least 1, got {k}")
    if isinstance(user_id, bool) or not isinstance(user_id, str | int | np.integer):
        return DataError(
            f"a user id is a string (or a whole number, read as its digits), got {user_id!r}"
        )
    return None


def _external_id(user_id: object) -> str:
    """A user id as the store keeps it: ingestion stores every id as text, so user 42 of an
    integer-keyed dataset is ``"42"`` (passing the integer found no one: the popularity
    fallback for a known user)."""
    return user_id if isinstance(user_id, str) else str(user_id)
