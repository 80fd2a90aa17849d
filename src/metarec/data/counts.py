"""Per-category counts in DuckDB, without pandas: what ``metarec categories`` prints.

Kept apart from :mod:`metarec.data.positives` (which works in pandas) so that the command
imports neither pandas nor pyarrow (docs/BENCHMARKS.md, "CLI latency").
"""

from __future__ import annotations

from typing import NamedTuple

from metarec.config import FeedbackConfig
from metarec.data.store import Store, _out_of_range


class CategoryCount(NamedTuple):
    """A category's items, users with a positive there, and positives."""

    category: str
    n_items: int
    n_users: int
    n_positives: int


def category_counts(store: Store, config: FeedbackConfig) -> list[CategoryCount]:
    """:attr:`Catalog.category_table <metarec.data.catalog.Catalog.category_table>` computed in
    DuckDB, without reading the interactions into memory (``metarec categories``).

    A tested twin of :func:`positives` followed by ``category_table``: the same rule (rating at
    least the threshold, else the event; rows with an out-of-range rating or weight left out as
    :meth:`Store.interactions` leaves them), the same counts (``tests/cli/test_conventions.py``).

    Returns:
        One row per category, by category name.
    """
    events = None if config.positive_events is None else list(config.positive_events)
    query = f"""
        WITH kept AS (
            SELECT user_idx, item_idx, rating, event FROM interactions
            WHERE NOT ({_out_of_range("rating")} OR {_out_of_range("weight")})
        ), positive AS (
            SELECT DISTINCT user_idx, item_idx FROM kept
            WHERE CASE WHEN rating IS NOT NULL THEN rating >= $threshold
                       WHEN $events IS NULL THEN true
                       ELSE coalesce(list_contains($events, event), false) END
        ), here AS (
            SELECT i.category, count(DISTINCT p.user_idx) AS n_users, count(*) AS n_positives
            FROM positive p JOIN items i USING (item_idx) GROUP BY i.category
        )
        SELECT c.category, c.n_items, coalesce(h.n_users, 0) AS n_users,
               coalesce(h.n_positives, 0) AS n_positives
        FROM (SELECT category, count(*) AS n_items FROM items GROUP BY category) c
        LEFT JOIN here h USING (category)
        ORDER BY c.category
    """
    parameters = {"threshold": config.positive_threshold, "events": events}
    rows = store.connection.execute(query, parameters).fetchall()
    return [CategoryCount(str(c), int(i), int(u), int(p)) for c, i, u, p in rows]
