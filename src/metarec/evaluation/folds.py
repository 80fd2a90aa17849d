"""Folds: which categories are eligible, sealed for testing, validating and training
(PROTOCOL.md §2 steps 1 and 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarec.config import EvalConfig
from metarec.data.catalog import Catalog
from metarec.errors import DataError
from metarec.seeds import derived_seed


@dataclass(frozen=True)
class Fold:
    """One fold: which categories train, validate and are sealed for testing."""

    index: int
    train: list[str]
    validation: list[str]
    test: list[str]


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
            "category of any size to train. Lower --folds, --shots or --min-users, bring "
            "more categories, or name the new category with --test-category NAME (one fixed "
            "fold, trained on the others: two categories are enough)"
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
