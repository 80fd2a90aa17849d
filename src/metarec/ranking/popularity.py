"""Popularity at launch: how often each item appears in a category's support.

The one definition every caller ranks by: the popularity baseline, the tie-break of the fold-in
baselines, and the fallback for users the store does not know. Ties (most items at few shots,
every item at zero shots) are broken by a seeded random jitter below 1, never by item index:
ids often encode popularity (MovieLens numbers its best-known films first), and breaking ties
by them would smuggle that in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarec.seeds import derived_seed


def popularity_scores(
    counts: Tensor, *, seed: int, key: str, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(n,) support counts plus a jitter in [0, 0.5) seeded by ``(seed, key)`` (the category).

    Args:
        counts: (n,) support count of each item.
        seed: the run's or the model's seed.
        key: what the jitter is drawn for, usually the category's name.
        dtype: dtype of the jitter draw and of the result.
    """
    generator = torch.Generator().manual_seed(derived_seed(seed, key))
    jitter = 0.5 * torch.rand(len(counts), generator=generator, dtype=dtype)  # < 1: only ties move
    return counts.to(dtype) + jitter


TIE_BREAK = 1e-6
"""Weight of launch popularity (scaled to [0, 1)) added to scores: it orders ties only."""


def tie_broken(scores: Tensor, counts: Tensor, *, seed: int, key: str) -> Tensor:
    """``scores`` (b, n) plus :data:`TIE_BREAK` times ``counts``' popularity order scaled to
    [0, 1): float32.

    Items of equal popularity are ordered by the seeded jitter of :func:`popularity_scores` (the
    same for every user), never by item index.
    """
    return (scores.double() + tie_break(counts, seed=seed, key=key)).float()


def tie_break(counts: Tensor, *, seed: int, key: str) -> Tensor:
    """(n,) float64: what :func:`tie_broken` adds to every user's scores (the same for all, so
    a ranker that scores many users computes it once)."""
    counts = counts.double()
    ranked = popularity_scores(counts, seed=seed, key=key, dtype=torch.float64)
    return TIE_BREAK * ranked / (counts.max() + 1.0)
