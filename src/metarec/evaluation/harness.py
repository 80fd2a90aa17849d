"""The new-category benchmark: every method, sealed categories, exact full ranking.

PROTOCOL.md §2 (leave-categories-out, ``protocol="loco"``) and §3 (launch-time,
``protocol="launch"``), step by step:

1. eligible categories: at least ``min_users`` users with more than the largest shot count of
   positives there (for §3: with positives after the launch window);
2. a seeded shuffle deals them into ``folds`` folds; each fold's categories are sealed test
   categories once; a seeded share of the other eligible categories validates, the rest (and every
   ineligible category) trains;
3. each method is fitted on the training categories only, once per setting of its grid (its
   tuning budget), and the setting with the best validation NDCG@10 is kept;
4. each test category launches (k-shot per user, or the launch window): the method sees a sealed
   :class:`~metarec.baselines.base.Launch`, ranks every item of the category, and is scored
   against the held-out positives; each user's own support items are not candidates;
5. means over users with bootstrap CIs, per category and pooled, and paired tests of every method
   against the best baseline over the same users.

Nothing here depends on wall-clock time or global random state: the same seed gives the same
``metrics.json``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from metarec.baselines.base import Launch, Method, fit_context, make_launch, make_window_launch
from metarec.config import EvalConfig, TrainConfig
from metarec.data.catalog import Catalog
from metarec.errors import DataError
from metarec.evaluation.methods import resolve_methods
from metarec.evaluation.stats import bootstrap_ci, paired_test
from metarec.meta.model import MetaModel, prepare_model
from metarec.ranking import rank_top_k, ranking_metrics
from metarec.seeds import derived_seed
from metarec.tasks import CategoryData, Split, evaluation_masks

VALIDATION_K = 10


@dataclass(frozen=True)
class Fold:
    """One fold: which categories train, validate and are sealed for testing."""

    index: int
    train: list[str]
    validation: list[str]
    test: list[str]


@dataclass
class Result:
    """What an evaluation produced; :mod:`metarec.evaluation.report` writes it out.

    Attributes:
        records: PROTOCOL.md §4 records.
        comparisons: paired tests of each method against the best baseline, per shots.
        tuning: every (method, fold, setting) tried, with its validation NDCG@10.
        folds: the folds used.
        split_keys: per (fold, category, shots): support and query (user_idx, item_idx) pairs.
        timings: wall seconds per method (fit and scoring), kept out of ``metrics.json``.
        skipped: (category, shots) launches left out because the category is not eligible at
            that shot count (too few users with enough positives, or too few items).
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    folds: list[Fold] = field(default_factory=list)
    split_keys: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def eligible_categories(
    catalog: Catalog, min_users: int, min_positives: int, min_items: int = 0
) -> list[str]:
    """Categories with at least ``min_users`` users having ``min_positives`` positives there,
    and more than ``min_items`` items (so every user keeps more candidates than the largest k)."""
    pos = catalog.positives
    category = catalog.item_category[pos["item_idx"].to_numpy()]
    per_user = pos.assign(category=category).groupby(["category", "user_idx"]).size()
    enough = (per_user >= min_positives).groupby(level=0).sum()
    sizes = catalog.category_sizes
    return sorted(
        str(c) for c, n in enough.items() if n >= min_users and sizes.get(c, 0) > min_items
    )


