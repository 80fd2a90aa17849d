"""Ranking metrics over the full candidate set of a category (PROTOCOL.md §2 items 5 and 6).

Every function is vectorised over users: a score matrix ``(n_users, n_items)`` goes in, one value
per user comes out. There are no sampled negatives: a user's candidates are every item of the
category except the ones ``exclude`` marks (the user's own support items). Formulas and the
conventions they follow are written out in ``docs/METRICS.md``.

Example:
    >>> import torch
    >>> scores = torch.tensor([[0.9, 0.1, 0.5, 0.3]])
    >>> relevant = torch.tensor([[False, False, True, True]])
    >>> exclude = torch.tensor([[True, False, False, False]])  # item 0 was in the support set
    >>> rank_top_k(scores, 2, exclude).tolist()
    [[2, 3]]
    >>> float(ranking_metrics(scores, relevant, ks=(2,), exclude=exclude)[("ndcg", 2)][0])
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from metarec.errors import ConfigError, DataError
from metarec.ranking.retrieval import top_k_positions

TOP_K_METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "hit_rate", "mrr", "map")
"""Metrics reported at each cutoff ``k``; ``auc`` is reported once, with ``k`` = ``None``."""

MetricKey = tuple[str, int | None]

# Users are processed in blocks so that the (block, n_items) temporaries stay in cache and small
# (about 8 MB each at 4,000 items) whatever the number of users: 4x faster than one block.
_USER_BLOCK = 256


def rank_top_k(
    scores: Tensor | np.ndarray, k: int, exclude: Tensor | np.ndarray | None = None
) -> Tensor:
    """The ``k`` best candidate items of each user, best first.

    Ties are broken by the lower item index, so the result is deterministic (``torch.topk`` alone
    makes no promise about which of several equal scores it returns).

    Args:
        scores: ``(n_users, n_items)`` real scores, higher is better; NaN is refused.
        k: list length, ``1 <= k <= `` the smallest number of candidates of any user.
        exclude: ``(n_users, n_items)`` bool, True where the item is not a candidate for that
            user (their support items). None: every item is a candidate.

    Returns:
        ``(n_users, k)`` int64 item indices, best first, on the device of ``scores``.

    Raises:
        DataError: shapes disagree, ``scores`` holds NaN, or some user has fewer than ``k``
            candidates.
        ConfigError: ``k < 1``.
    """
    scores = _as_scores(scores)
    exclude = _as_mask(exclude, "exclude", scores.shape)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    n_candidates = _candidate_counts(scores, exclude)
    if n_candidates.numel() and k > int(n_candidates.min()):
        raise DataError(
            f"k={k} but {int((n_candidates < k).sum())} user(s) have fewer candidates (smallest: "
            f"{int(n_candidates.min())}); lower k or give those users more candidate items"
        )
    blocks = [
        _top_k(scores[rows], k, None if exclude is None else exclude[rows])
        for rows in _user_blocks(scores.shape[0])
    ]
    return torch.cat(blocks) if blocks else scores.new_empty((0, k), dtype=torch.long)


def ranking_metrics(
    scores: Tensor | np.ndarray,
    relevant: Tensor | np.ndarray,
    ks: Sequence[int] = (5, 10, 20),
    exclude: Tensor | np.ndarray | None = None,
) -> dict[MetricKey, np.ndarray]:
    """Per-user ranking metrics at each cutoff, plus AUC over the full candidate list.

    Top-k metrics rank with :func:`rank_top_k` (ties to the lower item index); AUC gives tied
    (relevant, non-relevant) pairs half credit, so it does not depend on item order.

    A user whose relevant items are all excluded (or who has none) has no defined value: their
    entries are NaN in every array. AUC is also NaN for a user whose candidates are all relevant.
    Select users with ``~np.isnan(values)`` before averaging; the count is ``n_users`` of a record.

    Args:
        scores: ``(n_users, n_items)`` real scores, higher is better; NaN is refused.
        relevant: ``(n_users, n_items)`` bool, True for the user's held-out (query) positives.
            Relevant items that are also excluded are not candidates and are ignored.
        ks: cutoffs; each must be smaller than every user's number of candidates.
        exclude: ``(n_users, n_items)`` bool, True where the item is not a candidate (support
            items). None: every item is a candidate.

    Returns:
        ``{(name, k): values}`` for each name in :data:`TOP_K_METRICS` and each ``k`` in ``ks``,
        and ``("auc", None)``; each ``values`` is a float64 array of shape ``(n_users,)``.

    Raises:
        DataError: shapes or dtypes disagree, ``scores`` holds NaN, or ``k >= `` the number of
            candidates of some user.
        ConfigError: ``ks`` is empty or holds a ``k < 1``.
    """
    return ranked_metrics(scores, relevant, ks, exclude)[0]


def ranked_metrics(
    scores: Tensor | np.ndarray,
    relevant: Tensor | np.ndarray,
    ks: Sequence[int] = (5, 10, 20),
    exclude: Tensor | np.ndarray | None = None,
) -> tuple[dict[MetricKey, np.ndarray], Tensor]:
    """:func:`ranking_metrics` and the top-``max(ks)`` lists they were read from.

    The lists are :func:`rank_top_k`'s at ``max(ks)``; a shorter list is their start (ties go
    to the lower index in both), so a caller that needs the lists too ranks once, not twice.
    """
    scores = _as_scores(scores)
    relevant_mask = _as_mask(relevant, "relevant", scores.shape)
    if relevant_mask is None:
        raise DataError("relevant is required: a bool tensor shaped like scores")
    exclude = _as_mask(exclude, "exclude", scores.shape)
    ks = _check_ks(ks, _candidate_counts(scores, exclude))

    blocks = [
        _block_metrics(
            scores[rows], relevant_mask[rows], ks, None if exclude is None else exclude[rows]
        )
        for rows in _user_blocks(scores.shape[0])
    ]
    keys: list[MetricKey] = [(name, k) for name in TOP_K_METRICS for k in ks] + [("auc", None)]
    values: dict[MetricKey, np.ndarray] = {
        key: torch.cat([block[key] for block, _ in blocks]).cpu().numpy() if blocks else np.empty(0)
        for key in keys
    }
    top = (
        torch.cat([top for _, top in blocks])
        if blocks
        else scores.new_empty((0, max(ks)), dtype=torch.long)
    )
    return values, top


def coverage(top_k: Tensor | np.ndarray, n_candidates: int) -> float:
    """Catalogue coverage: the share of the category's items that appear in any top-k list.

    Args:
        top_k: ``(n_users, k)`` item indices, as returned by :func:`rank_top_k`.
        n_candidates: catalogue size, the number of items of the category.

    Returns:
        ``|distinct items in all lists| / n_candidates``, in [0, 1].

    Raises:
        DataError: ``n_candidates < 1`` or an index lies outside ``[0, n_candidates)``.
    """
    top_k = torch.as_tensor(top_k)
    if n_candidates < 1:
        raise DataError(f"n_candidates must be at least 1, got {n_candidates}")
    if top_k.numel() == 0:
        return 0.0
    if int(top_k.min()) < 0 or int(top_k.max()) >= n_candidates:
        raise DataError(
            f"top_k holds item indices in [{int(top_k.min())}, {int(top_k.max())}] but the "
            f"catalogue has {n_candidates} items; pass the category's item count as n_candidates"
        )
    return torch.unique(top_k).numel() / n_candidates


def _user_blocks(n_users: int) -> list[slice]:
    return [slice(start, start + _USER_BLOCK) for start in range(0, n_users, _USER_BLOCK)]


def _block_metrics(
    scores: Tensor, relevant: Tensor, ks: list[int], exclude: Tensor | None
) -> tuple[dict[MetricKey, Tensor], Tensor]:
    """All metrics for one block of users (``(block,)`` float64 tensors, NaN where undefined)
    and the block's top-``max(ks)`` lists."""
    candidate_relevant = relevant if exclude is None else _and_not(relevant, exclude)
    n_relevant = _count_true(candidate_relevant)
    top = _top_k(scores, max(ks), exclude)
    hits = candidate_relevant.gather(1, top)
    metrics = top_k_metrics(hits, n_relevant, ks)
    metrics[("auc", None)] = _auc(scores, candidate_relevant, exclude)
    undefined = n_relevant == 0
    return {key: values.masked_fill(undefined, torch.nan) for key, values in metrics.items()}, top


