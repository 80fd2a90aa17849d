"""The scorer: pure function of a params dict, identical to its nn.Module twin."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from metarec.config import ModelConfig
from metarec.models import Scorer, init_params, layer_sizes, score

CONFIG = ModelConfig(hidden=(16, 8))


def _params(seed: int = 0, d_in: int = 12) -> dict[str, torch.Tensor]:
    return init_params(d_in, CONFIG, generator=torch.Generator().manual_seed(seed))


class _CountCalls(TorchFunctionMode):
    """Counts torch function calls: a loop over rows would make the count grow with n."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: object,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_params_have_module_names_shapes_and_linear_init_bounds() -> None:
    params = _params(d_in=12)
    module = Scorer(12, CONFIG)
    assert {k: v.shape for k, v in params.items()} == {
        k: v.shape for k, v in module.named_parameters()
    }
    assert list(params) == [f"layers.{i}.{w}" for i in range(3) for w in ("weight", "bias")]
    assert layer_sizes(12, CONFIG) == [12, 16, 8, 1]
    for i, fan_in in enumerate((12, 16, 8)):
        w = params[f"layers.{i}.weight"]
        assert w.abs().max() <= 1 / math.sqrt(fan_in)
        assert w.abs().max() > 0.5 / math.sqrt(fan_in)  # spread over the range, not tiny
    assert all(p.dtype == torch.float32 for p in params.values())
    doubles = init_params(12, CONFIG, generator=torch.Generator(), dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in doubles.values())


def test_init_is_a_function_of_the_generator_only() -> None:
    a, b, c = _params(seed=3), _params(seed=3), _params(seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.weight"], c["layers.0.weight"])


def test_functional_call_on_module_equals_score() -> None:
    params = _params()
    x = torch.randn(7, 12, generator=torch.Generator().manual_seed(1))
    expected = functional_call(Scorer(12, CONFIG), params, (x,))
    got = score(params, x)
    assert got.shape == (7,)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_score_keeps_leading_dims_and_rows_are_independent() -> None:
    params = _params()
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(2))
    batched = score(params, x)
    assert batched.shape == (2, 5)
    one_by_one = torch.stack([torch.stack([score(params, r[None])[0] for r in t]) for t in x])
    torch.testing.assert_close(batched, one_by_one)


def test_scoring_many_items_is_one_matmul_chain() -> None:
    params = _params()
    counts = []
    for n in (10, 100_000):
        x = torch.randn(n, 12, generator=torch.Generator().manual_seed(0))
        with _CountCalls() as counter:
            out = score(params, x)
        assert out.shape == (n,)
        counts.append(counter.calls)
    # 3 linear + 2 relu + squeeze, whatever the number of rows.
    assert counts[0] == counts[1] <= 8


@pytest.mark.parametrize("hidden", [(), (4,), (8, 8, 4)])
def test_any_depth_matches_the_module(hidden: tuple[int, ...]) -> None:
    config = ModelConfig(hidden=hidden)
    params = init_params(3, config, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 3)
    assert len(params) == 2 * (len(hidden) + 1)
    torch.testing.assert_close(score(params, x), functional_call(Scorer(3, config), params, (x,)))
