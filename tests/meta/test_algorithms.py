"""The contract every registered algorithm keeps (STYLE.md), and what each one adds.

Parametrised over :data:`metarec.meta.ALGORITHMS` (and over both batching paths where training
computes something): config round-trips, ``adapt`` is pure and lowers the support loss, the
meta-gradient is keyed like the params, equals a per-task loop over the unpadded tasks, and
(second order) equals central finite differences; Reptile's update equals a hand-written one.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path
from typing import Any, get_args

import pytest
import torch
from tests.gradcheck import finite_differences, flat, rel_err
from torch import Tensor

from metarec.config import MetaConfig, ModelConfig, load_config
from metarec.errors import ConfigError
from metarec.meta import (
    ALGORITHMS,
    MAML,
    Batch,
    MetaSGD,
    Params,
    Reptile,
    TaskBatch,
    build_learner,
    meta_train,
    scorer_params,
    stack_tasks,
    task_loss,
)
from metarec.models import init_params

D_IN = 4
MODEL = ModelConfig(hidden=(5, 3))
NAMES = sorted(ALGORITHMS)
GRADIENT_BASED = [name for name in NAMES if ALGORITHMS[name] is not Reptile]
SECOND_ORDER = [
    name
    for name in GRADIENT_BASED
    if not build_learner(MetaConfig(algorithm=name)).config.first_order
]  # type: ignore[arg-type]
BATCHING = ["bmm", "vmap"]


def _learner(name: str, **overrides: Any) -> MAML:
    fields = {"inner_steps": 2, "inner_lr": 0.5, **overrides}
    return build_learner(MetaConfig(algorithm=name, **fields))


def _params(learner: MAML, seed: int = 0) -> Params:
    g = torch.Generator().manual_seed(seed)
    params = learner.init_params(init_params(D_IN, MODEL, generator=g, dtype=torch.float64))
    # Meta-SGD: rates that differ per entry, so that a mix-up of entries cannot pass.
    return {
        name: value * (0.5 + torch.rand(value.shape, generator=g, dtype=value.dtype))
        if name.startswith("lr.")
        else value
        for name, value in params.items()
    }


def _rows(n: int, g: torch.Generator) -> Batch:
    x = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    w = torch.randn(D_IN, generator=g, dtype=torch.float64)
    return Batch(x, (x @ w > 0).double(), torch.ones(n, dtype=torch.float64))


def _tasks(sizes: list[tuple[int, int]], seed: int = 1) -> list[tuple[Batch, Batch]]:
    g = torch.Generator().manual_seed(seed)
    return [(_rows(n_s, g), _rows(n_q, g)) for n_s, n_q in sizes]


def _with_garbage_padding(batch: TaskBatch) -> TaskBatch:
    """Huge features and impossible labels in every padded row: they must change nothing."""
    g = torch.Generator().manual_seed(7)
    for part in (batch.support, batch.query):
        pad = part.mask == 0
        assert pad.any()
        part.x[pad] = 100 * torch.randn(part.x[pad].shape, generator=g, dtype=torch.float64)
        part.y[pad] = 7.0
    return batch


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_and_builds_its_class(name: str, tmp_path: Path) -> None:
    config = MetaConfig(algorithm=name, inner_steps=3, anil_head_layers=2)  # type: ignore[arg-type]
    assert MetaConfig.model_validate_json(config.model_dump_json()) == config
    toml = tmp_path / "metarec.toml"
    toml.write_text(f'[meta]\nalgorithm = "{name}"\ninner_steps = 3\nanil_head_layers = 2\n')
    assert load_config(toml).meta == config
    assert type(build_learner(config)) is ALGORITHMS[name]


def test_config_literal_lists_exactly_the_registry() -> None:
    assert set(get_args(MetaConfig.model_fields["algorithm"].annotation)) == set(ALGORITHMS)


def test_unknown_algorithm_fails_at_config_load_with_the_choices(tmp_path: Path) -> None:
    toml = tmp_path / "metarec.toml"
    toml.write_text('[meta]\nalgorithm = "maml2"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(toml)
    assert all(f"'{name}'" in str(caught.value) for name in ALGORITHMS)
    unchecked = MetaConfig.model_construct(algorithm="maml2")  # bypasses the Literal on purpose
    with pytest.raises(ConfigError, match=r"choose one of .*melu_local.*reptile"):
        build_learner(unchecked)


@pytest.mark.parametrize("name", NAMES)
def test_adapt_is_pure_and_keeps_keys_and_shapes(name: str) -> None:
    learner = _learner(name)
    params = _params(learner)
    frozen = {k: v.clone() for k, v in params.items()}
    support, _ = _tasks([(6, 4)])[0]
    adapted = learner.adapt(params, support)
    assert all(torch.equal(params[k], frozen[k]) for k in params)
    assert {k: v.shape for k, v in adapted.items()} == {k: v.shape for k, v in params.items()}
    assert not all(torch.equal(adapted[k], params[k]) for k in params)  # something adapted


@pytest.mark.parametrize("name", NAMES)
def test_one_small_inner_step_lowers_the_support_loss(name: str) -> None:
    learner = _learner(name, inner_steps=1, inner_lr=1e-2)
    params = _params(learner)
    support, _ = _tasks([(10, 4)])[0]
    before = task_loss(scorer_params(params), support)
    after = task_loss(scorer_params(learner.adapt(params, support)), support)
    assert after < before


@pytest.mark.parametrize("batching", BATCHING)
@pytest.mark.parametrize("name", NAMES)
def test_meta_gradient_is_keyed_like_params_finite_and_detached(name: str, batching: str) -> None:
    learner = _learner(name, batching=batching)
    params = {k: v.requires_grad_(True) for k, v in _params(learner).items()}
    tasks = stack_tasks(_tasks([(4, 4), (3, 5)]))
    loss, grads = learner.meta_gradient(params, tasks)
    assert loss.shape == () and not loss.requires_grad and torch.isfinite(loss)
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in params.items()}
    assert all(torch.isfinite(g).all() and not g.requires_grad for g in grads.values())
    assert loss.item() == pytest.approx(learner.meta_loss(params, tasks).item(), rel=1e-12)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("batching", BATCHING)
@pytest.mark.parametrize("name", GRADIENT_BASED)
def test_batched_meta_gradient_equals_a_loop_over_unpadded_tasks(
    name: str, batching: str, first_order: bool
) -> None:
    learner = _learner(name, batching=batching, first_order=first_order)
    params = _params(learner)
    tasks = _tasks([(6, 8), (3, 5), (4, 8)])
    loss, grads = learner.meta_gradient(params, _with_garbage_padding(stack_tasks(tasks)))

    def loop_loss(p: Params) -> Tensor:
        losses = [task_loss(scorer_params(learner.adapt(p, s)), q) for s, q in tasks]
        return torch.stack(losses).mean()

    loop_grads, loop_value = torch.func.grad_and_value(loop_loss)(params)
    torch.testing.assert_close(loss, loop_value, rtol=1e-12, atol=0)
    for k in params:
        torch.testing.assert_close(grads[k], loop_grads[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("batching", BATCHING)
@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order_meta_gradient_equals_finite_differences(name: str, batching: str) -> None:
    learner = _learner(name, batching=batching)
    params, tasks = _params(learner), stack_tasks(_tasks([(6, 8), (4, 8)]))
    _, grads = learner.meta_gradient(params, tasks)
    # of the vmap reference loss
    fd = finite_differences(lambda q: learner.vmap_meta_loss(q, tasks), params)
    assert rel_err(flat(grads), fd) < 1e-6
    # The check discriminates: first order is measurably not the true gradient here.
    first = _learner(name, batching=batching, first_order=True)
    assert rel_err(flat(first.meta_gradient(params, tasks)[1]), fd) > 1e-3


def _reptile_by_hand(
    params: Params, tasks: list[tuple[Batch, Batch]], steps: int, lr: float
) -> tuple[Tensor, Params]:
    """Nichol et al.'s update written out with plain autograd, one task at a time."""
    adapted_per_task, losses = [], []
    for support, query in tasks:
        phi = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        for _ in range(steps):
            grads = torch.autograd.grad(task_loss(phi, support), list(phi.values()))
            phi = {
                k: (v - lr * g).detach().requires_grad_(True)
                for (k, v), g in zip(phi.items(), grads, strict=True)
            }
        adapted_per_task.append(phi)
        losses.append(task_loss(phi, query).detach())
    direction = {
        k: (v - torch.stack([phi[k] for phi in adapted_per_task]).mean(0)) / (steps * lr)
        for k, v in params.items()
    }
    return torch.stack(losses).mean(), direction