def top_k_metrics(hits: Tensor, n_relevant: Tensor, ks: list[int]) -> dict[MetricKey, Tensor]:
    """Top-k metrics from the hit list (what :func:`ranking_metrics` computes once it has
    ranked; also for callers that rank their own lists, such as a launch's choice of support
    bias, :mod:`metarec.ranking.launch_bias`).

    Args:
        hits: ``(n_users, max_k)`` bool, True where the item at that rank is relevant.
        n_relevant: ``(n_users,)`` relevant candidates per user (rows with 0 are masked later).
        ks: cutoffs, each at most ``max_k``.

    Returns:
        ``{(name, k): (n_users,) float64}``.
    """
    max_k = hits.shape[1]
    gains = hits.double()
    ranks = torch.arange(1, max_k + 1, dtype=torch.float64, device=hits.device)
    discounts = 1.0 / torch.log2(ranks + 1.0)
    hits_through = gains.cumsum(dim=1)  # hits within ranks 1..i
    dcg_through = (gains * discounts).cumsum(dim=1)
    ideal_dcg_through = discounts.cumsum(dim=0)  # DCG of a list with i relevant items on top
    precision_sum_through = (gains * hits_through / ranks).cumsum(dim=1)  # sum of P@i * rel_i
    any_hit = hits.any(dim=1)
    # argmax returns the first maximal index; users without a hit get rank max_k + 1
    first_hit = torch.where(any_hit, hits.to(torch.uint8).argmax(dim=1) + 1, max_k + 1).double()
    n_relevant = n_relevant.double()

    out: dict[MetricKey, Tensor] = {}
    for k in ks:
        n_hits = hits_through[:, k - 1]
        best_possible = torch.clamp(n_relevant, 1, k)  # min(|rel|, k); 0-relevant rows masked
        out[("precision", k)] = n_hits / k
        out[("recall", k)] = n_hits / n_relevant.clamp(min=1)
        out[("ndcg", k)] = dcg_through[:, k - 1] / ideal_dcg_through[best_possible.long() - 1]
        out[("hit_rate", k)] = (n_hits > 0).double()
        out[("mrr", k)] = torch.where(first_hit <= k, 1.0 / first_hit, 0.0)
        out[("map", k)] = precision_sum_through[:, k - 1] / best_possible
    return out


