"""Which interactions are positives, and how much each one weighs (PROTOCOL.md §1)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec.config import FeedbackConfig
from metarec.data.store import Store, _out_of_range


def positives(interactions: pd.DataFrame, config: FeedbackConfig) -> pd.DataFrame:
    """Keep the positive interactions, one row per (user, item), with a weight.

    A row is positive when its rating is at least ``positive_threshold``, or, without a rating,
    when its event is one of ``positive_events`` (every event when that is ``None``). Repeated
    positives of the same user and item (view, then click, then order) collapse into one row that
    keeps the earliest timestamp and the largest weight: the first time the user showed interest
    is what a launch would have seen first.

    Args:
        interactions: the store's interactions (user_idx, item_idx, timestamp, rating, event,
            weight).
        config: the feedback settings.

    Returns:
        Columns user_idx, item_idx, timestamp (Int64, may be missing), weight (float64).
    """
    rating = interactions["rating"]
    event = interactions["event"].astype("object")
    has_rating = rating.notna().to_numpy()
    positive = np.where(has_rating, (rating >= config.positive_threshold).to_numpy(), False)
    if config.positive_events is None:
        by_event = np.ones(len(interactions), dtype=bool)
    else:
        by_event = event.isin(list(config.positive_events)).to_numpy()
    positive = np.where(has_rating, positive, by_event)

    kept = interactions.loc[positive, ["user_idx", "item_idx", "timestamp", "event", "weight"]]
    weights = kept["event"].map(config.event_weights).astype("float64")
    weights = weights.fillna(config.default_event_weight)
    explicit = kept["weight"].astype("float64")
    kept = kept.assign(weight=explicit.where(explicit.notna(), weights))
    grouped = kept.groupby(["user_idx", "item_idx"], sort=True, as_index=False).agg(
        timestamp=("timestamp", "min"), weight=("weight", "max")
    )
    grouped["timestamp"] = grouped["timestamp"].astype("Int64")
    return grouped.reset_index(drop=True)


def category_counts(store: Store, config: FeedbackConfig) -> pd.DataFrame:
    """:attr:`Catalog.category_table <metarec.data.catalog.Catalog.category_table>` computed in
    DuckDB, without reading the interactions into memory (``metarec categories``).

    A tested twin of :func:`positives` followed by ``category_table``: the same rule (rating at
    least the threshold, else the event; rows with an out-of-range rating or weight left out as
    :meth:`Store.interactions` leaves them), the same counts (``tests/cli/test_conventions.py``).

    Returns:
        Columns category, n_items, n_users, n_positives (int64), by category.
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
    table = store.connection.execute(query, parameters).df()
    return table.astype({"n_items": "int64", "n_users": "int64", "n_positives": "int64"})
