"""Re-sent events: the same ``event_id`` must carry the same event.

``event_id`` makes ``POST /events`` idempotent: a re-sent event is a duplicate and is not stored
again. But an id re-used for a *different* event (another user, item, time, kind, rating or
weight) is a client bug that silently counting it as a duplicate would hide: it is a conflict
(HTTP 409, or a rejected row with ``skip_bad_rows``).
"""

from __future__ import annotations

import math
import numbers

import duckdb
import pandas as pd

from metarec.data.values import _times
from metarec.errors import DataError

_COMPARED = ("user_id", "item_id", "timestamp", "event", "rating", "weight")


class EventConflictError(DataError):
    """Events re-use stored event_ids with different content; nothing was stored (HTTP 409).

    Attributes:
        positions: 0-based positions in the batch of the conflicting events.
    """

    def __init__(self, message: str, positions: list[int]) -> None:
        super().__init__(message)
        self.positions = positions


def conflicts(connection: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> dict[int, str]:
    """Batch rows whose event_id is stored with different content.

    Args:
        connection: the store's connection (the caller holds the store lock).
        frame: the batch: event_id, user_id, item_id, timestamp, event, rating, weight.

    Returns:
        0-based batch position -> which fields differ and how (empty: no conflict).
    """
    stored = connection.execute(
        "SELECT x.event_id, u.user_id, i.item_id, x.timestamp, x.event, x.rating, x.weight "
        "FROM interactions x JOIN users u USING (user_idx) JOIN items i USING (item_idx) "
        "WHERE x.event_id IN (SELECT unnest(?::VARCHAR[]))",
        [frame["event_id"].astype(str).str.strip().tolist()],
    ).fetchall()
    if not stored:
        return {}
    by_id = {row[0]: dict(zip(_COMPARED, row[1:], strict=True)) for row in stored}
    seconds, _ = _times(frame["timestamp"])
    found: dict[int, str] = {}
    for position, row in enumerate(frame.itertuples(index=False)):
        before = by_id.get(str(row.event_id).strip())
        if before is None:
            continue
        now = {
            "user_id": str(row.user_id).strip(),
            "item_id": str(row.item_id).strip(),
            "timestamp": seconds.iloc[position],
            "event": None if row.event is None else str(row.event).strip() or None,
            "rating": row.rating,
            "weight": row.weight,
        }
        differ = [f for f in _COMPARED if not _same(before[f], now[f])]
        if differ:
            found[position] = ", ".join(f"{f} {before[f]!r} -> {now[f]!r}" for f in differ)
    return found


def _same(stored: object, sent: object) -> bool:
    if _missing(stored) or _missing(sent):
        return _missing(stored) and _missing(sent)
    if isinstance(stored, numbers.Real) and isinstance(sent, numbers.Real):
        return float(stored) == float(sent)
    return str(stored) == str(sent)


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))
