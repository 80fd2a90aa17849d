"""The scorer's input for one (user, item) pair in a category, built the same way everywhere.

Training, adaptation, evaluation and serving all call :func:`pair_features`, so the model sees
exactly the same inputs in each (no train/serve skew). What goes in is what DESIGN.md says a model
needs to be able to beat the baselines of a new category:

- the item's own attributes ``x_i`` (category path, authors, ...);
- the user's taste from other categories, as ``p_u * x_i`` (elementwise: a learned weighting of
  "the user liked this attribute elsewhere") and as their cosine;
- the user's taste from their own support items in this category, ``s_u * x_i`` and cosine;
- popularity at launch: how often the item appears in this category's support sets, raw (log)
  and relative to the category's most popular item;
- how much history the user has elsewhere and in this category (log counts), so the model can
  learn how far to trust each profile;
- collaborative affinity: ``asinh`` of the summed cosine similarity between the user's
  collaborative profile and those of the item's supporters ("how many users like you liked
  this here"). It is a product of similarity and support count, which an MLP over the other
  inputs only approximates; on ML-1M's validation genres ranking by it alone reaches NDCG@10
  0.450 (popularity 0.401, ALS 0.477), and adding it lifted metarec's from 0.413 to 0.454 in
  the prototype (docs/BENCHMARKS.md "Tuning log").
"""

from __future__ import annotations

import torch

COSINE_EPS = 1e-6
"""The eps of the rows' cosine similarities: the folded first layer and the service's short lists
clamp item norms with the same value, so their cosines equal these."""

SCALARS = (
    "log_pop",  # log1p(support count of the item)
    "pop_share",  # support count / the category's largest
    "cos_profile",  # cos(user's profile elsewhere, item)
    "cos_support",  # cos(user's support profile here, item)
    "log_n_other",  # log1p(user's positives elsewhere)
    "log_n_support",  # log1p(user's support positives here)
    "affinity",  # asinh(summed cosine of the user to the item's supporters)
)
"""The scalar inputs after the three ``d``-wide blocks, in column order; the folded first layer
(:mod:`metarec.models.folded`) reads its weight columns by these names."""
N_SCALARS = len(SCALARS)


def scalar_column(name: str, feature_dim: int) -> int:
    """Column of scalar ``name`` in rows of items with ``feature_dim`` features."""
    return 3 * feature_dim + SCALARS.index(name)


def input_dim(feature_dim: int) -> int:
    """Width of :func:`pair_features` for items of ``feature_dim`` features."""
    return 3 * feature_dim + N_SCALARS


def pair_features(
    item_x: torch.Tensor,
    profile: torch.Tensor,
    support_profile: torch.Tensor,
    pop: torch.Tensor,
    pop_max: torch.Tensor,
    n_other: torch.Tensor,
    n_support: torch.Tensor,
    affinity: torch.Tensor,
) -> torch.Tensor:
    """Build scorer inputs; all arguments broadcast against each other.

    Args:
        item_x: (..., d) item features.
        profile: (..., d) the user's profile from other categories.
        support_profile: (..., d) mean features of the user's support items in this category
            (zeros when none).
        pop: (...) support count of the item in this category.
        pop_max: (...) largest support count in this category (>= 1 when any support exists).
        n_other: (...) the user's number of positives in other categories.
        n_support: (...) the user's number of support items in this category.
        affinity: (...) summed cosine similarity of the user's collaborative profile to the
            profiles of the item's supporters (:func:`metarec.tasks.rows.pair_rows`).

    Returns:
        (..., 3 * d + N_SCALARS) float32.
    """
    item_x, profile, support_profile = torch.broadcast_tensors(item_x, profile, support_profile)
    scalars = torch.stack(
        torch.broadcast_tensors(
            torch.log1p(pop),
            pop / pop_max.clamp_min(1.0),
            torch.nn.functional.cosine_similarity(profile, item_x, dim=-1, eps=COSINE_EPS),
            torch.nn.functional.cosine_similarity(support_profile, item_x, dim=-1, eps=COSINE_EPS),
            torch.log1p(n_other),
            torch.log1p(n_support),
            torch.asinh(affinity),  # log-like for sums of hundreds, linear near 0, signed
        ),
        dim=-1,
    )
    return torch.cat([item_x, profile * item_x, support_profile * item_x, scalars], dim=-1)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (..., r) scaled to unit length; all-zero rows stay zero."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
