"""A category-conditioned model (``model.condition = "film"``) end to end on the known store.

Training (every algorithm, both batching paths), evaluation (``category_scores`` and the fast
``candidate_scores``), the harness method ``metarec-film``, serving (``Recommender`` and the
service's zero-shot answer) and the artifact round trip all start a category from the same
conditioned initialisation; with text features the category's name joins its context.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, folded, known_answer_config
from tests.features.test_text import FakeEncoder

from metarec.config import EvalConfig, TrainConfig
from metarec.data import Store
from metarec.evaluation.harness import evaluate
from metarec.evaluation.methods import METHODS, resolve_methods
from metarec.features import load_catalog
from metarec.meta import ALGORITHMS
from metarec.meta.model import MetaModel, load_model, save_model, train_on
from metarec.models import FILM_PREFIX, score
from metarec.ranking import category_scores
from metarec.seeds import derived_seed
from metarec.tasks import (
    CategoryData,
    TaskSampler,
    candidate_rows,
    candidate_rows_for,
    split_k_shot,
    split_launch,
    support_batch,
    support_state,
)
from metarec.training import train

FILM = {"hidden": [16, 8], "condition": "film", "film_hidden": 8}
TRAINED = "Shelf > C0"


def _config(**overrides: Any) -> TrainConfig:
    return known_answer_config(model=FILM, **overrides)


@pytest.fixture(scope="module")
def film_model(known_store: Path) -> MetaModel:
    with Store.open(known_store, read_only=True) as store:
        return train(store, _config(), progress=False, validate_every=20)


@pytest.fixture(scope="module")
def categories(known_store: Path, film_model: MetaModel) -> dict[str, CategoryData]:
    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, film_model.config)
    visible = [c for c in catalog.categories if c != KNOWN_HELD_OUT]
    return film_model.category_data(catalog, [KNOWN_HELD_OUT, TRAINED], visible=visible)


def _unconditioned(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in params.items() if not k.startswith(FILM_PREFIX)}


def test_training_learns_a_zero_shot_model_per_category(
    film_model: MetaModel, categories: dict[str, CategoryData]
) -> None:
    params = film_model.params
    assert {k for k in params if k.startswith(FILM_PREFIX)} == {
        "film.0.weight",
        "film.0.bias",
        "film.1.weight",
        "film.1.bias",
    }
    assert params["film.0.weight"].shape[1] == film_model.space.context_dim
    assert params["film.1.weight"].abs().sum() > 0  # moved off its zero start: it was trained
    held_out, trained = categories[KNOWN_HELD_OUT], categories[TRAINED]
    assert held_out.context.shape == (film_model.space.context_dim,)
    start_a, start_b = film_model.start_params(held_out), film_model.start_params(trained)
    assert not any(k.startswith(FILM_PREFIX) for k in start_a)
    assert not torch.allclose(start_a["layers.0.weight"], start_b["layers.0.weight"])
    # at zero shots the ranking comes from the category's own init, not the shared one
    split = split_k_shot(held_out, 0)
    users = np.arange(held_out.n_users)
    zero_shot = category_scores(film_model, held_out, split, users)
    state = support_state(held_out, split)
    base = folded(_unconditioned(params), held_out, state, torch.as_tensor(users))
    own = folded(start_a, held_out, state, torch.as_tensor(users))
    torch.testing.assert_close(zero_shot, own)
    assert not torch.allclose(zero_shot, base, atol=1e-4)


def test_sampled_tasks_carry_their_categorys_context(
    film_model: MetaModel, categories: dict[str, CategoryData]
) -> None:
    sampler = TaskSampler(list(categories.values()), film_model.config.tasks)
    tasks = sampler(12, torch.Generator().manual_seed(0))
    assert tasks.context is not None and tasks.context.shape == (12, film_model.space.context_dim)
    own = torch.stack([c.context for c in categories.values()])  # (2, d_c)
    match = (tasks.context[:, None, :] == own[None]).all(-1)  # (12, 2)
    assert match.sum(1).eq(1).all()  # every task carries exactly one category's context
    assert match.any(0).all()  # and both categories were drawn


@pytest.mark.parametrize("shots", [0, 1, 3])
def test_folded_candidate_scores_equal_the_row_path_from_the_conditioned_start(
    film_model: MetaModel, categories: dict[str, CategoryData], shots: int
) -> None:
    category = categories[KNOWN_HELD_OUT]
    split = split_k_shot(category, shots)
    state = support_state(category, split)
    users = torch.arange(category.n_users)
    start = film_model.start_params(category)
    support = support_batch(
        category, state, split, n_negatives=4, generator=torch.Generator().manual_seed(0)
    )
    adapted = {k: v.detach() for k, v in film_model.learner.adapt(start, support).items()}
    for params in (start, adapted):
        expected = score(params, candidate_rows(category, state, users))
        got = folded(params, category, state, users)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_category_scores_adapt_from_the_conditioned_start(
    film_model: MetaModel, categories: dict[str, CategoryData]
) -> None:
    category = categories[KNOWN_HELD_OUT]
    split = split_k_shot(category, 3)
    users = np.flatnonzero(split.eligible)
    state = support_state(category, split)
    generator = torch.Generator().manual_seed(derived_seed(film_model.config.seed, category.name))
    support = support_batch(category, state, split, n_negatives=4, generator=generator)
    adapted = film_model.learner.adapt(film_model.start_params(category), support)
    expected = folded(adapted, category, state, torch.as_tensor(users))
    got = category_scores(film_model, category, split, users)
    torch.testing.assert_close(got, expected.detach())


def test_the_artifact_round_trips_the_hypernetwork_and_config(
    film_model: MetaModel, categories: dict[str, CategoryData], tmp_path: Path
) -> None:
    loaded = load_model(save_model(film_model, tmp_path / "model"))
    assert loaded.config == film_model.config and loaded.config.model.condition == "film"
    assert loaded.params.keys() == film_model.params.keys()
    assert all(torch.equal(loaded.params[k], v) for k, v in film_model.params.items())
    category = categories[KNOWN_HELD_OUT]
    start, expected = loaded.start_params(category), film_model.start_params(category)
    assert all(torch.equal(start[k], expected[k]) for k in expected)


def test_serving_adapts_from_the_conditioned_start_and_zero_shot_uses_it(
    known_store: Path, film_model: MetaModel, tmp_path: Path
) -> None:
    from tests.serving.test_service import copy_store, serve_settings

    from metarec.serving.recommender import Recommender
    from metarec.serving.service import Service

    model_dir = save_model(film_model, tmp_path / "model")
    store_path = copy_store(known_store, tmp_path / "live")
    # the service answers before any adaptation with the category's conditioned init
    service = Service.open(serve_settings(store_path, model_dir, refresh_seconds=0.0))
    try:
        served = service.recommend("u0", KNOWN_HELD_OUT, 5)
        recommender = service.snapshot.recommender
        view = recommender.view(KNOWN_HELD_OUT)
        data, state = view.data, view.state
        user_idx = int(recommender.catalog.users.set_index("user_id").loc["u0", "user_idx"])
        expected = {}
        for name, params in (
            ("own", film_model.start_params(data)),
            ("shared", _unconditioned(film_model.params)),
        ):
            user = recommender.user_inputs(view, user_idx)
            own = params
            rows = candidate_rows_for(
                data,
                state,
                profile=user.profile[None],
                n_other=user.n_other[None],
                support_sum=user.support_sum[None],
                support_n=user.support_n[None],
            )
            scores = score(own, rows)[0]
            scores[user.seen] = -torch.inf
            expected[name] = torch.sort(scores, descending=True).values[:5]
    finally:
        service.close()
    assert served.fallback == "zero-shot"
    got = torch.tensor([item.score for item in served.items])
    torch.testing.assert_close(got, expected["own"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, expected["shared"], atol=1e-4)
    # the library adapts from the same start, and persists what it adapted
    with Store.open(store_path, read_only=True) as store:
        recommender = Recommender.open(model_dir, store)
        adaptation = recommender.adapt(KNOWN_HELD_OUT)
        view = recommender.view(KNOWN_HELD_OUT)
        data, state = view.data, view.state
        generator = torch.Generator().manual_seed(derived_seed(film_model.config.seed, data.name))
        support = support_batch(data, state, split_launch(data), n_negatives=4, generator=generator)
        expected_params = film_model.learner.adapt(film_model.start_params(data), support)
        assert all(torch.allclose(adaptation.params[k], v) for k, v in expected_params.items())
        assert len(recommender.recommend("u0", KNOWN_HELD_OUT, k=5).items) == 5
        reopened = Recommender.open(model_dir, store)
        assert reopened.adaptation(KNOWN_HELD_OUT) is not None


@pytest.mark.parametrize("batching", ["bmm", "vmap"])
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_every_algorithm_trains_and_ranks_with_film(
    known_store: Path, algorithm: str, batching: str
) -> None:
    meta = {
        "algorithm": algorithm,
        "batching": batching,
        "meta_steps": 3,
        "meta_batch_size": 4,
        "inner_steps": 1,
        "outer_lr": 0.01,
    }
    config = _config(meta=meta)
    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, config)
    train_categories = [c for c in catalog.categories if c != KNOWN_HELD_OUT]
    splits = {"train": train_categories, "validation": [], "hold_out": [KNOWN_HELD_OUT]}
    model = train_on(catalog, config, splits, progress=False)
    assert model.params["film.1.weight"].abs().sum() > 0  # the outer loop reached it
    category = model.category_data(catalog, [KNOWN_HELD_OUT], visible=train_categories)[
        KNOWN_HELD_OUT
    ]
    split = split_k_shot(category, 3)
    scores = category_scores(model, category, split, np.flatnonzero(split.eligible))
    assert scores.shape[1] == category.n_items and torch.isfinite(scores).all()


def test_metarec_film_is_registered_and_runs_in_the_harness(known_store: Path) -> None:
    assert METHODS["metarec-film"].family == "metarec"
    assert resolve_methods(["metarec-film"])[0] is METHODS["metarec-film"]
    train_config = known_answer_config(
        meta={"meta_steps": 12, "first_order": True, "inner_steps": 1, "meta_batch_size": 4}
    )
    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, train_config)
    config = EvalConfig(
        methods=("metarec-film",),
        shots=(0, 3),
        folds=3,
        min_users=10,
        ks=(10,),
        quick=True,
        n_resamples=20,
    )
    result = evaluate(catalog, train_config, config, progress=False)
    ndcg = {
        r["shots"]: r["mean"]
        for r in result.records
        if r["method"] == "metarec-film" and r["metric"] == "ndcg" and r["category"] == "all"
    }
    assert set(ndcg) == {0, 3} and all(0 <= v <= 1 for v in ndcg.values())


def test_text_features_and_film_together_round_trip_and_serve(
    known_store: Path, tmp_path: Path
) -> None:
    from metarec.serving.recommender import Recommender

    store_path = Path(shutil.copy(known_store, tmp_path / "store.duckdb"))
    config = _config(
        features={"cf_rank": 4, "text": True, "text_dim": 3},
        meta={"meta_steps": 5, "meta_batch_size": 4, "inner_steps": 1, "first_order": True},
    )
    encoder = FakeEncoder()
    with Store.open(store_path) as store:  # writable: the texts get cached
        catalog = load_catalog(store, config, text_encoder=encoder)
    assert catalog.text is not None and len(encoder.seen) > 0
    train_categories = [c for c in catalog.categories if c != KNOWN_HELD_OUT]
    splits = {"train": train_categories, "validation": [], "hold_out": [KNOWN_HELD_OUT]}
    model = train_on(catalog, config, splits, progress=False)
    assert model.space.text is not None and model.space.text.dim == 3
    assert model.params["film.0.weight"].shape[1] == model.space.context_dim
    category = model.category_data(catalog, [KNOWN_HELD_OUT], visible=train_categories)[
        KNOWN_HELD_OUT
    ]
    assert category.name_x is not None and category.name_x.shape == (3,)
    torch.testing.assert_close(
        category.context[-3:], model.space.text.project(catalog.text.categories[KNOWN_HELD_OUT])
    )
    folder = save_model(model, tmp_path / "model")
    assert (folder / "features.safetensors").is_file()
    loaded = load_model(folder)
    assert loaded.space.to_json() == model.space.to_json()
    assert torch.equal(loaded.space.text.components, model.space.text.components)  # type: ignore[union-attr]
    with Store.open(store_path, read_only=True) as store:
        cached = FakeEncoder()
        recommender = Recommender(
            loaded, folder, store, catalog=load_catalog(store, loaded.config, text_encoder=cached)
        )
        assert cached.seen == []  # the first load cached every text in the store
        recommender.adapt(KNOWN_HELD_OUT)
        assert len(recommender.recommend("u0", KNOWN_HELD_OUT, k=5).items) == 5
