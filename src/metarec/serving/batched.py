"""Many users of one category ranked in one pass: the batched twin of ``retrieve_top_k``.

The service groups concurrent requests of a category (:mod:`metarec.serving.batcher`) and ranks
them here together. :func:`retrieve_top_k_many` is a *tested twin* of one reference function,
:func:`metarec.ranking.retrieval.retrieve_top_k`: the same steps (fold the user into the first
layer, linearise the head at the reference items, retrieve a short list by dot product, re-rank
it exactly), done for b users at once, through the same functions where they already take a
batch (:func:`~metarec.models.folded.fold_users`, :meth:`~metarec.models.folded.FoldedLayer.h1`)
and through ``torch.func.vmap`` of the reference function where it takes one user
(:func:`~metarec.models.folded.head_gradient`). The exact re-rank pairs each user with their
own short list (:meth:`~metarec.models.folded.FoldedLayer.h1_own`: the same terms per (user,
own item), where
:meth:`~metarec.models.folded.FoldedLayer.h1` pairs every user with every item). Users the
reference would score exactly (a category or short list too small for retrieval) are ranked by
the reference itself, one at a time. ``tests/serving/test_batched.py`` checks the twin gives
the reference's lists (scores equal to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from metarec.models.folded import (
    UserSide,
    fold_users,
    head,
    head_gradient,
)
from metarec.models.scorer import Params
from metarec.ranking import CategoryRanker, UserInputs, item_side
from metarec.ranking.retrieval import ItemIndex, Projection, retrieve_top_k, top_k_positions
from metarec.tasks import CategoryData, SupportState

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
    """
    if ranker.per_user or len(users) == 1:
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

    Args:
        params, category, state, index, projection, short_list: as ``retrieve_top_k``.
        users: (b) the users' inputs; each user's ``seen`` items are never returned.
        ks: (b) how many items for each user.

    Returns:
        For each user, positions (k',) best first and their exact scores (k').
    """
    results: list[Ranked | None] = [None] * len(users)
    groups: dict[int, list[int]] = {}  # short-list length -> users retrieved with it
    n = category.n_items
    for i, (user, k) in enumerate(zip(users, ks, strict=True)):
        size = max(short_list, k)
        n_allowed = n - int(torch.unique(user.seen).numel())
        if index is None or projection is None or n_allowed <= size or k < 1:
            results[i] = retrieve_top_k(
                params, category, state, index, projection, user, k, short_list=short_list
            )
        else:
            groups.setdefault(size, []).append(i)
    for size, members in groups.items():
        assert index is not None and projection is not None
        ranked = _retrieve_group(
            params,
            category,
            state,
            index,
            projection,
            [users[i] for i in members],
            [ks[i] for i in members],
            size,
        )
        for i, found in zip(members, ranked, strict=True):
            results[i] = found
    return [r for r in results if r is not None]


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
    sides = [user.side(category.cf_dim) for user in users]
    side = UserSide(
        profile=torch.cat([s.profile for s in sides]),
        support=torch.cat([s.support for s in sides]),
        n_other=torch.cat([s.n_other for s in sides]),
        n_support=torch.cat([s.n_support for s in sides]),
        cf_dim=category.cf_dim,
    )
    with torch.no_grad():
        layer = fold_users(params, side)  # (b, h, D): every user folded at once
        # the queries (retrieval's _query, per user): the head's mean gradient at the
        # reference items, mapped back through the folded first layer
        gradient = torch.func.vmap(head_gradient, in_dims=(None, 0))(
            params, layer.h1(index.reference_items)
        )  # (b, h)
        weight, _ = layer.as_linear()  # (b, h, 2D + 2)
        q = torch.bmm(gradient[:, None, :], weight)[:, 0]  # (b, 2D + 2): weight[u].T @ g[u]
        projected = torch.cat([q[:, :-2] @ projection.transform.T, q[:, -2:]], dim=1)
        approx = projected @ projection.vectors.T  # (b, n)
        affinity = gradient @ layer.column("affinity")  # (b,)
        # unsupported items have affinity asinh(0) = 0: only supported rows contribute
        approx[:, index.supported] += affinity[:, None] * torch.asinh(
            layer.cf_unit @ index.supported_unit_sum.T
        )
        rows = torch.cat(
            [torch.full((len(u.seen),), i, dtype=torch.long) for i, u in enumerate(users)]
        )
        approx[rows, torch.cat([u.seen for u in users])] = -torch.inf
        candidates = torch.stack([top_k_positions(row, size) for row in approx])  # (b, size)
        short = item_side(category, state, candidates.reshape(-1))  # user by user
        exact = head(params, layer.h1_own(short))  # (b, size)
        # a stable sort: equal scores keep candidate order, as the reference
        order = torch.sort(exact, dim=1, descending=True, stable=True).indices
    return [
        (candidates[row, order[row, :k]], exact[row, order[row, :k]]) for row, k in enumerate(ks)
    ]
