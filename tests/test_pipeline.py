"""End to end on the known-answer store: sealed categories, adaptation, ranking quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, folded, known_answer_config

from metarec.data import Store
from metarec.evaluation.holdout import evaluate_holdout
from metarec.features import load_catalog
from metarec.meta import task_loss
from metarec.meta.model import MetaModel, load_model
from metarec.tasks import split_k_shot, support_batch, support_state
from metarec.training import train


def _metric(records: list[dict[str, object]], method: str, metric: str, k: int | None) -> float:
    (match,) = [
        r for r in records if r["method"] == method and r["metric"] == metric and r["k"] == k
    ]
    return float(match["mean"])  # type: ignore[arg-type]


def test_held_out_positives_rank_near_the_top(known_store: Path, known_model: MetaModel) -> None:
    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, known_model.config)
        records = evaluate_holdout(
            known_model, catalog, [KNOWN_HELD_OUT], shots=(3,), ks=(10,), n_resamples=200
        )
    # Users' types are visible from other categories; popularity is blind to them. A ranker
    # that knows each user's type exactly reaches AUC ~0.74 here (90% of positives in the
    # user's group, ties inside it): 0.9 * (20 + 7) / 34 + 0.1 * 10 / 34.
    assert _metric(records, "metarec-maml", "auc", None) > 0.65  # measured 0.71
    assert _metric(records, "popularity", "auc", None) < 0.6
    assert (
        _metric(records, "metarec-maml", "ndcg", 10)
        > _metric(records, "popularity", "ndcg", 10) + 0.1
    )
    assert _metric(records, "random", "auc", None) < 0.6


def test_held_out_category_is_sealed_from_training(known_model: MetaModel) -> None:
    splits = known_model.splits
    assert splits["hold_out"] == [KNOWN_HELD_OUT]
    assert KNOWN_HELD_OUT not in splits["train"] + splits["validation"]
    assert not set(splits["train"]) & set(splits["validation"])
    # no collaborative factor and no category vocabulary slot comes from the sealed category
    assert not any(i.startswith("c7-") for i in known_model.encoder.factor_item_ids)
    assert KNOWN_HELD_OUT not in known_model.space.vocabs["category"].tokens
    for name in splits["validation"]:
        assert name not in known_model.space.vocabs["category"].tokens


def test_adaptation_lowers_the_support_loss_of_the_new_category(
    known_store: Path, known_model: MetaModel
) -> None:
    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, known_model.config)
    data = known_model.category_data(catalog, [KNOWN_HELD_OUT], visible=catalog.categories)
    category = data[KNOWN_HELD_OUT]
    split = split_k_shot(category, 3)
    support = support_batch(
        category,
        support_state(category, split),
        split,
        n_negatives=4,
        generator=torch.Generator().manual_seed(0),
    )
    adapted = known_model.learner.adapt(known_model.params, support)
    assert task_loss(adapted, support) < task_loss(known_model.params, support)


def test_training_is_deterministic_for_a_seed(known_store: Path) -> None:
    config = known_answer_config(meta={"first_order": True, "meta_steps": 5, "inner_steps": 1})
    with Store.open(known_store, read_only=True) as store:
        first = train(store, config, progress=False)
        second = train(store, config, progress=False)
    for name, value in first.params.items():
        assert torch.equal(value, second.params[name])


def test_saved_model_loads_back_identical(known_model: MetaModel, known_model_dir: Path) -> None:
    loaded = load_model(known_model_dir)
    assert loaded.config == known_model.config
    assert loaded.splits == known_model.splits
    assert loaded.encoder.factor_item_ids == known_model.encoder.factor_item_ids
    assert torch.equal(loaded.encoder.factors, known_model.encoder.factors)
    for name, value in known_model.params.items():
        assert torch.equal(loaded.params[name], value)
    assert (
        np.isclose(loaded.space.dim, known_model.space.dim)
        and loaded.space.to_json() == known_model.space.to_json()
    )


def test_users_as_tasks_train_evaluate_and_serve(known_store: Path, tmp_path: Path) -> None:
    """``tasks.kind = "user"`` (MeLU's formulation) runs through the same pipeline."""
    from metarec.meta.model import save_model
    from metarec.serving.recommender import Recommender

    config = known_answer_config(
        tasks={"kind": "user", "shots": 3, "train_shots": [1, 3], "min_users": 10}
    )
    with Store.open(known_store, read_only=True) as store:
        model = train(store, config, progress=False, validate_every=30)
        catalog = load_catalog(store, config)
        records = evaluate_holdout(
            model, catalog, [KNOWN_HELD_OUT], shots=(3,), ks=(10,), n_resamples=100
        )
        assert (
            _metric(records, "metarec-maml", "auc", None)
            > _metric(records, "popularity", "auc", None) + 0.1
        )
        recommender = Recommender.open(save_model(model, tmp_path / "model"), store)
        recommender.adapt(KNOWN_HELD_OUT)
        assert len(recommender.recommend("u0", KNOWN_HELD_OUT, k=5).items) == 5


def test_folded_candidate_scores_equal_the_row_path(
    known_store: Path, known_model: MetaModel
) -> None:
    """The fast ranking path equals the scorer applied to built rows (training's inputs)."""
    from metarec.models.scorer import score
    from metarec.tasks import candidate_rows

    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, known_model.config)
    category = known_model.category_data(catalog, [KNOWN_HELD_OUT], visible=catalog.categories)[
        KNOWN_HELD_OUT
    ]
    for shots in (0, 1, 3):
        split = split_k_shot(category, shots)
        state = support_state(category, split)
        users = torch.arange(category.n_users)
        expected = score(known_model.params, candidate_rows(category, state, users))
        got = folded(known_model.params, category, state, users)
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_ranking_every_item_does_not_depend_on_the_chunk_size(
    known_store: Path, known_model: MetaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation scores users chunk by chunk (small chunks keep the temporaries reusable):
    one user per chunk, a few per chunk and every user at once give the same scores."""
    from metarec.ranking import category_scores, ranker

    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, known_model.config)
    category = known_model.category_data(catalog, [KNOWN_HELD_OUT], visible=catalog.categories)[
        KNOWN_HELD_OUT
    ]
    split = split_k_shot(category, 1)
    users = np.arange(category.n_users)
    hidden = known_model.params["layers.0.weight"].shape[0]
    results = []
    for users_per_chunk in (1, 7, category.n_users):
        values = users_per_chunk * category.n_items * hidden
        monkeypatch.setattr(ranker, "_SCORE_CHUNK_VALUES", values)
        results.append(category_scores(known_model, category, split, users))
    assert results[0].shape == (category.n_users, category.n_items)
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-6, atol=1e-6)


def test_users_as_tasks_rank_like_adapted_rows(known_store: Path, known_model: MetaModel) -> None:
    """Per-user adaptation ranks through the folded path exactly as the scorer ranks each
    user's adapted params on built rows."""
    from dataclasses import replace

    from metarec.meta import Batch, stack_batches
    from metarec.models.scorer import score
    from metarec.ranking import category_scores
    from metarec.seeds import derived_seed
    from metarec.tasks import Split, candidate_rows

    config = known_model.config.model_copy(
        update={"tasks": known_model.config.tasks.model_copy(update={"kind": "user"})}
    )
    model = replace(known_model, config=config)
    with Store.open(known_store, read_only=True) as store:
        catalog = load_catalog(store, config)
    category = model.category_data(catalog, [KNOWN_HELD_OUT], visible=catalog.categories)[
        KNOWN_HELD_OUT
    ]
    split = split_k_shot(category, 3)
    users = np.flatnonzero(split.eligible)[:12]
    got = category_scores(model, category, split, users)

    state = support_state(category, split)
    generator = torch.Generator().manual_seed(derived_seed(config.seed, category.name))
    supports = [
        support_batch(
            category,
            state,
            Split(split.support & (category.pos_user == u), split.query, split.eligible, None),
            n_negatives=config.tasks.negatives,
            generator=generator,
        )
        for u in users
    ]
    stacked = stack_batches(supports)
    rows = candidate_rows(category, state, torch.as_tensor(users))
    for i in range(len(users)):
        adapted = model.learner.adapt(
            model.params, Batch(stacked.x[i], stacked.y[i], stacked.mask[i])
        )
        expected = score({k: v.detach() for k, v in adapted.items()}, rows[i])
        assert torch.allclose(got[i], expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(expected, score(model.params, rows[i]))  # it did adapt
    assert not torch.allclose(got[0], got[1])  # users really differ
