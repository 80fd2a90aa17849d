"""The single inner loop: task_loss and adapt, against hand values and an autograd reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from metarec.config import ModelConfig
from metarec.errors import ConfigError
from metarec.meta import Batch, Params, adapt, task_loss
from metarec.models import init_params

D_IN = 5
CONFIG = ModelConfig(hidden=(6, 4))


def _params(seed: int = 0, dtype: torch.dtype = torch.float64) -> Params:
    return init_params(D_IN, CONFIG, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _batch(n: int, seed: int, dtype: torch.dtype = torch.float64) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g, dtype=dtype)
    y = (x[:, 0] - x[:, 1] > 0).to(dtype)
    return Batch(x, y, torch.ones(n, dtype=dtype))


def _constant_logit_params(bias: float) -> Params:
    """Params whose logit is ``bias`` for every row (last layer's weights zero)."""
    params = _params()
    params["layers.2.weight"] = torch.zeros_like(params["layers.2.weight"])
    params["layers.2.bias"] = torch.full_like(params["layers.2.bias"], bias)
    return params


def _bce(logit: float, y: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_task_loss_is_masked_mean_bce_by_hand() -> None:
    x = torch.randn(4, D_IN, dtype=torch.float64)
    batch = Batch(
        x, torch.tensor([1.0, 0.0, 1.0, 0.0]).double(), torch.tensor([1, 1, 1, 0.0]).double()
    )
    loss = task_loss(_constant_logit_params(0.5), batch)
    # The padded 4th row (y = 0) is excluded: mean over the three real rows.
    expected = (2 * _bce(0.5, 1.0) + _bce(0.5, 0.0)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_all_padding_task_has_zero_loss_and_zero_gradient() -> None:
    batch = _batch(3, seed=1)
    empty = Batch(batch.x, batch.y, torch.zeros_like(batch.mask))
    assert task_loss(_params(), empty).item() == 0.0
    grads = torch.func.grad(task_loss)(_params(), empty)
    assert all(torch.count_nonzero(g) == 0 for g in grads.values())
    adapted = adapt(_params(), empty, steps=2, lr=0.5)
    assert all(torch.equal(adapted[k], v) for k, v in _params().items())


def test_one_small_step_lowers_the_support_loss() -> None:
    params, support = _params(), _batch(20, seed=2)
    before = task_loss(params, support)
    after = task_loss(adapt(params, support, steps=1, lr=1e-2), support)
    assert after < before - 1e-6


def test_adapt_does_not_mutate_its_input() -> None:
    params = _params()
    frozen = {k: v.clone() for k, v in params.items()}
    adapted = adapt(params, _batch(10, seed=3), steps=3, lr=0.5)
    assert all(torch.equal(params[k], frozen[k]) for k in params)
    assert all(not torch.equal(adapted[k], params[k]) for k in params)
    assert adapt(params, _batch(10, seed=3), steps=0, lr=0.5) is not params


def test_adapt_works_under_no_grad_as_serving_calls_it() -> None:
    params, support = _params(), _batch(10, seed=3)
    expected = adapt(params, support, steps=2, lr=0.5)
    with torch.no_grad():
        got = adapt(params, support, steps=2, lr=0.5)
    assert all(torch.equal(got[k], expected[k]) for k in params)
    assert not torch.equal(got["layers.0.weight"], params["layers.0.weight"])


def _reference_adapt(
    params: Params, support: Batch, steps: int, lr: float, first_order: bool
) -> Params:
    """Plain torch.autograd: autograd.grad (create_graph unless first order) and manual SGD."""
    adapted = dict(params)
    for _ in range(steps):
        loss = task_loss(adapted, support)
        grads = torch.autograd.grad(loss, list(adapted.values()), create_graph=not first_order)
        adapted = {k: v - lr * g for (k, v), g in zip(adapted.items(), grads, strict=True)}
    return adapted


@pytest.mark.parametrize("first_order", [False, True])
def test_adapt_and_meta_gradient_equal_a_plain_autograd_reference(first_order: bool) -> None:
    support, query = _batch(12, seed=4), _batch(15, seed=5)
    steps, lr = 3, 0.4

    leaves = {k: v.clone().requires_grad_(True) for k, v in _params().items()}
    ref_adapted = _reference_adapt(leaves, support, steps, lr, first_order)
    ref_grads = torch.autograd.grad(task_loss(ref_adapted, query), list(leaves.values()))

    def query_loss(params: Params) -> Tensor:
        return task_loss(adapt(params, support, steps=steps, lr=lr, first_order=first_order), query)

    adapted = adapt(_params(), support, steps=steps, lr=lr, first_order=first_order)
    grads = torch.func.grad(query_loss)(_params())
    for (k, ref), g in zip(ref_adapted.items(), ref_grads, strict=True):
        torch.testing.assert_close(adapted[k], ref.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads[k], g, rtol=1e-10, atol=1e-12)

    # The same functional adapt also composes with plain autograd (how a caller may use it).
    outer = torch.autograd.grad(query_loss(leaves), list(leaves.values()))
    for got, g in zip(outer, ref_grads, strict=True):
        torch.testing.assert_close(got, g, rtol=1e-10, atol=1e-12)


def test_per_parameter_lr_matches_float_and_freezes_zero_lr_layers() -> None:
    params, support = _params(), _batch(10, seed=6)
    as_float = adapt(params, support, steps=2, lr=0.3)
    as_dict = adapt(
        params, support, steps=2, lr={k: torch.full_like(v, 0.3) for k, v in params.items()}
    )
    for k in params:
        torch.testing.assert_close(as_dict[k], as_float[k], rtol=0, atol=0)

    lr = {k: torch.tensor(0.3, dtype=torch.float64) for k in params}
    lr["layers.0.weight"] = torch.zeros((), dtype=torch.float64)
    partial = adapt(params, support, steps=2, lr=lr)
    assert torch.equal(partial["layers.0.weight"], params["layers.0.weight"])
    assert not torch.equal(partial["layers.1.weight"], params["layers.1.weight"])


def test_learned_lr_receives_a_gradient() -> None:
    params, support, query = _params(), _batch(10, seed=7), _batch(10, seed=8)
    lr = {k: torch.full_like(v, 0.2) for k, v in params.items()}

    def loss(lr: Params) -> Tensor:
        return task_loss(adapt(params, support, steps=2, lr=lr), query)

    grads = torch.func.grad(loss)(lr)
    assert all(torch.count_nonzero(g) > 0 for g in grads.values())


def test_bad_arguments_are_refused_with_a_fix() -> None:
    params, support = _params(), _batch(4, seed=9)
    with pytest.raises(ConfigError, match=r"meta\.inner_steps"):
        adapt(params, support, steps=-1, lr=0.1)
    with pytest.raises(ConfigError, match="keys"):
        adapt(params, support, steps=1, lr={"layers.0.weight": torch.tensor(0.1)})
