"""``POST /events``: one batch of events stored in one transaction, idempotent by ``event_id``.

The batch goes through the same load as every other data (:func:`metarec.data.ingest_frames`:
one validation, one insert, one commit), after a check that no event re-uses a stored
``event_id`` with different content (:mod:`metarec.serving.conflicts`). Every lookup here is
sized by the batch, never by the store: the store's events and items only grow, and a lookup that
scanned them all made each batch slower than the one before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pandas as pd

from metarec.data.ingest import ingest_frames
from metarec.data.schema import BadRow
from metarec.data.store import Store
from metarec.errors import BadRowsError
from metarec.serving import schemas
from metarec.serving.conflicts import EventConflictError, conflicts

__all__ = [
    "EventsRejectedError",
    "StoredEvents",
    "StoredGroup",
    "store_event_batches",
    "store_events",
]

_COLUMNS = ["event_id", "user_id", "item_id", "timestamp", "event", "rating", "weight"]


class EventsRejectedError(BadRowsError):
    """A batch of events was refused because some rows are bad; nothing was stored.

    Attributes:
        rows: each bad row's position in the batch, column and reason.
    """

    def __init__(self, message: str, report: object, rows: list[schemas.RejectedRow]) -> None:
        super().__init__(message, report)
        self.rows = rows


@dataclass(frozen=True)
class StoredEvents:
    """What a stored batch did: the answer, and its new events counted per category."""

    response: schemas.EventsResponse
    per_category: list[tuple[str, int]]
    known: frozenset[str] = frozenset()  # the batch's event ids that were stored before


@dataclass(frozen=True)
class StoredGroup:
    """What a group of batches did: one outcome per batch, new events per category for all.

    Attributes:
        outcomes: per batch, its answer, or the error it raises (nothing of it stored).
        per_category: the group's new events counted per category.
        transactions: how many loads stored the group (1 when it was committed together).
    """

    outcomes: list[schemas.EventsResponse | EventsRejectedError | EventConflictError]
    per_category: list[tuple[str, int]]
    transactions: int


def store_events(
    store: Store, events: Sequence[schemas.Event], *, skip_bad_rows: bool = False
) -> StoredEvents:
    """Store a batch of events in one transaction; durable when this returns.

    The caller holds the store lock (one thread at a time on the connection).

    Args:
        store: the service's store, open read-write.
        events: the batch; an ``event_id`` already stored is a duplicate, not stored again.
        skip_bad_rows: store the good rows and report the bad ones (and the conflicting ones),
            instead of refusing the whole batch.

    Raises:
        EventsRejectedError: some rows are bad (unknown item, unparsable time, repeated
            event_id...) and ``skip_bad_rows`` is False; nothing was stored.
        EventConflictError: some events re-use a stored event_id with different content and
            ``skip_bad_rows`` is False; nothing was stored.
    """
    frame = pd.DataFrame([e.model_dump() for e in events], columns=_COLUMNS)
    connection = store.connection
    stored_before = _stored_event_ids(connection, frame["event_id"].tolist())
    # Only a stored id can clash: a batch of new events skips that lookup.
    clashes = conflicts(connection, frame) if stored_before else {}
    if clashes and not skip_bad_rows:
        shown = "; ".join(f"#{i} {events[i].event_id!r}: {d}" for i, d in list(clashes.items())[:3])
        raise EventConflictError(
            f"{len(clashes)} event(s) re-use a stored event_id with different content; "
            f"nothing was stored. Give new events new ids. First: {shown}",
            list(clashes),
        )
    clashed = [_conflict_row(i, detail) for i, detail in clashes.items()]
    frame = frame.drop(index=list(clashes))
    try:
        report = ingest_frames(
            frame.reset_index(drop=True),
            store,
            skip_bad_rows=skip_bad_rows,
            source="POST /events",
        )
    except BadRowsError as exc:
        rows = _rejected_rows(exc.report.bad_rows, frame.index)  # type: ignore[attr-defined]
        raise EventsRejectedError(
            f"{len(rows)} of {len(events)} events are bad; nothing was stored. Fix them, "
            "or send ?skip_bad_rows=true to store the rest. First: "
            + "; ".join(f"#{r.index} {r.column}: {r.reason}" for r in rows[:3]),
            exc.report,
            rows,
        ) from exc
    bad = {row.line - 1 for row in report.bad_rows}
    new_items = [
        item
        for position, (event_id, item) in enumerate(
            zip(frame["event_id"], frame["item_id"], strict=True)
        )
        if position not in bad and event_id not in stored_before
    ]
    rejected = sorted(
        [*_rejected_rows(report.bad_rows, frame.index), *clashed], key=lambda r: r.index
    )
    counts = report.interactions
    response = schemas.EventsResponse(
        received=len(events),
        inserted=counts.inserted,
        duplicates=counts.unchanged,
        rejected=rejected,
    )
    return StoredEvents(
        response,
        _per_category(connection, new_items) if counts.inserted else [],
        frozenset(stored_before),
    )


def store_event_batches(store: Store, batches: Sequence[Sequence[schemas.Event]]) -> StoredGroup:
    """Store batches that arrived together in one transaction (group commit); each batch gets
    exactly the answer it would get alone.

    Most of a batch's cost is fixed (the load's queries and the commit), so batches waiting on
    the store lock are committed together. All or nothing per batch still holds: if the merged
    load is refused (a batch has a bad row or re-uses a stored id with other content, or two
    batches carry the same ``event_id``), nothing of it was stored and every batch is stored on
    its own, in order, as if it had come alone. The caller holds the store lock.

    Args:
        store: the service's store, open read-write.
        batches: batches stored all or nothing (``skip_bad_rows`` off), in arrival order.
    """
    if len(batches) > 1:
        merged = [event for batch in batches for event in batch]
        try:
            stored = store_events(store, merged)
        except (EventsRejectedError, EventConflictError):
            pass  # nothing stored: each batch on its own below
        else:
            outcomes: list[schemas.EventsResponse | EventsRejectedError | EventConflictError] = []
            for batch in batches:
                known = sum(event.event_id in stored.known for event in batch)
                outcomes.append(
                    schemas.EventsResponse(
                        received=len(batch),
                        inserted=len(batch) - known,
                        duplicates=known,
                        rejected=[],
                    )
                )
            return StoredGroup(outcomes, stored.per_category, transactions=1)
    outcomes = []
    counts: dict[str, int] = {}
    for batch in batches:
        try:
            alone = store_events(store, batch)
        except (EventsRejectedError, EventConflictError) as exc:
            outcomes.append(exc)
            continue
        outcomes.append(alone.response)
        for category, n in alone.per_category:
            counts[category] = counts.get(category, 0) + n
    return StoredGroup(outcomes, sorted(counts.items()), transactions=len(batches))


def _stored_event_ids(connection: duckdb.DuckDBPyConnection, ids: list[str]) -> set[str]:
    """The ids among ``ids`` already stored."""
    rows = connection.execute(
        "SELECT event_id FROM interactions WHERE event_id IN (SELECT unnest(?::VARCHAR[]))", [ids]
    ).fetchall()
    return {row[0] for row in rows}


def _per_category(connection: duckdb.DuckDBPyConnection, items: list[str]) -> list[tuple[str, int]]:
    """New events per category, from their item ids (one per new event).

    Through the items table: joining the new rows back from the events table scanned every
    stored event_id.
    """
    rows = connection.execute(
        "SELECT i.category, count(*) FROM (SELECT unnest(?::VARCHAR[]) AS item_id) n "
        "JOIN items i USING (item_id) GROUP BY i.category",
        [items],
    ).fetchall()
    return [(str(category), int(n)) for category, n in rows]


def _rejected_rows(rows: list[BadRow], positions: pd.Index) -> list[schemas.RejectedRow]:
    """Bad rows of an in-memory load (1-based row numbers of the loaded frame) as 0-based
    positions in the batch (``positions``: the loaded rows' batch positions)."""
    return [
        schemas.RejectedRow(
            index=int(positions[row.line - 1]),
            column=row.column,
            reason=row.reason,
            value=row.value,
        )
        for row in rows
    ]


def _conflict_row(position: int, detail: str) -> schemas.RejectedRow:
    return schemas.RejectedRow(
        index=position,
        column="event_id",
        reason=f"event_id already stored with different content ({detail}); use a new id",
    )
