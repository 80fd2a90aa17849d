"""MeLU: the local update against a reference, second order, per-user launches, known answers.

Shapes, determinism, blindness to the query and sealing: tests/evaluation/test_method_contract.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from tests.conftest import KnownFold

from metarec.baselines.melu import MeLU
from metarec.baselines.simple import Popularity
from metarec.config import ModelConfig
from metarec.errors import ConfigError, NotAdaptedError
from metarec.meta import Batch, MeLULocal, adapt, build_learner, stack_tasks, task_loss
from metarec.models.scorer import init_params, score
from metarec.seeds import derived_seed
from metarec.tasks import Split, candidate_rows, support_batch, support_state


@pytest.fixture(scope="module")
def melu(known_fold: KnownFold) -> MeLU:
    """One fit per module (methods never change after fit)."""
    method = MeLU()
    method.fit(known_fold.context)
    return method


def _params() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return init_params(6, ModelConfig(hidden=(5, 4)), generator=generator, dtype=torch.float64)


def _rows(n: int, seed: int) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    return Batch(x, (x[:, 0] + x[:, 1] > 0).double(), torch.ones(n, dtype=torch.float64))


def _learner(fold: KnownFold, frozen: int) -> MeLULocal:
    """MeLU's learner for the known-answer fold, with a larger inner budget for these tests."""
    context = fold.context
    context = replace(
        context,
        config=context.config.model_copy(
            update={"meta": context.config.meta.model_copy(update={"inner_steps": 3})}
        ),
    )
    learner = build_learner(MeLU(frozen_layers=frozen).config_for(context).meta)
    assert isinstance(learner, MeLULocal)
    return learner


def _frozen_lr(params: dict[str, torch.Tensor], frozen: int, lr: float) -> dict[str, torch.Tensor]:
    """The reference: the full inner loop with learning rate 0 on the frozen layers."""
    return {
        k: torch.tensor(0.0 if int(k.split(".")[1]) < frozen else lr, dtype=torch.float64)
        for k in params
    }


def test_config_is_users_as_tasks_second_order_with_the_run_inner_budget(
    known_fold: KnownFold,
) -> None:
    context = known_fold.context
    assert context.config.meta.first_order  # the run itself is first order
    config = MeLU(lr_scale=3.0, frozen_layers=2).config_for(context)
    assert config.tasks.kind == "user"
    assert config.meta.algorithm == "melu_local" and config.meta.melu_frozen_layers == 2
    assert config.meta.first_order is False
    assert config.meta.inner_steps == context.config.meta.inner_steps
    assert config.meta.inner_lr == context.config.meta.inner_lr
    assert config.meta.outer_lr == pytest.approx(3.0 * context.config.meta.outer_lr)
    assert config.meta.meta_steps == context.config.meta.meta_steps
    assert config.features == context.config.features and config.model == context.config.model


@pytest.mark.parametrize("frozen", [1, 2])
def test_local_update_equals_the_full_inner_loop_with_frozen_layers(
    known_fold: KnownFold, frozen: int
) -> None:
    learner = _learner(known_fold, frozen)
    params, support = _params(), _rows(12, 1)
    adapted = learner.adapt(params, support)
    lr = _frozen_lr(params, frozen, learner.config.inner_lr)
    expected = adapt(params, support, steps=3, lr=lr)
    assert adapted.keys() == params.keys()
    for name, value in expected.items():
        torch.testing.assert_close(adapted[name], value)
        if int(name.split(".")[1]) < frozen:
            assert adapted[name] is params[name]  # frozen layers are not touched at all
        else:
            assert not torch.equal(adapted[name], params[name])
    assert task_loss(adapted, support) < task_loss(params, support)


