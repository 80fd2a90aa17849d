"""Validation scores a bounded, seeded sample of each validation category's users."""

from __future__ import annotations

import numpy as np
import torch
from tests.conftest import KNOWN_HELD_OUT, known_answer_config

from metarec.data.catalog import Catalog
from metarec.evaluation.cases import validation_launches
from metarec.evaluation.folds import Fold


def _fold(catalog: Catalog) -> Fold:
    validation = [c for c in catalog.categories if c != KNOWN_HELD_OUT][:2]
    train = [c for c in catalog.categories if c != KNOWN_HELD_OUT and c not in validation]
    return Fold(0, train, validation, [KNOWN_HELD_OUT])


def test_a_sample_keeps_each_users_rows_and_is_the_same_every_time(
    known_catalog: Catalog,
) -> None:
    config = known_answer_config()
    fold = _fold(known_catalog)
    whole = validation_launches(known_catalog, config, fold, max_users=None)
    sampled = validation_launches(known_catalog, config, fold, max_users=5)
    again = validation_launches(known_catalog, config, fold, max_users=5)
    assert len(whole.launches) == len(sampled.launches) == len(fold.validation)
    for (full, _, relevant, exclude), (part, _, rel, exc), (same, *_) in zip(
        whole.launches, sampled.launches, again.launches, strict=True
    ):
        assert len(full.users) > 5 and len(part.users) == 5
        np.testing.assert_array_equal(part.users, same.users)  # seeded: the same sample
        rows = np.searchsorted(full.users, part.users)
        np.testing.assert_array_equal(full.users[rows], part.users)
        assert torch.equal(rel, relevant[rows]) and torch.equal(exc, exclude[rows])
        # the launch itself (support of every user, the category) is not cut down
        assert part.category.n_users == full.category.n_users
        assert len(part.catalog.positives) == len(full.catalog.positives)


def test_categories_under_the_bound_are_scored_whole(known_catalog: Catalog) -> None:
    config = known_answer_config()
    fold = _fold(known_catalog)
    whole = validation_launches(known_catalog, config, fold, max_users=None)
    bounded = validation_launches(known_catalog, config, fold, max_users=10_000)
    for (full, *_), (part, *_) in zip(whole.launches, bounded.launches, strict=True):
        np.testing.assert_array_equal(full.users, part.users)


def test_the_harness_reads_the_bound_from_its_config(known_catalog: Catalog) -> None:
    from metarec.config import EvalConfig
    from metarec.evaluation.cases import VALIDATION_USERS
    from metarec.evaluation.harness import plan_run
    from metarec.evaluation.units import fold_work

    assert EvalConfig().validation_users == VALIDATION_USERS
    config = EvalConfig(shots=(1,), folds=3, min_users=10, quick=True, validation_users=5)
    plan = plan_run(known_catalog, config, lambda _: None)
    work = fold_work(known_catalog, known_answer_config(), config, plan, plan.folds[0])
    assert work.validation.launches
    assert all(len(launch.users) == 5 for launch, *_ in work.validation.launches)
