"""Micro-batching: many users ranked in one pass give the lists of one call each.

Differential tests of the batched twin (:func:`metarec.serving.batched.retrieve_top_k_many`)
against its reference (:func:`metarec.ranking.retrieval.retrieve_top_k`), of
:meth:`Recommender.recommend_many` against :meth:`Recommender.recommend`, and of the asyncio
batcher's grouping, cancellation and errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import anyio
import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT

from metarec.data import Store
from metarec.errors import DataError, MetarecError, NonFiniteError, UnknownCategoryError
from metarec.ranking import RetrievalSettings
from metarec.ranking.retrieval import retrieve_top_k
from metarec.serving.batched import retrieve_top_k_many
from metarec.serving.batcher import RecommendBatcher
from metarec.serving.recommender import Recommender
from metarec.serving.responses import finite_json

# a short list far below the 40 items of a category, so that retrieval (not exact scoring) runs
SMALL = RetrievalSettings(short_list=8, rank=4)


@pytest.mark.parametrize("adapted", [True, False])
def test_twin_gives_the_reference_lists(
    known_store: Path, known_model_dir: Path, adapted: bool
) -> None:
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store, retrieval=SMALL)
        if adapted:
            recommender.adapt(KNOWN_HELD_OUT)
        recommender.prepare(KNOWN_HELD_OUT)
        view = recommender.serving_view(KNOWN_HELD_OUT)
        ranker = recommender.ranker(KNOWN_HELD_OUT)
        projection = view.projection(recommender.params_key(KNOWN_HELD_OUT))
        assert view.index is not None and projection is not None
        # users with history here, users without (profiled from elsewhere), every k path:
        # retrieval (k <= 8), a longer short list (k = 12), exact scoring (k = 40), k = 0
        users = [recommender.user_inputs(view, u) for u in range(0, 300, 7)]
        ks = [(1, 5, 10, 12, 40, 0)[n % 6] for n in range(len(users))]
        # seen lists that repeat items: nearly the catalogue counted with repeats, 30 items
        # left (retrieval), and 7 left of 40 (exact scoring, as the reference)
        n = ranker.category.n_items
        users += [
            dataclasses.replace(users[1], seen=torch.arange(10).repeat(4)),
            dataclasses.replace(users[1], seen=torch.arange(n - 7).repeat(2)),
        ]
        ks += [5, 5]
        assert any(u.position is None for u in users) and any(len(u.seen) for u in users)
        batched = retrieve_top_k_many(
            ranker.params,
            ranker.category,
            ranker.state,
            view.index,
            projection,
            users,
            ks,
            short_list=SMALL.short_list,
        )
    assert len(batched) == len(users)
    for user, k, (positions, scores) in zip(users, ks, batched, strict=True):
        ref_positions, ref_scores = retrieve_top_k(
            ranker.params,
            ranker.category,
            ranker.state,
            view.index,
            projection,
            user,
            k,
            short_list=SMALL.short_list,
        )
        assert positions.tolist() == ref_positions.tolist()
        torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-6)
        assert not set(positions.tolist()) & set(user.seen.tolist())
        # a lone user (the service's groups of one) through the batched pass: the same list
        ((alone, alone_scores),) = retrieve_top_k_many(
            ranker.params,
            ranker.category,
            ranker.state,
            view.index,
            projection,
            [user],
            [k],
            short_list=SMALL.short_list,
        )
        assert alone.tolist() == ref_positions.tolist()
        torch.testing.assert_close(alone_scores, ref_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("retrieval", [SMALL, RetrievalSettings()])
def test_recommend_many_equals_one_by_one(
    known_store: Path, known_model_dir: Path, retrieval: RetrievalSettings
) -> None:
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store, retrieval=retrieval)
        recommender.adapt(KNOWN_HELD_OUT)
        requests = [(f"u{u}", 3 + u % 7) for u in range(0, 300, 3)]
        requests += [("nobody", 4), ("u1", 0)]
        for category in (KNOWN_HELD_OUT, "Shelf > C2"):  # adapted, zero-shot
            many = recommender.recommend_many(category, requests)
            for (user_id, k), result in zip(requests, many, strict=True):
                if k < 1:
                    assert isinstance(result, DataError)
                    with pytest.raises(DataError):
                        recommender.recommend(user_id, category, k)
                    continue
                assert not isinstance(result, MetarecError)
                one = recommender.recommend(user_id, category, k)
                assert [i.item_id for i in result.items] == [i.item_id for i in one.items]
                assert [i.score for i in result.items] == pytest.approx(
                    [i.score for i in one.items], rel=1e-5, abs=1e-6
                )
                assert (result.fallback, result.fallback_reason, result.adaptation_version) == (
                    one.fallback,
                    one.fallback_reason,
                    one.adaptation_version,
                )
        with pytest.raises(UnknownCategoryError):
            recommender.recommend_many("Shelf > nowhere", requests)


def test_user_inputs_of_a_batch_equal_each_users_alone(
    known_store: Path, known_model_dir: Path
) -> None:
    """A batch's inputs, the profiles of the users new to the category cut in one operation,
    are each user's own: the same tensors as the user's inputs built alone."""
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        recommender.adapt(KNOWN_HELD_OUT)
        view = recommender.serving_view(KNOWN_HELD_OUT)
        users = list(range(0, 300, 7))
        positions = [view.data.user_position(user) for user in users]
        assert None in positions and any(p is not None for p in positions)  # both kinds
        batch = recommender.user_inputs_many(view, users)
        for user, got in zip(users, batch, strict=True):
            alone = recommender.user_inputs(view, user)
            assert got.position == alone.position
            for name in ("profile", "n_other", "support_sum", "support_n", "seen"):
                assert torch.equal(getattr(got, name), getattr(alone, name)), (user, name)
        # users in another order get the same rows: nothing depends on a user's place
        again = recommender.user_inputs_many(view, users[::-1])[::-1]
        for got, other in zip(batch, again, strict=True):
            assert torch.equal(got.profile, other.profile)


def test_a_views_positives_by_user_are_each_users_own(
    known_store: Path, known_model_dir: Path
) -> None:
    """The view's by-user index of positives (what a request reads its seen items from)
    gives, for every user of the category, exactly the positives a scan finds."""
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        view = recommender.serving_view(KNOWN_HELD_OUT)
        data = view.data
        assert len(data.pos_user) > 0
        for position in range(len(data.users)):
            scanned = data.pos_item[data.pos_user == position]
            assert np.array_equal(np.sort(view.liked(position)), np.sort(scanned)), position


def _echo_batcher(calls: list[list[tuple[str, int]]], **options: object) -> RecommendBatcher:
    def rank(category: str, requests: list[tuple[str, int]]) -> list[object]:
        calls.append(list(requests))
        if category == "missing":
            raise UnknownCategoryError("no such category")
        return [DataError("k") if k < 1 else f"{category}:{user}:{k}" for user, k in requests]

    return RecommendBatcher(rank, anyio.CapacityLimiter(2), **options)  # type: ignore[arg-type]


def test_batcher_groups_concurrent_requests_per_category() -> None:
    calls: list[list[tuple[str, int]]] = []

    async def main() -> list[object]:
        batcher = _echo_batcher(calls, max_batch=4, wait_seconds=0.01)
        jobs = [batcher.recommend("a", f"u{n}", 1) for n in range(6)]
        jobs += [batcher.recommend("b", "v", 2)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(main())
    assert results == [*(f"a:u{n}:1" for n in range(6)), "b:v:2"]
    # four at once (max_batch), then the rest of "a" and "b" each after the wait
    assert sorted(len(c) for c in calls) == [1, 2, 4]


def test_batcher_errors_reach_only_their_requests() -> None:
    calls: list[list[tuple[str, int]]] = []

    async def main() -> list[object]:
        batcher = _echo_batcher(calls, max_batch=8, wait_seconds=0)
        jobs = [batcher.recommend("a", "u", 0), batcher.recommend("a", "w", 1)]
        jobs += [batcher.recommend("missing", "u", 1)]
        return await asyncio.gather(*jobs, return_exceptions=True)

    bad_k, good, missing = asyncio.run(main())
    assert isinstance(bad_k, DataError) and good == "a:w:1"
    assert isinstance(missing, UnknownCategoryError)


def test_batcher_survives_a_cancelled_request() -> None:
    calls: list[list[tuple[str, int]]] = []

    async def main() -> object:
        batcher = _echo_batcher(calls, max_batch=8, wait_seconds=0.01)
        gone = asyncio.ensure_future(batcher.recommend("a", "gone", 1))
        kept = asyncio.ensure_future(batcher.recommend("a", "kept", 1))
        await asyncio.sleep(0)
        gone.cancel()  # a client that hung up: the others of its batch are still answered
        return await kept

    assert asyncio.run(main()) == "a:kept:1"


def test_batcher_off_ranks_each_request_alone() -> None:
    calls: list[list[tuple[str, int]]] = []

    async def main() -> None:
        batcher = _echo_batcher(calls, max_batch=1, wait_seconds=0.01)
        await asyncio.gather(*(batcher.recommend("a", f"u{n}", 1) for n in range(3)))

    asyncio.run(main())
    assert [len(c) for c in calls] == [1, 1, 1]


def test_response_bodies_refuse_non_finite_numbers() -> None:
    assert finite_json({"items": [{"score": 1.5, "title": None}]}) == (
        b'{"items":[{"score":1.5,"title":null}]}'
    )
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(NonFiniteError):
            finite_json({"items": [{"score": bad}]})
