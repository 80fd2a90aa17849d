"""The pieces of batched retrieval against their references: the short-list first layer
against ``FoldedLayer.h1_own``, the queries against ``FoldedLayer.as_linear``, the vectorised
``asinh`` against ``torch.asinh``, and top-k over rows against one row at a time."""

from __future__ import annotations

import pytest
import torch

from metarec.config import ModelConfig
from metarec.features import input_dim
from metarec.models.folded import ItemSide, UserSide, fold_users
from metarec.models.scorer import init_params
from metarec.ranking.retrieval import (
    asinh,
    column_weights,
    queries,
    short_list_h1,
    top_k_positions,
)

D_ATTR, D_CF = 20, 6
D = D_ATTR + D_CF


def _items(n: int, generator: torch.Generator, *, sparse: bool = True) -> ItemSide:
    """Items whose attributes are one-hot-like (a few nonzeros each, some items none), with a
    constant column and a dense numeric one, then a dense collaborative part."""
    z = torch.randn(n, D, generator=generator)
    if sparse:
        keep = torch.rand(n, D_ATTR, generator=generator) < 0.1
        keep[: n // 5] = False  # items with no attribute at all
        z[:, :D_ATTR] *= keep
        z[:, 0] = 1.0  # a constant column, like the category path
        z[:, 1] = torch.rand(n, generator=generator)  # a dense numeric field
    pop = torch.randint(0, 9, (n,), generator=generator).float()
    unit_sum = torch.randn(n, D_CF, generator=generator) * pop[:, None] / 3
    return ItemSide(z=z, pop=pop, pop_max=pop.max(), unit_sum=unit_sum)


def _users(b: int, generator: torch.Generator) -> UserSide:
    support = torch.randn(b, D, generator=generator)
    support[::3] = 0.0  # users with no support here
    return UserSide(
        profile=torch.randn(b, D, generator=generator),
        support=support,
        n_other=torch.randint(0, 20, (b,), generator=generator).float(),
        n_support=(support != 0).any(1).float() * 2,
        cf_dim=D_CF,
    )


def _params(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return init_params(input_dim(D), ModelConfig(hidden=(16, 8)), generator=generator)


@pytest.mark.parametrize("sparse", [True, False])
def test_short_list_h1_equals_h1_own(sparse: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    items = _items(60, generator, sparse=sparse)
    layer = fold_users(_params(), _users(7, generator))
    own = torch.randint(0, 60, (7, 25), generator=generator)
    own[0, :3] = own[0, 3]  # an item listed twice
    with torch.no_grad():
        found = short_list_h1(layer, column_weights(layer), items, own)
        reference = layer.h1_own(items.take(own.reshape(-1)))
    torch.testing.assert_close(found, reference, rtol=1e-5, atol=1e-5)


def test_short_list_h1_of_shared_items_equals_h1() -> None:
    """Every user with the same items (the reference items of retrieval's queries)."""
    generator = torch.Generator().manual_seed(2)
    items = _items(16, generator)
    layer = fold_users(_params(1), _users(5, generator))
    with torch.no_grad():
        found = short_list_h1(layer, column_weights(layer), items, torch.arange(16).expand(5, -1))
        reference = layer.h1(items)
    torch.testing.assert_close(found, reference, rtol=1e-5, atol=1e-5)


def test_queries_equal_the_linear_form_times_the_gradient() -> None:
    generator = torch.Generator().manual_seed(3)
    layer = fold_users(_params(2), _users(6, generator))
    gradient = torch.randn(6, 16, generator=generator)
    weight, _ = layer.as_linear()
    torch.testing.assert_close(
        queries(layer, gradient), torch.einsum("bhf,bh->bf", weight, gradient), rtol=1e-5, atol=1e-5
    )


def test_asinh_equals_torch_asinh() -> None:
    x = torch.cat(
        [
            torch.randn(10_000, generator=torch.Generator().manual_seed(4)) * 50,
            torch.tensor([0.0, -0.0, 1e-30, -1e-8, 1e-3, 0.5, -0.5, 1e6, -1e6, 3e15]),
        ]
    )
    found = asinh(x)
    torch.testing.assert_close(found, torch.asinh(x), rtol=2e-7, atol=4e-7)
    assert torch.equal(found, -asinh(-x))  # odd, exactly
    assert not torch.isnan(found).any()


@pytest.mark.parametrize("n", [1_000, 300_001 + 77])
def test_top_k_positions_of_rows_equal_each_row(n: int) -> None:
    values = torch.randn(3, n, generator=torch.Generator().manual_seed(n))
    values[:, ::5] = -torch.inf  # seen items
    found = top_k_positions(values, 300)
    assert found.shape == (3, 300)
    for row, positions in zip(values, found, strict=True):
        assert set(positions.tolist()) == set(top_k_positions(row, 300).tolist())
        assert set(positions.tolist()) == set(torch.topk(row, 300).indices.tolist())