@pytest.mark.parametrize("batching", BATCHING)
def test_reptile_direction_equals_a_hand_written_reference(batching: str) -> None:
    steps, lr = 3, 0.5
    learner = _learner("reptile", batching=batching, inner_steps=steps, inner_lr=lr)
    params = _params(learner)
    tasks = _tasks([(6, 8), (3, 5), (4, 8)])
    loss, direction = learner.meta_gradient(params, _with_garbage_padding(stack_tasks(tasks)))
    expected_loss, expected = _reptile_by_hand(params, tasks, steps, lr)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=0)
    for k in params:
        torch.testing.assert_close(direction[k], expected[k], rtol=1e-10, atol=1e-13)
    # One plain step of size steps * lr against the direction lands on the mean adapted params.
    adapted = [learner.adapt(params, s) for s, _ in tasks]
    for k in params:
        mean_phi = torch.stack([a[k] for a in adapted]).mean(0)
        torch.testing.assert_close(params[k] - steps * lr * direction[k], mean_phi)


def test_reptile_refuses_zero_inner_steps() -> None:
    with pytest.raises(ConfigError, match="inner_steps >= 1"):
        _learner("reptile", inner_steps=0)


def test_fomaml_is_maml_with_the_first_order_flag() -> None:
    tasks = stack_tasks(_tasks([(6, 8), (4, 8)]))
    fomaml = _learner("fomaml")
    params = _params(fomaml)
    _, expected = _learner("maml", first_order=True).meta_gradient(params, tasks)
    _, grads = fomaml.meta_gradient(params, tasks)
    assert all(torch.equal(grads[k], expected[k]) for k in params)


