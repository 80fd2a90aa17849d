"""The service's one background worker: a bounded job queue plus coalesced data refreshes.

Every new snapshot of the served state is built here, one at a time: refreshes after writes (a
short delay coalesces bursts of events into one rebuild), adaptations and model swaps. Jobs wait
in a bounded queue; a full queue is :class:`ServiceBusyError` (HTTP 503 with ``Retry-After``),
never an unbounded backlog.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from metarec.errors import MetarecError
from metarec.serving import schemas
from metarec.serving.metrics import ServiceMetrics

log = logging.getLogger("metarec.serve")

_KEEP_JOBS = 1_000  # jobs remembered for GET /jobs/{id} (the oldest finished go first)
# A refresh starts no sooner than this many times the last one's duration after the last one
# started: rebuilding the snapshot is catalogue-sized work, and under a steady stream of events
# back-to-back refreshes took half of the one core the writes and requests share (POST /events
# measured with py-spy). So refreshes take at most a third of the worker's time.
_REFRESH_SPACING = 3.0
# The worker hands freed memory back (``release_memory``) after its work at most this often: a
# trim of a 1.3 GB server took 8 to 16 ms, and a refresh may run every half second.
_RELEASE_SPACING = 10.0


class ServiceBusyError(MetarecError):
    """A bounded queue or limit is full; the request may be retried later (HTTP 503)."""


@dataclass
class Job:
    """A background job (an adaptation or a model swap) and what became of it."""

    job_id: str
    kind: Literal["adapt", "swap"]
    category: str | None
    submitted_at: float
    path: Path | None = None
    state: Literal["queued", "running", "done", "failed"] = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    adaptation_version: int | None = None
    future: Future = field(default_factory=Future, repr=False)

    def info(self) -> schemas.JobInfo:
        return schemas.JobInfo(
            job_id=self.job_id,
            kind=self.kind,
            category=self.category,
            state=self.state,
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
            adaptation_version=self.adaptation_version,
        )


Refresh = Callable[[set[str]], int]
"""Rebuild the served snapshot from the store; gets the changed item ids, returns its version."""


class JobQueue:
    """One worker thread running jobs and refreshes in order.

    Args:
        run: executes a job and returns its result (raising fails the job).
        refresh: rebuilds the snapshot after writes (see :data:`Refresh`).
        current_version: the served snapshot's data version.
        queue_size: jobs waiting at most.
        refresh_seconds: how long to wait for more writes before a refresh.
        metrics: the service's metrics.
        deadline_seconds: a job still queued this long after it was submitted fails without
            running; one running longer makes :meth:`stuck` name it (None: no deadline).
        release_memory: called after a refresh or a job, at most every ``release_every``
            seconds, to hand freed memory back to the system
            (:func:`metarec.serving.process.release_free_memory`); None: never.
    """

    def __init__(
        self,
        *,
        run: Callable[[Job], object],
        refresh: Refresh,
        current_version: Callable[[], int],
        queue_size: int,
        refresh_seconds: float,
        metrics: ServiceMetrics,
        deadline_seconds: float | None = None,
        release_memory: Callable[[], object] | None = None,
        release_every: float = _RELEASE_SPACING,
    ) -> None:
        self.deadline_seconds = deadline_seconds
        self._release_memory, self.release_every = release_memory, release_every
        self._released_at = -float("inf")
        self._running: Job | None = None
        self._run_job, self._refresh, self._current = run, refresh, current_version
        self.queue_size, self.refresh_seconds, self.metrics = queue_size, refresh_seconds, metrics
        self._cv = threading.Condition()
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._latest: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._dirty = False
        self._dirty_since = 0.0
        self._next_refresh = 0.0  # monotonic time before which no refresh starts (unless awaited)
        self._changed: set[str] = set()
        self._waiters: list[Future] = []
        self._stopping = False
        self._worker: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker (idempotent)."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="metarec-worker", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        """Stop the worker: the running job finishes, queued ones fail."""
        with self._cv:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._cv.notify_all()
        for job in pending:
            self._finish(job, error=ServiceBusyError("the service stopped before this job ran"))
        if self._worker is not None:
            self._worker.join()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive() and not self._stopping

    def stuck(self) -> str | None:
        """Why the worker looks stuck (a job running past its deadline), or None."""
        job = self._running
        if job is None or job.started_at is None or self.deadline_seconds is None:
            return None
        ran = time.time() - job.started_at
        if ran <= self.deadline_seconds:
            return None
        return (
            f"the background worker has been running {job.kind} job {job.job_id} for "
            f"{ran:.0f} s (deadline {self.deadline_seconds:g} s); adaptations and swaps wait"
        )

    # ---- jobs ---------------------------------------------------------------------------------

    def submit(
        self,
        kind: Literal["adapt", "swap"],
        *,
        category: str | None = None,
        path: Path | None = None,
    ) -> Job:
        """Queue a job; an adaptation already queued for the same category is reused.

        Raises:
            ServiceBusyError: the queue is full, or the worker is stopping.
        """
        with self._cv:
            if category is not None:
                latest = self._latest.get(category)
                if latest is not None and latest.state == "queued":
                    return latest
            if self._stopping:
                raise ServiceBusyError("the service is stopping; retry against its successor")
            if len(self._queue) >= self.queue_size:
                self.metrics.busy.labels("queue").inc()
                raise ServiceBusyError(
                    f"{len(self._queue)} background jobs are already waiting (the limit); retry "
                    "in a moment"
                )
            job = Job(f"job-{next(self._ids)}", kind, category, time.time(), path=path)
            self._queue.append(job)
            self._jobs[job.job_id] = job
            if category is not None:
                self._latest[category] = job
            if len(self._jobs) > _KEEP_JOBS:
                done = [i for i, j in self._jobs.items() if j.state in ("done", "failed")]
                for job_id in done[: len(self._jobs) - _KEEP_JOBS]:
                    del self._jobs[job_id]
            self.metrics.queue_depth.set(len(self._queue))
            self._cv.notify_all()
            return job

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def latest(self, category: str) -> Job | None:
        """The category's most recent adaptation job."""
        return self._latest.get(category)

    # ---- refreshes ----------------------------------------------------------------------------

    def mark_dirty(self, changed_items: Sequence[str] = ()) -> None:
        """The store changed: refresh the snapshot soon (bursts coalesce into one refresh)."""
        with self._cv:
            if not self._dirty:
                self._dirty, self._dirty_since = True, time.monotonic()
            self._changed.update(changed_items)
            self._cv.notify_all()

    def wait_for_refresh(self, timeout: float) -> int:
        """Block until the snapshot includes every write made so far; returns its data version.

        Raises:
            ServiceBusyError: the worker is not running.
        """
        if self._worker is None:
            raise ServiceBusyError("the service's worker is not running; call Service.start()")
        with self._cv:
            if not self._dirty:
                return self._current()
            waiter: Future = Future()
            self._waiters.append(waiter)
            self._cv.notify_all()
        return int(waiter.result(timeout=timeout))

    # ---- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._queue and not self._refresh_due():
                    self._cv.wait(self._seconds_to_refresh())
                if self._stopping:
                    return
                job = self._queue.popleft() if self._queue else None
                self.metrics.queue_depth.set(len(self._queue))
                refresh = self._dirty
                changed, waiters = self._changed, self._waiters
                self._dirty, self._changed, self._waiters = False, set(), []
            if refresh:
                self._refresh_now(changed, waiters)
            if job is not None:
                self._run(job)
            self._release()

    def _release(self) -> None:
        """Hand freed memory back, unless that was done less than ``release_every`` ago."""
        now = time.monotonic()
        if self._release_memory is not None and now - self._released_at >= self.release_every:
            self._released_at = now
            self._release_memory()

    def _refresh_due(self) -> bool:
        if not self._dirty:
            return False
        return bool(self._waiters) or time.monotonic() >= self._refresh_at()

    def _seconds_to_refresh(self) -> float | None:
        if not self._dirty:
            return None
        return max(0.0, self._refresh_at() - time.monotonic())

    def _refresh_at(self) -> float:
        """When the pending refresh is due (a launch waiting for it does not wait for this)."""
        return max(self._dirty_since + self.refresh_seconds, self._next_refresh)

    def _refresh_now(self, changed: set[str], waiters: list[Future]) -> None:
        started = time.monotonic()
        try:
            version = self._refresh(changed)
        except Exception as exc:  # the old snapshot keeps serving; the waiters learn why
            log.exception("refreshing the data snapshot failed")
            for waiter in waiters:
                waiter.set_exception(exc)
            return
        finally:
            self._next_refresh = started + _REFRESH_SPACING * (time.monotonic() - started)
        self.metrics.refresh_seconds.observe(time.monotonic() - started)
        for waiter in waiters:
            waiter.set_result(version)

    def _run(self, job: Job) -> None:
        waited = time.time() - job.submitted_at
        if self.deadline_seconds is not None and waited > self.deadline_seconds:
            self._finish(
                job,
                error=ServiceBusyError(
                    f"job {job.job_id} waited {waited:.0f} s in the queue, past its deadline of "
                    f"{self.deadline_seconds:g} s, and did not run; submit it again"
                ),
            )
            return
        if not job.future.set_running_or_notify_cancel():  # cancelled while queued
            cancelled = ServiceBusyError(f"job {job.job_id} was cancelled before it ran")
            self._finish(job, error=cancelled)
            return
        job.state, job.started_at = "running", time.time()  # its future can no longer be cancelled
        self._running = job
        try:
            result = self._run_job(job)
        except Exception as exc:
            if not isinstance(exc, MetarecError):
                log.exception("%s job %s failed", job.kind, job.job_id)
            self._finish(job, error=exc)
            return
        finally:
            self._running = None
        self._finish(job, result=result)

    def _finish(
        self, job: Job, *, result: object = None, error: BaseException | None = None
    ) -> None:
        job.finished_at = time.time()
        if error is None:
            job.state = "done"
        else:
            job.state, job.error = "failed", str(error)
        # A future cancelled by its waiter has nobody waiting: setting it would raise in the
        # worker and end it (the job's own state above is what GET /jobs reads).
        if not job.future.cancelled():
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)
        outcome = "done" if error is None else "failed"
        if job.kind == "adapt":
            self.metrics.adaptations.labels(outcome).inc()
            if job.started_at is not None:
                self.metrics.adaptation_seconds.observe(job.finished_at - job.started_at)
        else:
            self.metrics.swaps.labels(outcome).inc()