def _auc(scores: Tensor, relevant: Tensor, exclude: Tensor | None) -> Tensor:
    """Share of (relevant, non-relevant candidate) pairs ordered correctly, ties counting 1/2.

    This is the Mann-Whitney U statistic divided by ``n_pos * n_neg``: a relevant item scoring
    ``s`` earns the negatives below ``s`` plus half of those equal to it. Users with few relevant
    items count those negatives with one comparison pass per relevant item; the others sort
    their negatives once and read the counts off two binary searches. Both give the same
    integers; which is cheaper depends on the number of relevant items against ``log(n_items)``.

    Args:
        scores: ``(n_users, n_items)``.
        relevant: ``(n_users, n_items)`` bool, relevant candidates (excluded items are False).
        exclude: ``(n_users, n_items)`` bool or None.

    Returns:
        ``(n_users,)`` float64; NaN where a user has no relevant or no non-relevant candidate.
    """
    taken = relevant if exclude is None else _or(relevant, exclude)  # not a negative
    negative = _not(taken)
    n_negative = _count_true(negative)
    n_relevant = _count_true(relevant)
    # Non-negatives are set to +inf; clamping the counts to n_negative keeps a real +inf score
    # from being counted against them.
    negatives = _filled(scores, taken, torch.inf)
    halves = torch.zeros_like(n_negative)  # 2 x (negatives below) + (negatives tied), per user
    light = (
        n_relevant <= _counting_width(scores.shape[1])
        if scores.device.type == "cpu"
        else torch.zeros_like(n_relevant, dtype=torch.bool)
    )
    if bool(light.any()):
        # over the whole block (a heavy row's relevant items are left out, so it counts 0):
        # cheaper than copying the light rows out
        counted = relevant if bool(light.all()) else relevant & light[:, None]
        halves = _halves_by_counting(negatives, scores, counted, n_negative)
    heavy = ~light
    if bool(heavy.any()):
        halves[heavy] = _halves_by_sorting(
            negatives[heavy], scores[heavy], relevant[heavy], n_negative[heavy]
        )
    pairs = n_relevant.double() * n_negative.double()
    return torch.where(pairs > 0, halves.double() / 2.0 / pairs.clamp(min=1.0), torch.nan)