def make_folds(categories: list[str], all_categories: list[str], config: EvalConfig) -> list[Fold]:
    """Deal eligible categories into folds; pick each fold's validation categories.

    Raises:
        DataError: fewer eligible categories than folds need (each fold needs a test category,
            and a validation and a training category must remain).
    """
    needed = config.folds + 1
    if len(categories) < needed or len(all_categories) < needed + 1:
        raise DataError(
            f"{len(categories)} eligible categories ({categories}) for {config.folds} folds; "
            f"need at least {needed} (one per fold, and one more to validate), plus one more "
            "category of any size to train. Lower --folds, --shots or --min-users, or bring "
            "more categories"
        )
    rng = np.random.default_rng(derived_seed(config.seed, "folds"))
    shuffled = [categories[i] for i in rng.permutation(len(categories))]
    folds = []
    for index, test in enumerate(np.array_split(np.array(shuffled, dtype=object), config.folds)):
        test_list = sorted(str(c) for c in test)
        rest = [c for c in shuffled if c not in test_list]
        n_val = min(max(1, round(len(rest) * config.validation_share)), len(rest))
        pick = np.random.default_rng(derived_seed(config.seed, f"validation-{index}"))
        validation = sorted(rest[i] for i in pick.permutation(len(rest))[:n_val])
        train = sorted(c for c in all_categories if c not in test_list and c not in validation)
        if not train:
            raise DataError(
                f"fold {index} has no training category left; lower --folds or bring more "
                "categories"
            )
        folds.append(Fold(index, train, validation, test_list))
    return folds


def fixed_fold(categories: list[str], catalog: Catalog, config: EvalConfig) -> Fold:
    """One fold whose test categories are given (e.g. Douban's music to book).

    Validation categories are drawn from the other eligible categories as usual; when none is
    left, every method runs with its default setting (the same, zero, tuning budget for all).

    Raises:
        UnknownCategoryError: a test category is not in the store.
        DataError: a test category is not eligible, or nothing is left to train on.
    """
    test = sorted(config.test_categories or ())
    for name in test:
        catalog.require_category(name)
        if name not in categories:
            raise DataError(
                f"test category {name!r} is not eligible (see PROTOCOL.md §2 step 1: "
                f"{config.min_users} users with more positives than the shots, more items than k)"
            )
    rest = [c for c in categories if c not in test]
    n_val = round(len(rest) * config.validation_share) if len(rest) > 1 else 0
    pick = np.random.default_rng(derived_seed(config.seed, "validation-fixed"))
    validation = sorted(rest[i] for i in pick.permutation(len(rest))[:n_val])
    train = sorted(c for c in catalog.categories if c not in test and c not in validation)
    if not train:
        raise DataError("no training category left besides the test categories")
    return Fold(0, train, validation, test)


