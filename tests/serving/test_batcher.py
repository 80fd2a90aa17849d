"""The batcher's busy rule: while a call of a category runs, the next group waits for it.

(Grouping, errors, cancellation and ``max_batch=1`` are tested in test_batched.py.)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import anyio

from metarec.serving.batcher import RecommendBatcher


def test_requests_arriving_during_a_call_are_ranked_together_when_it_returns() -> None:
    calls: list[list[str]] = []
    release = threading.Event()

    def rank(category: str, requests: Sequence[tuple[str, int]]) -> list[object]:
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


Rank = Callable[[str, Sequence[tuple[str, int]]], list[object]]


def _gated_rank(calls: list[list[str]], gates: dict[str, threading.Event]) -> Rank:
    """A rank that records its calls; a call whose first user has a gate runs until it is set."""

    def rank(category: str, requests: Sequence[tuple[str, int]]) -> list[object]:
        calls.append([user for user, _ in requests])
        gate = gates.get(requests[0][0])
        if gate is not None:
            gate.wait(timeout=30)
        return [f"{category}:{user}" for user, _ in requests]

    return rank


async def _one_waits_during_a_call(
    batcher: RecommendBatcher[object],
    calls: list[list[str]],
    first: list[str],
    then: str,
    gate: threading.Event,
) -> asyncio.Future[object]:
    """``first`` ranked in one gated call, ``then`` arriving while it runs; returns once
    ``first`` is answered, with ``then``'s pending answer."""
    runs = [asyncio.ensure_future(batcher.recommend("a", user, 1)) for user in first]
    while calls[-1:] != [first]:
        await asyncio.sleep(0.001)
    waiting = asyncio.ensure_future(batcher.recommend("a", then, 1))
    await asyncio.sleep(0.02)
    gate.set()
    await asyncio.gather(*runs)
    return waiting


def test_a_small_group_waits_for_the_answered_clients_to_come_back() -> None:
    # A closed loop of 4 clients: 3 ranked together, 1 arriving during their call. Without the
    # wait the lone one is ranked alone and the loop settles in groups of 3 and 1 (two calls'
    # fixed cost per cycle); with it the 3 come back and join it.
    calls: list[list[str]] = []
    gates = {"u0": threading.Event()}

    async def main() -> tuple[list[object], float]:
        batcher = RecommendBatcher(
            _gated_rank(calls, gates), anyio.CapacityLimiter(2), max_batch=8, wait_seconds=5
        )
        lone = await _one_waits_during_a_call(batcher, calls, ["u0", "u1", "u2"], "u3", gates["u0"])
        started = time.perf_counter()
        again = [asyncio.ensure_future(batcher.recommend("a", f"v{n}", 1)) for n in range(3)]
        answers = await asyncio.gather(lone, *again)
        return answers, time.perf_counter() - started

    answers, waited = asyncio.run(main())
    assert answers == ["a:u3", "a:v0", "a:v1", "a:v2"]
    assert calls == [["u0", "u1", "u2"], ["u3", "v0", "v1", "v2"]]
    assert waited < 2.5  # ranked when the group was whole, not when the 5 s timer ran out


def test_the_wait_for_the_answered_clients_starts_once_their_answers_are_written() -> None:
    # Writing the answers of a large group takes the event loop a while (its HTTP work is about
    # 0.1 ms a request at 1e5 items, so most of a millisecond for 7); a wait counted from the
    # call's return ran out before the clients could come back, so the lone request went
    # alone. Here each answer holds the loop 0.4 s, three of them more than the 1 s wait, and
    # the clients come back 0.05 s after.
    calls: list[list[str]] = []
    gates = {"u0": threading.Event()}

    async def main() -> list[object]:
        batcher = RecommendBatcher(
            _gated_rank(calls, gates), anyio.CapacityLimiter(2), max_batch=8, wait_seconds=1.0
        )

        async def client(user: str) -> object:
            answer = await batcher.recommend("a", user, 1)
            time.sleep(0.4)  # writing its response holds the loop
            return answer

        runs = [asyncio.ensure_future(client(user)) for user in ("u0", "u1", "u2")]
        while calls[-1:] != [["u0", "u1", "u2"]]:
            await asyncio.sleep(0.001)
        lone = asyncio.ensure_future(batcher.recommend("a", "u3", 1))
        await asyncio.sleep(0.02)
        gates["u0"].set()
        await asyncio.gather(*runs)
        await asyncio.sleep(0.05)  # the clients' round trip
        again = [asyncio.ensure_future(batcher.recommend("a", f"v{n}", 1)) for n in range(3)]
        return await asyncio.gather(lone, *again)

    assert asyncio.run(main()) == ["a:u3", "a:v0", "a:v1", "a:v2"]
    assert calls == [["u0", "u1", "u2"], ["u3", "v0", "v1", "v2"]]


