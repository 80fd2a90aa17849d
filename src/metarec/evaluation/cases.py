"""Launches with their ground truth: the fold's validation scorer and its test cases.

A case holds what a method never sees (the query positives); a method is handed only
the case's sealed :class:`~metarec.baselines.base.Launch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from metarec.baselines.base import Launch, Method, make_launch, make_window_launch
from metarec.config import EvalConfig, TrainConfig
from metarec.data.catalog import Catalog
from metarec.errors import DataError
from metarec.evaluation.folds import Fold
from metarec.evaluation.records import VALIDATION_K, random_tie_order
from metarec.meta.model import MetaModel, prepare_model
from metarec.ranking import ranked_metrics, ranking_metrics
from metarec.seeds import derived_seed
from metarec.tasks import CategoryData, Split, evaluation_masks


def pooled_score(per_user: np.ndarray) -> float:
    """Validation NDCG@10 from its per-user values (:meth:`Validation.per_user`): their mean
    over the users where it is defined, NaN where it is defined for none."""
    return float(np.nanmean(per_user)) if np.isfinite(per_user).any() else float("nan")


@dataclass
class Validation:
    """The fold's validation launches and a scorer over them (NDCG@10, pooled over users)."""

    launches: list[tuple[Launch, Split, torch.Tensor, torch.Tensor]]

    def score(self, method: Method) -> float:
        return pooled_score(self.per_user(method))

    def per_user(self, method: Method) -> np.ndarray:
        """NDCG@10 of every scored validation user (NaN: no relevant candidate), launch by
        launch in a fixed order, so two methods' arrays pair user by user."""
        values = []
        for launch, _, relevant, exclude in self.launches:
            scores, relevant_p, exclude_p = random_tie_order(
                0, launch.name, method.scores(launch), relevant, exclude
            )
            values.append(
                ranking_metrics(scores, relevant_p, (VALIDATION_K,), exclude=exclude_p)[
                    ("ndcg", VALIDATION_K)
                ]
            )
        return np.concatenate(values) if values else np.array([np.nan])


class LazyValidation:
    """A :class:`Validation` built on its first use (the zero-shot one: only some methods
    ask for it, and building launches costs a pass over the validation categories)."""

    def __init__(self, build: Callable[[], Validation]) -> None:
        self._build: Callable[[], Validation] | None = build
        self._validation: Validation | None = None

    def per_user(self, method: Method) -> np.ndarray:
        if self._validation is None:
            assert self._build is not None
            self._validation, self._build = self._build(), None
        return self._validation.per_user(method)


# Validation users scored per validation category. Validation compares settings and checkpoints
# of one method on the same users, so the noise of a sample is shared by every candidate it
# ranks; a thousand users resolve the differences that tuning acts on, and scoring more costs
# time in proportion (every item for every user, at every checkpoint) without changing choices.
# Categories with fewer users (every validation genre of ML-100K) are scored whole. Test
# launches never sample: their numbers are exact over every user. The harness reads the bound
# from ``EvalConfig.validation_users`` (None: every user).
VALIDATION_USERS = EvalConfig().validation_users


def validation_launches(
    catalog: Catalog,
    train_config: TrainConfig,
    fold: Fold,
    *,
    max_users: int | None = VALIDATION_USERS,
    features: MetaModel | None = None,
    shots: int | None = None,
) -> Validation:
    """Validation categories launched at ``tasks.shots``, seen from the training categories.

    Args:
        shots: launch at this many shots instead (0: the zero-shot validation).
        features: the fold's features (``FitContext.features``: fitted on the training
            categories alone) when the caller has them; fitted here otherwise.
        max_users: score at most this many users of each validation category, a sample seeded
            by the run's seed and the category (the same for every method and checkpoint); the
            support of every user still makes up the launch. None scores every user.
    """
    sealed = catalog.restricted_to(fold.train + fold.validation)
    if features is None:
        features = prepare_model(
            sealed.restricted_to(fold.train),
            train_config,
            {"train": fold.train, "validation": [], "hold_out": []},
        )
    shots = train_config.tasks.shots if shots is None else shots
    launches = []
    for name in fold.validation:
        launch, split = make_launch(sealed, name, shots, visible=fold.train, features=features)
        if len(launch.users) == 0:
            continue
        full = features.category_data(sealed, [name], visible=fold.train)[name]
        users = np.flatnonzero(split.eligible)
        if full.n_items <= VALIDATION_K + shots:
            continue
        if max_users is not None and len(users) > max_users:
            rng = np.random.default_rng(derived_seed(train_config.seed, f"validation:{name}"))
            kept = np.sort(rng.choice(len(users), size=max_users, replace=False))
            launch, users = replace(launch, users=launch.users[kept]), users[kept]
        relevant, exclude = evaluation_masks(full, split, users)  # the scored users' rows only
        launches.append((launch, split, relevant, exclude))
    return Validation(launches)


# Users x items entries scored at once (about 128 MiB of float32 scores, plus the masks). A test
# case's users are scored in blocks of this size so that a large category (a 93k-item Amazon
# category has 26k users: 2.4e9 entries) fits in memory; every category of the MovieLens and
# Douban benchmarks fits in one block. Each user's scores and metrics do not depend on the
# block (a method scores users independently), so the metrics are the same for any block size.
SCORE_BLOCK = 2**25


