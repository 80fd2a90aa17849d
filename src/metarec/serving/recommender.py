"""The library's front door: load a model, adapt a launched category, recommend top-K.

The CLI and the HTTP service are thin layers over :class:`Recommender`. Adaptation goes through
:func:`metarec.pipeline.category_scores`' inner loop (the learner's ``adapt``), the same code that
meta-training and evaluation use.

Fallbacks (documented in the README, and named in every :class:`Recommendation`):

- an unknown user gets the category's launch popularity (``fallback="popularity"``);
- an unknown category raises :class:`~metarec.errors.UnknownCategoryError`;
- a category with no items raises :class:`~metarec.errors.DataError`;
- a category that was never adapted raises :class:`~metarec.errors.NotAdaptedError`, naming the
  command that adapts it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metarec.errors import DataError, NotAdaptedError
from metarec.features import FeatureSpace, ProfileTable
from metarec.meta import Params
from metarec.models.scorer import score
from metarec.pipeline import Catalog, MetaModel, derived_seed, load_model
from metarec.serving.artifacts import read_artifact, slugify, update_artifact
from metarec.serving.retrieval import UserInputs
from metarec.tasks import (
    CategoryData,
    Split,
    SupportState,
    build_categories,
    candidate_rows_for,
    split_launch,
    support_batch,
    support_state,
)

if TYPE_CHECKING:
    from metarec.data.store import Store


@dataclass(frozen=True)
class Adaptation:
    """One adaptation of a category: its parameters and what they were adapted from."""

    category: str
    version: int
    support_size: int  # support positives used
    n_users: int  # users with support
    adapted_at: float  # unix seconds
    seconds: float  # wall time of the inner loop
    as_of: int | None  # only interactions up to this unix time were used (None: all)
    params: Params = field(repr=False)

    def info(self) -> dict[str, str]:
        return {
            "category": self.category,
            "version": str(self.version),
            "support_size": str(self.support_size),
            "n_users": str(self.n_users),
            "adapted_at": f"{self.adapted_at:.3f}",
            "seconds": f"{self.seconds:.4f}",
            "as_of": "" if self.as_of is None else str(self.as_of),
        }


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    title: str | None


@dataclass(frozen=True)
class Recommendation:
    """Top-K items for one user in one category, and how they were produced."""

    user_id: str
    category: str
    items: list[RecommendedItem]
    model_version: str
    adaptation_version: int | None
    fallback: str | None  # None, or why the personalised model was not used

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "category": self.category,
            "model_version": self.model_version,
            "adaptation_version": self.adaptation_version,
            "fallback": self.fallback,
            "items": [vars(item) for item in self.items],
        }


class Recommender:
    """A meta-model bound to a store: adapts categories and ranks their items.

    Args:
        model: the meta-model.
        model_dir: its folder (adapted parameters are written there).
        store: the open store with the categories' items and interactions.
    """

    def __init__(
        self,
        model: MetaModel,
        model_dir: Path,
        store: Store,
        *,
        catalog: Catalog | None = None,
        item_x: torch.Tensor | None = None,
        profile_x: torch.Tensor | None = None,
    ) -> None:
        """Bind ``model`` to ``store``.

        Args:
            catalog: the store's catalogue, when the caller has just loaded it (else loaded here).
            item_x: (n_items, d) the catalogue's item features under ``model.space``, when the
                caller already has them (else encoded here).
            profile_x: (n_items, d + r) ``item_x`` with the model's collaborative factors, when
                the caller already has them (else built here).
        """
        self.model = model
        self.model_dir = model_dir
        self.store = store
        self.catalog = catalog if catalog is not None else Catalog.load(store, model.config)
        self.space: FeatureSpace = model.space
        self._item_x = item_x if item_x is not None else self.catalog.item_features(self.space)
        if profile_x is None:
            profile_x = torch.cat([self._item_x, model.factors_for(self.catalog.items)], dim=1)
        self._profile_x = profile_x
        self._profile_cache: dict[str, ProfileTable] = {}
        self._adapted: dict[str, Adaptation] = self._read_adaptations()
        self._categories: dict[tuple[str, int | None], tuple[CategoryData, SupportState]] = {}

    @classmethod
    def open(cls, model_dir: str | Path, store: Store) -> Recommender:
        """Load and verify the model folder, then bind it to ``store``."""
        return cls(load_model(model_dir), Path(model_dir), store)

    def with_catalog(self, catalog: Catalog, *, changed_items: Iterable[str] = ()) -> Recommender:
        """The same model over a newer catalogue of the same store (after writes to it).

        Item features are re-encoded only for items that are new (the store appends items) or
        named in ``changed_items``; everything else is reused, so a refresh after a launch or a
        batch of events does not re-encode a large catalogue.

        Args:
            catalog: the store's catalogue, loaded after the writes.
            changed_items: external ids of items whose attributes may have changed.
        """
        if catalog.items is self.catalog.items and not changed_items:  # the same items table
            return Recommender(
                self.model,
                self.model_dir,
                self.store,
                catalog=catalog,
                item_x=self._item_x,
                profile_x=self._profile_x,
            )
        old_ids = self.catalog.items["item_id"].to_numpy()
        new_ids = catalog.items["item_id"].to_numpy()
        n_old = len(old_ids)
        if len(new_ids) < n_old or not np.array_equal(new_ids[:n_old], old_ids):
            return Recommender(self.model, self.model_dir, self.store, catalog=catalog)
        redo = np.flatnonzero(np.isin(new_ids[:n_old], list(set(changed_items))))
        redo = np.concatenate([redo, np.arange(n_old, len(new_ids))])
        item_x = self._item_x
        if len(redo):
            item_x = torch.cat([item_x, item_x.new_zeros(len(new_ids) - n_old, item_x.shape[1])])
            text = None if catalog.text is None else catalog.text.items[torch.from_numpy(redo)]
            item_x[torch.from_numpy(redo)] = self.space.encode(catalog.items.iloc[redo], text)
        return Recommender(self.model, self.model_dir, self.store, catalog=catalog, item_x=item_x)

    def for_model(self, model: MetaModel, model_dir: str | Path) -> Recommender:
        """Another model bound to the same catalogue (a hot swap).

        When both models represent items the same way (equal feature spaces and collaborative
        factors), the encoded items and the per-category data are shared, not recomputed: those
        do not depend on the scorer's parameters.
        """
        same = self.shares_features_with(model)
        same_positives = model.config.feedback == self.model.config.feedback
        other = Recommender(
            model,
            Path(model_dir),
            self.store,
            catalog=self.catalog if same_positives else None,
            item_x=self._item_x if model.space.to_json() == self.space.to_json() else None,
            profile_x=self._profile_x if same else None,
        )
        if same:
            other._profile_cache = dict(self._profile_cache)
            other._categories = dict(self._categories)
        return other

    def shares_features_with(self, model: MetaModel) -> bool:
        """Whether ``model`` encodes items and profiles exactly as this recommender's model."""
        return (
            model.space.to_json() == self.space.to_json()
            and model.factor_item_ids == self.model.factor_item_ids
            and torch.equal(model.factors, self.model.factors)
            and model.config.feedback == self.model.config.feedback
            and model.config.seed == self.model.config.seed
        )

    def _read_adaptations(self) -> dict[str, Adaptation]:
        artifact = read_artifact(self.model_dir)
        # the params file's checksum names the meta-model version
        self.model_version = str(artifact.manifest["files"]["params.safetensors"]["sha256"][:12])
        out: dict[str, Adaptation] = {}
        for name, entry in artifact.manifest["files"].items():
            info = entry.get("metadata") or {}
            if not name.startswith("adapted/") or "category" not in info:
                continue
            out[info["category"]] = Adaptation(
                category=info["category"],
                version=int(info["version"]),
                support_size=int(info["support_size"]),
                n_users=int(info["n_users"]),
                adapted_at=float(info["adapted_at"]),
                seconds=float(info["seconds"]),
                as_of=int(info["as_of"]) if info.get("as_of") else None,
                params=artifact.tensors[name.removesuffix(".safetensors")],
            )
        return out

    def category(self, name: str, as_of: int | None = None) -> tuple[CategoryData, SupportState]:
        """The category's data and support state at ``as_of`` (everything so far when None).

        Raises:
            UnknownCategoryError, DataError: see the module docstring.
        """
        return self._category(name, as_of)

    def _category(self, name: str, as_of: int | None) -> tuple[CategoryData, SupportState]:
        """The category as it was at ``as_of`` (every interaction so far when None)."""
        self.catalog.require_category(name)
        key = (name, as_of)
        if key not in self._categories:
            positives = self.catalog.positives
            if as_of is not None:
                later = self.catalog.item_category[positives["item_idx"].to_numpy()] == name
                later &= positives["timestamp"].fillna(as_of + 1).to_numpy() > as_of
                positives = positives.loc[~later]
            data = build_categories(
                self.catalog.items,
                positives,
                self._item_x,
                self._profile_x,
                self._profiles_without(name),
                [name],
                profile_includes=(),  # the profiles above never saw this category
                seed=self.model.config.seed,
                name_x=self.catalog.name_features(self.space, [name]),
            )[name]
            self._categories[key] = (data, support_state(data, split_launch(data)))
        return self._categories[key]

    def _profiles_without(self, category: str) -> ProfileTable:
        """Profiles over every other category: a launch sees the user's whole history elsewhere."""
        if category not in self._profile_cache:
            others = [c for c in self.catalog.categories if c != category]
            self._profile_cache[category] = self.catalog.profiles(self._profile_x, others)
        return self._profile_cache[category]

    def adaptation(self, category: str) -> Adaptation | None:
        return self._adapted.get(category)

    def adapt(self, category: str, *, as_of: int | None = None) -> Adaptation:
        """Adapt the meta-model to ``category`` from its positives so far; persist the result.

        Args:
            category: the category path.
            as_of: use only the category's interactions up to this unix time (replaying a
                launch); None uses everything in the store.

        Raises:
            UnknownCategoryError, DataError: see the module docstring.
        """
        data, state = self._category(category, as_of)
        split = split_launch(data)
        generator = torch.Generator().manual_seed(derived_seed(self.model.config.seed, category))
        support = support_batch(
            data,
            state,
            split,
            n_negatives=self.model.config.tasks.negatives,
            generator=generator,
        )
        started = time.perf_counter()
        start = self.model.start_params(data)  # conditioned on the category when the model is
        params = {k: v.detach() for k, v in self.model.learner.adapt(start, support).items()}
        seconds = time.perf_counter() - started
        previous = self._adapted.get(category)
        adaptation = Adaptation(
            category=category,
            version=(previous.version + 1) if previous else 1,
            support_size=int(split.support.sum()),
            n_users=int((data.user_count > 0).sum()),
            adapted_at=time.time(),
            seconds=seconds,
            as_of=as_of,
            params=params,
        )
        update_artifact(
            self.model_dir, f"adapted/{slugify(category)}", params, metadata=adaptation.info()
        )
        self._adapted[category] = adaptation
        return adaptation

    def recommend(self, user_id: str, category: str, k: int = 10) -> Recommendation:
        """Top-``k`` items of ``category`` for ``user_id``, best first.

        Items the user already liked in the category are not recommended again.

        Raises:
            UnknownCategoryError: the category is not in the store.
            DataError: the category has no items, or ``k`` < 1.
            NotAdaptedError: the category was never adapted.
        """
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}")
        self.catalog.require_category(category)
        adaptation = self._adapted.get(category)
        if adaptation is None:
            raise NotAdaptedError(
                f"category {category!r} has no adapted parameters yet; run "
                f"`metarec adapt --model {self.model_dir} --store {self.store.path} "
                f"--category {category!r}` first"
            )
        data, state = self._category(category, adaptation.as_of)
        user_idx = self.store.user_index(user_id)
        fallback: str | None = None
        seen = np.zeros(data.n_items, dtype=bool)
        if user_idx is None:
            fallback = "popularity"  # unknown user: nothing personal to go on
            scores = state.pop.clone()
        else:
            scores = self._user_scores(data, state, adaptation.params, user_idx, seen)
        scores = torch.where(torch.as_tensor(seen), torch.tensor(-torch.inf), scores)
        n = min(k, int((~seen).sum()))
        # a stable sort: equal scores (popularity's ties) in item order, as the service ranks
        top = torch.sort(scores, descending=True, stable=True).indices[:n].numpy()
        items = self.catalog.items.iloc[data.item_idx[top]]
        return Recommendation(
            user_id=user_id,
            category=category,
            items=[
                RecommendedItem(str(i), float(s), None if t is None else str(t))
                for i, s, t in zip(
                    items["item_id"], scores[top].tolist(), items["title"], strict=True
                )
            ],
            model_version=self.model_version,
            adaptation_version=adaptation.version,
            fallback=fallback,
        )

    def _user_scores(
        self,
        data: CategoryData,
        state: SupportState,
        params: Params,
        user_idx: int,
        seen: np.ndarray,
    ) -> torch.Tensor:
        user, params = self.personalise(data, state, params, user_idx)
        seen[user.seen.numpy()] = True
        rows = candidate_rows_for(
            data,
            state,
            profile=user.profile[None],
            n_other=user.n_other[None],
            support_sum=user.support_sum[None],
            support_n=user.support_n[None],
        )
        with torch.no_grad():
            return score(params, rows)[0]

    def personalise(
        self, data: CategoryData, state: SupportState, params: Params, user_idx: int
    ) -> tuple[UserInputs, Params]:
        """What the scorer knows about a known user here, and the params to score them with.

        Args:
            data, state: the category (from :meth:`category`).
            params: the category's params (adapted, or the meta-initialisation).
            user_idx: a user of the store (any: one with no history here is profiled from their
                other categories only).

        Returns:
            The user's inputs, and ``params`` (adapted once more on the user's own interactions
            here when the model treats users as tasks).
        """
        position = data.user_position(user_idx)
        d = data.profile.shape[1]
        if position is None:  # no history in this category yet: profile from elsewhere only
            profile, n_other = self._profiles_without(data.name).without(
                torch.tensor([user_idx]), torch.zeros(1, d), torch.zeros(1), torch.zeros(1)
            )
            user = UserInputs(
                profile[0], n_other[0], torch.zeros(d), torch.zeros(()), torch.zeros(0).long()
            )
            return user, params
        mine = data.pos_user == position
        user = UserInputs(
            data.profile[position],
            data.n_other[position],
            state.user_sum[position],
            state.user_n[position],
            torch.from_numpy(np.unique(data.pos_item[mine])),
        )
        if self.model.config.tasks.kind == "user":
            # users-as-tasks models adapt once more, on this user's own interactions
            params = self._adapt_to_user(data, state, params, mine)
        return user, params

    def _adapt_to_user(
        self, data: CategoryData, state: SupportState, params: Params, mine: np.ndarray
    ) -> Params:
        split = Split(mine, np.zeros_like(mine), data.user_count > 0, None)
        key = f"{data.name}:{int(data.users[data.pos_user[mine][0]])}"
        generator = torch.Generator().manual_seed(derived_seed(self.model.config.seed, key))
        support = support_batch(
            data, state, split, n_negatives=self.model.config.tasks.negatives, generator=generator
        )
        return {k: v.detach() for k, v in self.model.learner.adapt(params, support).items()}
