"""The launch-popularity tie-break, added a few rows at a time."""

from __future__ import annotations

import pytest
import torch

from metarec.ranking.popularity import tie_break, tie_broken


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_users", [0, 1, 7, 8, 21])
def test_tie_broken_is_the_float64_sum_rounded_to_float32(dtype: torch.dtype, n_users: int) -> None:
    generator = torch.Generator().manual_seed(n_users)
    scores = torch.randn(n_users, 301, generator=generator, dtype=dtype)
    counts = torch.randint(0, 4, (301,), generator=generator)
    expected = (scores.double() + tie_break(counts, seed=3, key="Poetry")).float()
    got = tie_broken(scores, counts, seed=3, key="Poetry")
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_tie_broken_orders_equal_scores_by_launch_popularity() -> None:
    counts = torch.tensor([0, 5, 2, 5])
    got = tie_broken(torch.zeros(2, 4), counts, seed=0, key="Poetry")
    # the two most supported items first (their order is the seeded jitter), then 2, then 0
    assert set(got[0].argsort(descending=True)[:2].tolist()) == {1, 3}
    assert got[0].argsort(descending=True)[2:].tolist() == [2, 0]
    assert torch.equal(got[0], got[1])


def test_tie_broken_keeps_gradients_where_asked() -> None:
    scores = torch.randn(3, 5, requires_grad=True)
    got = tie_broken(scores, torch.arange(5), seed=0, key="Poetry")
    got.sum().backward()
    assert scores.grad is not None
    assert torch.equal(scores.grad, torch.ones(3, 5))
