"""From a store to a meta-trained model, and from a category's support to ranked items.

The one place where store data, features, tasks and the meta-learner meet. Training, evaluation
and serving all rank a category through :func:`category_scores`, which adapts through the
learner's single inner loop, so the three cannot drift apart.

Data flow::

    Store ──Catalog.load──▶ items, positives ──FeatureSpace──▶ item features, user profiles
                                   │
                                   ├─ build_categories ─▶ CategoryData per category
                                   │        │
                                   │        ├─ TaskSampler ─▶ meta_train ─▶ MetaModel (params)
                                   │        │
                                   ▼        ▼
                   category_scores(model, category, split) ─▶ (users, items) scores ─▶ top-K
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from metarec.config import TrainConfig
from metarec.errors import DataError, UnknownCategoryError
from metarec.evaluation.metrics import ranking_metrics
from metarec.features import FeatureSpace, ProfileTable, input_dim, positives
from metarec.features.cf import item_factors
from metarec.features.text import TextEncoder, TextTable, load_text
from metarec.meta import Batch, MetaLearner, Params, build_learner, meta_train, stack_batches
from metarec.meta.checkpoint import Checkpointing, run_fingerprint
from metarec.meta.distributed import World
from metarec.models.conditioning import initial_params, is_conditioned, with_conditioning
from metarec.models.scorer import init_params, layer_count
from metarec.tasks import (
    CategoryData,
    Split,
    SupportState,
    TaskSampler,
    build_categories,
    eligible_count,
    split_k_shot,
    support_batch,
    support_state,
)
from metarec.tasks.rows import unit_rows

if TYPE_CHECKING:
    from metarec.data.store import Store

_SCORE_CHUNK_ROWS = 2_000_000  # (users x items) rows scored per chunk: bounds peak memory


def derived_seed(seed: int, key: str) -> int:
    """A seed for one (run seed, key) pair, stable across processes and call order."""
    return zlib.crc32(f"{seed}:{key}".encode())


@dataclass
class Catalog:
    """What a store holds, in the shapes training and ranking need.

    Attributes:
        items: the items table, indexed by position == item_idx.
        users: the users table, position == user_idx.
        positives: one row per (user, item) positive (see :func:`metarec.features.positives`).
        category_sizes: items per category.
    """

    items: pd.DataFrame
    users: pd.DataFrame
    positives: pd.DataFrame
    category_sizes: pd.Series
    item_category: np.ndarray = field(repr=False)
    described: frozenset[str] = frozenset()  # categories the store knows, with items or not
    text: TextTable | None = field(default=None, repr=False)  # with features.text only

    @classmethod
    def load(
        cls,
        store: Store,
        config: TrainConfig,
        *,
        text_encoder: TextEncoder | None = None,
        progress: bool | None = None,
    ) -> Catalog:
        """Read the store; with ``features.text``, embed what its text cache lacks.

        Args:
            store: the store.
            config: ``feedback`` (what is positive) and ``features.text``.
            text_encoder: an encoder instead of ``features.text_model`` (tests).
            progress: progress bar while embedding texts (None: only on a terminal).

        Raises:
            MissingExtraError: text features are on and the encoder is not installed.
        """
        items = store.items().sort_values("item_idx").reset_index(drop=True)
        users = store.users().sort_values("user_idx").reset_index(drop=True)
        if not (items["item_idx"].to_numpy() == np.arange(len(items))).all():
            raise DataError(f"store {store.path} has gaps in item_idx; re-ingest into a new store")
        pos = positives(store.interactions(), config.feedback)
        return cls(
            items=items,
            users=users,
            positives=pos,
            category_sizes=items.groupby("category").size(),
            item_category=items["category"].to_numpy(),
            described=frozenset(store.category_descriptions()),
            text=load_text(store, items, config.features, encoder=text_encoder, progress=progress)
            if config.features.text
            else None,
        )

    @property
    def categories(self) -> list[str]:
        return sorted(self.category_sizes.index)

    def restricted(self, keep: np.ndarray | pd.Series) -> Catalog:
        """The same catalogue with only the positives where ``keep`` is True (sealing)."""
        return replace(self, positives=self.positives.loc[np.asarray(keep)].reset_index(drop=True))

    def require_category(self, name: str) -> None:
        """Raise unless ``name`` is a category with items.

        Raises:
            DataError: the category is known (it has a description) but has no items.
            UnknownCategoryError: the store has never heard of it.
        """
        if name in self.described and name not in self.category_sizes.index:
            raise DataError(
                f"category {name!r} has no items; ingest its items (an items table with "
                f"category = {name!r}) before adapting or recommending"
            )
        if name not in self.category_sizes.index:
            close = [c for c in self.categories if name.lower() in c.lower()][:5]
            hint = f"; did you mean one of {close}?" if close else "; see `metarec categories`"
            raise UnknownCategoryError(f"category {name!r} is not in the store{hint}")

    def positives_in(self, categories: Sequence[str]) -> pd.DataFrame:
        keep = np.isin(self.item_category[self.positives["item_idx"].to_numpy()], list(categories))
        return self.positives.loc[keep]

    def item_features(self, space: FeatureSpace) -> torch.Tensor:
        """(n_items, d) attribute (and, with text features, text) features of every item."""
        return space.encode(self.items, None if self.text is None else self.text.items)

    def name_features(
        self, space: FeatureSpace, names: Sequence[str]
    ) -> dict[str, torch.Tensor] | None:
        """Category -> (t,) projected text embedding of its name; None without text features."""
        if space.text is None or self.text is None:
            return None
        return {name: space.text.project(self.text.categories[name]) for name in names}

    def fit_factors(
        self, categories: Sequence[str], rank: int, seed: int, power: float = -1.0
    ) -> torch.Tensor:
        """(n_items, rank) collaborative factors from the positives of ``categories`` only."""
        pos = self.positives_in(categories)
        return item_factors(
            pos["user_idx"].to_numpy(),
            pos["item_idx"].to_numpy(),
            pos["weight"].to_numpy(),
            n_users=len(self.users),
            n_items=len(self.items),
            rank=rank,
            seed=seed,
            power=power,
        )

    def profiles(self, profile_x: torch.Tensor, categories: Sequence[str]) -> ProfileTable:
        """Per-user sums of ``profile_x`` over the positives of ``categories``."""
        pos = self.positives_in(categories)
        return ProfileTable.build(
            pos["user_idx"].to_numpy(),
            pos["item_idx"].to_numpy(),
            pos["weight"].to_numpy(),
            profile_x,
            len(self.users),
        )

    def category_data(
        self,
        names: Sequence[str],
        model: MetaModel,
        *,
        visible: Sequence[str],
        extra_users: np.ndarray | None = None,
    ) -> dict[str, CategoryData]:
        """Build :class:`CategoryData` for ``names``, profiles drawn from ``visible`` categories.

        ``extra_users`` (global indices) are included even without a positive in the category.
        """
        item_x = self.item_features(model.space)
        profile_x = torch.cat([item_x, model.factors_for(self.items)], dim=1)
        return build_categories(
            self.items,
            self.positives,
            item_x,
            profile_x,
            self.profiles(profile_x, visible),
            names,
            profile_includes=visible,
            seed=model.config.seed,
            extra_users=extra_users,
            name_x=self.name_features(model.space, names),
        )


@dataclass
class MetaModel:
    """A meta-trained scorer with everything needed to adapt and rank a new category.

    Attributes:
        config: the resolved training config.
        space: fitted item feature encoders.
        params: the meta-initialisation.
        splits: category lists used: ``train``, ``validation``, ``hold_out``.
        history: per-step training records.
    """

    config: TrainConfig
    space: FeatureSpace
    params: Params
    splits: dict[str, list[str]]
    factors: torch.Tensor  # (n_known_items, r) collaborative factors of the training items
    factor_item_ids: list[str]  # external ids of those rows
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def learner(self) -> MetaLearner:
        return build_learner(self.config.meta)

    def start_params(self, category: CategoryData) -> Params:
        """The initialisation ``category`` adapts from (and is ranked by at zero shots):
        ``params`` conditioned on the category's context for a category-conditioned model
        (``model.condition = "film"``, :mod:`metarec.models.conditioning`), ``params`` as they
        are otherwise."""
        if not is_conditioned(self.params):
            return self.params
        with torch.no_grad():
            return initial_params(self.params, category.context)

    def factors_for(self, items: pd.DataFrame) -> torch.Tensor:
        """(len(items), r) factors of ``items`` by external id; zeros for unseen items."""
        out = torch.zeros((len(items), self.factors.shape[1]))
        row_of = pd.Series(np.arange(len(self.factor_item_ids)), index=self.factor_item_ids)
        found = row_of.reindex(items["item_id"].astype(str).to_numpy())
        known = found.notna().to_numpy(copy=True)
        out[torch.from_numpy(known)] = self.factors[
            torch.from_numpy(found[known].to_numpy(dtype=np.int64, copy=True))
        ]
        return out

    def metadata(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "features": self.space.to_json(),
            "splits": self.splits,
            "history": self.history,
        }

    def tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        groups = {"params": self.params, "factors": {"item_factors": self.factors}}
        if self.space.tensors():  # text features' projection
            groups["features"] = self.space.tensors()
        return groups

    def files(self) -> dict[str, bytes]:
        return {"factor_item_ids.json": json.dumps(self.factor_item_ids).encode()}

    @classmethod
    def from_artifact(cls, artifact: Any) -> MetaModel:
        metadata = artifact.metadata
        return cls(
            config=TrainConfig.model_validate(metadata["config"]),
            space=FeatureSpace.from_json(metadata["features"], artifact.tensors.get("features")),
            params=dict(artifact.tensors["params"]),
            splits=metadata["splits"],
            factors=artifact.tensors["factors"]["item_factors"],
            factor_item_ids=json.loads(artifact.files["factor_item_ids.json"]),
            history=metadata.get("history", []),
        )


def split_categories(catalog: Catalog, config: TrainConfig) -> dict[str, list[str]]:
    """Meta-train / meta-validation / hold-out categories (seeded; hold-out as configured).

    A category needs ``min_users`` users with more than the evaluation shots to be worth a
    validation slot; smaller categories still train. About a fifth of the eligible ones
    (at least one when there are four or more) validate.
    """
    for name in config.hold_out:
        catalog.require_category(name)
    rest = [c for c in catalog.categories if c not in set(config.hold_out)]
    counts = catalog.positives_in(rest).assign(
        category=lambda d: catalog.item_category[d["item_idx"].to_numpy()]
    )
    per_user = counts.groupby(["category", "user_idx"]).size()
    enough = (per_user >= config.tasks.shots + 1).groupby(level=0).sum()
    eligible = sorted(c for c in rest if enough.get(c, 0) >= config.tasks.min_users)
    rng = np.random.default_rng(derived_seed(config.seed, "validation-split"))
    n_val = max(1, round(len(eligible) / 5)) if len(eligible) >= 4 else 0
    validation = sorted(rng.permutation(eligible)[:n_val].tolist()) if n_val else []
    train = [c for c in rest if c not in set(validation)]
    return {"train": train, "validation": validation, "hold_out": list(config.hold_out)}


def category_scores(
    model: MetaModel,
    category: CategoryData,
    split: Split,
    users: np.ndarray,
    *,
    adapt: bool = True,
    params: Params | None = None,
) -> torch.Tensor:
    """Scores of every item of ``category`` for ``users``, after adapting on ``split``'s support.

    The single path from support to scores used by evaluation and serving. With
    ``tasks.kind == "category"`` the model adapts once on the whole support of the category;
    with ``"user"`` it adapts once per user on that user's support (batched with ``vmap``).

    Args:
        model: the meta-model.
        category: the category's data.
        split: which positives are support.
        users: (b,) user positions in ``category`` to score.
        adapt: False scores with the meta-initialisation (zero inner steps).
        params: start from these instead of ``model.start_params(category)`` (the
            meta-initialisation, conditioned on the category for a conditioned model), e.g.
            cached adapted params.

    Returns:
        (b, n_items) scores, higher is better.
    """
    start = model.start_params(category) if params is None else params
    state = support_state(category, split)
    generator = torch.Generator().manual_seed(derived_seed(model.config.seed, category.name))
    tasks = model.config.tasks
    chunk = max(1, _SCORE_CHUNK_ROWS // max(1, category.n_items))
    adapting = adapt and model.config.meta.inner_steps > 0
    if adapting and tasks.kind == "user":
        parts = [
            _per_user_scores(model, category, split, state, users[i : i + chunk], generator, start)
            for i in range(0, len(users), chunk)
        ]
        return torch.cat(parts) if parts else torch.zeros((0, category.n_items))
    adapted = start
    if adapting:
        support = support_batch(
            category, state, split, n_negatives=tasks.negatives, generator=generator
        )
        adapted = {k: v.detach() for k, v in model.learner.adapt(start, support).items()}
    users_t = torch.as_tensor(users, dtype=torch.long)
    with torch.no_grad():
        out = [
            candidate_scores(adapted, category, state, users_t[i : i + chunk])
            for i in range(0, len(users_t), chunk)
        ]
    return torch.cat(out) if out else torch.zeros((0, category.n_items))


def candidate_scores(
    params: Params, category: CategoryData, state: SupportState, users: torch.Tensor
) -> torch.Tensor:
    """``score(params, candidate_rows(category, state, users))`` without building the rows.

    The first layer is linear in the item's representation ``z`` for a fixed user, so each user
    folds into it once (``W_z + W_p * p_u + W_s * s_u``) and meets every item in one batched
    matmul; only the six scalar features are formed per (user, item). Same sums in another order:
    equal to the row-building path up to float rounding (tested), several times cheaper in time
    and memory (no ``(users, items, 3D + 6)`` tensor).

    Args:
        users: (b,) user positions in ``category``.

    Returns:
        (b, n_items) scores.
    """
    z = state.item_repr(category, torch.arange(category.n_items))  # (n, D)
    d = z.shape[1]
    weight, bias = params["layers.0.weight"], params["layers.0.bias"]  # (h, 3D + 6), (h,)
    profile = category.profile[users]  # (b, D)
    support_n = state.user_n[users]
    support = state.user_sum[users] / support_n.clamp_min(1.0)[:, None]
    folded = (
        weight[None, :, :d]
        + weight[None, :, d : 2 * d] * profile[:, None, :]
        + weight[None, :, 2 * d : 3 * d] * support[:, None, :]
    )  # (b, h, D)
    h1 = torch.einsum("bhd,nd->bnh", folded, z)
    w = weight[:, 3 * d :]  # the N_SCALARS columns, in pair_features' order
    eps = 1e-6
    z_unit = z / z.norm(dim=1).clamp_min(eps)[:, None]
    cos_p = (profile / profile.norm(dim=1).clamp_min(eps)[:, None]) @ z_unit.T  # (b, n)
    cos_s = (support / support.norm(dim=1).clamp_min(eps)[:, None]) @ z_unit.T
    item_terms = torch.outer(torch.log1p(state.pop), w[:, 0]) + torch.outer(
        state.pop / state.pop_max.clamp_min(1.0), w[:, 1]
    )  # (n, h)
    cf_unit = unit_rows(profile[:, category.item_x.shape[1] :])
    affinity = torch.asinh(cf_unit @ state.item_unit_sum.T)  # (b, n)
    user_terms = (
        torch.outer(torch.log1p(category.n_other[users]), w[:, 4])
        + torch.outer(torch.log1p(support_n), w[:, 5])
        + bias
    )  # (b, h)
    h1 = (
        h1
        + cos_p[..., None] * w[:, 2]
        + cos_s[..., None] * w[:, 3]
        + affinity[..., None] * w[:, 6]
        + item_terms[None]
        + user_terms[:, None]
    )
    n_layers = layer_count(params)
    out = h1
    for i in range(1, n_layers):
        out = torch.nn.functional.linear(
            torch.relu(out), params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]
        )
    return out.squeeze(-1)


def _per_user_scores(
    model: MetaModel,
    category: CategoryData,
    split: Split,
    state: SupportState,
    users: np.ndarray,
    generator: torch.Generator,
    start: Params,
) -> torch.Tensor:
    """Users-as-tasks: adapt once per user on their own support, all users at once (vmap)."""
    negatives = model.config.tasks.negatives
    supports = [
        support_batch(
            category,
            state,
            Split(split.support & (category.pos_user == user), split.query, split.eligible, None),
            n_negatives=negatives,
            generator=generator,
        )
        for user in users
    ]
    stacked = stack_batches(supports)
    learner = model.learner

    def adapt_one(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> Params:
        return learner.adapt(start, Batch(x, y, mask))

    adapted = torch.func.vmap(adapt_one)(stacked.x, stacked.y, stacked.mask)
    adapted = {k: v.detach() for k, v in adapted.items()}

    def rank_one(params: Params, user: torch.Tensor) -> torch.Tensor:
        return candidate_scores(params, category, state, user[None])[0]

    with torch.no_grad():  # each user's own params meet only their own folded first layer
        return torch.func.vmap(rank_one)(adapted, torch.as_tensor(users, dtype=torch.long))


def popularity_scores(
    category: CategoryData, split: Split, users: np.ndarray, *, seed: int = 0
) -> torch.Tensor:
    """Support counts of each item, the same for every user: the launch-popularity baseline.

    Ties are broken at random (seeded per category), not by item index: ids often encode
    popularity (MovieLens numbers its best-known films first).
    """
    pop = support_state(category, split).pop
    generator = torch.Generator().manual_seed(derived_seed(seed, category.name))
    jitter = 0.5 * torch.rand(category.n_items, generator=generator)  # < 1: only ties move
    return (pop + jitter).expand(len(users), -1)


def evaluation_masks(
    category: CategoryData, split: Split, users: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevant, exclude) boolean (b, n_items) masks: query positives, and support items."""
    b, n = len(users), category.n_items
    row_of = np.full(category.n_users, -1)
    row_of[users] = np.arange(b)
    relevant = torch.zeros((b, n), dtype=torch.bool)
    exclude = torch.zeros((b, n), dtype=torch.bool)
    for mask, target in ((split.query, relevant), (split.support, exclude)):
        rows = row_of[category.pos_user[mask]]
        keep = rows >= 0
        target[rows[keep], category.pos_item[mask][keep]] = True
    return relevant, exclude


