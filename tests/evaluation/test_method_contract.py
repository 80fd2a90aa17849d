"""The contract every registered method keeps, checked for each key of ``METHODS``.

implicit's recommender_base_test.py in our terms: one known-answer fold (the known-answer store,
:data:`KNOWN_HELD_OUT` launched, one category validating, quick training), and for every method
the output shape, determinism for a seed, blindness to the query, and sealing. A method added to
the registry is covered without touching this file; its own test file keeps only what is
particular to it (its equations, its known answers).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, KnownFold, fold_of, known_answer_config

from metarec.baselines.base import Launch, Method
from metarec.data.catalog import Catalog
from metarec.evaluation.methods import METHODS

VALIDATION = "Shelf > C6"
# short meta-training (quick caps it at 40 steps); 12 still selects among two checkpoints
CONFIG = known_answer_config(meta={"meta_steps": 12, "meta_batch_size": 4, "first_order": True})
SHOTS = (0, 1, 3)
QUERY_SHOTS = 3  # the launch whose query the blindness check rewrites (the config's shots)
GRID = [(name, i) for name, cls in METHODS.items() for i in range(len(cls.grid))]

Fitted = Callable[..., Method]  # (name, setting index = 0) -> the fitted method


@pytest.fixture(scope="session")
def contract_fold(known_catalog: Catalog) -> KnownFold:
    """Six categories train, one validates through the harness's validator, one is launched."""
    return fold_of(known_catalog, validation=[VALIDATION], quick=True, config=CONFIG)


@pytest.fixture(scope="session")
def fitted(contract_fold: KnownFold) -> Fitted:
    """Each method at each grid setting (the first by default), fitted once per session."""

    @functools.cache
    def fit(name: str, setting: int) -> Method:
        cls = METHODS[name]
        method = cls(**cls.grid[setting])
        method.fit(contract_fold.context)
        return method

    return lambda name, setting=0: fit(name, setting)


