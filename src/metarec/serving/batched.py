"""Many users of one category ranked in one pass: the batched twin of ``retrieve_top_k``.

The service groups concurrent requests of a category (:mod:`metarec.serving.batcher`), and batch
scoring (:mod:`metarec.serving.batch`) every user of one; both rank them here together.
:func:`retrieve_top_k_many` is a *tested twin* of one reference function,
:func:`metarec.ranking.retrieval.retrieve_top_k`: the same steps (fold the user into the first
layer, linearise the head at the reference items, retrieve a short list by dot product, re-rank
it exactly), done for b users at once, through the same functions, which take a batch
(:func:`~metarec.models.folded.fold_users`, :func:`~metarec.models.folded.head`,
:func:`~metarec.models.folded.head_gradient`). The first layer of each user with their own
items (the reference items, then their short list) is
:func:`~metarec.ranking.short_lists.short_list_h1`, the tested twin of
:meth:`~metarec.models.folded.FoldedLayer.h1_own` that reads each item's attributes sparsely;
the queries are :func:`~metarec.ranking.retrieval.queries`, ``as_linear``'s weights times the
gradient without forming them. Users the reference would score exactly (a category or short
list too small for retrieval) are ranked by the reference itself, one at a time.
``tests/serving/test_batched.py`` checks the twin gives the reference's lists (scores equal to
float rounding), ``tests/ranking/test_retrieval_batched.py`` its pieces.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from metarec.models.folded import UserSide, fold_users, head, head_gradient
from metarec.models.scorer import Params
from metarec.ranking import CategoryRanker, UserInputs
from metarec.ranking.retrieval import (
    ItemIndex,
    Projection,
    asinh,
    column_weights,
    queries,
    retrieve_top_k,
    top_k_positions,
)
from metarec.ranking.short_lists import short_list_h1, short_list_rows
from metarec.tasks import CategoryData, SupportState

_PASS_USERS = 256  # users ranked per pass
_PASS_FLOATS = 4_000_000  # a pass's (users x items) scores held at once: 16 MB
_MAX_WORKERS = 4  # passes ranked at once (each holds its own temporaries)

Ranked = tuple[Tensor, Tensor]  # positions (k,) best first, and their exact scores (k,)


def rank_many(
    ranker: CategoryRanker,
    users: Sequence[UserInputs],
    ks: Sequence[int],
    *,
    index: ItemIndex | None,
    projection: Projection | None,
    short_list: int,
) -> list[Ranked]:
    """``[ranker.top_k(user, k, ...) for user, k in zip(users, ks)]``, in one pass when it can.

    Users-as-tasks rankers adapt each user's own params, so their users are ranked one by one.
    A lone user goes through the batched pass too: the same list, and at 1e5 items about 0.15
    ms less than the one-user reference (fewer operations per call).
    """
    if ranker.per_user:
        return [
            ranker.top_k(user, k, index=index, projection=projection, short_list=short_list)
            for user, k in zip(users, ks, strict=True)
        ]
    return retrieve_top_k_many(
        ranker.params,
        ranker.category,
        ranker.state,
        index,
        projection,
        users,
        ks,
        short_list=short_list,
    )


def retrieve_top_k_many(
    params: Params,
    category: CategoryData,
    state: SupportState,
    index: ItemIndex | None,
    projection: Projection | None,
    users: Sequence[UserInputs],
    ks: Sequence[int],
    *,
    short_list: int,
) -> list[Ranked]:
    """Top-``ks[u]`` items for each of b users: ``retrieve_top_k`` for each, batched.

    Users are ranked in passes of up to 256 (fewer in large categories, so that a pass's
    ``(users, items)`` scores stay under 16 MB), as many passes at once as torch has threads
    (at most 4): any number of users in bounded memory. On the 10k-item benchmark passes of
    128 to 1,024 users ranked equally fast per user, so the smaller bound costs nothing. The
    lists do not depend on the passes (``tests/cli/test_batch.py``).

    Args:
        params, category, state, index, projection, short_list: as ``retrieve_top_k``.
        users: (b) the users' inputs; each user's ``seen`` items are never returned.
        ks: (b) how many items for each user.

    Returns:
        For each user, positions (k',) best first and their exact scores (k').
    """
    results: list[Ranked | None] = [None] * len(users)
    n = category.n_items
    groups: dict[int, list[int]] = {}  # short-list length -> users retrieved with it
    for i, (user, k) in enumerate(zip(users, ks, strict=True)):
        size = max(short_list, k)
        if index is None or projection is None or _few_unseen(user, n, size) or k < 1:
            results[i] = retrieve_top_k(
                params, category, state, index, projection, user, k, short_list=short_list
            )
        else:
            groups.setdefault(size, []).append(i)
    per_pass = max(1, min(_PASS_USERS, _PASS_FLOATS // max(1, n)))
    passes = [
        (members[start : start + per_pass], size)
        for size, members in groups.items()
        for start in range(0, len(members), per_pass)
    ]

    def rank_pass(part: list[int], size: int) -> None:
        assert index is not None and projection is not None
        ranked = _retrieve_group(
            params,
            category,
            state,
            index,
            projection,
            [users[i] for i in part],
            [ks[i] for i in part],
            size,
        )
        for i, found in zip(part, ranked, strict=True):
            results[i] = found  # passes write disjoint users

    # Passes side by side, one per torch thread: a pass's operations are too small for torch to
    # spread one over two cores (two threads ranked no faster than one), but torch releases the
    # GIL inside them, so two passes at once use both (1.45x on the idle 2-core machine).
    workers = min(len(passes), torch.get_num_threads(), _MAX_WORKERS)
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="metarec-rank") as pool:
            for done in [pool.submit(rank_pass, part, size) for part, size in passes]:
                done.result()
    else:
        for part, size in passes:
            rank_pass(part, size)
    return [r for r in results if r is not None]


def _few_unseen(user: UserInputs, n_items: int, size: int) -> bool:
    """Whether ``size`` items or fewer are left that the user has not seen (``seen`` may repeat
    an item: its distinct items are counted only where that can decide)."""
    if n_items - len(user.seen) > size:
        return False  # the distinct items seen are no more, so the items left no fewer
    return n_items - len(torch.unique(user.seen)) <= size


def _distinct(positions: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``torch.unique(positions, return_inverse=True)`` of item positions below ``n``, by
    marking them in an ``n``-long table instead of sorting (70 -> 24 us for 8 x 300 of 1e5)."""
    flat = positions.numpy().ravel()
    marked = np.zeros(n, dtype=bool)
    marked[flat] = True
    distinct = np.flatnonzero(marked)
    rank = np.empty(n, dtype=np.int64)
    rank[distinct] = np.arange(len(distinct))
    return torch.from_numpy(distinct), torch.from_numpy(rank[flat].reshape(positions.shape))


