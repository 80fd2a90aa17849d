"""Micro-batching: concurrent ``/recommend`` requests of one category ranked in one call.

A personalised recommendation is mostly fixed cost (some 30 small torch operations, the hop to
a worker thread), so ranking b users of a category together costs little more than ranking one
(:func:`metarec.serving.batched.retrieve_top_k_many`). The batcher lives on the event loop: the
first request of a category opens a group, requests of that category arriving within
``wait_seconds`` join it, and the group is ranked in one worker-thread call when the wait ends
or ``max_batch`` requests are waiting. While a call of the category runs, its next group waits
for that call instead of a timer and is ranked when it returns (see below): so the busier the
category, the larger its groups (a closed loop of 8 connections made groups of 2.6 on average
with the timer alone), and one core is not shared by two calls of the same category.
A group is also ranked, without waiting out its timer, once it is as large as the category's
last group. A closed loop of c clients otherwise settles in two alternating groups (7 and 1 of
8) and pays two calls' fixed cost per cycle, so when a call returns, the requests that waited
for it wait up to ``wait_seconds`` more for the clients it answered to come back and join them,
counted from when those answers are written (the loop's HTTP work is about 0.1 ms a request
at 1e5 items: writing 7 answers and reading the next 7 take most of a millisecond;
docs/SERVING.md, "One group per cycle" and "Answers first"); open traffic's clients do not
come back, so after a wait in vain the next few groups go at once. A category whose traffic
thins out learns the smaller size from the group its timer sends.
``max_batch=1`` turns batching off (each request is ranked alone, as before). Each request gets
its own answer or its own error; an error of the whole call (an unknown category) reaches every
request of the group; a request whose client hung up is dropped from the answers, not from the
group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import anyio

R = TypeVar("R")
# After a wait in which fewer than half the answered clients came back, this many returns rank
# their group at once: open traffic pays the wait on one call in nine at most.
_SKIPS_AFTER_A_VAIN_WAIT = 8
Pending = list[tuple[str, int, "asyncio.Future[object]"]]


class RecommendBatcher(Generic[R]):
    """Groups concurrent requests per category and ranks each group in one worker-thread call.

    Args:
        rank: ``rank(category, [(user_id, k), ...])`` returns, per request, its answer or the
            exception to raise for it (e.g. :meth:`Recommender.recommend_many`); it may raise
            for the whole group.
        limiter: worker threads shared with the rest of the app's computations.
        max_batch: requests ranked in one call at most (1: no batching).
        wait_seconds: how long the first request of a group waits for others (0: only those
            that arrive in the same turn of the event loop).
    """

    def __init__(
        self,
        rank: Callable[[str, Sequence[tuple[str, int]]], Sequence[R | Exception]],
        limiter: anyio.CapacityLimiter,
        *,
        max_batch: int,
        wait_seconds: float,
    ) -> None:
        self._rank = rank
        self._limiter = limiter
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds
        self._pending: dict[str, Pending] = {}
        self._busy: dict[str, int] = {}  # calls running per category
        self._target: dict[str, int] = {}  # the group size that is ranked without waiting
        self._skips: dict[str, int] = {}  # returns left to rank at once after a wait in vain
        self._running: set[asyncio.Task[None]] = set()  # strong references until done

    async def recommend(self, category: str, user_id: str, k: int) -> R:
        """The answer of ``rank`` for this request, ranked with the others of its group.

        Raises:
            Whatever ``rank`` gives or raises for this request.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        group = self._pending.setdefault(category, [])
        group.append((user_id, k, future))
        if len(group) >= self.max_batch:
            self._flush(category, group)
        elif not self._busy.get(category):  # else flushed when that call returns
            if len(group) >= self._target.get(category, 1):
                loop.call_soon(self._flush, category, group)  # with any of this turn's
            elif len(group) == 1:
                loop.call_later(self.wait_seconds, self._flush, category, group)
        return await future  # type: ignore[return-value]

    def _flush(self, category: str, group: Pending) -> None:
        """Rank ``group`` unless it was already flushed (a full group, then its timer)."""
        if self._pending.get(category) is not group:
            return
        del self._pending[category]
        self._target[category] = min(len(group), self.max_batch)
        self._busy[category] = self._busy.get(category, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(category, group))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _done(self, category: str, answered: int) -> None:
        """A call of ``category`` that ranked ``answered`` requests returned: rank the group
        that waited for it once the answered clients are back in it (or it is full), or when
        ``wait_seconds`` has passed."""
        self._busy[category] -= 1
        if not self._busy[category]:
            del self._busy[category]
            waiting = self._pending.get(category)
            if not waiting:
                return
            self._target[category] = min(len(waiting) + answered, self.max_batch)
            skips = self._skips.pop(category, 0)
            if len(waiting) >= self._target[category] or skips:
                if skips > 1:
                    self._skips[category] = skips - 1
                self._flush(category, waiting)
            else:
                asyncio.get_running_loop().call_later(
                    self.wait_seconds, self._waited, category, waiting, len(waiting), answered
                )

    def _waited(self, category: str, group: Pending, before: int, answered: int) -> None:
        """The wait after a call ended before the ``answered`` clients were all back: rank
        ``group``. If fewer than half came (open traffic, not a closed loop with a slow
        client), rank the next few groups that wait for a call at once, then try again."""
        if self._pending.get(category) is not group:
            return
        if 2 * (len(group) - before) < answered:
            self._skips[category] = _SKIPS_AFTER_A_VAIN_WAIT
        self._flush(category, group)

    async def _run(self, category: str, group: Pending) -> None:
        requests = [(user_id, k) for user_id, k, _ in group]
        try:
            answers = await anyio.to_thread.run_sync(
                self._rank, category, requests, limiter=self._limiter
            )
        except Exception as exc:  # the whole group: each request raises it
            self._done(category, 0)  # no wait: its clients got an error, not a list
            if category not in self._busy and category not in self._pending:
                # nothing kept for a category the call refused (an unknown name): made-up
                # names cannot grow the batcher's tables
                self._target.pop(category, None)
                self._skips.pop(category, None)
            for *_, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: still release the category
            self._done(category, 0)
            raise
        for (*_, future), answer in zip(group, answers, strict=True):
            if future.done():  # the client hung up
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)
        # after the answered requests' handlers (woken above, first in the loop's queue) have
        # written their responses: the wait for those clients to come back starts from there
        asyncio.get_running_loop().call_soon(self._done, category, len(group))