def _counting_width(n_items: int) -> int:
    """Most relevant items per user for which counting beats sorting.

    Counting costs two comparison passes over the row per relevant item; numpy's sort of a row
    costs 14 passes at 1.7k items, 19 at 3.7k, 35 at 20k and 43 at 93k (measured), growing
    with ``log n``. The width ``0.75 log2(n)`` (8 at 1.7k, 12 at 93k) is about break-even at
    the small end and well ahead at the large end, where the time goes.
    """
    return max(1, int(0.75 * np.log2(max(n_items, 2))))


_ROW_COUNTING_ITEMS = 4096
"""Rows at least this long are counted one relevant item at a time (:func:`_halves_by_counting`).

numpy's ``count_nonzero`` of a whole 1-D mask is several times faster than its per-row count of
a 2-D one, and a row has only its own relevant items to count where the column pass runs every
user of the block as often as the block's most relevant user. Timed alone (256 users, each with 1
to the counting width's relevant items, a throwaway script): 438 -> 88 ms at 93k items (width
12), 16 -> 8 ms at 3.5k (width 8); below
about 2k items the column pass won where every user had many relevant items. All metrics of a
block at 93k items (``benchmarks/bench_metrics.py``, the tie-break apart): 1.13x. Both paths
give the same integers."""


def _halves_by_counting(
    negatives: Tensor, scores: Tensor, relevant: Tensor, n_negative: Tensor
) -> Tensor:
    """2 x (negatives below) + (negatives tied), summed over each user's relevant items, by
    comparing each relevant score with the whole row (CPU; numpy counts about 8x faster)."""
    if scores.shape[1] >= _ROW_COUNTING_ITEMS:
        return _halves_row_by_row(negatives, scores, relevant, n_negative)
    positive_scores, is_positive = _pack_rows(scores, relevant)
    rows = negatives.numpy()
    limit = n_negative.numpy()
    total = np.zeros(rows.shape[0], dtype=np.int64)
    for column, valid in zip(positive_scores.numpy().T, is_positive.numpy().T, strict=True):
        threshold = column[:, None]
        below = np.count_nonzero(rows < threshold, axis=1)
        through = np.minimum(np.count_nonzero(rows <= threshold, axis=1), limit)
        total += (below + through) * valid
    return torch.from_numpy(total).to(n_negative.dtype)


def _halves_row_by_row(
    negatives: Tensor, scores: Tensor, relevant: Tensor, n_negative: Tensor
) -> Tensor:
    """:func:`_halves_by_counting` one user and one relevant item at a time (long rows)."""
    rows = negatives.numpy()
    limit = n_negative.numpy()
    users, items = np.nonzero(relevant.numpy())  # row-major: each user's items together
    positive_scores = scores.numpy()[users, items]
    bounds = np.searchsorted(users, np.arange(rows.shape[0] + 1))
    total = np.zeros(rows.shape[0], dtype=np.int64)
    for user in np.flatnonzero(bounds[1:] > bounds[:-1]):
        row, halves = rows[user], 0
        for score in positive_scores[bounds[user] : bounds[user + 1]]:
            below = int(np.count_nonzero(row < score))
            halves += below + min(int(np.count_nonzero(row <= score)), int(limit[user]))
        total[user] = halves
    return torch.from_numpy(total).to(n_negative.dtype)


