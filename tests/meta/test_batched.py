"""The hand-batched training path and the compiled one against the single inner loop.

``batched`` must compute what ``vmap(adapt_with)`` computes (adapted params, meta-loss and its
gradient, learned rates included) for every shape of inner loop, with garbage in padded rows;
``compiled`` must return the eager meta-gradient. The per-algorithm equalities are in
``test_algorithms.py``; here the inner-loop descriptions are varied directly.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from metarec.config import MetaConfig, ModelConfig
from metarec.meta import (
    Batch,
    InnerLoop,
    Params,
    TaskBatch,
    adapt_with,
    batched,
    build_learner,
    stack_tasks,
)
from metarec.meta.compiled import pad_rows
from metarec.meta.inner import task_loss
from metarec.models import init_params

D_IN = 4
MODEL = ModelConfig(hidden=(5, 3))


def _params() -> Params:
    return init_params(D_IN, MODEL, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _tasks() -> TaskBatch:
    g = torch.Generator().manual_seed(1)

    def rows(n: int) -> Batch:
        x = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
        return Batch(x, (x[:, 0] > x[:, 1]).double(), torch.ones(n, dtype=torch.float64))

    tasks = stack_tasks([(rows(6), rows(8)), (rows(2), rows(3)), (rows(4), rows(8))])
    for part in (tasks.support, tasks.query):  # garbage in padded rows must change nothing
        pad = part.mask == 0
        part.x[pad] = 100 * torch.randn(part.x[pad].shape, generator=g, dtype=torch.float64)
        part.y[pad] = 7.0
    return tasks


def _rates(params: Params) -> Params:
    g = torch.Generator().manual_seed(2)
    return {k: 0.5 * torch.rand(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}


def _loops(params: Params) -> list[InnerLoop]:
    return [
        InnerLoop(steps=s, lr=lr, first_order=fo, first_layer=first)
        for s in (0, 2)
        for lr in (0.5, _rates(params))
        for fo in (False, True)
        for first in (0, 1, 2)
    ]


def _vmap_adapt(loop: InnerLoop, params: Params, support: Batch) -> Params:
    return torch.func.vmap(lambda x, y, m: adapt_with(loop, params, Batch(x, y, m)))(
        support.x, support.y, support.mask
    )


def _vmap_meta_loss(loop: InnerLoop, params: Params, tasks: TaskBatch) -> Tensor:
    s, q = tasks.support, tasks.query

    def one(sx: Tensor, sy: Tensor, sm: Tensor, qx: Tensor, qy: Tensor, qm: Tensor) -> Tensor:
        return task_loss(adapt_with(loop, params, Batch(sx, sy, sm)), Batch(qx, qy, qm))

    return torch.func.vmap(one)(s.x, s.y, s.mask, q.x, q.y, q.mask).mean()


def test_adapt_tasks_equals_vmap_of_the_single_inner_loop() -> None:
    params, tasks = _params(), _tasks()
    for loop in _loops(params):
        got = batched.adapt_tasks(loop, params, tasks.support)
        want = _vmap_adapt(loop, params, tasks.support)
        for k in params:
            torch.testing.assert_close(got[k], want[k], rtol=1e-12, atol=1e-14, msg=str(loop))


def _loss_and_grads(fn, loop: InnerLoop, params: Params, tasks: TaskBatch) -> list[Tensor]:  # type: ignore[no-untyped-def]
    """``[loss, d loss / d params..., d loss / d rates...]`` with plain autograd."""
    leaves = [v.clone().requires_grad_(True) for v in params.values()]
    rates = (
        [v.clone().requires_grad_(True) for v in loop.lr.values()]
        if isinstance(loop.lr, dict)
        else []
    )
    lr = dict(zip(params, rates, strict=True)) if rates else loop.lr
    loss = fn(
        InnerLoop(loop.steps, lr, loop.first_order, loop.first_layer),
        dict(zip(params, leaves, strict=True)),
        tasks,
    )
    grads = torch.autograd.grad(loss, leaves + rates, allow_unused=True, materialize_grads=True)
    return [loss, *grads]


def test_meta_loss_and_its_gradient_equal_vmap_of_the_single_inner_loop() -> None:
    params, tasks = _params(), _tasks()
    for loop in _loops(params):
        got = _loss_and_grads(batched.meta_loss, loop, params, tasks)
        want = _loss_and_grads(_vmap_meta_loss, loop, params, tasks)
        assert len(got) == len(want) > len(params)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-13, msg=str(loop))


def test_pad_rows_adds_masked_zero_rows_only() -> None:
    tasks = _tasks()
    padded = pad_rows(tasks.support, 8)
    assert padded.x.shape == (3, 8, D_IN) and padded.mask[:, 6:].abs().sum() == 0
    assert torch.equal(padded.x[:, :6], tasks.support.x)
    assert pad_rows(tasks.support, 6) is tasks.support


@pytest.mark.slow
@pytest.mark.parametrize("name", ["maml", "meta_sgd", "reptile"])
def test_compiled_meta_gradient_equals_eager(name: str) -> None:
    # Tens of seconds of compile per case on 2 cores: marked slow.
    config = MetaConfig(algorithm=name, inner_steps=2, inner_lr=0.5)  # type: ignore[arg-type]
    eager = build_learner(config)
    compiled = build_learner(config.model_copy(update={"compile": True}))
    params, tasks = eager.init_params(_params()), _tasks()
    loss, grads = compiled.meta_gradient(params, tasks)
    want_loss, want = eager.meta_gradient(params, tasks)
    torch.testing.assert_close(loss, want_loss, rtol=1e-10, atol=0)
    for k in params:
        torch.testing.assert_close(grads[k], want[k], rtol=1e-8, atol=1e-12)
