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

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from metarec.baselines.base import Method, fit_context
from metarec.config import EvalConfig, TrainConfig
from metarec.data.catalog import Catalog
from metarec.errors import DataError
from metarec.evaluation.cases import (
    Validation,
    make_case,
    score_case,
    split_keys,
    validation_launches,
)
from metarec.evaluation.folds import Fold, eligible_categories, fixed_fold, make_folds
from metarec.evaluation.methods import resolve_methods
from metarec.evaluation.records import Result, comparisons, records
from metarec.seeds import derived_seed


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
            make_case(catalog, config, name, shots, visible, context.features)
            for name in fold.test
            for shots in shots_list
            if name in eligible_at[shots]
        ]
        result.split_keys.extend(split_keys(fold.index, case) for case in cases)
        for cls in method_classes:
            started = time.perf_counter()
            method = _tune(cls, context, validation, config, fold, result)
            for case in tqdm(cases, desc=cls.name, disable=not progress, leave=False):
                key = (cls.name, case.launch.shots, case.launch.name)
                values, tops = score_case(method, case, config)
                per_user[key] = values
                n_users[key] = len(case.users)
                for k, share in tops.items():
                    top_lists[(*key, k)] = share
            result.timings[cls.name] = result.timings.get(cls.name, 0.0) + (
                time.perf_counter() - started
            )
            say(f"  {cls.name}: done in {time.perf_counter() - started:.1f} s")

    families = {cls.name: cls.family for cls in method_classes}
    result.records = records(per_user, top_lists, n_users, families, config)
    result.comparisons = comparisons(per_user, families, shots_list)
    return result


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
