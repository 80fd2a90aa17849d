"""The live service: a thin facade over the store, the served snapshot and the job queue.

One process owns the DuckDB store read-write (DESIGN.md). Its threads:

- **request threads** rank from the current :class:`~metarec.serving.snapshots.Snapshot` (one
  model over one version of the store's data), read through one reference that is swapped
  atomically, so a request never sees half of an update and never waits for one;
- **writes** (events, launches) run in request threads under the store lock; each is one DuckDB
  transaction, committed (and checkpointed) before the call returns, so an acknowledged write
  survives ``kill -9``;
- **one worker thread** (:class:`~metarec.serving.jobs.JobQueue`) builds every new snapshot, one
  at a time: refreshes after writes, adaptations, and model swaps.

Recommendations are the library's (:meth:`metarec.serving.recommender.Recommender.recommend`):
the same fallbacks, the same ranking, the same answer as the CLI for the same state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pandas as pd

from metarec.data.ingest import ingest_frames
from metarec.data.schema import ITEM_COLUMNS
from metarec.data.store import Store
from metarec.errors import DataError, MetarecError
from metarec.serving import schemas
from metarec.serving.conflicts import EventConflictError
from metarec.serving.events import (
    EventsRejectedError,
    StoredGroup,
    store_event_batches,
    store_events,
)
from metarec.serving.jobs import Job, JobQueue, ServiceBusyError
from metarec.serving.metrics import ServiceMetrics
from metarec.serving.process import release_free_memory
from metarec.serving.recommender import Adaptation, Recommendation, Recommender
from metarec.serving.roots import model_folder_under
from metarec.serving.settings import ServeSettings
from metarec.serving.snapshots import Snapshot, Snapshots

log = logging.getLogger("metarec.serve")
T = TypeVar("T")

__all__ = ["EventsRejectedError", "Service", "ServiceBusyError"]


class Service:
    """The live service: owns the store, serves a snapshot, runs background jobs.

    Build it with :meth:`open`, :meth:`start` its worker, :meth:`close` it at the end.

    Args:
        settings: the service settings.
        store: the store, open read-write; the service closes it.
        recommender: the served model bound to ``store``.
    """

    def __init__(self, settings: ServeSettings, store: Store, recommender: Recommender) -> None:
        self.settings = settings
        self.store = store
        self.metrics = ServiceMetrics()
        self._store_lock = threading.Lock()
        self._counts_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: list[_PendingBatch] = []  # event batches waiting to be committed
        self._since_adaptation: dict[str, int] = {}
        self._snapshots = Snapshots(store, self._store_lock, recommender)
        self._jobs = JobQueue(
            run=self._run,
            refresh=self._refresh,
            current_version=lambda: self.snapshot.data_version,
            queue_size=settings.queue_size,
            refresh_seconds=settings.refresh_seconds,
            metrics=self.metrics,
            deadline_seconds=settings.job_timeout_seconds,
            release_memory=release_free_memory,
        )
        self.metrics.data_version.set(0)

    @classmethod
    def open(cls, settings: ServeSettings) -> Service:
        """Open the store read-write, load and verify the model, build the first snapshot.

        Raises:
            StoreError: the store is missing or locked by another process.
            ArtifactError: the model folder is missing or damaged.
        """
        store = Store.open(settings.store_path)
        try:
            recommender = Recommender.open(
                settings.model_dir,
                store,
                retrieval=settings.retrieval(),
                max_adapt_positives=settings.max_adapt_positives,
            )
            return cls(settings, store, recommender)
        except BaseException:
            store.close()
            raise

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background worker (idempotent) and queue the re-adaptation of categories
        whose adapted file is damaged (served zero-shot until then)."""
        self._jobs.start()
        self._readapt(sorted(self.snapshot.recommender.damaged))

    def _readapt(self, categories: list[str]) -> list[str]:
        """Queue adaptations; returns the categories queued (a full queue is logged)."""
        queued = []
        for category in categories:
            try:
                self.submit_adapt(category)
                queued.append(category)
            except MetarecError as exc:
                log.warning("could not queue the re-adaptation of %r: %s", category, exc)
        return queued

    def close(self) -> None:
        """Stop the worker (the running job finishes; queued ones fail) and close the store."""
        self._jobs.stop()
        with self._store_lock:
            self.store.close()

    @property
    def ready(self) -> bool:
        return self._jobs.running

    def stuck(self) -> str | None:
        """Why the background worker looks stuck (a job past its deadline), or None."""
        return self._jobs.stuck()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshots.current

    @property
    def model_version(self) -> str:
        return self.snapshot.recommender.model_version

    # ---- reads --------------------------------------------------------------------------------

    def with_store(self, read: Callable[[Store], T]) -> T:
        """Run ``read(store)`` while no other thread uses the store (DuckDB connections must not
        be shared by threads at once), e.g. ``service.with_store(lambda s: s.stats())``."""
        with self._store_lock:
            return read(self.store)

    def recommend(self, user_id: str, category: str, k: int) -> schemas.Recommendation:
        """Top-``k`` items of ``category`` for ``user_id``, with the fallback used, if any.

        Raises:
            UnknownCategoryError: the store has no such category (close matches named).
            DataError: the category has no items, or ``k`` < 1.
        """
        started = time.perf_counter()
        result = self.snapshot.recommender.recommend(user_id, category, k)
        if result.fallback is not None:
            self.metrics.fallbacks.labels(result.fallback).inc()
        self.metrics.recommend_seconds.observe(time.perf_counter() - started)
        return schemas.Recommendation.model_validate(result.to_json())

    def recommend_many(
        self, category: str, requests: Sequence[tuple[str, int]]
    ) -> list[Recommendation | MetarecError]:
        """:meth:`recommend` for many ``(user_id, k)`` of one category, ranked in one pass
        (the micro-batches of :mod:`metarec.serving.batcher`); per request, its answer or its
        error. Raises as :meth:`recommend` for the whole category."""
        started = time.perf_counter()
        results = self.snapshot.recommender.recommend_many(category, requests)
        seconds = time.perf_counter() - started
        self.metrics.recommend_batch.observe(len(requests))
        for result in results:
            if isinstance(result, Recommendation) and result.fallback is not None:
                self.metrics.fallbacks.labels(result.fallback).inc()
            self.metrics.recommend_seconds.observe(seconds)
        return results

    def category_status(self, category: str) -> schemas.CategoryStatus:
        """Size, support, adaptation and latest job of a category.

        Raises:
            UnknownCategoryError, DataError: as :meth:`recommend`.
        """
        recommender = self.snapshot.recommender
        catalog = recommender.catalog
        catalog.require_category(category)
        counts = catalog.category_table.set_index("category").loc[category]
        adaptation = recommender.adaptation(category)
        job = self._jobs.latest(category)
        return schemas.CategoryStatus(
            category=category,
            n_items=int(counts["n_items"]),
            n_users=int(counts["n_users"]),
            support_size=int(counts["n_positives"]),
            model_version=recommender.model_version,
            adaptation=None if adaptation is None else _adaptation_info(adaptation),
            job=None if job is None else job.info(),
            events_since_adaptation=self._since_adaptation.get(category, 0),
        )

    # ---- writes -------------------------------------------------------------------------------

    def post_events(
        self, events: Sequence[schemas.Event], *, skip_bad_rows: bool = False
    ) -> schemas.EventsResponse:
        """Store a batch of events, all or nothing; durable when this returns.

        Batches that wait for the store are committed in one transaction (group commit,
        :meth:`_group_commit`), each with the answer it would get alone; a batch with
        ``skip_bad_rows`` is stored on its own (:func:`metarec.serving.events.store_events`).

        Raises:
            DataError: more events than ``settings.max_events``.
            EventsRejectedError, EventConflictError: some rows are bad or re-use a stored
                event_id with different content, and ``skip_bad_rows`` is False; nothing stored.
        """
        if len(events) > self.settings.max_events:
            raise DataError(
                f"{len(events)} events in one batch; send at most {self.settings.max_events} "
                "per request"
            )
        if skip_bad_rows:  # its own transaction: its partial answer is not merged
            try:
                with self._store_lock:
                    stored = store_events(self.store, events, skip_bad_rows=True)
            except (EventsRejectedError, EventConflictError):
                self.metrics.events.labels("rejected").inc(len(events))
                raise
            self._count_group([stored.response], stored.per_category)
            response = stored.response
        else:
            outcome = self._group_commit(_PendingBatch(events))
            if isinstance(outcome, Exception):
                self.metrics.events.labels("rejected").inc(len(events))
                raise outcome
            response = outcome
        self.metrics.events.labels("inserted").inc(response.inserted)
        self.metrics.events.labels("duplicate").inc(response.duplicates)
        self.metrics.events.labels("rejected").inc(len(response.rejected))
        return response

    def _group_commit(
        self, mine: _PendingBatch
    ) -> schemas.EventsResponse | EventsRejectedError | EventConflictError:
        """Commit this batch together with every batch waiting for the store (group commit).

        Whoever gets the store lock first stores the batches queued by then, its own first, in
        one transaction (:func:`~metarec.serving.events.store_event_batches`), up to
        ``max_events`` events; the others find theirs done when they get the lock.
        """
        with self._pending_lock:
            self._pending.append(mine)
        led: StoredGroup | None = None  # the group this thread stored, if it led one
        with self._store_lock:
            if mine.outcome is None and mine.error is None:  # not stored by another's group
                with self._pending_lock:
                    group, total = [mine], len(mine.events)
                    rest = []
                    for other in self._pending:
                        if other is mine:
                            continue
                        if total + len(other.events) <= self.settings.max_events:
                            group.append(other)
                            total += len(other.events)
                        else:
                            rest.append(other)
                    self._pending = rest
                try:
                    stored = store_event_batches(self.store, [p.events for p in group])
                except BaseException as exc:  # a store failure: every batch of the group fails
                    for pending in group:
                        pending.error = exc
                    raise
                for pending, outcome in zip(group, stored.outcomes, strict=True):
                    pending.outcome = outcome
                led = stored
        if led is not None:  # counted outside the store lock: a count may queue an adaptation
            self.metrics.event_groups.observe(len(led.outcomes))
            inserted = [o for o in led.outcomes if isinstance(o, schemas.EventsResponse)]
            self._count_group(inserted, led.per_category)
        if mine.error is not None:
            raise mine.error
        assert mine.outcome is not None
        return mine.outcome

    def _count_group(
        self, responses: list[schemas.EventsResponse], per_category: list[tuple[str, int]]
    ) -> None:
        if any(response.inserted for response in responses):
            self._jobs.mark_dirty()
            for category, n in per_category:
                self._count_events(category, n)

    def launch(self, request: schemas.LaunchRequest) -> schemas.LaunchResponse:
        """Create (or update) a category and its items; visible to reads when this returns.

        Raises:
            DataError: an item id already belongs to another category, or an attribute name
                clashes with a column of the items table.
            BadRowsError: some items break the table format; nothing was stored.
        """
        items = _items_frame(request)
        ids = items["item_id"].tolist()
        with self._store_lock:
            clash = self.store.connection.execute(
                "SELECT item_id, category FROM items "
                "WHERE item_id IN (SELECT unnest(?::VARCHAR[])) AND category <> ? LIMIT 5",
                [ids, request.category],
            ).fetchall()
            if clash:
                shown = ", ".join(f"{i!r} (in {c!r})" for i, c in clash)
                raise DataError(
                    f"item ids must be unique across categories; already in another category: "
                    f"{shown}. Use new ids for the items of {request.category!r}"
                )
            categories = None
            if request.description is not None:
                categories = pd.DataFrame(
                    {"category": [request.category], "description": [request.description]}
                )
            report = ingest_frames(
                pd.DataFrame(
                    {"user_id": pd.Series(dtype="str"), "item_id": pd.Series(dtype="str")}
                ),
                self.store,
                items=items,
                categories=categories,
                source=f"POST /categories {request.category}",
            )
        self._jobs.mark_dirty(ids)
        self.wait_for_refresh()
        counts = report.items
        catalog = self.snapshot.recommender.catalog
        return schemas.LaunchResponse(
            category=request.category,
            n_items=int(catalog.category_sizes.get(request.category, 0)),
            inserted=counts.inserted,
            updated=counts.updated,
            unchanged=counts.unchanged,
        )

    def wait_for_refresh(self) -> int:
        """Block until the snapshot includes every write made so far; returns its data version."""
        return self._jobs.wait_for_refresh(self.settings.job_timeout_seconds)

    # ---- jobs ---------------------------------------------------------------------------------

    def submit_adapt(self, category: str) -> Job:
        """Queue an adaptation of ``category`` (a queued one for it is reused).

        Raises:
            UnknownCategoryError, DataError: as :meth:`recommend`.
            ServiceBusyError: the queue is full.
        """
        self.snapshot.recommender.catalog.require_category(category)
        return self._jobs.submit("adapt", category=category)

    def submit_swap(self, path: str | Path) -> Job:
        """Queue a hot swap to the model in ``path`` (checked, loaded and smoke-tested aside).

        Raises:
            ArtifactError: ``path`` is not a folder inside a model root
                (``settings.model_roots``).
            ServiceBusyError: the queue is full.
        """
        folder = model_folder_under(path, self.settings.roots())
        return self._jobs.submit("swap", path=folder)

    def job(self, job_id: str) -> Job | None:
        return self._jobs.job(job_id)

    def _refresh(self, changed_items: set[str]) -> int:
        version = self._snapshots.refresh(changed_items)
        self.metrics.data_version.set(version)
        return version

    def _run(self, job: Job) -> object:
        if job.kind == "adapt":
            return self._adapt(job)
        assert job.path is not None
        return self._swap(job.path)

    def _adapt(self, job: Job) -> schemas.AdaptationInfo:
        """Adapt the job's category; the result is the adaptation's record as GET /categories
        shows it (the recommender holds the parameters)."""
        category = job.category
        assert category is not None
        recommender = self.snapshot.recommender
        adaptation = recommender.adapt(category)
        job.adaptation_version = adaptation.version
        # Until this projection exists, requests retrieve with the latest one (still sound).
        recommender.prepare(category)
        with self._counts_lock:
            self._since_adaptation[category] = 0
        log.info(
            "adapted %r version %d from %d positives in %.1f ms",
            category,
            adaptation.version,
            adaptation.support_size,
            adaptation.seconds * 1000,
        )
        # The job keeps its result for GET /jobs (up to 1,000 jobs): a record, not the
        # Adaptation, whose parameters (a ridge model's item vectors: 26 MB at 1e5 items) every
        # finished job used to hold, so memory grew with each adaptation.
        return _adaptation_info(adaptation)

    def _swap(self, path: Path) -> schemas.ModelSwapResponse:
        started = time.perf_counter()
        previous, current = self._snapshots.swap(path)
        old, new = previous.recommender, current.recommender
        lost = old.adapted_categories() - new.adapted_categories()
        readapting = self._readapt(sorted(lost | set(new.damaged)))
        log.info("swapped model %s -> %s", old.model_version, new.model_version)
        return schemas.ModelSwapResponse(
            model_version=new.model_version,
            previous_version=old.model_version,
            adapted_categories=sorted(new.adapted_categories()),
            readapting=readapting,
            seconds=time.perf_counter() - started,
        )

    def _count_events(self, category: str, n: int) -> None:
        """Count new events per category; re-adapt an adapted one every ``readapt_every``."""
        with self._counts_lock:
            seen = self._since_adaptation.get(category, 0) + n
            self._since_adaptation[category] = seen
        every = self.settings.readapt_every
        recommender = self.snapshot.recommender
        if every and seen >= every and recommender.adaptation(category) is not None:
            try:
                self.submit_adapt(category)
            except MetarecError as exc:  # queue full: the next batch tries again
                log.info("automatic re-adaptation of %r postponed: %s", category, exc)


