"""The folded first layer's fast path (no gradients, in place) against its plain sum.

:meth:`FoldedLayer.h1` has two forms of one sum: out of place when gradients flow, in place
(through the einsum's own memory layout) when scoring. Evaluation depends on their being
bit-identical: a changed last bit can reorder tied scores and move a metric.
"""

from __future__ import annotations

import pytest
import torch

from metarec.models.folded import _COLUMN, FoldedLayer, ItemSide


def _layer(b: int, n: int, h: int, d: int, r: int, *, grad: bool) -> tuple[FoldedLayer, ItemSide]:
    g = torch.Generator().manual_seed(b * 1000 + n)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float32)

    layer = FoldedLayer(
        item=draw(b, h, d).requires_grad_(grad),
        unit_profile=draw(b, d),
        unit_support=draw(b, d),
        scalars=draw(h, len(_COLUMN)),
        user_terms=draw(b, h),
        cf_unit=draw(b, r),
    )
    items = ItemSide(
        z=draw(n, d),
        pop=torch.rand(n, generator=g) * 30,
        pop_max=torch.tensor(30.0),
        unit_sum=draw(n, r),
    )
    return layer, items


@pytest.mark.parametrize(("b", "n", "h", "d"), [(1, 7, 4, 3), (13, 251, 64, 79), (40, 33, 16, 9)])
def test_scoring_path_is_bit_identical_to_the_plain_sum(b: int, n: int, h: int, d: int) -> None:
    plain_layer, items = _layer(b, n, h, d, 5, grad=True)
    plain = plain_layer.h1(items).detach()  # gradients flow: the out-of-place sum
    fast_layer, items = _layer(b, n, h, d, 5, grad=False)
    with torch.no_grad():
        fast = fast_layer.h1(items)
    assert fast.shape == (b, n, h)
    assert torch.equal(fast, plain)


def test_scoring_path_under_vmap_matches_one_user_at_a_time() -> None:
    """Users-as-tasks scoring runs h1 under ``vmap`` (one folded user per adapted params)."""
    layer, items = _layer(6, 20, 8, 5, 3, grad=False)

    def one(
        item: torch.Tensor,
        profile: torch.Tensor,
        support: torch.Tensor,
        terms: torch.Tensor,
        cf: torch.Tensor,
    ) -> torch.Tensor:
        single = FoldedLayer(
            item[None], profile[None], support[None], layer.scalars, terms[None], cf[None]
        )
        return single.h1(items)[0]

    with torch.no_grad():
        mapped = torch.func.vmap(one)(
            layer.item, layer.unit_profile, layer.unit_support, layer.user_terms, layer.cf_unit
        )
        looped = torch.stack(
            [
                one(
                    layer.item[i],
                    layer.unit_profile[i],
                    layer.unit_support[i],
                    layer.user_terms[i],
                    layer.cf_unit[i],
                )
                for i in range(6)
            ]
        )
    assert torch.allclose(mapped, looped, atol=1e-6)
