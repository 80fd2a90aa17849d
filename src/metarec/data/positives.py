"""Which interactions are positives, and how much each one weighs (PROTOCOL.md §1)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec.config import FeedbackConfig


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
    columns = ["user_idx", "item_idx", "timestamp", "event", "weight"]
    kept = interactions.loc[positive_rows(interactions, config), columns]
    weights = kept["event"].map(config.event_weights).astype("float64")
    weights = weights.fillna(config.default_event_weight)
    explicit = kept["weight"].astype("float64")
    kept = kept.assign(weight=explicit.where(explicit.notna(), weights))
    grouped = kept.groupby(["user_idx", "item_idx"], sort=True, as_index=False).agg(
        timestamp=("timestamp", "min"), weight=("weight", "max")
    )
    grouped["timestamp"] = grouped["timestamp"].astype("Int64")
    return grouped.reset_index(drop=True)


def positive_rows(interactions: pd.DataFrame, config: FeedbackConfig) -> np.ndarray:
    """(n,) whether each interaction row is positive (see :func:`positives`): a user and item
    are liked when any of their rows is."""
    rating = interactions["rating"]
    has_rating = rating.notna().to_numpy()
    positive = np.where(has_rating, (rating >= config.positive_threshold).to_numpy(), False)
    if config.positive_events is None:
        by_event = np.ones(len(interactions), dtype=bool)
    else:
        event = interactions["event"].astype("object")
        by_event = event.isin(list(config.positive_events)).to_numpy()
    return np.where(has_rating, positive, by_event)
