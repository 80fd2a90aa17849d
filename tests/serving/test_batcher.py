"""The batcher's busy rule: while a call of a category runs, the next group waits for it.

(Grouping, errors, cancellation and ``max_batch=1`` are tested in test_batched.py.)
"""

from __future__ import annotations

import asyncio
import threading
import time

import anyio

from metarec.serving.batcher import RecommendBatcher


def test_requests_arriving_during_a_call_are_ranked_together_when_it_returns() -> None:
    calls: list[list[str]] = []
    release = threading.Event()

    def rank(category: str, requests: list[tuple[str, int]]) -> list[object]:
        calls.append([user for user, _ in requests])
        if len(calls) == 1:
            release.wait(timeout=30)  # the first call runs until the others have arrived
        return [f"{category}:{user}" for user, _ in requests]

    async def main() -> list[object]:
        batcher = RecommendBatcher(rank, anyio.CapacityLimiter(2), max_batch=8, wait_seconds=0)
        first = asyncio.ensure_future(batcher.recommend("a", "u0", 1))
        while not calls:  # the first call is running in its worker thread
            await asyncio.sleep(0.001)
        later = []
        for n in (1, 2, 3):  # one by one, each given time to be ranked alone if it could be
            later.append(asyncio.ensure_future(batcher.recommend("a", f"u{n}", 1)))
            await asyncio.sleep(0.02)
        other = asyncio.ensure_future(batcher.recommend("b", "v", 1))  # not held up by "a"
        assert await other == "b:v"
        release.set()
        return await asyncio.gather(first, *later)

    assert asyncio.run(main()) == ["a:u0", "a:u1", "a:u2", "a:u3"]
    # no timer ranked u1..u3 while u0's call ran: they waited for it and went together
    assert sorted(calls, key=len) == [["u0"], ["v"], ["u1", "u2", "u3"]]


def _blocking_rank(calls: list[list[str]], release: threading.Event):
    """A rank whose first call runs until ``release`` is set."""

    def rank(category: str, requests: list[tuple[str, int]]) -> list[object]:
        calls.append([user for user, _ in requests])
        if len(calls) == 1:
            release.wait(timeout=30)
        return [f"{category}:{user}" for user, _ in requests]

    return rank


def test_a_small_group_waits_for_the_answered_clients_to_come_back() -> None:
    # A closed loop of 4 clients: 3 ranked together, 1 arriving during their call. Without the
    # wait the lone one is ranked alone and the loop settles in groups of 3 and 1 (two calls'
    # fixed cost per cycle); with it the 3 come back and join it.
    calls: list[list[str]] = []
    release = threading.Event()

    async def main() -> tuple[list[object], float]:
        batcher = RecommendBatcher(
            _blocking_rank(calls, release), anyio.CapacityLimiter(2), max_batch=8, wait_seconds=5
        )
        first = [asyncio.ensure_future(batcher.recommend("a", f"u{n}", 1)) for n in range(3)]
        while not calls:
            await asyncio.sleep(0.001)
        lone = asyncio.ensure_future(batcher.recommend("a", "u3", 1))
        await asyncio.sleep(0.02)
        release.set()
        answers = list(await asyncio.gather(*first))
        started = time.perf_counter()
        again = [asyncio.ensure_future(batcher.recommend("a", f"v{n}", 1)) for n in range(3)]
        answers += await asyncio.gather(lone, *again)
        return answers, time.perf_counter() - started

    answers, waited = asyncio.run(main())
    assert answers == ["a:u0", "a:u1", "a:u2", "a:u3", "a:v0", "a:v1", "a:v2"]
    assert calls == [["u0", "u1", "u2"], ["u3", "v0", "v1", "v2"]]
    assert waited < 2.5  # ranked when the group was whole, not when the 5 s timer ran out


def test_a_group_nobody_joins_goes_when_its_wait_ends_and_the_next_does_not_wait() -> None:
    calls: list[list[str]] = []
    release = threading.Event()

    async def main() -> tuple[float, float]:
        batcher = RecommendBatcher(
            _blocking_rank(calls, release), anyio.CapacityLimiter(2), max_batch=8, wait_seconds=0.2
        )
        first = [asyncio.ensure_future(batcher.recommend("a", f"u{n}", 1)) for n in range(3)]
        while not calls:
            await asyncio.sleep(0.001)
        lone = asyncio.ensure_future(batcher.recommend("a", "u3", 1))
        await asyncio.sleep(0.02)
        release.set()
        await asyncio.gather(*first)
        started = time.perf_counter()
        await lone  # the answered clients never come back: the timer sends it alone
        waited = time.perf_counter() - started
        started = time.perf_counter()
        await batcher.recommend("a", "u4", 1)  # the traffic thinned out to groups of one
        return waited, time.perf_counter() - started

    waited, next_wait = asyncio.run(main())
    assert calls == [["u0", "u1", "u2"], ["u3"], ["u4"]]
    assert waited >= 0.15
    assert next_wait < 0.15  # ranked at once: the last group was of one