def test_meta_gradient_is_second_order_into_every_layer(known_fold: KnownFold) -> None:
    """Against plain autograd through the full inner loop (frozen layers at lr 0)."""
    learner = _learner(known_fold, 1)
    params = _params()
    tasks = stack_tasks([(_rows(8, 2), _rows(10, 3)), (_rows(5, 4), _rows(10, 5))])
    loss, grads = learner.meta_gradient(params, tasks)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    lr = _frozen_lr(params, 1, learner.config.inner_lr)
    per_task = []
    for i in range(tasks.n_tasks):
        support, query = tasks.task(i)
        per_task.append(task_loss(adapt(leaves, support, steps=3, lr=lr), query))
    expected_loss = torch.stack(per_task).mean()
    expected = torch.autograd.grad(expected_loss, list(leaves.values()))
    torch.testing.assert_close(loss, expected_loss.detach())
    for name, value in zip(leaves, expected, strict=True):
        torch.testing.assert_close(grads[name], value)
    # first order would give the frozen layer only its direct gradient through the query loss
    first = MeLULocal(learner.config.model_copy(update={"first_order": True}))
    _, first_grads = first.meta_gradient(params, tasks)
    assert not torch.allclose(first_grads["layers.0.weight"], grads["layers.0.weight"])


def test_too_many_frozen_layers_are_refused(known_fold: KnownFold) -> None:
    with pytest.raises(ConfigError, match="melu_frozen_layers"):
        MeLU(frozen_layers=3).fit(replace(known_fold.context, quick=True))


def test_each_user_adapts_on_their_own_support(melu: MeLU, known_fold: KnownFold) -> None:
    """Row 0 of the batched (vmap) launch equals adapting that user alone, by hand."""
    assert melu.model is not None
    launch, _ = known_fold.launch(3)
    category, split = launch.category, launch.split
    state = support_state(category, split)
    user = int(launch.positions[0])
    mine = Split(split.support & (category.pos_user == user), split.query, split.eligible, None)
    generator = torch.Generator().manual_seed(derived_seed(known_fold.context.seed, launch.name))
    support = support_batch(category, state, mine, n_negatives=4, generator=generator)
    assert int(support.y.sum()) == 3
    adapted = melu.model.learner.adapt(melu.model.params, support)
    rows = candidate_rows(category, state, torch.as_tensor([user]))
    scores = melu.scores(launch)
    torch.testing.assert_close(scores[0], score(adapted, rows)[0].detach(), atol=1e-5, rtol=1e-5)
    zero_shot = score(melu.model.params, rows)[0]
    assert (scores[0] - zero_shot).abs().max() > 1e-4  # the local update did something


def test_without_support_the_global_params_score(melu: MeLU, known_fold: KnownFold) -> None:
    assert melu.model is not None
    launch, _ = known_fold.launch(0)
    rows = candidate_rows(
        launch.category,
        support_state(launch.category, launch.split),
        torch.as_tensor(launch.positions),
    )
    torch.testing.assert_close(melu.scores(launch), score(melu.model.params, rows))


def test_validation_sees_checkpoints_scored_as_melu(known_fold: KnownFold) -> None:
    context = replace(known_fold.context, quick=True)
    seen: list[float] = []

    def validate(method: object) -> float:
        assert isinstance(method, MeLU) and method.model is not None
        seen.append(float(method.model.params["layers.0.weight"].sum()))
        return 0.0 if len(seen) == 2 else -1.0  # the second checkpoint wins

    chosen = MeLU()
    chosen.fit(replace(context, validate=validate))
    assert len(seen) == 4  # every 10 of 40 quick steps
    assert chosen.model is not None
    assert float(chosen.model.params["layers.0.weight"].sum()) == seen[1]
    assert len(np.unique(seen)) == 4


def test_taste_from_other_categories_beats_popularity(melu: MeLU, known_fold: KnownFold) -> None:
    popularity = Popularity()
    popularity.fit(known_fold.context)
    # measured: 0.72 at 0, 1 and 3 shots (the ceiling is 0.74); popularity 0.50 to 0.52
    assert known_fold.auc(melu, 3) > known_fold.auc(popularity, 3) + 0.15
    assert known_fold.auc(melu, 1) > known_fold.auc(popularity, 1) + 0.15


def test_scores_before_fit_are_refused(known_fold: KnownFold) -> None:
    launch, _ = known_fold.launch(1)
    with pytest.raises(NotAdaptedError, match="fit"):
        MeLU().scores(launch)