def _halves_by_sorting(
    negatives: Tensor, scores: Tensor, relevant: Tensor, n_negative: Tensor
) -> Tensor:
    """:func:`_halves_by_counting` by sorting each user's negatives once (+inf ones last)."""
    sorted_negatives = _sort_rows(negatives)
    positive_scores, is_positive = _pack_rows(scores, relevant)
    limit = n_negative[:, None]
    below = torch.searchsorted(sorted_negatives, positive_scores, side="left")
    through = torch.searchsorted(sorted_negatives, positive_scores, side="right")
    return ((below.clamp(max=limit) + through.clamp(max=limit)) * is_positive).sum(dim=1)


def _sort_rows(values: Tensor) -> Tensor:
    """Each row sorted ascending (values only)."""
    if values.device.type == "cpu":
        # numpy 2's vectorised sort is about 10x faster than torch.sort on CPU (measured at
        # 6,000 x 4,000 float32: 0.06 s against 0.6 to 1.3 s) and AUC needs no argsort.
        return torch.from_numpy(np.sort(values.numpy(), axis=1))
    return values.sort(dim=1).values


def _pack_rows(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The masked entries of each row, moved to the left of a ``(n_rows, max_count)`` matrix.

    Returns:
        ``packed`` with each row's selected values first (zeros after), and ``valid`` (bool, same
        shape) marking the real entries.
    """
    counts = _count_true(mask)
    width = int(counts.max()) if counts.numel() else 0
    rows, cols = mask.nonzero(as_tuple=True)
    row_starts = counts.cumsum(dim=0) - counts
    slots = torch.arange(rows.numel(), device=mask.device) - row_starts[rows]
    packed = values.new_zeros((mask.shape[0], width))
    packed[rows, slots] = values[rows, cols]
    valid = torch.zeros_like(packed, dtype=torch.bool)
    valid[rows, slots] = True
    return packed, valid


def _top_k(scores: Tensor, k: int, exclude: Tensor | None) -> Tensor:
    """:func:`rank_top_k` without validation; every user must have at least ``k`` candidates.

    ``topk`` finds the k-th best candidate score; every candidate above it is taken, then the
    lowest-index candidates equal to it fill the remaining places. That selects exactly ``k`` per
    user, and a stable sort of those ``k`` (already in index order) fixes the order.
    """
    masked = scores if exclude is None else _filled(scores, exclude, -torch.inf)
    # the k-th largest value (which positions hold the k largest does not matter here)
    kth_best = masked.gather(1, top_k_positions(masked, k)).amin(dim=1, keepdim=True)
    above = _compared(masked, kth_best, "greater")
    tied = _compared(masked, kth_best, "equal")
    if exclude is not None:
        # an excluded -inf is not a tied candidate when the k-th best is -inf
        tied = _and_not(tied, exclude)
    places_left = k - _count_true(above)[:, None]
    chosen = above | tied
    # Only rows with more tied candidates than places need the running count (a full-row scan);
    # usually the k-th best score is unique and no row does.
    crowded = _count_true(tied) > places_left.squeeze(1)
    if bool(crowded.any()):
        first_tied = tied[crowded].cumsum(dim=1, dtype=torch.int32) <= places_left[crowded]
        chosen[crowded] = above[crowded] | (tied[crowded] & first_tied)
    indices = chosen.nonzero()[:, 1].view(scores.shape[0], k)  # row-major: ascending per user
    order = scores.gather(1, indices).sort(dim=1, descending=True, stable=True).indices
    return indices.gather(1, order)


def _as_scores(scores: Tensor | np.ndarray) -> Tensor:
    scores = torch.as_tensor(scores).detach()  # metrics are not differentiated
    if scores.dim() != 2:
        raise DataError(f"scores must be (n_users, n_items), got shape {tuple(scores.shape)}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise DataError(f"scores must be real numbers, got dtype {scores.dtype}")
    # -inf marks excluded items, so scores need a float type; float64 holds ints exactly
    if not scores.is_floating_point():
        scores = scores.double()
    elif scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    if _any_nan(scores):
        raise DataError(
            f"scores hold NaN for {int(scores.isnan().any(dim=1).sum())} user(s); NaN has no "
            "rank: fix the model or replace NaN with -inf to rank those items last"
        )
    return scores


def _as_mask(mask: Tensor | np.ndarray | None, name: str, shape: torch.Size) -> Tensor | None:
    if mask is None:
        return None
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise DataError(f"{name} must be a bool tensor, got dtype {mask.dtype}; pass `{name} > 0`")
    if mask.shape != shape:
        raise DataError(
            f"{name} has shape {tuple(mask.shape)} but scores have {tuple(shape)}; "
            "both must be (n_users, n_items)"
        )
    return mask


def _candidate_counts(scores: Tensor, exclude: Tensor | None) -> Tensor:
    """``(n_users,)`` number of candidate items per user."""
    n_users, n_items = scores.shape
    if exclude is None:
        return torch.full((n_users,), n_items, dtype=torch.long, device=scores.device)
    return n_items - _count_true(exclude)


# Whole-block elementwise operations go through numpy on CPU: with one thread its comparisons,
# logical operations, fills and NaN test of 512 x 93,000 scores were 2x to 4x faster than
# torch's (a throwaway microbenchmark, 5 December), and they give the same values.


def _compared(values: Tensor, threshold: Tensor, op: str) -> Tensor:
    """``values > threshold`` (op "greater") or ``==`` ("equal"), a bool tensor (``threshold``
    broadcasts)."""
    if values.device.type == "cpu":
        return torch.from_numpy(getattr(np, op)(values.numpy(), threshold.numpy()))
    return values > threshold if op == "greater" else values == threshold


def _filled(values: Tensor, where: Tensor, fill: float) -> Tensor:
    """``values.masked_fill(where, fill)``, a new tensor."""
    if values.device.type != "cpu":
        return values.masked_fill(where, fill)
    out = values.numpy().copy()
    np.copyto(out, fill, where=where.numpy())
    return torch.from_numpy(out)


def _or(a: Tensor, b: Tensor) -> Tensor:
    return torch.from_numpy(a.numpy() | b.numpy()) if a.device.type == "cpu" else a | b


def _and_not(a: Tensor, b: Tensor) -> Tensor:
    return torch.from_numpy(a.numpy() & ~b.numpy()) if a.device.type == "cpu" else a & ~b


def _not(a: Tensor) -> Tensor:
    return torch.from_numpy(~a.numpy()) if a.device.type == "cpu" else ~a


def _any_nan(values: Tensor) -> bool:
    if values.device.type == "cpu":
        return bool(np.isnan(values.numpy()).any())
    return bool(values.isnan().any())


def _count_true(mask: Tensor) -> Tensor:
    """``(n_rows,)`` int64 number of True entries per row of a 2-D bool mask.

    On CPU numpy counts about 10x faster than ``torch.sum`` of a bool tensor (measured at
    256 x 93,000: 8 ms against 99 ms), and the metrics count full rows several times per block.
    """
    if mask.device.type == "cpu":
        return torch.from_numpy(np.count_nonzero(mask.numpy(), axis=1).astype(np.int64))
    return mask.sum(dim=1)


def _check_ks(ks: Sequence[int], n_candidates: Tensor) -> list[int]:
    """Validated, de-duplicated cutoffs in increasing order."""
    cutoffs = sorted(set(ks))
    if not cutoffs or cutoffs[0] < 1:
        raise ConfigError(f"ks must be one or more cutoffs >= 1, got {tuple(ks)}")
    if n_candidates.numel() == 0:
        return cutoffs
    fewest = int(n_candidates.min())
    if cutoffs[-1] >= fewest:
        raise DataError(
            f"k={cutoffs[-1]} must be smaller than every user's number of candidates, but "
            f"{int((n_candidates <= cutoffs[-1]).sum())} user(s) have at most {cutoffs[-1]} "
            f"(smallest: {fewest}); with k >= candidates the top-k list is the whole catalogue. "
            "Lower ks or leave such users out"
        )
    return cutoffs