def _user_side(users: Sequence[UserInputs], cf_dim: int) -> UserSide:
    """``UserInputs.side`` of many users, stacked."""
    support_n = torch.stack([user.support_n for user in users])
    support_sum = torch.stack([user.support_sum for user in users])
    return UserSide(
        profile=torch.stack([user.profile for user in users]),
        support=support_sum / support_n.clamp_min(1.0)[:, None],
        n_other=torch.stack([user.n_other for user in users]),
        n_support=support_n,
        cf_dim=cf_dim,
    )


def _retrieve_group(
    params: Params,
    category: CategoryData,
    state: SupportState,
    index: ItemIndex,
    projection: Projection,
    users: list[UserInputs],
    ks: list[int],
    size: int,
) -> list[Ranked]:
    """b users who all retrieve a short list of ``size`` items (``retrieve_top_k``'s else)."""
    b = len(users)
    # inference mode, not only no_grad: no version counters or view tracking on the call's
    # ~280 torch operations (T(8) 3.8-4.1 -> 3.6-3.7 ms); nothing made here outlives the call, so
    # no inference tensor can reach an adaptation's autograd
    with torch.inference_mode():
        layer = fold_users(params, _user_side(users, category.cf_dim))  # every user at once
        # the queries (retrieval's _query, per user): the head's mean gradient at the
        # reference items, mapped back through the folded first layer
        weights = column_weights(layer)
        at_references = torch.arange(index.reference_items.n).expand(b, -1)
        gradient = head_gradient(
            params, short_list_h1(layer, weights, index.reference_rows, at_references)
        )  # (b, h)
        q = queries(layer, gradient)  # (b, 2D + 2)
        projected = torch.cat([q[:, :-2] @ projection.transform.T, q[:, -2:]], dim=1)
        approx = projected @ projection.columns  # (b, n)
        affinity = gradient @ layer.column("affinity")  # (b,)
        # unsupported items have affinity asinh(0) = 0: only supported rows contribute
        approx.index_add_(
            1,
            index.supported,
            asinh(layer.cf_unit @ index.supported_unit_sum.T).mul_(affinity[:, None]),
        )
        rows = np.repeat(np.arange(b), [len(user.seen) for user in users])
        approx.numpy()[rows, np.concatenate([user.seen.numpy() for user in users])] = -np.inf
        candidates = top_k_positions(approx, size)  # (b, size)
        # the exact re-rank: the batch's distinct candidates cut once, each user's list
        # pointing into them (most users share the category's top items)
        distinct, own = _distinct(candidates, category.n_items)  # own: (b, size)
        short = short_list_rows(category, state, index.attributes, distinct)
        exact = head(params, short_list_h1(layer, weights, short, own))
        # a stable sort: equal scores keep candidate order, as the reference
        order = torch.sort(exact, dim=1, descending=True, stable=True).indices
        top = max(ks)
        positions = candidates.gather(1, order[:, :top])
        scores = exact.gather(1, order[:, :top])
    return [(positions[row, :k], scores[row, :k]) for row, k in enumerate(ks)]