def validation_ndcg(model: MetaModel, categories: Sequence[CategoryData], shots: int) -> float:
    """Mean NDCG@10 over the users of ``categories`` at ``shots`` (model selection)."""
    values: list[np.ndarray] = []
    for category in categories:
        split = split_k_shot(category, shots)
        users = np.flatnonzero(split.eligible)
        if len(users) == 0 or category.n_items <= 10 + shots:
            continue
        scores = category_scores(model, category, split, users)
        relevant, exclude = evaluation_masks(category, split, users)
        values.append(ranking_metrics(scores, relevant, (10,), exclude=exclude)[("ndcg", 10)])
    if not values:
        return math.nan
    return float(np.nanmean(np.concatenate(values)))


def train(
    store: Store,
    config: TrainConfig,
    *,
    progress: bool = True,
    validate_every: int = 50,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
) -> MetaModel:
    """Meta-train a model on a store's categories, sealing ``config.hold_out``.

    Args:
        store: an open store, or a Parquet export opened with
            :func:`metarec.data.export.open_export` (``exclude=config.hold_out`` reads no
            sealed category's interactions at all).
        config: the training config.
        progress: show progress bars.
        validate_every: meta-steps between validations (NDCG@10 on validation categories).
        checkpoint: checkpoint folder, cadence and resume flag (see :func:`train_on`).
        world: the ranks of a distributed run (see :func:`train_on`).

    Returns:
        The meta-model whose params scored best on the validation categories (the last ones
        when there are none).

    Raises:
        DataError: not enough data to build any meta-training task.
    """
    catalog = Catalog.load(store, config)
    return train_on(
        catalog,
        config,
        split_categories(catalog, config),
        progress=progress,
        validate_every=validate_every,
        checkpoint=checkpoint,
        world=world,
    )


