"""The pieces of batched retrieval against their references: the short-list first layer
against ``FoldedLayer.h1_own`` (items laid out on their own and from the index's layout), the
queries against ``FoldedLayer.as_linear``, the vectorised ``asinh`` against ``torch.asinh``, and
top-k over rows against one row at a time and against ``torch.topk``."""

from __future__ import annotations

import pytest
import torch
from tests.ranking.test_retrieval import synthetic_category

from metarec.config import ModelConfig
from metarec.features import input_dim
from metarec.models.folded import ItemSide, UserSide, fold_users
from metarec.models.scorer import init_params
from metarec.ranking import item_side
from metarec.ranking.retrieval import (
    asinh,
    build_index,
    column_weights,
    queries,
    top_k_positions,
)
from metarec.ranking.short_lists import (
    attribute_layout,
    item_rows,
    short_list_h1,
    short_list_rows,
)
from metarec.tasks import split_launch, support_state

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
        found = short_list_h1(layer, column_weights(layer), item_rows(items), own)
        reference = layer.h1_own(items.take(own.reshape(-1)))
    torch.testing.assert_close(found, reference, rtol=1e-5, atol=1e-5)


def test_short_list_h1_of_shared_items_equals_h1() -> None:
    """Every user with the same items (the reference items of retrieval's queries)."""
    generator = torch.Generator().manual_seed(2)
    items = _items(16, generator)
    layer = fold_users(_params(1), _users(5, generator))
    with torch.no_grad():
        found = short_list_h1(
            layer, column_weights(layer), item_rows(items), torch.arange(16).expand(5, -1)
        )
        reference = layer.h1(items)
    torch.testing.assert_close(found, reference, rtol=1e-5, atol=1e-5)


def test_short_list_from_the_index_layout_equals_h1_own() -> None:
    """A short list's rows gathered from the index's whole-category layout (dense columns
    chosen over every item, the collaborative part always dense) give the reference's first
    layer: the batched service ranks short lists this way."""
    category = synthetic_category(n_items=500, n_users=40)
    state = support_state(category, split_launch(category))
    index = build_index(category, state)
    generator = torch.Generator().manual_seed(5)
    distinct = torch.unique(torch.randint(0, 500, (90,), generator=generator))
    own = torch.randint(0, len(distinct), (6, 30), generator=generator)
    d = category.item_x.shape[1] + category.cf_dim
    params = init_params(input_dim(d), ModelConfig(hidden=(16, 8)), generator=generator)
    users = UserSide(
        profile=category.profile[:6],
        support=torch.randn(6, d, generator=generator),
        n_other=category.n_other[:6],
        n_support=torch.ones(6),
        cf_dim=category.cf_dim,
    )
    layer = fold_users(params, users)
    with torch.no_grad():
        rows = short_list_rows(category, state, index.attributes, distinct)
        found = short_list_h1(layer, column_weights(layer), rows, own)
        reference = layer.h1_own(item_side(category, state, distinct).take(own.reshape(-1)))
    torch.testing.assert_close(found, reference, rtol=1e-5, atol=1e-5)


def test_attribute_layout_is_the_same_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(50, 12, generator=generator) * (torch.rand(50, 12, generator=generator) < 0.2)
    x[:, 3] = 1.0  # dense
    x[10:20] = 0.0  # items without attributes
    whole = attribute_layout(x)
    monkeypatch.setattr("metarec.ranking.short_lists.CHUNK_ROWS", 7)
    chunked = attribute_layout(x)
    for name in ("dense_columns", "dense", "column", "value", "square_norm"):
        assert torch.equal(getattr(whole, name), getattr(chunked, name)), name
    share = (x != 0).float().mean(dim=0)  # dense: nonzero for at least a quarter
    assert whole.dense_columns.tolist() == torch.nonzero(share >= 0.25).squeeze(1).tolist()
    assert 3 in whole.dense_columns.tolist() and len(whole.dense_columns) < 12
    # each item's nonzero attributes, and nothing else, are in its padded row or dense table
    rebuilt = torch.zeros_like(x).scatter_add_(1, whole.column, whole.value)
    rebuilt[:, whole.dense_columns] = whole.dense
    assert torch.equal(rebuilt, x) and whole.dense.is_contiguous()
    empty = attribute_layout(torch.zeros(0, 12))
    assert empty.column.shape == (0, 0) and empty.square_norm.shape == (0,)
    assert empty.dense.shape == (0, 12)


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


@pytest.mark.parametrize("n", [1_000, 100_000, 300_001 + 77])
def test_top_k_positions_of_rows_equal_each_row(n: int) -> None:
    values = torch.randn(3, n, generator=torch.Generator().manual_seed(n))
    values[:, ::5] = -torch.inf  # seen items
    found = top_k_positions(values, 300)
    assert found.shape == (3, 300)
    for row, positions in zip(values, found, strict=True):
        assert set(positions.tolist()) == set(top_k_positions(row, 300).tolist())
        assert set(positions.tolist()) == set(torch.topk(row, 300).indices.tolist())


def _top_values(values: torch.Tensor, positions: torch.Tensor) -> list[float]:
    return sorted(values[positions].tolist())


@pytest.mark.parametrize("n", [8_192, 100_000, 262_143])
def test_top_k_by_threshold_finds_the_k_largest_values(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sampled threshold (8,192 to 262,143 items), on rows where it works and where it
    must fall back: the k largest values every time, each position once."""
    generator = torch.Generator().manual_seed(n)
    rows = torch.randn(5, n, generator=generator)
    sampled = torch.arange(n) % 256 < 16  # the threshold's sample: 16 of every 256
    rows[1, sampled] += 100.0  # the sample holds only the top: fewer than k above its threshold
    rows[2] = 0.0  # every value tied
    rows[3, 150:] = -torch.inf  # fewer finite values than k
    rows[4, ::3] = -torch.inf  # seen items
    fallbacks = []
    topk = torch.topk
    monkeypatch.setattr(torch, "topk", lambda row, k: fallbacks.append(len(row)) or topk(row, k))
    found = top_k_positions(rows, 300)
    monkeypatch.undo()
    assert fallbacks == [n]  # row 1 alone fell back
    assert found.shape == (5, 300)
    for row, positions in zip(rows, found, strict=True):
        assert len(set(positions.tolist())) == 300
        assert _top_values(row, positions) == _top_values(row, torch.topk(row, 300).indices)
    assert set(found[3].tolist()) >= set(range(150))
    assert top_k_positions(rows, 0).shape == (5, 0)