def _adaptation_info(adaptation: Adaptation) -> schemas.AdaptationInfo:
    return schemas.AdaptationInfo(
        version=adaptation.version,
        support_size=adaptation.support_size,
        n_users=adaptation.n_users,
        adapted_at=adaptation.adapted_at,
        seconds=adaptation.seconds,
        as_of=adaptation.as_of,
    )


def _items_frame(request: schemas.LaunchRequest) -> pd.DataFrame:
    """The launch's items as an items table (attributes become extra columns)."""
    reserved = {*ITEM_COLUMNS, "extra"}
    records = []
    for item in request.items:
        clash = sorted(set(item.attributes) & reserved)
        if clash:
            raise DataError(
                f"item {item.item_id!r}: attribute(s) {clash} are columns of the items table; "
                "give them as fields of the item instead"
            )
        record = item.model_dump(exclude={"attributes"})
        if isinstance(record["authors"], list):
            record["authors"] = "|".join(record["authors"])
        records.append({**record, "category": request.category, **item.attributes})
    return pd.DataFrame.from_records(records)


class _PendingBatch:
    """A batch of events waiting for the store, and what became of it."""

    def __init__(self, events: Sequence[schemas.Event]) -> None:
        self.events = events
        self.outcome: schemas.EventsResponse | EventsRejectedError | EventConflictError | None = (
            None
        )
        self.error: BaseException | None = None
