"""The seeded column permutation that makes ties random: scores and masks move together."""

from __future__ import annotations

import torch

from metarec.evaluation.records import random_tie_order


def test_scores_and_masks_move_by_the_same_seeded_order() -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn(7, 50, generator=generator)
    relevant = torch.rand(7, 50, generator=generator) < 0.1
    exclude = torch.rand(7, 50, generator=generator) < 0.1
    moved, relevant_moved, exclude_moved = random_tie_order(0, "Poetry", scores, relevant, exclude)
    # the permutation is recovered from the scores (distinct floats) and must move the masks
    order = torch.tensor([int((scores[0] == value).nonzero()) for value in moved[0]])
    assert torch.equal(moved, scores[:, order])
    assert torch.equal(relevant_moved, relevant[:, order])
    assert torch.equal(exclude_moved, exclude[:, order])
    assert not torch.equal(order, torch.arange(50))
    again = random_tie_order(0, "Poetry", scores, relevant, exclude)
    first = (moved, relevant_moved, exclude_moved)
    assert all(torch.equal(a, b) for a, b in zip(again, first, strict=True))
    other = random_tie_order(0, "Drama", scores)[0]
    assert not torch.equal(other, moved)  # the key (the category) seeds the order


def test_a_one_dimensional_index_row_is_permuted_too() -> None:
    """evaluation/cases.py reads the order back through a (1, n) index row."""
    index = torch.arange(20)[None].float()
    permuted = random_tie_order(1, "x", index)[0][0].long()
    assert sorted(permuted.tolist()) == list(range(20))