def prepare_model(
    catalog: Catalog,
    config: TrainConfig,
    splits: dict[str, list[str]],
    generator: torch.Generator | None = None,
) -> MetaModel:
    """A model at its initialisation: features and collaborative factors fitted on the training
    categories only, params freshly drawn. Baselines use it for the same features.

    Raises:
        DataError: no training category has items.
    """
    is_train = catalog.items["category"].isin(splits["train"]).to_numpy(copy=True)
    train_items = catalog.items.loc[is_train]
    if train_items.empty:
        raise DataError("no meta-training categories left after hold-out; hold out fewer")
    text = None if catalog.text is None else catalog.text.items[torch.from_numpy(is_train)]
    space = FeatureSpace.fit(train_items, config.features, text)
    factors = catalog.fit_factors(
        splits["train"], config.features.cf_rank, config.seed, config.features.cf_power
    )
    known = catalog.items["category"].isin(splits["train"]).to_numpy(copy=True)
    generator = generator or torch.Generator().manual_seed(config.seed)
    params = init_params(
        input_dim(space.dim + config.features.cf_rank), config.model, generator=generator
    )
    return MetaModel(
        config=config,
        space=space,
        params=params,
        splits=splits,
        factors=factors[torch.from_numpy(known)],
        factor_item_ids=catalog.items.loc[known, "item_id"].astype(str).tolist(),
    )


