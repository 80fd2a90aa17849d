"""Event batches that wait for the store are committed together, and each still gets exactly
the answer (and the stored rows) it would get alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from tests.serving.test_service import copy_store, events, serve_settings

from metarec.data.store import Store
from metarec.serving import schemas
from metarec.serving.conflicts import EventConflictError
from metarec.serving.events import EventsRejectedError, store_event_batches, store_events
from metarec.serving.service import Service


def _stored_rows(path: Path) -> list[tuple]:
    with Store.open(path, read_only=True) as store:
        return store.connection.execute(
            "SELECT i.event_id, u.user_id, t.item_id, i.timestamp, i.event, i.weight "
            "FROM interactions i JOIN users u USING (user_idx) JOIN items t USING (item_idx) "
            "ORDER BY i.rowid"
        ).fetchall()


def _alone(path: Path, batches: list[list[schemas.Event]]) -> list[object]:
    """Each batch stored on its own, in order: the answer (or error class) of each."""
    outcomes: list[object] = []
    with Store.open(path) as store:
        for batch in batches:
            try:
                outcomes.append(store_events(store, batch).response)
            except (EventsRejectedError, EventConflictError) as exc:
                outcomes.append(type(exc))
    return outcomes


def _together(path: Path, batches: list[list[schemas.Event]]) -> tuple[list[object], int]:
    with Store.open(path) as store:
        group = store_event_batches(store, batches)
    outcomes = [o if isinstance(o, schemas.EventsResponse) else type(o) for o in group.outcomes]
    return outcomes, group.transactions


def _changed(event: schemas.Event) -> schemas.Event:
    return event.model_copy(update={"item_id": "c7-i30"})


@pytest.mark.parametrize(
    ("name", "transactions"),
    [
        ("new and already stored", 1),
        ("a bad row", 3),
        ("one id in two batches", 3),
        ("a conflicting id", 3),
    ],
)
def test_a_group_answers_and_stores_as_the_batches_alone(
    known_store: Path, tmp_path: Path, name: str, transactions: int
) -> None:
    stored = events([("u1", "c7-i3"), ("u2", "c7-i4")], prefix="old")
    first = events([("u1", "c7-i5"), ("fresh", "c7-i6"), ("u3", "c7-i3")], prefix="a")
    second = [stored[0], *events([("u4", "c7-i7"), ("fresh", "c7-i8")], prefix="b")]
    third = events([("u5", "c7-i9")], prefix="c")
    if name == "a bad row":
        second = [*second, *events([("u4", "no-such-item")], prefix="bad")]
    elif name == "one id in two batches":
        third = [*third, first[0]]
    elif name == "a conflicting id":
        second = [_changed(stored[1]), *second]
    batches = [first, second, third]

    paths = {}
    for side in ("alone", "together"):
        paths[side] = copy_store(known_store, tmp_path / side)
        with Store.open(paths[side]) as store:
            store_events(store, stored)
    expected = _alone(paths["alone"], batches)
    outcomes, used = _together(paths["together"], batches)

    assert outcomes == expected
    assert used == transactions  # merged in one, or each alone after the merged load failed
    assert _stored_rows(paths["together"]) == _stored_rows(paths["alone"])
    if name == "new and already stored":
        assert [(o.inserted, o.duplicates) for o in outcomes] == [(3, 0), (2, 1), (1, 0)]
    elif name == "one id in two batches":  # alone, the second sending is a duplicate
        assert [(o.inserted, o.duplicates) for o in outcomes] == [(3, 0), (2, 1), (1, 1)]
    else:  # the bad batch is refused alone, the others stored
        assert [isinstance(o, type) for o in outcomes] == [False, True, False]


def test_concurrent_batches_are_committed_together(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    store = copy_store(known_store, tmp_path / "live")
    service = Service.open(serve_settings(store, known_model_dir, refresh_seconds=0.0))
    service.start()
    try:
        before = service.with_store(lambda s: s.stats()["n_interactions"])
        batches = [
            events([(f"u{n}", f"c7-i{n}"), ("u0", f"c7-i{n + 10}")], f"t{n}-") for n in range(6)
        ]
        batches.append(events([("u1", "no-such-item")], "bad"))
        answers: dict[int, object] = {}

        def post(n: int) -> None:
            try:
                answers[n] = service.post_events(batches[n])
            except EventsRejectedError as exc:
                answers[n] = exc

        # hold the store so that every batch queues, then let them through at once
        with service._store_lock:
            threads = [threading.Thread(target=post, args=(n,)) for n in range(len(batches))]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while len(service._pending) < len(batches) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(service._pending) == len(batches)
        for thread in threads:
            thread.join(timeout=60)

        for n in range(6):
            assert isinstance(answers[n], schemas.EventsResponse)
            assert (answers[n].inserted, answers[n].duplicates) == (2, 0)
        assert isinstance(answers[6], EventsRejectedError)
        assert service.with_store(lambda s: s.stats()["n_interactions"]) == before + 12
        # the first thread through stored all seven: merged, refused, then each alone
        groups = service.metrics.event_groups.collect()[0].samples
        count = next(s.value for s in groups if s.name.endswith("_count"))
        total = next(s.value for s in groups if s.name.endswith("_sum"))
        assert (count, total) == (1, 7)
    finally:
        service.close()
