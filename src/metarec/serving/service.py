"""The state the HTTP app owns: the live store, the model it serves, background jobs, metrics.

One process owns the DuckDB store read-write (DESIGN.md). Its threads:

- **request threads** compute recommendations from an immutable :class:`Snapshot` (one model over
  one version of the store's data), read through one reference that is swapped atomically, so a
  request never sees half of an update and never waits for one;
- **writes** (events, launches) run in request threads under the store lock; each is one DuckDB
  transaction, committed (and checkpointed) before the call returns, so an acknowledged write
  survives ``kill -9``;
- **one worker thread** builds every new snapshot, one at a time: refreshes after writes (a
  short delay coalesces bursts), adaptations, and model swaps. Jobs wait in a bounded queue; a
  full queue is :class:`ServiceBusyError` (HTTP 503 with ``Retry-After``).

Recommendations follow the library's rules (:mod:`metarec.serving.recommender`), with the
fallbacks the HTTP API documents: an unknown user gets the category's launch popularity
(``"popularity"``), a category that was never adapted is ranked by the meta-initialisation
(``"zero-shot"``). Ranking is dot-product retrieval plus an exact re-rank
(:mod:`metarec.serving.retrieval`).
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
from typing import TypeVar
from urllib.parse import quote

import numpy as np
import pandas as pd
import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from metarec.data.ingest import ingest_frames
from metarec.data.schema import ITEM_COLUMNS, BadRow
from metarec.data.store import Store
from metarec.errors import ArtifactError, BadRowsError, DataError, MetarecError
from metarec.features import input_dim, positives
from metarec.meta import Params
from metarec.pipeline import Catalog, MetaModel, load_model
from metarec.serving import schemas
from metarec.serving.recommender import Adaptation, Recommender
from metarec.serving.retrieval import (
    ItemIndex,
    Projection,
    build_index,
    category_fingerprint,
    fit_projection,
    rank_top_k,
    user_query,
)
from metarec.serving.settings import ServeSettings
from metarec.tasks import CategoryData, SupportState

log = logging.getLogger("metarec.serve")
T = TypeVar("T")

ViewKey = tuple[str, int | None]  # (category, as_of): the category as an adaptation saw it
ParamsKey = tuple[str, int]  # (model version, adaptation version; 0 for the meta-initialisation)
_KEEP_PROJECTIONS = 4  # per category: current and recent parameters (hot swaps back and forth)
_QUERY_SAMPLE = 256  # users whose queries fit a projection
_KEEP_JOBS = 1_000  # jobs remembered for GET /jobs/{id} (the oldest finished go first)
_SMOKE_K = 5


class ServiceBusyError(MetarecError):
    """A bounded queue or limit is full; the request may be retried later (HTTP 503)."""


class EventsRejectedError(BadRowsError):
    """A batch of events was refused because some rows are bad; nothing was stored.

    Attributes:
        rows: each bad row's position in the batch, column and reason.
    """

    def __init__(self, message: str, report: object, rows: list[schemas.RejectedRow]) -> None:
        super().__init__(message, report)
        self.rows = rows


@dataclass
class CategoryView:
    """What ranking one category needs, built once per snapshot (or reused while unchanged).

    Attributes:
        data, state: the category and its support state.
        index: the retrieval index (None when the category is small enough to score exactly).
        item_ids, titles: (n_items,) external ids and titles by item position.
        popular: (m,) positions by launch popularity, best first, ties by position (the
            unknown-user fallback).
        popular_scores: (m,) their support counts.
        projections: retrieval projections by the parameters they were fitted for; replaced
            whole (copy on write), so a reader never sees one change.
    """

    data: CategoryData
    state: SupportState
    index: ItemIndex | None
    item_ids: np.ndarray
    titles: np.ndarray
    popular: torch.Tensor
    popular_scores: torch.Tensor
    projections: dict[ParamsKey, Projection] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def projection(self, key: ParamsKey) -> Projection | None:
        """The projection fitted for ``key``, else the latest one (still a valid short list:
        the exact re-rank uses the right parameters), else None."""
        projections = self.projections
        found = projections.get(key)
        if found is None and projections:
            found = next(reversed(projections.values()))
        return found

    def add_projection(self, key: ParamsKey, projection: Projection) -> None:
        with self._lock:
            kept = {k: v for k, v in self.projections.items() if k != key}
            kept[key] = projection
            self.projections = dict(list(kept.items())[-_KEEP_PROJECTIONS:])


class Snapshot:
    """One model over one version of the store's data; never changed once published, except
    that category views are added on first use."""

    def __init__(
        self,
        recommender: Recommender,
        data_version: int,
        views: dict[ViewKey, CategoryView] | None = None,
    ) -> None:
        self.recommender = recommender
        self.data_version = data_version
        users = recommender.catalog.users
        self.users: dict[str, int] = dict(
            zip(users["user_id"].astype(str), users["user_idx"].tolist(), strict=True)
        )
        self._views: dict[ViewKey, CategoryView] = dict(views or {})
        self._guard = threading.Lock()
        self._building: dict[ViewKey, threading.Lock] = {}

    @property
    def views(self) -> dict[ViewKey, CategoryView]:
        return dict(self._views)

    def view(self, key: ViewKey, build: Callable[[ViewKey], CategoryView]) -> CategoryView:
        """The view of ``key``, built by ``build`` on first use (once, even under concurrency)."""
        found = self._views.get(key)
        if found is not None:
            return found
        with self._guard:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:
            found = self._views.get(key)
            if found is None:
                found = build(key)
                self._views[key] = found
        return found


@dataclass
class Job:
    """A background job (an adaptation or a model swap) and what became of it."""

    job_id: str
    kind: str  # "adapt" | "swap"
    category: str | None
    submitted_at: float
    path: Path | None = None
    state: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    adaptation_version: int | None = None
    future: Future = field(default_factory=Future, repr=False)

    def info(self) -> schemas.JobInfo:
        return schemas.JobInfo(
            job_id=self.job_id,
            kind="swap" if self.kind == "swap" else "adapt",
            category=self.category,
            state=self.state,  # type: ignore[arg-type]  # one of JobState by construction
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            error=self.error,
            adaptation_version=self.adaptation_version,
        )


class ServiceMetrics:
    """Prometheus metrics on a registry of their own (tests build many services in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        fast = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
        slow = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
        self.requests = Counter(
            "metarec_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "metarec_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=fast,
            registry=r,
        )
        self.recommend_seconds = Histogram(
            "metarec_recommend_seconds", "time to rank one request", buckets=fast, registry=r
        )
        self.fallbacks = Counter(
            "metarec_recommend_fallbacks", "recommendations that fell back", ["kind"], registry=r
        )
        self.events = Counter(
            "metarec_events", "events received, by outcome", ["outcome"], registry=r
        )
        self.adaptations = Counter(
            "metarec_adaptations", "adaptation jobs, by outcome", ["outcome"], registry=r
        )
        self.adaptation_seconds = Histogram(
            "metarec_adaptation_seconds",
            "wall time of an adaptation job",
            buckets=slow,
            registry=r,
        )
        self.swaps = Counter(
            "metarec_model_swaps", "model swaps, by outcome", ["outcome"], registry=r
        )
        self.refresh_seconds = Histogram(
            "metarec_refresh_seconds", "time to rebuild the data snapshot", buckets=slow, registry=r
        )
        self.busy = Counter(
            "metarec_busy_rejections", "requests answered 503", ["reason"], registry=r
        )
        self.queue_depth = Gauge("metarec_queue_depth", "background jobs waiting", registry=r)
        self.data_version = Gauge(
            "metarec_data_version", "snapshot of the store served", registry=r
        )


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
        self._cv = threading.Condition()
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._latest: dict[str, Job] = {}
        self._job_ids = itertools.count(1)
        self._dirty = False
        self._dirty_since = 0.0
        self._changed_items: set[str] = set()
        self._refresh_waiters: list[Future] = []
        self._since_adaptation: dict[str, int] = {}
        self._stopping = False
        self._worker: threading.Thread | None = None
        self._snapshot = self._make_snapshot(recommender, 0, previous=None)
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
            return cls(settings, store, Recommender.open(settings.model_dir, store))
        except BaseException:
            store.close()
            raise

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background worker (idempotent)."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="metarec-worker", daemon=True)
            self._worker.start()

    def close(self) -> None:
        """Stop the worker (the running job finishes; queued ones fail) and close the store."""
        with self._cv:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._cv.notify_all()
        for job in pending:
            self._finish(job, error=ServiceBusyError("the service stopped before this job ran"))
        if self._worker is not None:
            self._worker.join()
        with self._store_lock:
            self.store.close()

    @property
    def ready(self) -> bool:
        worker_alive = self._worker is not None and self._worker.is_alive()
        return worker_alive and not self._stopping

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def model_version(self) -> str:
        return self._snapshot.recommender.model_version

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
        if k < 1:
            raise DataError(f"k must be at least 1, got {k}")
        snapshot = self._snapshot
        recommender = snapshot.recommender
        recommender.catalog.require_category(category)
        adaptation = recommender.adaptation(category)
        view = snapshot.view(
            _view_key(category, adaptation), lambda key: self._prepared_view(recommender, key)
        )
        user_idx = snapshot.users.get(user_id)
        fallback: str | None = None
        reason: str | None = None
        if user_idx is None:
            fallback = "popularity"
            reason = f"unknown user {user_id!r}: the category's most supported items"
            positions, scores = view.popular[:k], view.popular_scores[:k]
        else:
            params = _category_params(recommender, view.data, adaptation)
            if adaptation is None:
                fallback = "zero-shot"
                reason = (
                    f"category {category!r} is not adapted yet: ranked by the meta-initialisation; "
                    f"POST /categories/{quote(category, safe='')}/adapt to adapt it"
                )
            user, params = recommender.personalise(view.data, view.state, params, user_idx)
            positions, scores = rank_top_k(
                params,
                view.data,
                view.state,
                view.index,
                view.projection(_params_key(recommender, adaptation)),
                user,
                k,
                short_list=self.settings.short_list,
            )
        chosen = positions.numpy()
        result = schemas.Recommendation(
            user_id=user_id,
            category=category,
            model_version=recommender.model_version,
            adaptation_version=None if adaptation is None else adaptation.version,
            fallback=fallback,  # type: ignore[arg-type]  # one of the documented literals
            fallback_reason=reason,
            items=[
                schemas.RecommendedItem(item_id=str(i), score=float(s), title=_text_or_none(t))
                for i, s, t in zip(
                    view.item_ids[chosen], scores.tolist(), view.titles[chosen], strict=True
                )
            ],
        )
        if fallback is not None:
            self.metrics.fallbacks.labels(fallback).inc()
        self.metrics.recommend_seconds.observe(time.perf_counter() - started)
        return result

    def category_status(self, category: str) -> schemas.CategoryStatus:
        """Size, support, adaptation and latest job of a category.

        Raises:
            UnknownCategoryError, DataError: as :meth:`recommend`.
        """
        recommender = self._snapshot.recommender
        catalog = recommender.catalog
        catalog.require_category(category)
        positives = catalog.positives
        here = catalog.item_category[positives["item_idx"].to_numpy()] == category
        adaptation = recommender.adaptation(category)
        job = self._latest.get(category)
        return schemas.CategoryStatus(
            category=category,
            n_items=int(catalog.category_sizes[category]),
            n_users=int(positives.loc[here, "user_idx"].nunique()),
            support_size=int(here.sum()),
            model_version=recommender.model_version,
            adaptation=None if adaptation is None else _adaptation_info(adaptation),
            job=None if job is None else job.info(),
            events_since_adaptation=self._since_adaptation.get(category, 0),
        )

    # ---- writes -------------------------------------------------------------------------------

    def post_events(
        self, events: Sequence[schemas.Event], *, skip_bad_rows: bool = False
    ) -> schemas.EventsResponse:
        """Store a batch of events in one transaction; durable when this returns.

        Args:
            events: the batch; ``event_id`` already stored means the event is a duplicate and is
                not stored again.
            skip_bad_rows: store the good rows and report the bad ones, instead of refusing the
                whole batch.

        Raises:
            DataError: more events than ``settings.max_events``.
            EventsRejectedError: some rows are bad (unknown item, unparsable time, repeated
                event_id...) and ``skip_bad_rows`` is False; nothing was stored.
        """
        if len(events) > self.settings.max_events:
            raise DataError(
                f"{len(events)} events in one batch; send at most {self.settings.max_events} "
                "per request"
            )
        frame = pd.DataFrame(
            [e.model_dump() for e in events],
            columns=["event_id", "user_id", "item_id", "timestamp", "event", "rating", "weight"],
        )
        ids = frame["event_id"].tolist()
        with self._store_lock:
            connection = self.store.connection
            stored_before = {
                row[0]
                for row in connection.execute(
                    "SELECT event_id FROM interactions "
                    "WHERE event_id IN (SELECT unnest(?::VARCHAR[]))",
                    [ids],
                ).fetchall()
            }
            try:
                report = ingest_frames(
                    frame, self.store, skip_bad_rows=skip_bad_rows, source="POST /events"
                )
            except BadRowsError as exc:
                self.metrics.events.labels("rejected").inc(len(events))
                rows = _rejected_rows(exc.report.bad_rows)  # type: ignore[attr-defined]
                raise EventsRejectedError(
                    f"{len(rows)} of {len(events)} events are bad; nothing was stored. Fix them, "
                    "or send ?skip_bad_rows=true to store the rest. First: "
                    + "; ".join(f"#{r.index} {r.column}: {r.reason}" for r in rows[:3]),
                    exc.report,
                    rows,
                ) from exc
            new_ids = [i for i in ids if i not in stored_before]
            per_category = connection.execute(
                "SELECT i.category, count(*) FROM interactions x JOIN items i USING (item_idx) "
                "WHERE x.event_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY i.category",
                [new_ids],
            ).fetchall()
        rejected = _rejected_rows(report.bad_rows)
        counts = report.interactions
        self.metrics.events.labels("inserted").inc(counts.inserted)
        self.metrics.events.labels("duplicate").inc(counts.unchanged)
        self.metrics.events.labels("rejected").inc(len(rejected))
        if counts.inserted:
            self._mark_dirty(())
            for category, n in per_category:
                self._count_events(str(category), int(n))
        return schemas.EventsResponse(
            received=len(events),
            inserted=counts.inserted,
            duplicates=counts.unchanged,
            rejected=rejected,
        )

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
        self._mark_dirty(ids)
        self.wait_for_refresh()
        counts = report.items
        catalog = self._snapshot.recommender.catalog
        return schemas.LaunchResponse(
            category=request.category,
            n_items=int(catalog.category_sizes.get(request.category, 0)),
            inserted=counts.inserted,
            updated=counts.updated,
            unchanged=counts.unchanged,
        )

    def wait_for_refresh(self) -> int:
        """Block until the snapshot includes every write made so far; returns its data version."""
        if self._worker is None:
            raise ServiceBusyError("the service's worker is not running; call Service.start()")
        with self._cv:
            if not self._dirty:
                return self._snapshot.data_version
            waiter: Future = Future()
            self._refresh_waiters.append(waiter)
            self._cv.notify_all()
        return int(waiter.result(timeout=self.settings.job_timeout_seconds))

    # ---- jobs ---------------------------------------------------------------------------------

    def submit_adapt(self, category: str) -> Job:
        """Queue an adaptation of ``category`` (a queued one for it is reused).

        Raises:
            UnknownCategoryError, DataError: as :meth:`recommend`.
            ServiceBusyError: the queue is full.
        """
        self._snapshot.recommender.catalog.require_category(category)
        with self._cv:
            latest = self._latest.get(category)
            if latest is not None and latest.state == "queued":
                return latest
            return self._enqueue(Job(self._next_id(), "adapt", category, time.time()))

    def submit_swap(self, path: str | Path) -> Job:
        """Queue a hot swap to the model in ``path`` (checked, loaded and smoke-tested aside).

        Raises:
            ServiceBusyError: the queue is full.
        """
        with self._cv:
            return self._enqueue(Job(self._next_id(), "swap", None, time.time(), path=Path(path)))

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def _next_id(self) -> str:
        return f"job-{next(self._job_ids)}"

    def _enqueue(self, job: Job) -> Job:
        """Append a job (the caller holds ``self._cv``)."""
        if self._stopping:
            raise ServiceBusyError("the service is stopping; retry against its successor")
        if len(self._queue) >= self.settings.queue_size:
            self.metrics.busy.labels("queue").inc()
            raise ServiceBusyError(
                f"{len(self._queue)} background jobs are already waiting (the limit); retry "
                "in a moment"
            )
        self._queue.append(job)
        self._jobs[job.job_id] = job
        if job.category is not None:
            self._latest[job.category] = job
        if len(self._jobs) > _KEEP_JOBS:
            done = [i for i, j in self._jobs.items() if j.state in ("done", "failed")]
            for job_id in done[: len(self._jobs) - _KEEP_JOBS]:
                del self._jobs[job_id]
        self.metrics.queue_depth.set(len(self._queue))
        self._cv.notify_all()
        return job

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
                changed, waiters = self._changed_items, self._refresh_waiters
                self._dirty, self._changed_items, self._refresh_waiters = False, set(), []
            if refresh:
                self._refresh_now(changed, waiters)
            if job is not None:
                self._run(job)

    def _refresh_due(self) -> bool:
        if not self._dirty:
            return False
        waited = time.monotonic() - self._dirty_since
        return bool(self._refresh_waiters) or waited >= self.settings.refresh_seconds

    def _seconds_to_refresh(self) -> float | None:
        if not self._dirty:
            return None
        return max(0.0, self._dirty_since + self.settings.refresh_seconds - time.monotonic())

    def _mark_dirty(self, changed_items: Sequence[str]) -> None:
        with self._cv:
            if not self._dirty:
                self._dirty, self._dirty_since = True, time.monotonic()
            self._changed_items.update(changed_items)
            self._cv.notify_all()

    def _refresh_now(self, changed: set[str], waiters: list[Future]) -> None:
        started = time.perf_counter()
        try:
            current = self._snapshot
            catalog = self._reload_catalog(current.recommender, items_changed=bool(changed))
            recommender = current.recommender.with_catalog(catalog, changed_items=changed)
            self._publish(
                self._make_snapshot(recommender, current.data_version + 1, previous=current)
            )
        except Exception as exc:  # the old snapshot keeps serving; the waiters learn why
            log.exception("refreshing the data snapshot failed")
            for waiter in waiters:
                waiter.set_exception(exc)
            return
        self.metrics.refresh_seconds.observe(time.perf_counter() - started)
        for waiter in waiters:
            waiter.set_result(self._snapshot.data_version)

    def _reload_catalog(self, recommender: Recommender, *, items_changed: bool) -> Catalog:
        """The store's catalogue after writes. Events never change items (only launches do), so
        after events only users and interactions are re-read: the store lock, which writes
        wait for, is then held for a fraction of a full load (1.1e6 items take about 3 s)."""
        config = recommender.model.config
        if items_changed:
            with self._store_lock:
                return Catalog.load(self.store, config)
        with self._store_lock:
            users = self.store.users()
            interactions = self.store.interactions()
            described = self.store.category_descriptions()
        old = recommender.catalog
        return Catalog(
            items=old.items,
            users=users.sort_values("user_idx").reset_index(drop=True),
            positives=positives(interactions, config.feedback),
            category_sizes=old.category_sizes,
            item_category=old.item_category,
            described=frozenset(described),
        )

    def _run(self, job: Job) -> None:
        job.state, job.started_at = "running", time.time()
        try:
            result: object = self._adapt(job) if job.kind == "adapt" else self._swap(job)
        except Exception as exc:
            if not isinstance(exc, MetarecError):
                log.exception("%s job %s failed", job.kind, job.job_id)
            self._finish(job, error=exc)
            return
        self._finish(job, result=result)

    def _finish(
        self, job: Job, *, result: object = None, error: BaseException | None = None
    ) -> None:
        job.finished_at = time.time()
        if error is None:
            job.state = "done"
            job.future.set_result(result)
        else:
            job.state, job.error = "failed", str(error)
            job.future.set_exception(error)
        outcome = "done" if error is None else "failed"
        if job.kind == "adapt":
            self.metrics.adaptations.labels(outcome).inc()
            if job.started_at is not None:
                self.metrics.adaptation_seconds.observe(job.finished_at - job.started_at)
        else:
            self.metrics.swaps.labels(outcome).inc()

    def _adapt(self, job: Job) -> Adaptation:
        assert job.category is not None
        snapshot = self._snapshot
        recommender = snapshot.recommender
        # Build the view the new adaptation will be served from before it becomes visible, so
        # that no request pays for building it.
        view = snapshot.view(
            (job.category, None), lambda key: self._prepared_view(recommender, key)
        )
        adaptation = recommender.adapt(job.category)
        job.adaptation_version = adaptation.version
        # Until this projection exists, requests retrieve with the latest one (still sound).
        self._ensure_projection(recommender, view, adaptation)
        with self._cv:
            self._since_adaptation[job.category] = 0
        log.info(
            "adapted %r version %d from %d positives in %.1f ms",
            job.category,
            adaptation.version,
            adaptation.support_size,
            adaptation.seconds * 1000,
        )
        return adaptation

    def _swap(self, job: Job) -> schemas.ModelSwapResponse:
        assert job.path is not None
        started = time.perf_counter()
        current = self._snapshot
        old = current.recommender
        model = load_model(job.path)  # verifies the manifest and every checksum
        _check_widths(model, job.path)
        if model.config.feedback == old.model.config.feedback:
            recommender = old.for_model(model, job.path)
        else:  # positives are counted differently: reload the catalogue for this model
            with self._store_lock:
                catalog = Catalog.load(self.store, model.config)
            recommender = Recommender(model, job.path, self.store, catalog=catalog)
        shared = old.shares_features_with(model)
        candidate = self._make_snapshot(
            recommender, current.data_version, previous=current, reuse_views=shared
        )
        self._smoke_test(candidate, job.path)
        self._publish(candidate)
        adapted = sorted(c for c in recommender.catalog.categories if recommender.adaptation(c))
        lost = sorted(
            c
            for c in old.catalog.categories
            if old.adaptation(c) is not None and recommender.adaptation(c) is None
        )
        readapting = []
        for category in lost:
            try:
                self.submit_adapt(category)
                readapting.append(category)
            except MetarecError as exc:
                log.warning("could not queue the re-adaptation of %r: %s", category, exc)
        log.info("swapped model %s -> %s", old.model_version, recommender.model_version)
        return schemas.ModelSwapResponse(
            model_version=recommender.model_version,
            previous_version=old.model_version,
            adapted_categories=adapted,
            readapting=readapting,
            seconds=time.perf_counter() - started,
        )

    def _smoke_test(self, snapshot: Snapshot, path: Path) -> None:
        """Rank a few users with the candidate model; any failure or non-finite score refuses it."""
        recommender = snapshot.recommender
        keys = list(snapshot.views)[:3]
        if not keys:
            keys = [(c, None) for c in recommender.catalog.categories[:1]]
        for category, _ in keys:
            adaptation = recommender.adaptation(category)
            try:
                view = snapshot.view(
                    _view_key(category, adaptation), lambda k: self._prepared_view(recommender, k)
                )
                params = _category_params(recommender, view.data, adaptation)
                user_idx = int(view.data.users[0]) if view.data.n_users else 0
                user, params = recommender.personalise(view.data, view.state, params, user_idx)
                _, scores = rank_top_k(
                    params,
                    view.data,
                    view.state,
                    view.index,
                    view.projection(_params_key(recommender, adaptation)),
                    user,
                    _SMOKE_K,
                    short_list=self.settings.short_list,
                )
            except MetarecError:
                raise
            except Exception as exc:
                raise ArtifactError(
                    f"model {path} failed its smoke test on {category!r} ({exc}); the previous "
                    "model keeps serving"
                ) from exc
            if not torch.isfinite(scores).all():
                raise ArtifactError(
                    f"model {path} gives non-finite scores on {category!r}; the previous model "
                    "keeps serving"
                )

    # ---- snapshots ----------------------------------------------------------------------------

    def _publish(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot  # one reference: requests see the old or the new, never a mix
        self.metrics.data_version.set(snapshot.data_version)

    def _make_snapshot(
        self,
        recommender: Recommender,
        data_version: int,
        *,
        previous: Snapshot | None,
        reuse_views: bool = False,
    ) -> Snapshot:
        """A snapshot whose views requests will need are built, each with the projection of the
        parameters it serves.

        The views built are those of the categories the previous snapshot had views of, and of
        every adapted category, each at its adaptation's ``as_of``. With ``reuse_views`` (a model
        swap that does not change how items are represented) the previous views are shared as
        they are; otherwise they are rebuilt on the new data, reusing an index and its
        projections while the category's items and support are unchanged.
        """
        old_views = previous.views if previous is not None else {}
        categories = {category for category, _ in old_views}
        categories.update(c for c in recommender.catalog.categories if recommender.adaptation(c))
        live = {_view_key(c, recommender.adaptation(c)) for c in categories}
        kept = {k: v for k, v in old_views.items() if k in live} if reuse_views else None
        snapshot = Snapshot(recommender, data_version, kept)
        for key in sorted(live, key=repr):
            try:
                snapshot.view(key, lambda k: self._prepared_view(recommender, k, old_views.get(k)))
            except MetarecError as exc:  # e.g. the category lost its items
                log.warning("no view of %r in the new snapshot: %s", key[0], exc)
        for key, view in snapshot.views.items():  # shared views need this model's projection
            adaptation = recommender.adaptation(key[0])
            if _view_key(key[0], adaptation) == key:
                self._ensure_projection(recommender, view, adaptation)
        return snapshot

    def _prepared_view(
        self, recommender: Recommender, key: ViewKey, previous: CategoryView | None = None
    ) -> CategoryView:
        """A view with the projection of the parameters that serve it."""
        view = self._build_view(recommender, key, previous)
        adaptation = recommender.adaptation(key[0])
        self._ensure_projection(
            recommender, view, adaptation if _view_key(key[0], adaptation) == key else None
        )
        return view

    def _build_view(
        self, recommender: Recommender, key: ViewKey, previous: CategoryView | None = None
    ) -> CategoryView:
        category, as_of = key
        data, state = recommender.category(category, as_of)
        index, projections = None, {}
        if data.n_items > self.settings.short_list:
            old = previous.index if previous is not None else None
            if (
                old is not None
                and previous is not None
                and old.fingerprint == category_fingerprint(data)
            ):
                index, projections = old, dict(previous.projections)  # same items and support
            else:
                index = build_index(data, state, seed=recommender.model.config.seed)
        items = recommender.catalog.items
        # the library's popularity order: support count, ties by position (a stable sort keeps
        # that exactly; the library's 1e-6 tie-break vanishes in float32 above a count of ~8)
        order = torch.sort(state.pop, descending=True, stable=True)
        keep = min(data.n_items, self.settings.max_k)
        return CategoryView(
            data=data,
            state=state,
            index=index,
            item_ids=items["item_id"].to_numpy()[data.item_idx],
            titles=items["title"].to_numpy()[data.item_idx],
            popular=order.indices[:keep].clone(),
            popular_scores=order.values[:keep].clone(),
            projections=projections,
        )

    def _ensure_projection(
        self, recommender: Recommender, view: CategoryView, adaptation: Adaptation | None
    ) -> None:
        """Fit the view's projection for the given parameters, unless it exists (or no index)."""
        key = _params_key(recommender, adaptation)
        if view.index is None or key in view.projections:
            return
        params = _category_params(recommender, view.data, adaptation)
        queries = self._sample_queries(recommender, view, params)
        projection = fit_projection(
            view.data, view.state, view.index, queries, rank=self.settings.retrieval_rank
        )
        view.add_projection(key, projection)

    def _sample_queries(
        self, recommender: Recommender, view: CategoryView, params: Params
    ) -> torch.Tensor:
        """(m, 2D) attribute queries of a seeded sample of users: half with support here (when
        there are), the rest from the whole store, as requests come."""
        assert view.index is not None
        data = view.data
        rng = np.random.default_rng(recommender.model.config.seed)
        half = _QUERY_SAMPLE // 2
        inside = rng.permutation(data.users)[:half]
        n_users = len(recommender.catalog.users)
        anyone = rng.choice(n_users, min(n_users, _QUERY_SAMPLE - len(inside)), replace=False)
        queries = []
        for user_idx in np.union1d(inside, anyone):
            user, own = recommender.personalise(data, view.state, params, int(user_idx))
            queries.append(user_query(own, view.index, user).attributes)
        if not queries:  # a store without users: the item side alone decides
            return torch.zeros(1, view.index.gram.shape[0])
        return torch.stack(queries)

    def _count_events(self, category: str, n: int) -> None:
        """Count new events per category; re-adapt an adapted one every ``readapt_every``."""
        with self._cv:
            seen = self._since_adaptation.get(category, 0) + n
            self._since_adaptation[category] = seen
        every = self.settings.readapt_every
        recommender = self._snapshot.recommender
        if every and seen >= every and recommender.adaptation(category) is not None:
            try:
                self.submit_adapt(category)
            except MetarecError as exc:  # queue full: the next batch tries again
                log.info("automatic re-adaptation of %r postponed: %s", category, exc)


def _view_key(category: str, adaptation: Adaptation | None) -> ViewKey:
    """The view serving ``category``: as its adaptation saw it, or as it is now."""
    return (category, None if adaptation is None else adaptation.as_of)


def _category_params(
    recommender: Recommender, data: CategoryData, adaptation: Adaptation | None
) -> Params:
    """The category's adapted params or, before its adaptation, the zero-shot model: the
    meta-initialisation (conditioned on the category for a category-conditioned model)."""
    return recommender.model.start_params(data) if adaptation is None else adaptation.params


def _params_key(recommender: Recommender, adaptation: Adaptation | None) -> ParamsKey:
    return (recommender.model_version, 0 if adaptation is None else adaptation.version)


def _check_widths(model: MetaModel, path: Path) -> None:
    """The params must read rows as wide as the model's own features produce."""
    expected = input_dim(model.space.dim + model.factors.shape[1])
    width = model.params["layers.0.weight"].shape[1]
    if width != expected:
        raise ArtifactError(
            f"model {path} is inconsistent: its first layer reads {width} inputs but its features "
            f"give {expected}; the folder mixes files of different models"
        )


def _adaptation_info(adaptation: Adaptation) -> schemas.AdaptationInfo:
    return schemas.AdaptationInfo(
        version=adaptation.version,
        support_size=adaptation.support_size,
        n_users=adaptation.n_users,
        adapted_at=adaptation.adapted_at,
        seconds=adaptation.seconds,
        as_of=adaptation.as_of,
    )


def _rejected_rows(rows: list[BadRow]) -> list[schemas.RejectedRow]:
    """Bad rows of an in-memory load (1-based row numbers) as 0-based batch positions."""
    return [
        schemas.RejectedRow(
            index=row.line - 1, column=row.column, reason=row.reason, value=row.value
        )
        for row in rows
    ]


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


def _text_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)
