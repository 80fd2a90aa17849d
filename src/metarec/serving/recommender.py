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

    def __init__(self, model: MetaModel, model_dir: Path, store: Store) -> None:
        self.model = model
        self.model_dir = model_dir
        self.store = store
        self.catalog = Catalog.load(store, model.config)
        self.space: FeatureSpace = model.space
        self._item_x = self.catalog.item_features(self.space)
        self._profile_x = torch.cat([self._item_x, model.factors_for(self.catalog.items)], dim=1)
        self._profile_cache: dict[str, ProfileTable] = {}
        self._adapted: dict[str, Adaptation] = self._read_adaptations()
        self._categories: dict[tuple[str, int | None], tuple[CategoryData, SupportState]] = {}

    @classmethod
    def open(cls, model_dir: str | Path, store: Store) -> Recommender:
        """Load and verify the model folder, then bind it to ``store``."""
        return cls(load_model(model_dir), Path(model_dir), store)

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
        params = {
            k: v.detach() for k, v in self.model.learner.adapt(self.model.params, support).items()
        }
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
            scores = state.pop - 1e-6 * torch.arange(data.n_items) / max(1, data.n_items)
        else:
            scores = self._user_scores(data, state, adaptation.params, user_idx, seen)
        scores = torch.where(torch.as_tensor(seen), torch.tensor(-torch.inf), scores)
        n = min(k, int((~seen).sum()))
        top = torch.topk(scores, n).indices.numpy()
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
        position = data.user_position(user_idx)
        d = data.profile.shape[1]
        user = torch.tensor([user_idx])
        if position is None:  # no history in this category yet: profile from elsewhere only
            profile, n_other = self._profiles_without(data.name).without(
                user, torch.zeros(1, d), torch.zeros(1), torch.zeros(1)
            )
            support_sum, support_n = torch.zeros(1, d), torch.zeros(1)
        else:
            profile, n_other = data.profile[[position]], data.n_other[[position]]
            support_sum, support_n = state.user_sum[[position]], state.user_n[[position]]
            mine = data.pos_user == position
            seen[data.pos_item[mine]] = True
            if self.model.config.tasks.kind == "user":
                # users-as-tasks models adapt once more, on this user's own interactions
                params = self._adapt_to_user(data, state, params, mine)
        rows = candidate_rows_for(
            data,
            state,
            profile=profile,
            n_other=n_other,
            support_sum=support_sum,
            support_n=support_n,
        )
        with torch.no_grad():
            return score(params, rows)[0]

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