def test_a_subclass_overriding_adapt_trains_through_its_own_adapt() -> None:
    class HalfStep(MAML):  # an adapt() the bmm path cannot see into
        def adapt(self, params: Params, support: Batch) -> Params:
            adapted = super().adapt(params, support)
            return {k: (params[k] + adapted[k]) / 2 for k in params}

    tasks = stack_tasks(_tasks([(6, 8), (4, 8)]))
    learner = HalfStep(MetaConfig(inner_steps=2, inner_lr=0.5, batching="bmm"))
    params = _params(learner)
    _, grads = learner.meta_gradient(params, tasks)
    _, plain = _learner("maml").meta_gradient(params, tasks)
    want = torch.func.grad(learner.vmap_meta_loss)(params, tasks)
    assert all(torch.allclose(grads[k], want[k], rtol=1e-10, atol=1e-13) for k in params)
    assert not all(torch.allclose(grads[k], plain[k]) for k in params)


def test_meta_sgd_carries_learned_rates_that_get_gradients_and_are_used() -> None:
    learner = _learner("meta_sgd")
    assert isinstance(learner, MetaSGD)
    base = init_params(D_IN, MODEL, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = learner.init_params(base)
    assert sorted(params) == sorted([*base, *(f"lr.{k}" for k in base)])
    assert all(torch.all(params[f"lr.{k}"] == 0.5) for k in base)
    assert learner.init_params(params)["lr.layers.0.weight"] is params["lr.layers.0.weight"]
    # With every rate equal to inner_lr, Meta-SGD adapts exactly as MAML does.
    support, _ = _tasks([(6, 4)])[0]
    maml_adapted = _learner("maml").adapt(base, support)
    adapted = learner.adapt(params, support)
    assert all(torch.allclose(adapted[k], maml_adapted[k], rtol=1e-12, atol=0) for k in base)
    # A zero rate freezes its entries; the rates ride along unchanged.
    params["lr.layers.1.weight"] = torch.zeros_like(base["layers.1.weight"])
    adapted = learner.adapt(params, support)
    assert torch.equal(adapted["layers.1.weight"], base["layers.1.weight"])
    assert not torch.equal(adapted["layers.0.weight"], base["layers.0.weight"])
    assert adapted["lr.layers.0.weight"] is params["lr.layers.0.weight"]
    _, grads = learner.meta_gradient(params, stack_tasks(_tasks([(6, 8)])))
    assert all(grads[f"lr.{k}"].abs().sum() > 0 for k in base)
    with pytest.raises(ConfigError, match="init_params"):
        learner.adapt(base, support)


def test_meta_sgd_step_is_theta_minus_rates_times_gradient_entrywise() -> None:
    learner = _learner("meta_sgd", inner_steps=1)
    params = _params(learner)  # rates differ per entry
    support, _ = _tasks([(6, 4)])[0]
    weights = scorer_params(params)
    grads = torch.func.grad(task_loss)(weights, support)
    adapted = learner.adapt(params, support)
    for k in weights:
        expected = weights[k] - params[f"lr.{k}"] * grads[k]
        torch.testing.assert_close(adapted[k], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("name", "field", "value", "adapted_layers"),
    [
        ("anil", "anil_head_layers", 1, {2}),
        ("anil", "anil_head_layers", 2, {1, 2}),
        ("anil", "anil_head_layers", 3, {0, 1, 2}),
        ("melu_local", "melu_frozen_layers", 1, {1, 2}),
        ("melu_local", "melu_frozen_layers", 2, {2}),
    ],
)
def test_partial_algorithms_adapt_exactly_the_configured_layers(
    name: str, field: str, value: int, adapted_layers: set[int]
) -> None:
    learner = _learner(name, **{field: value})
    params = _params(learner)
    support, _ = _tasks([(6, 4)])[0]
    adapted = learner.adapt(params, support)
    changed = {int(k.split(".")[1]) for k in params if not torch.equal(adapted[k], params[k])}
    assert changed == adapted_layers


@pytest.mark.parametrize(
    ("name", "field"), [("anil", "anil_head_layers"), ("melu_local", "melu_frozen_layers")]
)
@pytest.mark.parametrize("batching", BATCHING)
def test_partial_algorithms_refuse_a_depth_the_scorer_lacks(
    name: str, field: str, batching: str
) -> None:
    learner = _learner(name, batching=batching, **{field: 3 if name == "melu_local" else 4})
    params = _params(learner)
    support, _ = _tasks([(6, 4)])[0]
    with pytest.raises(ConfigError, match="layers"):
        learner.adapt(params, support)
    with pytest.raises(ConfigError, match="layers"):
        learner.meta_gradient(params, stack_tasks([(support, support)]))


def _toy_tasks(n_tasks: int, g: torch.Generator) -> TaskBatch:
    """Labels from a random direction in the first two of six features (test_trainer.py's)."""
    tasks = []
    for _ in range(n_tasks):
        theta = torch.rand((), generator=g) * 2 * torch.pi
        w = torch.zeros(6)
        w[0], w[1] = torch.cos(theta), torch.sin(theta)
        x = torch.randn(30, 6, generator=g)
        y = (x @ w > 0).float()
        tasks.append((Batch(x[:10], y[:10], torch.ones(10)), Batch(x[10:], y[10:], torch.ones(20))))
    return stack_tasks(tasks)


@pytest.mark.parametrize("name", NAMES)
def test_meta_training_lowers_the_post_adaptation_loss(name: str) -> None:
    config = MetaConfig(
        algorithm=name, inner_steps=3, inner_lr=1.0, outer_lr=1e-2, meta_batch_size=8, meta_steps=60
    )  # type: ignore[arg-type]
    learner = build_learner(config)
    start = learner.init_params(
        init_params(6, ModelConfig(hidden=(16, 8)), generator=torch.Generator().manual_seed(0))
    )
    held_out = _toy_tasks(64, torch.Generator().manual_seed(123))
    trained, _ = meta_train(
        start,
        learner,
        _toy_tasks,
        config,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    assert sorted(trained) == sorted(start)  # extra meta-params (Meta-SGD's rates) are trained too
    before = learner.meta_loss(start, held_out).item()
    after = learner.meta_loss(trained, held_out).item()
    assert after < 0.8 * before, (before, after)


@pytest.mark.parametrize(
    "module", ["maml", "meta_sgd", "reptile", "anil", "melu_local", "compiled"]
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"metarec.meta.{module}"))
    assert result.attempted >= 2 and result.failed == 0
