"""A launch's own choice of support bias, for ridge models trained where no validation
category could choose it (``RidgeModel.bias_from_support``): a cross-validation over the
launch's supporters, run at every launch and adaptation of such a model
(:meth:`metarec.ranking.ridge.RidgeRanker.launch`, in the benchmark and the service alike).

The supporters are split, seeded, into parts, each held out once: the items are folded in from
the other parts' support (:func:`metarec.meta.ridge.fold_in`) and every bias of
:data:`BIAS_GRID` is scored by the NDCG@10 of the held-out users' own support items.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metarec.meta.ridge import RidgeSupport, fold_in, ridge_scores
from metarec.meta.ridge_model import RidgeModel
from metarec.ranking.metrics import rank_top_k, top_k_metrics
from metarec.seeds import derived_seed
from metarec.tasks import CategoryData

BIAS_GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 10.0)
"""Support biases a launch may choose (:func:`support_bias`): ALS preferences are on a 0-1
scale and log(1 + n_j) on 0-7, so these run from fold-in alone to popularity first."""
MIN_HELD_OUT = 20  # users with support below which a launch keeps the model's bias
# Parts of a launch's cross-validation (every user with support held out once). One seeded
# quarter held out, as before, left launches of fewer than 80 supporters on fold-in and scored
# the rest on a quarter of their users: on the quick folds' validation categories this rule
# lifts the bookstore by 10 to 13% at 3 and 5 shots and is level on MovieLens
# (docs/BENCHMARKS.md, "A launch's own support bias, from every supporter").
BIAS_PARTS = 4
# Held-out users scored per launch at most (a seeded sample; each one's scores are a pass over
# the category's items), fewer in large catalogues (BIAS_SCORED_ENTRIES user x item scores in
# all, but never fewer than BIAS_MIN_SCORED users), and users x items entries scored at once: a
# launch of 20,000 supporters at 1e5 items took 80 s and 8.7 GB with every held-out user of a
# quarter scored at once (benchmarks/bench_support_bias.py; docs/SERVING.md, "Costs to know").
BIAS_SCORED_USERS = 2_000
BIAS_SCORED_ENTRIES = 2**28
BIAS_MIN_SCORED = 200
BIAS_BLOCK = 2**22


def support_bias(
    model: RidgeModel,
    category: CategoryData,
    support: RidgeSupport,
    factors: Tensor,
    gram: Tensor,
) -> Tensor:
    """The support bias of :data:`BIAS_GRID` that best predicts held-out support (a launch's
    own cross-validation), for models trained where no validation category could choose it.

    The users with support are split, seeded, into :data:`BIAS_PARTS` parts and each part is
    held out once: the items are solved from the other parts' support, and each bias is scored
    by the NDCG@10 of the held-out users' own support items over every item of the category,
    pooled over the users scored (at most :data:`BIAS_SCORED_USERS`, fewer in large
    catalogues: a seeded sample spread over the parts). Ties keep the smaller bias (fold-in
    first); fewer than :data:`MIN_HELD_OUT` users with support keep the model's own bias.
    """
    users = torch.unique(support.users)
    if category.n_items <= 10 or len(users) < MIN_HELD_OUT:  # NDCG@10 cannot tell biases apart
        return model.params["support_bias"].clone()
    rng = np.random.default_rng(derived_seed(model.config.seed, f"support-bias:{category.name}"))
    shuffled = users[torch.from_numpy(rng.permutation(len(users)))]
    most = max(BIAS_MIN_SCORED, min(BIAS_SCORED_USERS, BIAS_SCORED_ENTRIES // category.n_items))
    scored_per_part = -(-most // BIAS_PARTS)
    rows = max(1, BIAS_BLOCK // category.n_items)  # users scored at once
    values: dict[float, list[np.ndarray]] = {bias: [] for bias in BIAS_GRID}
    for held in torch.tensor_split(shuffled, BIAS_PARTS):
        out = torch.isin(support.users, held)
        rest = RidgeSupport(
            support.users[~out], support.items[~out], support.weights[~out], support.n_items
        )
        with torch.no_grad():
            vectors = fold_in(model.params, factors, rest, category.item_x, gram=gram)
        unbiased = {**model.params, "support_bias": torch.zeros((), dtype=torch.float64)}
        popularity = torch.log1p(rest.counts)
        scored = held[:scored_per_part]  # the part's order is already a seeded shuffle
        for block in torch.split(scored, rows):
            with torch.no_grad():
                dots = ridge_scores(unbiased, factors[block], vectors, rest.counts)
            relevant = torch.isin(support.users, block)  # their support: all held out
            row_of = torch.full((int(block.max()) + 1,), -1, dtype=torch.long)
            row_of[block] = torch.arange(len(block))
            lists = _BiasedLists(dots, popularity)
            own = _HeldOut(
                row_of[support.users[relevant]], support.items[relevant], len(block), len(dots[0])
            )
            for bias in BIAS_GRID:
                values[bias].append(own.ndcg_at_10(lists.top_10(bias)))
    best = (-1.0, 0.0)
    for bias in BIAS_GRID:
        score = float(np.nanmean(np.concatenate(values[bias])))
        if score > best[0]:
            best = (score, bias)
    return torch.tensor(best[1], dtype=torch.float64)


class _BiasedLists:
    """Each user's top 10 of ``dots + bias * popularity`` for several biases, ties to the lower
    item index (:func:`~metarec.ranking.metrics.rank_top_k`'s rule), without a pass over every
    item per bias: the items without support (popularity 0) score ``dots`` whatever the bias,
    so their top 10 is found once, and a bias ranks only the supported items; the overall top
    10 lies in the union of the two top 10s."""

    def __init__(self, dots: Tensor, popularity: Tensor) -> None:
        self.dots = dots
        self.supported = torch.nonzero(popularity > 0).squeeze(1)
        self.supported_dots = dots[:, self.supported]  # cut once, read by every bias
        self.supported_popularity = popularity[self.supported]
        self.popularity = popularity
        unsupported = torch.nonzero(popularity == 0).squeeze(1)
        k = min(10, len(unsupported))
        self.unsupported_top = (
            unsupported[rank_top_k(dots[:, unsupported], k)]
            if k
            else torch.empty((len(dots), 0), dtype=torch.long)
        )

    def top_10(self, bias: float) -> Tensor:
        """(b, 10) item positions, best first."""
        k = min(10, len(self.supported))
        if k:
            scores = self.supported_dots + bias * self.supported_popularity
            supported_top = self.supported[rank_top_k(scores, k)]
            candidates = torch.cat([supported_top, self.unsupported_top], dim=1)
        else:
            candidates = self.unsupported_top
        scores = self.dots.gather(1, candidates) + bias * self.popularity[candidates]
        # best score first, then the lower item index: a sort by index, then a stable one
        by_index = candidates.sort(dim=1).indices
        candidates, scores = candidates.gather(1, by_index), scores.gather(1, by_index)
        order = scores.sort(dim=1, descending=True, stable=True).indices[:, :10]
        return candidates.gather(1, order)


class _HeldOut:
    """The held-out users' own support items, to score top-10 lists against: NDCG@10 by
    ``ranking_metrics``' own formula (:func:`~metarec.ranking.metrics.top_k_metrics`, from the
    lists' hits), without a dense (users x items) relevance mask; NaN for a user with none."""

    def __init__(self, rows: Tensor, items: Tensor, n_users: int, n_items: int) -> None:
        self.n_items = n_items
        self.codes = torch.unique(rows * n_items + items)  # a repeated positive counts once
        self.n_relevant = torch.bincount(self.codes // n_items, minlength=n_users)

    def ndcg_at_10(self, top: Tensor) -> np.ndarray:
        """(b,) NDCG@10 of top-10 lists (b, 10), NaN for a user without relevant items."""
        rows = torch.arange(len(top))[:, None]
        hits = torch.isin(rows * self.n_items + top, self.codes)
        ndcg = top_k_metrics(hits, self.n_relevant, [10])[("ndcg", 10)]
        return torch.where(self.n_relevant > 0, ndcg, torch.nan).numpy()