def evaluate(
    catalog: Catalog,
    train_config: TrainConfig,
    config: EvalConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Result:
    """Run the benchmark.

    Args:
        catalog: the store's catalogue (loaded with ``train_config.feedback``).
        train_config: shared settings every method uses (features, tasks, inner-loop budget).
        config: the benchmark settings.
        progress: progress bars.
        log: where to send one-line progress notes (the CLI prints them).

    Raises:
        ConfigError: an unknown method name.
        DataError: too few eligible categories, shots larger than the data supports, or the
            launch protocol on a store without timestamps. All raised before any training.
    """
    method_classes = resolve_methods(config.methods)
    say = log or (lambda _: None)
    if config.protocol == "launch" and catalog.positives["timestamp"].isna().any():
        raise DataError(
            "the launch protocol needs a timestamp on every interaction and this store has "
            "interactions without one; use --protocol loco"
        )
    shots_list: list[int | None] = [*sorted(config.shots)] if config.protocol == "loco" else [None]
    # PROTOCOL.md §2 step 1, per shot count: min_users users with more than `shots` positives,
    # and more items than the largest k plus the shots (so every user keeps enough candidates).
    eligible_at = {
        shots: eligible_categories(
            catalog,
            config.min_users,
            (shots or 0) + 1 if shots is not None else 2,
            min_items=max(config.ks) + (shots or 0),
        )
        for shots in shots_list
    }
    for shots, names in eligible_at.items():
        if not names:
            raise DataError(
                f"no category has {config.min_users} users with more than {shots} positives and "
                f"more than {max(config.ks) + (shots or 0)} items (the largest k plus the "
                f"shots): {shots} shots or k = {max(config.ks)} is larger than the data "
                "supports; lower --shots or --ks (or --min-users)"
            )
    categories = eligible_at[shots_list[0]]  # the smallest shot count admits the most
    say(f"{len(categories)} eligible categories of {len(catalog.categories)}: {categories}")
    folds = (
        [fixed_fold(categories, catalog, config)]
        if config.test_categories
        else make_folds(categories, catalog.categories, config)
    )
    if config.quick:
        folds = folds[:1]
    result = Result(folds=folds)
    result.skipped = [
        {"category": name, "shots": shots}
        for shots in shots_list
        for name in categories
        if name not in eligible_at[shots]
    ]
    per_user: dict[tuple[str, int | None, str], dict[tuple[str, int | None], np.ndarray]] = {}
    top_lists: dict[tuple[str, int | None, str, int], float] = {}
    n_users: dict[tuple[str, int | None, str], int] = {}

    for fold in folds:
        say(
            f"fold {fold.index + 1}/{len(folds)}: test {fold.test}, "
            f"validation {fold.validation}, {len(fold.train)} training categories"
        )
        validation = validation_launches(catalog, train_config, fold)
        context = fit_context(
            catalog,
            train_config,
            fold.train,
            quick=config.quick,
            validate=validation.score if validation.launches else None,
        )
        visible = sorted(fold.train + fold.validation)
        cases = [
            _case(catalog, config, name, shots, visible, context.features)
            for name in fold.test
            for shots in shots_list
            if name in eligible_at[shots]
        ]
        result.split_keys.extend(_split_keys(fold.index, case) for case in cases)
        for cls in method_classes:
            started = time.perf_counter()
            method = _tune(cls, context, validation, config, fold, result)
            for case in tqdm(cases, desc=cls.name, disable=not progress, leave=False):
                key = (cls.name, case.launch.shots, case.launch.name)
                values, tops = _score(method, case, config)
                per_user[key] = values
                n_users[key] = len(case.users)
                for k, share in tops.items():
                    top_lists[(*key, k)] = share
            result.timings[cls.name] = result.timings.get(cls.name, 0.0) + (
                time.perf_counter() - started
            )
            say(f"  {cls.name}: done in {time.perf_counter() - started:.1f} s")

    families = {cls.name: cls.family for cls in method_classes}
    result.records = _records(per_user, top_lists, n_users, families, config)
    result.comparisons = _comparisons(per_user, families, shots_list)
    return result


@dataclass
class Validation:
    """The fold's validation launches and a scorer over them (NDCG@10, pooled over users)."""

    launches: list[tuple[Launch, Split, torch.Tensor, torch.Tensor]]

    def score(self, method: Method) -> float:
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
        pooled = np.concatenate(values) if values else np.array([np.nan])
        return float(np.nanmean(pooled)) if np.isfinite(pooled).any() else float("nan")


def validation_launches(catalog: Catalog, train_config: TrainConfig, fold: Fold) -> Validation:
    """Validation categories launched at ``tasks.shots``, seen from the training categories."""
    sealed = catalog.restricted_to(fold.train + fold.validation)
    features = prepare_model(
        sealed.restricted_to(fold.train),
        train_config,
        {"train": fold.train, "validation": [], "hold_out": []},
    )
    launches = []
    for name in fold.validation:
        launch, split = make_launch(
            sealed, name, train_config.tasks.shots, visible=fold.train, features=features
        )
        if len(launch.users) == 0:
            continue
        full = features.category_data(sealed, [name], visible=fold.train)[name]
        users = np.flatnonzero(split.eligible)
        if full.n_items <= VALIDATION_K + train_config.tasks.shots:
            continue
        relevant, exclude = evaluation_masks(full, split, users)
        launches.append((launch, split, relevant, exclude))
    return Validation(launches)


@dataclass(frozen=True)
class _Case:
    """One test launch and its ground truth (which the method never sees)."""

    launch: Launch
    split: Split  # over ``full``
    full: CategoryData  # the unsealed category
    users: np.ndarray  # positions of the evaluated users in ``full``
    relevant: torch.Tensor  # (users, items) query positives
    exclude: torch.Tensor  # (users, items) the users' own support items


def _case(
    catalog: Catalog,
    config: EvalConfig,
    name: str,
    shots: int | None,
    visible: list[str],
    features: MetaModel,
) -> _Case:
    if shots is None:
        launch, split = make_window_launch(
            catalog, name, config.launch_window, visible=visible, features=features
        )
    else:
        launch, split = make_launch(catalog, name, shots, visible=visible, features=features)
    full = features.category_data(catalog, [name], visible=visible)[name]
    users = np.flatnonzero(split.eligible)
    relevant, exclude = evaluation_masks(full, split, users)
    candidates = int((~exclude).sum(1).min()) if len(users) else 0
    if candidates <= max(config.ks):
        raise DataError(
            f"category {name!r} leaves some user only {candidates} candidate items, not more "
            f"than k = {max(config.ks)}; lower the ks or the shots"
        )
    return _Case(launch, split, full, users, relevant, exclude)


def _tune(
    cls: type[Method],
    context: Any,
    validation: Validation,
    config: EvalConfig,
    fold: Fold,
    result: Result,
) -> Method:
    """Fit every setting of the method's grid; keep the best on validation NDCG@10."""
    # quick runs, and folds without a validation category, use every method's default setting
    grid = cls.grid[:1] if config.quick or not validation.launches else cls.grid
    grid = grid[: config.tuning_budget]  # the same budget for every method
    best: tuple[float, Method] | None = None
    for setting in grid:
        torch.manual_seed(derived_seed(config.seed, f"{cls.name}-{fold.index}"))
        method = cls(**setting)
        method.fit(context)
        score = validation.score(method) if validation.launches else float("nan")
        result.tuning.append(
            {
                "method": cls.name,
                "fold": fold.index,
                "setting": setting,
                "validation_ndcg@10": None if np.isnan(score) else round(score, 6),
            }
        )
        if best is None or (not np.isnan(score) and (np.isnan(best[0]) or score > best[0])):
            best = (score, method)
    assert best is not None  # every grid has at least one setting
    return best[1]


def _score(
    method: Method, case: _Case, config: EvalConfig
) -> tuple[dict[tuple[str, int | None], np.ndarray], dict[int, float]]:
    """Per-user metrics of one method on one launch, and the coverage of its top-K lists."""
    scores = method.scores(case.launch)
    if scores.shape != case.relevant.shape:
        raise DataError(
            f"{type(method).__name__}.scores returned shape {tuple(scores.shape)} for "
            f"{case.launch.name!r}; expected (users, items) = {tuple(case.relevant.shape)}"
        )
    scores, relevant, exclude = random_tie_order(
        config.seed, case.full.name, scores, case.relevant, case.exclude
    )
    values = ranking_metrics(scores, relevant, config.ks, exclude=exclude)
    tops = {
        k: len(np.unique(rank_top_k(scores, k, exclude=exclude).numpy())) / case.full.n_items
        for k in config.ks
    }
    return values, tops


def random_tie_order(
    seed: int, key: str, scores: torch.Tensor, *masks: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Permute the item columns by a seeded random order before ranking.

    The metrics break ties by the lower column index. Item indices follow the data's ids, and
    ids often encode popularity (MovieLens and Douban number well-known items first), so a method
    that returns equal scores (popularity at zero shots, a model that cannot tell items apart)
    would be rewarded for the id order. A seeded permutation makes ties random but reproducible;
    the metrics are otherwise invariant to it.
    """
    generator = torch.Generator().manual_seed(derived_seed(seed, f"ties:{key}"))
    order = torch.randperm(scores.shape[-1], generator=generator)
    return (scores[..., order], *(mask[..., order] for mask in masks))


def _records(
    per_user: dict[tuple[str, int | None, str], dict[tuple[str, int | None], np.ndarray]],
    tops: dict[tuple[str, int | None, str, int], float],
    n_users: dict[tuple[str, int | None, str], int],
    families: Mapping[str, str],
    config: EvalConfig,
) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    methods = list(dict.fromkeys(m for m, _, _ in per_user))
    shots_list = list(dict.fromkeys(s for _, s, _ in per_user))
    for method in methods:
        for shots in shots_list:
            keys = sorted(c for m, s, c in per_user if m == method and s == shots)
            pooled: dict[tuple[str, int | None], list[np.ndarray]] = {}
            for category in keys:
                for (metric, k), values in per_user[(method, shots, category)].items():
                    pooled.setdefault((metric, k), []).append(values)
                    records.append(
                        _record(
                            method, families[method], shots, category, metric, k, values, config
                        )
                    )
                for k in config.ks:
                    share = tops[(method, shots, category, k)]
                    records.append(
                        {
                            "method": method,
                            "family": families[method],
                            "shots": shots,
                            "category": category,
                            "metric": "coverage",
                            "k": k,
                            "mean": share,
                            "ci_low": share,
                            "ci_high": share,
                            "n_users": n_users[(method, shots, category)],
                        }
                    )
            for (metric, k), parts in pooled.items():
                records.append(
                    _record(
                        method,
                        families[method],
                        shots,
                        "all",
                        metric,
                        k,
                        np.concatenate(parts),
                        config,
                    )
                )
    return records


def _record(
    method: str,
    family: str,
    shots: int | None,
    category: str,
    metric: str,
    k: int | None,
    values: np.ndarray,
    config: EvalConfig,
) -> dict[str, Any]:
    kept = values[~np.isnan(values)]
    if len(kept):
        mean, low, high = bootstrap_ci(
            kept, n_resamples=config.n_resamples, seed=derived_seed(config.seed, category)
        )
    else:
        mean = low = high = float("nan")
    return {
        "method": method,
        "family": family,
        "shots": shots,
        "category": category,
        "metric": metric,
        "k": k,
        "mean": float(mean),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_users": len(kept),
    }


def _comparisons(
    per_user: dict[tuple[str, int | None, str], dict[tuple[str, int | None], np.ndarray]],
    families: Mapping[str, str],
    shots_list: Sequence[int | None],
) -> list[dict[str, Any]]:
    """Paired Wilcoxon tests on NDCG@10 of every method against the best baseline, per shots."""
    out: list[dict[str, Any]] = []
    methods = list(dict.fromkeys(m for m, _, _ in per_user))
    for shots in shots_list:
        pooled: dict[str, np.ndarray] = {}
        for method in methods:
            parts = [
                per_user[(m, s, c)][("ndcg", VALIDATION_K)]
                for (m, s, c) in sorted(per_user, key=lambda key: key[2])
                if m == method and s == shots
            ]
            if parts:
                pooled[method] = np.concatenate(parts)
        baselines = [m for m in pooled if families[m] == "baseline"]
        if not baselines:
            continue
        best = max(baselines, key=lambda m: float(np.nanmean(pooled[m])))
        for method, values in pooled.items():
            if method == best:
                continue
            both = ~np.isnan(values) & ~np.isnan(pooled[best])
            a, b = values[both], pooled[best][both]
            out.append(
                {
                    "method": method,
                    "family": families[method],
                    "baseline": best,
                    "shots": shots,
                    "metric": "ndcg",
                    "k": VALIDATION_K,
                    "mean": float(a.mean()) if len(a) else float("nan"),
                    "baseline_mean": float(b.mean()) if len(b) else float("nan"),
                    "relative_change": float(a.mean() / b.mean() - 1)
                    if len(a) and b.mean()
                    else None,
                    "p_value": float(paired_test(a, b)) if len(a) else None,
                    "n_users": int(both.sum()),
                }
            )
    return out


def _split_keys(fold: int, case: _Case) -> dict[str, Any]:
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


def checksum(rows: np.ndarray) -> str:
    """sha256 of an int64 array's bytes (the split keys' fingerprint)."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
