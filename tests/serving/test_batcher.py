"""The batcher's busy rule: while a call of a category runs, the next group waits for it.

(Grouping, errors, cancellation and ``max_batch=1`` are tested in test_batched.py.)
"""

from __future__ import annotations

import asyncio
import threading

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