@contextmanager
def other_global_seeds() -> Iterator[None]:
    """The global RNGs in some other state (restored afterwards): a method must draw only from
    generators it seeds from the fit context, or a second fit would differ from the first."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(987_654)
        np.random.seed(987_654)
        random.seed(987_654)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


# ---------------------------------------------------------------------------------------------
# The registry


@pytest.mark.parametrize("name", METHODS)
def test_registry_entry_declares_its_name_family_and_grid(name: str) -> None:
    cls = METHODS[name]
    assert cls.name == name
    assert cls.family in ("baseline", "metarec")
    assert isinstance(cls.grid, list) and cls.grid
    assert all(isinstance(setting, dict) for setting in cls.grid)
    assert all(isinstance(key, str) for setting in cls.grid for key in setting)
    for setting in cls.grid:
        cls(**setting)  # every setting the harness may try is accepted by the constructor


# ---------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("shots", SHOTS)
@pytest.mark.parametrize("name", METHODS)
def test_scores_have_one_finite_float_row_per_user(
    fitted: Fitted, contract_fold: KnownFold, name: str, shots: int
) -> None:
    launch, _ = contract_fold.launch(shots)
    assert len(launch.users) > 0
    scores = fitted(name).scores(launch)
    assert scores.shape == (len(launch.users), launch.category.n_items)
    assert scores.dtype == torch.float32
    assert not scores.requires_grad  # no autograd graph held by the harness
    assert torch.isfinite(scores).all()
    assert scores.std() > 0  # not one constant for every user and item


@pytest.mark.parametrize(("name", "setting"), GRID)
def test_every_grid_setting_fits_and_scores(
    fitted: Fitted, contract_fold: KnownFold, name: str, setting: int
) -> None:
    """The harness tries the whole grid on a full run (a quick run only the first setting);
    every setting is deterministic too (the default one: the next test, more thoroughly)."""
    launch, _ = contract_fold.launch(QUERY_SHOTS)
    scores = fitted(name, setting).scores(launch)
    assert scores.shape == (len(launch.users), launch.category.n_items)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    if setting:
        cls = METHODS[name]
        again = cls(**cls.grid[setting])
        with other_global_seeds():
            again.fit(replace(contract_fold.context))  # an empty memo: trained afresh
        assert torch.equal(again.scores(launch), scores)


# ---------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("name", METHODS)
def test_fit_and_scores_are_deterministic_for_a_seed(
    fitted: Fitted, contract_fold: KnownFold, name: str
) -> None:
    """A fresh instance fitted on a freshly built fold with the same seed, under other global
    RNG states, scores every launch identically, in whatever order the launches come."""
    first = fitted(name)
    launches = [contract_fold.launch(shots)[0] for shots in SHOTS]
    expected = [first.scores(launch) for launch in launches]
    fresh = fold_of(
        contract_fold.catalog, validation=contract_fold.validation, quick=True, config=CONFIG
    )
    assert fresh.context.seed == contract_fold.context.seed
    assert not fresh.context.memo  # nothing carried over from the first fit
    with other_global_seeds():
        second = METHODS[name]()
        second.fit(fresh.context)
        for launch, scores in reversed(list(zip(launches, expected, strict=True))):
            assert torch.equal(second.scores(launch), scores)
    # scoring is a function of the launch: the first instance gives the same scores again
    assert torch.equal(first.scores(launches[0]), expected[0])


# ---------------------------------------------------------------------------------------------
# Blindness to the query


def _rewrite_query(fold: KnownFold, how: str) -> Catalog:
    """The unsealed catalogue with the launched category's hidden positives (everything but the
    support at :data:`QUERY_SHOTS` shots) changed; support, eligibility and every other category
    stay as they were, so the launch must see exactly the same thing.

    ``dropped``: every hidden positive goes except one per evaluated user (who must keep more
    than ``shots`` positives to be evaluated at all); ``added``: each evaluated user gets two more
    positives, after everything else; ``moved``: every query positive points to another item of
    the category, one the user did not like.
    """
    catalog = fold.catalog
    launch, split = fold.launch(QUERY_SHOTS)
    full = fold.context.features.category_data(catalog, [KNOWN_HELD_OUT], visible=fold.visible)[
        KNOWN_HELD_OUT
    ]
    positives = catalog.positives
    rows = np.flatnonzero(catalog.item_category[positives["item_idx"].to_numpy()] == KNOWN_HELD_OUT)
    # the category keeps the catalogue's row order: its i-th positive is rows[i]
    assert np.array_equal(positives["user_idx"].to_numpy()[rows], full.users[full.pos_user])
    assert np.array_equal(positives["item_idx"].to_numpy()[rows], full.item_idx[full.pos_item])
    items = full.item_idx
    if how == "dropped":
        first_query = split.query & (full.pos_rank == QUERY_SHOTS)
        keep = np.ones(len(positives), dtype=bool)
        keep[rows[~(split.support | first_query)]] = False
        return catalog.restricted(keep)
    if how == "added":
        clock = int(positives["timestamp"].max())
        extra = []
        for n, user in enumerate(launch.users):
            liked = set(positives.loc[positives["user_idx"] == user, "item_idx"])
            free = [int(i) for i in items if i not in liked]
            for j in range(2):
                item = free[(7 * n + j) % len(free)]
                extra.append((int(user), item, clock + 2 * n + j + 1, 1.0))
        added = pd.DataFrame(extra, columns=["user_idx", "item_idx", "timestamp", "weight"])
        added = added.astype(positives.dtypes.to_dict())
        return replace(catalog, positives=pd.concat([positives, added], ignore_index=True))
    assert how == "moved"
    moved = positives.copy()
    item_col = moved.columns.get_loc("item_idx")
    for row in rows[split.query]:
        user = moved.iat[row, moved.columns.get_loc("user_idx")]
        liked = set(moved.loc[moved["user_idx"] == user, "item_idx"])
        free = [i for i in items if i not in liked]
        moved.iat[row, item_col] = free[(row * 7) % len(free)]
    return replace(catalog, positives=moved)


@pytest.fixture(scope="session")
def rewritten(contract_fold: KnownFold) -> Callable[[str], KnownFold]:
    """The contract fold built from a catalogue whose query was rewritten (once per way)."""

    @functools.cache
    def build(how: str) -> KnownFold:
        catalog = _rewrite_query(contract_fold, how)
        return fold_of(catalog, validation=contract_fold.validation, quick=True, config=CONFIG)

    return build


@pytest.fixture(scope="session")
def blind(rewritten: Callable[[str], KnownFold]) -> Fitted:
    """Each method fitted once on the fold whose hidden positives were dropped. The other
    rewrites leave the same training catalogue (asserted below), so fitting on them again
    would only repeat the determinism test."""

    @functools.cache
    def fit(name: str) -> Method:
        method = METHODS[name]()
        method.fit(rewritten("dropped").context)
        return method

    return fit


@pytest.mark.parametrize("how", ["dropped", "added", "moved"])
@pytest.mark.parametrize("name", METHODS)
def test_scores_are_blind_to_the_query(
    fitted: Fitted,
    blind: Fitted,
    contract_fold: KnownFold,
    rewritten: Callable[[str], KnownFold],
    name: str,
    how: str,
) -> None:
    """Fitted and launched from a catalogue whose query differs, a method scores the same."""
    launch, split = contract_fold.launch(QUERY_SHOTS)
    other = rewritten(how)
    other_launch, other_split = other.launch(QUERY_SHOTS)
    # not vacuous: the ground truth did change; what the method is shown did not
    assert not torch.equal(contract_fold.masks(split)[0], other.masks(other_split)[0])
    assert np.array_equal(launch.users, other_launch.users)
    assert launch.catalog.positives.equals(other_launch.catalog.positives)
    assert other.context.catalog.positives.equals(rewritten("dropped").context.catalog.positives)
    assert torch.equal(fitted(name).scores(launch), blind(name).scores(other_launch))


# ---------------------------------------------------------------------------------------------
# Sealing


def _pairs(users: np.ndarray, items: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(users.tolist(), items.tolist(), strict=True))


def _snapshot(launch: Launch) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    category = launch.category
    arrays = {
        "users": launch.users,
        "category.users": category.users,
        "category.pos_user": category.pos_user,
        "category.pos_item": category.pos_item,
        "category.item_idx": category.item_idx,
    }
    return launch.catalog.positives.copy(), {k: np.array(v, copy=True) for k, v in arrays.items()}


@pytest.mark.parametrize("shots", SHOTS)
@pytest.mark.parametrize("name", METHODS)
def test_fit_and_launch_stay_sealed(
    fitted: Fitted, contract_fold: KnownFold, name: str, shots: int
) -> None:
    """The fit context holds only training positives and the launch only the visible history
    plus its support, before and after the method ran (methods share both in a fold)."""
    fold = contract_fold
    method = fitted(name)
    launch, split = fold.launch(shots)
    before, arrays = _snapshot(launch)
    method.scores(launch)

    context = fold.context
    seen = set(fold.catalog.item_category[context.catalog.positives["item_idx"].to_numpy()])
    assert seen <= set(context.train) and not seen & {VALIDATION, KNOWN_HELD_OUT}
    assert set(context.train_data) == set(context.train)
    assert context.catalog.positives.equals(fold.catalog.restricted_to(context.train).positives)

    full = context.features.category_data(fold.catalog, [KNOWN_HELD_OUT], visible=fold.visible)[
        KNOWN_HELD_OUT
    ]
    on = split.support
    support = _pairs(full.users[full.pos_user[on]], full.item_idx[full.pos_item[on]])
    positives = launch.catalog.positives
    category_of = fold.catalog.item_category[positives["item_idx"].to_numpy()]
    assert set(category_of) <= {*launch.visible, KNOWN_HELD_OUT}
    here = positives[category_of == KNOWN_HELD_OUT]
    assert _pairs(here["user_idx"].to_numpy(), here["item_idx"].to_numpy()) == support
    assert len(launch.category.pos_user) == len(support)  # the launched category: support only
    assert not split.support.all() and split.query.any()  # not vacuous: something was hidden
    # the method changed nothing it was shown
    assert positives.equals(before)
    after = _snapshot(launch)[1]
    for key, value in arrays.items():
        assert np.array_equal(after[key], value), key
