"""Liked and not-liked pairs: a pair is liked when any of its rows is positive; every other pair
the user touched is a dislike, whatever order its rows came in."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec.config import FeedbackConfig
from metarec.data.catalog import _non_positive
from metarec.data.positives import positive_rows, positives

FEEDBACK = FeedbackConfig(positive_events=("click", "order"))


def interactions() -> pd.DataFrame:
    rows = [  # user, item, rating, event
        (0, 0, 5.0, "rating"),  # liked by rating
        (0, 1, 1.0, "rating"),  # disliked by rating
        (0, 2, 1.0, "rating"),  # a low rating first ...
        (0, 2, None, "click"),  # ... then a positive event: liked
        (1, 1, None, "view"),  # not a positive event: disliked
        (1, 1, None, "view"),  # twice: one pair
        (1, 3, None, "order"),  # liked by event
        (2, 3, 2.0, "rating"),  # disliked
        (2, 0, None, "view"),  # a view ...
        (2, 0, 4.0, "rating"),  # ... then a rating at the threshold: liked
    ]
    frame = pd.DataFrame(rows, columns=["user_idx", "item_idx", "rating", "event"])
    return frame.assign(timestamp=pd.array(range(len(rows)), dtype="Int64"), weight=np.nan).astype(
        {"rating": "float64"}
    )


def test_positive_rows_follow_rating_then_event() -> None:
    assert positive_rows(interactions(), FEEDBACK).tolist() == [
        True, False, False, True, False, False, True, False, False, True,
    ]  # fmt: skip


def test_dislikes_are_the_touched_pairs_that_are_not_liked() -> None:
    frame = interactions()
    liked = positives(frame, FEEDBACK)
    assert sorted(zip(liked["user_idx"], liked["item_idx"], strict=True)) == [
        (0, 0), (0, 2), (1, 3), (2, 0),
    ]  # fmt: skip
    disliked = _non_positive(frame, liked, n_items=4, feedback=FEEDBACK)
    assert list(zip(disliked["user_idx"], disliked["item_idx"], strict=True)) == [
        (0, 1), (1, 1), (2, 3),
    ]  # fmt: skip
    every_pair = set(zip(frame["user_idx"], frame["item_idx"], strict=True))
    liked_pairs = set(zip(liked["user_idx"], liked["item_idx"], strict=True))
    assert set(zip(disliked["user_idx"], disliked["item_idx"], strict=True)) == (
        every_pair - liked_pairs
    )


def test_no_dislikes_when_every_row_is_positive() -> None:
    frame = interactions().assign(rating=np.nan, event="click")
    disliked = _non_positive(frame, positives(frame, FEEDBACK), n_items=4, feedback=FEEDBACK)
    assert disliked.empty and list(disliked.columns) == ["user_idx", "item_idx"]
