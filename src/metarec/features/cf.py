"""Collaborative item factors from the visible categories: taste learned across categories.

A truncated SVD of the (users x items) positive matrix of the visible categories gives each item
a factor vector. A user's profile averages the factors of what they liked elsewhere, so users with
similar tastes elsewhere get similar profiles; an item of a *new* category has no factor of its
own and is represented instead by the mean profile of the support users who liked it (see
:mod:`metarec.tasks.rows`). That is how "users like you elsewhere liked this here" reaches the
scorer without the new category's items ever being trained on.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import svds


def item_factors(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    weight: np.ndarray,
    *,
    n_users: int,
    n_items: int,
    rank: int,
    seed: int,
    power: float = -1.0,
) -> torch.Tensor:
    """Item factors ``V * s**power`` of a rank-``rank`` SVD ``U s V^T`` of the positive matrix.

    Rows are L2-normalised per user first so that very active users do not dominate. Items with
    no positive get zero factors; the factors are scaled to rows of unit norm on average (so
    their scale does not depend on the data's size or on ``power``). The signs are fixed
    (largest entry of each column positive) so that the result is deterministic.

    Why ``power = -1`` by default: a user's profile averages the factors of their items, i.e.
    is proportional to ``x_u V s**power`` = ``u_u s**(1 + power)``. With -1 the profiles are the
    whitened user factors ``u_u``, so every taste direction counts equally in a similarity; with
    ``sqrt(s)`` (0.5) the first direction (how mainstream a user is) dominated every similarity
    and the collaborative signal read like popularity (metarec's validation NDCG@10 on ML-1M: 0.437
    with ``power = 0.5``, 0.462 whitened; docs/BENCHMARKS.md "Tuning log").

    Args:
        user_idx, item_idx, weight: (n,) the visible positives.
        n_users, n_items: matrix shape.
        rank: number of factors (clipped to what the matrix supports).
        seed: seed of the solver's start vector.
        power: exponent of the singular values in the factors.

    Returns:
        (n_items, rank) float32 factors (zero columns when the matrix is too small for ``rank``).
    """
    out = torch.zeros((n_items, rank))
    if len(user_idx) == 0 or rank == 0:
        return out
    matrix = sp.csr_matrix(
        (weight.astype(np.float64), (user_idx, item_idx)), shape=(n_users, n_items)
    )
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    matrix = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ matrix
    k = min(rank, min(matrix.shape) - 1)
    if k < 1:
        return out
    v0 = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    _, s, vt = svds(matrix, k=k, v0=v0, solver="arpack")
    order = np.argsort(-s)
    factors = vt[order].T * (s[order] ** power)[None, :]
    signs = np.sign(factors[np.abs(factors).argmax(axis=0), np.arange(k)])
    # one global scale (directions untouched): rows of unit norm on average, whatever ``power``
    norms = np.linalg.norm(factors, axis=1)
    scale = float(norms[norms > 0].mean()) if (norms > 0).any() else 1.0
    factors = factors / max(scale, 1e-12)
    out[:, :k] = torch.from_numpy((factors * signs).astype(np.float32))
    return out
