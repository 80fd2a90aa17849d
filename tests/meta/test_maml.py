"""MAML: meta-gradients against finite differences, first vs second order, vmap vs a loop."""

from __future__ import annotations

import doctest

import pytest
import torch
from tests.gradcheck import finite_differences, flat, rel_err
from torch import Tensor

import metarec.meta.maml
from metarec.config import MetaConfig, ModelConfig
from metarec.errors import DataError
from metarec.meta import (
    MAML,
    Batch,
    Params,
    TaskBatch,
    adapt,
    stack_tasks,
    task_loss,
)
from metarec.models import init_params

D_IN = 4
CONFIG = ModelConfig(hidden=(5, 3))


def _params(seed: int = 0) -> Params:
    g = torch.Generator().manual_seed(seed)
    return init_params(D_IN, CONFIG, generator=g, dtype=torch.float64)


def _rows(n: int, g: torch.Generator) -> Batch:
    x = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    w = torch.randn(D_IN, generator=g, dtype=torch.float64)
    return Batch(x, (x @ w > 0).double(), torch.ones(n, dtype=torch.float64))


def _tasks(sizes: list[tuple[int, int]], seed: int = 1) -> list[tuple[Batch, Batch]]:
    g = torch.Generator().manual_seed(seed)
    return [(_rows(n_s, g), _rows(n_q, g)) for n_s, n_q in sizes]


def _maml(steps: int, first_order: bool = False, lr: float = 0.5) -> MAML:
    return MAML(MetaConfig(inner_steps=steps, inner_lr=lr, first_order=first_order))


def test_second_order_meta_gradient_equals_finite_differences() -> None:
    params, tasks = _params(), stack_tasks(_tasks([(6, 8), (4, 8)]))
    second = _maml(steps=2)
    loss, grads = second.meta_gradient(params, tasks)
    fd = finite_differences(lambda q: second.meta_loss(q, tasks), params)
    assert loss.item() == pytest.approx(second.meta_loss(params, tasks).item(), rel=1e-12)
    assert rel_err(flat(grads), fd) < 1e-6
    # The check discriminates: first order is measurably not the true gradient here.
    _, first = _maml(steps=2, first_order=True).meta_gradient(params, tasks)
    assert rel_err(flat(first), fd) > 1e-3


def test_first_order_equals_second_order_at_zero_inner_steps() -> None:
    params, tasks = _params(), stack_tasks(_tasks([(6, 8), (4, 8), (5, 7)]))
    loss_1, first = _maml(steps=0, first_order=True).meta_gradient(params, tasks)
    loss_2, second = _maml(steps=0).meta_gradient(params, tasks)
    # Both reduce to the gradient of the mean query loss at the unadapted params.
    plain = torch.func.grad(
        lambda p: torch.stack([task_loss(p, tasks.task(i)[1]) for i in range(3)]).mean()
    )(params)
    assert loss_1 == loss_2
    for k in params:
        torch.testing.assert_close(first[k], second[k], rtol=0, atol=0)
        torch.testing.assert_close(first[k], plain[k], rtol=1e-12, atol=1e-14)


def test_first_order_is_the_query_gradient_at_the_adapted_params() -> None:
    params, tasks = _params(), _tasks([(6, 8), (4, 8)])
    _, first = _maml(steps=2, first_order=True).meta_gradient(params, stack_tasks(tasks))
    _, second = _maml(steps=2).meta_gradient(params, stack_tasks(tasks))
    # FOMAML's definition: mean over tasks of grad L_query evaluated at theta'_task.
    per_task = [torch.func.grad(task_loss)(adapt(params, s, steps=2, lr=0.5), q) for s, q in tasks]
    for k in params:
        expected = torch.stack([g[k] for g in per_task]).mean(0)
        torch.testing.assert_close(first[k], expected, rtol=1e-12, atol=1e-14)
    assert rel_err(flat(first), flat(second)) > 1e-3


@pytest.mark.parametrize("first_order", [False, True])
def test_vmap_over_tasks_equals_a_loop_and_ignores_padding(first_order: bool) -> None:
    tasks = _tasks([(6, 8), (3, 5), (4, 8)])
    batch = stack_tasks(tasks)
    # Garbage in every padded row (mask 0) must change nothing.
    g = torch.Generator().manual_seed(7)
    for part in (batch.support, batch.query):
        pad = part.mask == 0
        assert pad.any()
        part.x[pad] = 100 * torch.randn(part.x[pad].shape, generator=g, dtype=torch.float64)
        part.y[pad] = 7.0

    maml = _maml(steps=3, first_order=first_order)
    params = _params()
    loss, grads = maml.meta_gradient(params, batch)

    def loop_loss(p: Params) -> Tensor:
        losses = [task_loss(maml.adapt(p, s), q) for s, q in tasks]  # unpadded tasks
        return torch.stack(losses).mean()

    loop_grads, loop_value = torch.func.grad_and_value(loop_loss)(params)
    torch.testing.assert_close(loss, loop_value, rtol=1e-12, atol=0)
    for k in params:
        torch.testing.assert_close(grads[k], loop_grads[k], rtol=1e-10, atol=1e-13)


def test_meta_gradient_is_detached_and_keyed_like_params() -> None:
    params = {k: v.requires_grad_(True) for k, v in _params().items()}
    loss, grads = _maml(steps=1).meta_gradient(params, stack_tasks(_tasks([(4, 4)])))
    assert loss.shape == () and not loss.requires_grad
    assert {k: g.shape for k, g in grads.items()} == {k: p.shape for k, p in params.items()}
    assert not any(g.requires_grad for g in grads.values())
    with torch.no_grad():  # e.g. called from evaluation code: still a real gradient
        _, again = _maml(steps=1).meta_gradient(params, stack_tasks(_tasks([(4, 4)])))
    assert all(torch.equal(again[k], grads[k]) for k in grads)


def test_docstring_example_runs() -> None:
    result = doctest.testmod(metarec.meta.maml, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_stack_tasks_pads_with_masked_zeros() -> None:
    tasks = _tasks([(3, 2), (1, 4)])
    batch = stack_tasks(tasks)
    assert batch.n_tasks == 2
    assert batch.support.x.shape == (2, 3, D_IN) and batch.query.x.shape == (2, 4, D_IN)
    assert batch.support.mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.query.mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert torch.count_nonzero(batch.support.x[1, 1:]) == 0
    support, query = batch.task(1)
    assert torch.equal(support.x[:1], tasks[1][0].x) and torch.equal(query.y, tasks[1][1].y)


def test_bad_shapes_are_refused() -> None:
    x = torch.zeros(3, D_IN)
    with pytest.raises(DataError, match="Batch shapes disagree"):
        Batch(x, torch.zeros(2), torch.ones(3))
    with pytest.raises(DataError, match="no tasks"):
        stack_tasks([])
    good = Batch(x, torch.zeros(3), torch.ones(3))
    wide = Batch(torch.zeros(3, D_IN + 1), torch.zeros(3), torch.ones(3))
    with pytest.raises(DataError, match="one feature width"):
        stack_tasks([(good, good), (wide, good)])
    with pytest.raises(DataError, match="stack_tasks"):
        TaskBatch(good, good)