@dataclass(frozen=True)
class Case:
    """One test launch and its ground truth (which the method never sees)."""

    launch: Launch
    split: Split  # over ``full``
    full: CategoryData  # the unsealed category
    users: np.ndarray  # positions of the evaluated users in ``full``, in ``launch.users``' order

    def masks(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(relevant, exclude) (users, items) masks of ``users[rows]``: their query positives and
        their own support items (built per block: dense for every user they may not fit)."""
        return evaluation_masks(self.full, self.split, self.users[rows])

    def blocks(self) -> list[slice]:
        """Consecutive user rows scored together (:data:`SCORE_BLOCK` entries at most)."""
        size = max(1, SCORE_BLOCK // max(1, self.full.n_items))
        return [slice(a, a + size) for a in range(0, max(1, len(self.users)), size)]


def make_case(
    catalog: Catalog,
    config: EvalConfig,
    name: str,
    shots: int | None,
    visible: list[str],
    features: MetaModel,
    *,
    full: CategoryData | None = None,
) -> Case:
    """The launch of category ``name`` at ``shots`` (None: the launch window) and its truth.

    Args:
        full: ``features.category_data(catalog, [name], visible=visible)[name]`` when the caller
            already built it (it is the same for every shot count of a category).

    Raises:
        DataError: some user would keep no more candidates than the largest k.
    """
    if shots is None:
        launch, split = make_window_launch(
            catalog, name, config.launch_window, visible=visible, features=features
        )
    else:
        launch, split = make_launch(catalog, name, shots, visible=visible, features=features)
    if full is None:
        full = features.category_data(catalog, [name], visible=visible)[name]
    users = np.flatnonzero(split.eligible)
    candidates = full.n_items - int(_support_items_per_user(full, split)[users].max(initial=0))
    if len(users) and candidates <= max(config.ks):
        raise DataError(
            f"category {name!r} leaves some user only {candidates} candidate items, not more "
            f"than k = {max(config.ks)}; lower the ks or the shots"
        )
    return Case(launch, split, full, users)


def _support_items_per_user(category: CategoryData, split: Split) -> np.ndarray:
    """(n_users,) distinct support items of each user of ``category``."""
    pairs = np.unique(
        category.pos_user[split.support].astype(np.int64) * category.n_items
        + category.pos_item[split.support]
    )
    return np.bincount(pairs // category.n_items, minlength=category.n_users)


def score_case(
    method: Method, case: Case, config: EvalConfig
) -> tuple[dict[tuple[str, int | None], np.ndarray], dict[tuple[str, int], float]]:
    """Per-user metrics of one method on one launch, and statistics of its top-K lists.

    Per user, besides the ranking metrics: ``top1_popular`` (1 when the user's first item is
    one of the launch's most supported items, 0 else; a user who took those items in their
    support cannot be shown them and counts 0). Of the lists:
    ``coverage`` at every k (share of the category's items in anyone's top k) and ``gini`` at
    every k (Gini coefficient of how often each item of the category appears in the top-k
    lists: 0 when every item appears equally often, near 1 when a few fill every list).
    """
    n_items = case.full.n_items
    counts = np.bincount(case.full.pos_item[case.split.support], minlength=n_items)
    order = _tie_order(config.seed, case.full.name, n_items)
    parts: list[dict[tuple[str, int | None], np.ndarray]] = []
    lists: dict[int, list[np.ndarray]] = {k: [] for k in config.ks}
    for rows in case.blocks():
        launch = replace(case.launch, users=case.launch.users[rows])
        relevant, exclude = case.masks(rows)
        scores = method.scores(launch)
        if scores.shape != relevant.shape:
            raise DataError(
                f"{type(method).__name__}.scores returned shape {tuple(scores.shape)} for "
                f"{case.launch.name!r}; expected (users, items) = {tuple(relevant.shape)}"
            )
        scores, relevant, exclude = random_tie_order(
            config.seed, case.full.name, scores, relevant, exclude
        )
        # a top-k list is the first k of the top-max(ks) list (ties go to the lower index in
        # both: tests/ranking/test_metrics.py), so one ranking gives every cutoff and the top 1
        values, ranked = ranked_metrics(scores, relevant, config.ks, exclude=exclude)
        top = ranked.numpy()
        for k in config.ks:
            lists[k].append(top[:, :k])
        if counts.max() > 0 and len(relevant):
            first = top[:, 0]
            values[("top1_popular", 1)] = (counts[order[first]] == counts.max()).astype(np.float64)
        parts.append(values)
    values = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    tops: dict[tuple[str, int], float] = {}
    for k in config.ks:
        shown = np.concatenate(lists[k])
        tops[("coverage", k)] = len(np.unique(shown)) / n_items
        tops[("gini", k)] = gini(np.bincount(shown.ravel(), minlength=n_items))
    return values, tops


def gini(frequencies: np.ndarray) -> float:
    """Gini coefficient of non-negative frequencies (0: all equal; (n-1)/n: one takes all)."""
    x = np.sort(np.asarray(frequencies, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2.0 * np.arange(1, n + 1) - n - 1).dot(x) / (n * total))


def _tie_order(seed: int, key: str, n_items: int) -> np.ndarray:
    """The column order :func:`random_tie_order` applied: position -> original item index."""
    index = torch.arange(n_items)[None].float()
    return random_tie_order(seed, key, index)[0][0].long().numpy()


def split_keys(fold: int, case: Case) -> dict[str, Any]:
    """Global (user_idx, item_idx) pairs of the case's support and query positives."""
    full, split = case.full, case.split

    def pairs(mask: np.ndarray) -> np.ndarray:
        return np.stack([full.users[full.pos_user[mask]], full.item_idx[full.pos_item[mask]]], 1)

    return {
        "fold": fold,
        "category": full.name,
        "shots": case.launch.shots,
        "support": pairs(split.support),
        "query": pairs(split.query),
    }
