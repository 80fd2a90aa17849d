"""Shared fixtures: small stores whose right answers are known, a model trained on them, and a
fold of the benchmark (a sealed fit context and its launches) on the known-answer store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.baselines.base import FitContext, Launch, Method, fit_context, make_launch
from metarec.config import TrainConfig, load_config
from metarec.data import Store, ingest
from metarec.data.catalog import Catalog
from metarec.evaluation.cases import validation_launches
from metarec.evaluation.folds import Fold
from metarec.features import load_catalog
from metarec.meta.model import MetaModel, save_model
from metarec.models.folded import folded_scores
from metarec.ranking import item_side, ranking_metrics, user_side
from metarec.tasks import Split, evaluation_masks
from metarec.training import train

# The suite's tensors are small: one thread avoids oversubscribing the 2 cores it shares.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

KNOWN_HELD_OUT = "Shelf > C7"


def write_known_answer_tables(folder: Path, *, seed: int = 0) -> Path:
    """Eight categories of 40 items; each item is from publisher P0 or P1.

    Every user has a type t in {0, 1} and, in each of the five categories they visit, likes six
    items, 90% of them from publisher Pt. So a user's taste in a new category is known from the
    other categories, while popularity carries no signal (both types are equally common).
    """
    rng = np.random.default_rng(seed)
    n_users, n_categories, per_category = 300, 8, 40
    items = pd.DataFrame(
        {
            "item_id": [f"c{c}-i{i}" for c in range(n_categories) for i in range(per_category)],
            "category": [f"Shelf > C{c}" for c in range(n_categories) for _ in range(per_category)],
            "publisher": [f"P{i % 2}" for _ in range(n_categories) for i in range(per_category)],
            "title": [f"item {i}" for _ in range(n_categories) for i in range(per_category)],
        }
    )
    rows = []
    clock = 1_600_000_000
    for user in range(n_users):
        kind = user % 2
        for category in rng.choice(n_categories, size=5, replace=False):
            groups = np.where(rng.random(6) < 0.9, kind, 1 - kind)
            picks = [2 * rng.choice(per_category // 2, replace=False) + g for g in groups]
            for item in dict.fromkeys(int(p) for p in picks):
                clock += int(rng.integers(1, 100))
                rows.append((f"u{user}", f"c{category}-i{item}", clock, "order"))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event"])
    folder.mkdir(parents=True, exist_ok=True)
    items.to_csv(folder / "items.csv", index=False)
    interactions.to_csv(folder / "interactions.csv", index=False)
    return folder


def folded(params: dict[str, torch.Tensor], category, state, users) -> torch.Tensor:
    """(b, n_items) scores of every item for ``users`` through the folded first layer."""
    return folded_scores(params, user_side(category, state, users), item_side(category, state))


def known_answer_config(**overrides: object) -> TrainConfig:
    """A config small enough to train in seconds on the known-answer store."""
    base = {
        "seed": 0,
        "hold_out": [KNOWN_HELD_OUT],
        "tasks": {"shots": 3, "train_shots": [1, 3], "min_users": 10},
        "model": {"hidden": [16, 8]},
        "meta": {
            "first_order": True,
            "meta_steps": 60,
            "meta_batch_size": 8,
            "inner_steps": 2,
            "outer_lr": 0.01,
        },
        "features": {"cf_rank": 4},
    }
    base.update(overrides)
    return load_config(None, **base)


@pytest.fixture(scope="session")
def known_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("known")
    write_known_answer_tables(folder / "tables")
    ingest(folder / "tables", folder / "store.duckdb", fmt="table")
    return folder / "store.duckdb"


@pytest.fixture(scope="session")
def known_model(known_store: Path) -> MetaModel:
    with Store.open(known_store, read_only=True) as store:
        return train(store, known_answer_config(), progress=False, validate_every=20)


@pytest.fixture()
def known_model_dir(known_model: MetaModel, tmp_path: Path) -> Path:
    """A fresh copy of the trained model's folder (tests may adapt into it or damage it)."""
    return save_model(known_model, tmp_path / "model")


@pytest.fixture(scope="session")
def known_catalog(known_store: Path) -> Catalog:
    """The known-answer store's catalogue (tests never mutate it: sealing makes copies)."""
    with Store.open(known_store, read_only=True) as store:
        return load_catalog(store, known_answer_config())


# ---------------------------------------------------------------------------------------------
# A fold of the benchmark on the known-answer store, as the harness builds one.


@dataclass(frozen=True)
class KnownFold:
    """The known-answer store sealed to its training categories, :data:`KNOWN_HELD_OUT` tested.

    Attributes:
        catalog: the unsealed catalogue (the ground truth is computed from it).
        context: what a method is fitted on.
        validation: categories that validate (seen through ``context.validate`` only).
    """

    catalog: Catalog
    context: FitContext
    validation: list[str] = field(default_factory=list)

    @property
    def train(self) -> list[str]:
        return self.context.train

    @property
    def visible(self) -> list[str]:
        """The users' history at a launch: training and validation categories (as the harness)."""
        return sorted(self.train + self.validation)

    def launch(self, shots: int) -> tuple[Launch, Split]:
        return make_launch(
            self.catalog,
            KNOWN_HELD_OUT,
            shots,
            visible=self.visible,
            features=self.context.features,
        )

    def masks(self, split: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """(relevant, exclude) of the held-out category's eligible users (ground truth)."""
        full = self.context.features.category_data(
            self.catalog, [KNOWN_HELD_OUT], visible=self.visible
        )[KNOWN_HELD_OUT]
        return evaluation_masks(full, split, np.flatnonzero(split.eligible))

    def auc(self, method: Method, shots: int) -> float:
        """Mean AUC of a fitted method on the held-out category at ``shots``."""
        launch, split = self.launch(shots)
        relevant, exclude = self.masks(split)
        values = ranking_metrics(method.scores(launch), relevant, (10,), exclude=exclude)
        return float(np.nanmean(values[("auc", None)]))


def fold_of(
    catalog: Catalog,
    *,
    validation: Sequence[str] = (),
    quick: bool = False,
    config: TrainConfig | None = None,
) -> KnownFold:
    """A fold of ``catalog``: :data:`KNOWN_HELD_OUT` tested, ``validation`` validating (scored
    by the harness's own validator), every other category training; ``config`` defaults to
    :func:`known_answer_config`."""
    config = config or known_answer_config()
    train = [c for c in catalog.categories if c != KNOWN_HELD_OUT and c not in validation]
    validate = validate_users = validate_zero_users = None
    if validation:
        fold = Fold(0, train, list(validation), [KNOWN_HELD_OUT])
        validator = validation_launches(catalog, config, fold)
        validate, validate_users = validator.score, validator.per_user
        validate_zero_users = validation_launches(catalog, config, fold, shots=0).per_user
    context = fit_context(
        catalog,
        config,
        train,
        quick=quick,
        validate=validate,
        validate_users=validate_users,
        validate_zero_users=validate_zero_users,
    )
    return KnownFold(catalog, context, list(validation))


@pytest.fixture(scope="session")
def known_fold(known_catalog: Catalog) -> KnownFold:
    """Every category but :data:`KNOWN_HELD_OUT` trains, full-length training. Built once per
    session: methods never mutate what they are shown (tests/evaluation/test_method_contract.py
    checks it for every registered method)."""
    return fold_of(known_catalog)
