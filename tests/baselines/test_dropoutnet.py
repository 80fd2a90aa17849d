"""The cold-item generator: its inputs, its objective, checkpoint selection, known answers.

Shapes, determinism, blindness to the query and sealing: tests/evaluation/test_method_contract.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, KnownFold, known_answer_config

from metarec.baselines.base import fit_context, launch_popularity
from metarec.baselines.dropoutnet import (
    DropoutNet,
    generate,
    init_generator,
    item_inputs,
    matching_loss,
    training_examples,
    user_vectors,
)
from metarec.baselines.mf import TIE_BREAK
from metarec.baselines.simple import Popularity
from metarec.errors import DataError, NotAdaptedError
from metarec.tasks import Split, support_state


@pytest.fixture(scope="module")
def dropoutnet(known_fold: KnownFold) -> DropoutNet:
    """One fit per module (methods never change after fit)."""
    method = DropoutNet()
    method.fit(known_fold.context)
    return method


def test_item_inputs_hold_content_and_support_evidence(known_fold: KnownFold) -> None:
    launch, _ = known_fold.launch(3)
    category = launch.category
    # support from two users only, so that most items have none
    split = launch.split
    few = split.support & np.isin(category.pos_user, launch.positions[:2])
    content, evidence = item_inputs(
        category, support_state(category, Split(few, split.query, split.eligible, None))
    )
    r = category.cf_dim
    assert torch.equal(content, category.item_x)
    assert evidence.shape == (category.n_items, r + 2)
    items = torch.as_tensor(category.pos_item[few])
    pop = torch.bincount(items, minlength=category.n_items).float()
    torch.testing.assert_close(evidence[:, r], torch.log1p(pop))
    torch.testing.assert_close(evidence[:, r + 1], pop / pop.max())
    unseen = pop == 0
    assert unseen.sum() > 30 and not evidence[unseen].any()  # no support, no evidence
    for item in torch.nonzero(pop).flatten().tolist():  # the mean profile of the item's supporters
        supporters = category.pos_user[few & (category.pos_item == item)]
        expected = user_vectors(category, supporters).mean(0)
        torch.testing.assert_close(evidence[item, :r], expected)


def test_matching_loss_is_the_mean_squared_score_error() -> None:
    generator = torch.Generator().manual_seed(0)
    made, target = torch.randn(5, 3, generator=generator), torch.randn(5, 3, generator=generator)
    users = torch.randn(4, 3, generator=generator)
    pairs = zip(made, target, strict=True)
    expected = np.mean([[(float(u @ m) - float(u @ t)) ** 2 for u in users] for m, t in pairs])
    assert float(matching_loss(made, target, users)) == pytest.approx(expected, rel=1e-5)
    # a direction no user uses costs nothing
    users_2d = torch.cat([users[:, :2], torch.zeros(4, 1)], dim=1)
    shifted = made.clone()
    shifted[:, 2] += 10.0
    assert matching_loss(made, target, users_2d) == pytest.approx(
        float(matching_loss(shifted, target, users_2d))
    )


def test_training_lowers_the_matching_loss(dropoutnet: DropoutNet, known_fold: KnownFold) -> None:
    context = known_fold.context
    assert dropoutnet.params is not None
    r = context.features.encoder.factors.shape[1]
    start = init_generator(
        [context.features.space.dim + r + 2, dropoutnet.hidden, r], torch.Generator().manual_seed(1)
    )

    examples = training_examples(context)

    def loss(params: dict[str, torch.Tensor] | None, evidence: float = 0.0) -> float:
        losses = [
            matching_loss(
                generate(params, e.content, evidence * e.evidence) if params else 0 * e.target,
                e.target,
                e.users,
            )
            for e in examples
        ]
        return float(torch.stack(losses).mean())

    # measured with whitened factors (features.cf_power = -1, every taste direction weighs the
    # same, so content explains less of them than of the old sqrt(s)-scaled ones): 0.102
    # predicting zero vectors, 0.103 at initialisation, 0.044 after training from content
    # alone, 0.030 with the support evidence
    trained, initial, zero = loss(dropoutnet.params), loss(start), loss(None)
    assert trained < 0.6 * min(initial, zero), (trained, initial, zero)
    assert loss(dropoutnet.params, evidence=1.0) < loss(dropoutnet.params)


def test_examples_cover_every_training_category_and_shot(known_fold: KnownFold) -> None:
    context = known_fold.context
    examples = training_examples(context)
    assert len(examples) == len(context.train) * len(context.config.tasks.train_shots)
    for example in examples:
        assert example.target.abs().sum() > 0  # training items carry collaborative factors
        assert example.users.shape[1] == example.target.shape[1]


def test_support_changes_the_generated_items(dropoutnet: DropoutNet, known_fold: KnownFold) -> None:
    cold, _ = known_fold.launch(0)
    warm, _ = known_fold.launch(3)
    assert np.array_equal(cold.category.item_idx, warm.category.item_idx)
    common = np.intersect1d(cold.users, warm.users)
    rows_cold = dropoutnet.scores(cold)[np.searchsorted(cold.users, common)]
    rows_warm = dropoutnet.scores(warm)[np.searchsorted(warm.users, common)]
    assert (rows_cold - rows_warm).abs().max() > 1e-3


def test_validation_keeps_the_best_checkpoint(known_fold: KnownFold) -> None:
    """A validator that prefers the first checkpoint (step 10 of 60) gets exactly it."""
    context = known_fold.context
    calls: list[object] = []

    def validate(method: object) -> float:
        calls.append(method)
        return -float(len(calls))

    chosen = DropoutNet(steps=60)
    chosen.fit(replace(context, validate=validate))
    assert len(calls) == 6
    short = DropoutNet(steps=10)
    short.fit(context)
    assert chosen.params is not None and short.params is not None
    for name, value in chosen.params.items():
        assert torch.equal(value, short.params[name])


def test_taste_from_other_categories_beats_popularity(
    dropoutnet: DropoutNet, known_fold: KnownFold
) -> None:
    popularity = Popularity()
    popularity.fit(known_fold.context)
    # measured: 0.72 at 0 shots, 0.73 at 1, 0.72 at 3 (the ceiling is 0.74); popularity 0.52
    assert known_fold.auc(dropoutnet, 3) > known_fold.auc(popularity, 3) + 0.15
    assert known_fold.auc(dropoutnet, 0) > known_fold.auc(popularity, 0) + 0.15


def test_without_collaborative_factors_fit_is_refused(known_fold: KnownFold) -> None:
    config = known_answer_config(features={"cf_rank": 0})
    train = [c for c in known_fold.catalog.categories if c != KNOWN_HELD_OUT]
    with pytest.raises(DataError, match="cf_rank"):
        DropoutNet().fit(fit_context(known_fold.catalog, config, train))


def test_user_without_visible_history_gets_launch_popularity(
    dropoutnet: DropoutNet, known_fold: KnownFold
) -> None:
    launch, _ = known_fold.launch(3)
    user = int(launch.users[0])
    positives = launch.catalog.positives
    visible = np.isin(
        launch.catalog.item_category[positives["item_idx"].to_numpy()], known_fold.train
    )
    catalog = launch.catalog.restricted(~(visible & (positives["user_idx"] == user)))
    category = known_fold.context.features.category_data(
        catalog, [launch.name], visible=launch.visible, extra_users=launch.users
    )[launch.name]
    blank = replace(launch, catalog=catalog, category=category)
    scores = dropoutnet.scores(blank)[0].double()
    assert scores.abs().max() <= TIE_BREAK
    pop = launch_popularity(blank)
    order = torch.argsort(scores, descending=True)
    assert (pop[order][:-1] >= pop[order][1:]).all()
    assert not torch.equal(dropoutnet.scores(launch)[0], dropoutnet.scores(blank)[0])


def test_scores_before_fit_are_refused(known_fold: KnownFold) -> None:
    launch, _ = known_fold.launch(1)
    with pytest.raises(NotAdaptedError, match="fit"):
        DropoutNet().scores(launch)