def test_a_group_nobody_joins_goes_when_its_wait_ends_and_the_next_does_not_wait() -> None:
    calls: list[list[str]] = []
    gates = {"u0": threading.Event()}

    async def main() -> tuple[float, float]:
        batcher = RecommendBatcher(
            _gated_rank(calls, gates), anyio.CapacityLimiter(2), max_batch=8, wait_seconds=1.0
        )
        lone = await _one_waits_during_a_call(batcher, calls, ["u0", "u1", "u2"], "u3", gates["u0"])
        started = time.perf_counter()
        await lone  # the answered clients never come back: the timer sends it alone
        waited = time.perf_counter() - started
        started = time.perf_counter()
        await batcher.recommend("a", "u4", 1)  # the traffic thinned out to groups of one
        return waited, time.perf_counter() - started

    waited, next_wait = asyncio.run(main())
    assert calls == [["u0", "u1", "u2"], ["u3"], ["u4"]]
    assert waited >= 0.5  # the 1 s wait, not at once
    assert next_wait < 0.5  # ranked at once: the last group was of one


def test_after_a_wait_in_vain_the_next_groups_are_ranked_at_once() -> None:
    # Open traffic: the clients a call answered do not come back at once, so waiting for them
    # only delays the group. After one such wait the next returns rank their group at once.
    calls: list[list[str]] = []
    gates = {"u0": threading.Event(), "b0": threading.Event()}

    async def main() -> tuple[float, float]:
        batcher = RecommendBatcher(
            _gated_rank(calls, gates), anyio.CapacityLimiter(2), max_batch=8, wait_seconds=1.0
        )
        times = []
        for first, then in ((["u0", "u1", "u2"], "u3"), (["b0", "b1", "b2"], "x0")):
            waiting = await _one_waits_during_a_call(batcher, calls, first, then, gates[first[0]])
            started = time.perf_counter()
            await waiting
            times.append(time.perf_counter() - started)
        return times[0], times[1]

    in_vain, at_once = asyncio.run(main())
    assert calls == [["u0", "u1", "u2"], ["u3"], ["b0", "b1", "b2"], ["x0"]]
    assert in_vain >= 0.5  # waited for u0..u2 to come back; they did not
    assert at_once < 0.5  # so x0 did not wait for b0..b2


def test_categories_the_call_refuses_leave_nothing_behind() -> None:
    # Made-up category names reach the batcher (the call is what knows the catalogue): the
    # sizes it learns per category must not grow with them.
    def rank(category: str, requests: Sequence[tuple[str, int]]) -> list[object]:
        if category.startswith("made-up"):
            raise KeyError(category)
        return [f"{category}:{user}" for user, _ in requests]

    async def main() -> RecommendBatcher[object]:
        batcher = RecommendBatcher(rank, anyio.CapacityLimiter(2), max_batch=8, wait_seconds=1)
        for n in range(200):
            requests = [batcher.recommend(f"made-up {n}", f"u{i}", 1) for i in range(3)]
            outcomes = await asyncio.gather(*requests, return_exceptions=True)
            assert all(isinstance(outcome, KeyError) for outcome in outcomes)
        assert await batcher.recommend("a", "u0", 1) == "a:u0"
        return batcher

    batcher = asyncio.run(main())
    assert set(batcher._target) == {"a"} and not batcher._skips
    assert not batcher._pending and not batcher._busy