def train_on(
    catalog: Catalog,
    config: TrainConfig,
    splits: dict[str, list[str]],
    *,
    progress: bool = True,
    validate_every: int = 50,
    validate: Callable[[MetaModel], float] | None = None,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
) -> MetaModel:
    """Meta-train on ``splits["train"]``, selecting params on ``splits["validation"]``.

    ``validate`` (higher is better) replaces the built-in validation (NDCG@10 on the
    validation categories) when the caller owns the validation data, as the benchmark does.

    Only the training categories' positives are used to learn (features, factors, tasks); the
    validation categories are scored with profiles from the training categories only.

    ``checkpoint`` makes the run resumable: its fingerprint is set here from the config (all
    but ``meta.meta_steps``, so a resumed run may go on longer), ``validate_every`` and the
    data read (items, users, splits, and the training and validation positives), so resuming with
    another config or store is refused. With ``world``, every rank runs this function on the
    same data; rank 0 validates and writes checkpoints (docs/SCALING.md).
    """
    generator = torch.Generator().manual_seed(config.seed)
    model = prepare_model(catalog, config, splits, generator)
    # algorithms may add meta-parameters of their own (Meta-SGD: one learned rate per weight)
    params = build_learner(config.meta).init_params(model.params)
    # and a category-conditioned model its hypernetwork (own seed: the run's draws are unchanged)
    film_generator = torch.Generator().manual_seed(derived_seed(config.seed, "film"))
    params = with_conditioning(
        params, config.model, model.space.context_dim, generator=film_generator
    )
    model.params = params
    train_data = catalog.category_data(splits["train"], model, visible=splits["train"])
    # Validation users' profiles may look at the training categories only (sealed like a launch).
    val_data = catalog.category_data(splits["validation"], model, visible=splits["train"])
    sampler = TaskSampler(list(train_data.values()), config.tasks)
    usable_val = [c for c in val_data.values() if eligible_count(c, config.tasks.shots) > 0]

    def score_params(candidate: Params) -> float:
        candidate_model = replace(model, params=candidate)
        if validate is not None:
            return validate(candidate_model)
        return validation_ndcg(candidate_model, usable_val, config.tasks.shots)

    if checkpoint is not None:
        checkpoint = replace(
            checkpoint, fingerprint=_run_fingerprint(catalog, config, splits, validate_every)
        )
    best, history = meta_train(
        params,
        model.learner,
        sampler,
        config.meta,
        generator=generator,
        validate=score_params if (usable_val or validate is not None) else None,
        validate_every=validate_every,
        progress=progress,
        checkpoint=checkpoint,
        world=world,
    )
    model.params = best
    model.history = history
    return model


def _run_fingerprint(
    catalog: Catalog, config: TrainConfig, splits: dict[str, list[str]], validate_every: int
) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the settings and the data training reads.

    Sealed categories' positives are left out, so a store and its export (which need not hold
    them) fingerprint the same.
    """
    settings = config.model_dump(mode="json")
    del settings["meta"]["meta_steps"]  # more steps continue the same run
    read = splits["train"] + splits["validation"]
    frames = [
        catalog.items[["item_id", "category"]],
        catalog.users[["user_id"]],
        catalog.positives_in(read),
    ]
    return {
        "settings": run_fingerprint({"config": settings, "validate_every": validate_every}, []),
        "data": run_fingerprint({"splits": splits}, frames),
    }


def save_model(model: MetaModel, folder: str | Path) -> Path:
    """Write the model as safetensors + manifest (see :mod:`metarec.serving.artifacts`)."""
    from metarec.serving.artifacts import write_artifact

    return write_artifact(folder, model.tensors(), model.metadata(), files=model.files())


def load_model(folder: str | Path) -> MetaModel:
    """Read and verify a model folder written by :func:`save_model`."""
    from metarec.serving.artifacts import read_artifact

    return MetaModel.from_artifact(read_artifact(folder))
