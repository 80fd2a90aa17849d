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

_TIE_ROWS = 8
"""Rows summed in float64 at once by :func:`plus_rounded`. A whole (b, n) float64 copy of a test
block (360 users x 93k Amazon items: 268 MB) left the cache between its three passes; eight
rows at a time stay in it: the same values, 4.3x faster for 512 users x 93k items and 3.6x
at 20k (``benchmarks/bench_metrics.py``)."""


def tie_broken(scores: Tensor, counts: Tensor, *, seed: int, key: str) -> Tensor:
    """``scores`` (b, n) plus :data:`TIE_BREAK` times ``counts``' popularity order scaled to
    [0, 1): float32.

    Items of equal popularity are ordered by the seeded jitter of :func:`popularity_scores` (the
    same for every user), never by item index.
    """
    return plus_rounded(scores, tie_break(counts, seed=seed, key=key))


def plus_rounded(scores: Tensor, offsets: Tensor) -> Tensor:
    """``float32(float64(scores) + offsets)``: (b, n) scores plus (n,) float64 offsets, summed
    in float64 a few rows at a time and rounded to float32."""
    if scores.requires_grad and torch.is_grad_enabled():
        return (scores.double() + offsets).float()
    out = torch.empty(scores.shape, dtype=torch.float32)
    wide = torch.empty((min(_TIE_ROWS, scores.shape[0]), scores.shape[1]), dtype=torch.float64)
    for start in range(0, scores.shape[0], _TIE_ROWS):
        rows = scores[start : start + _TIE_ROWS]
        block = wide[: rows.shape[0]]
        block.copy_(rows)
        block.add_(offsets)
        out[start : start + _TIE_ROWS].copy_(block)
    return out


def tie_break(counts: Tensor, *, seed: int, key: str) -> Tensor:
    """(n,) float64: what :func:`tie_broken` adds to every user's scores (the same for all, so
    a ranker that scores many users computes it once)."""
    counts = counts.double()
    ranked = popularity_scores(counts, seed=seed, key=key, dtype=torch.float64)
    return TIE_BREAK * ranked / (counts.max() + 1.0)
