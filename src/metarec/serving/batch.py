"""Top-K lists for many users of one category at once, as a table or a Parquet file.

Every list comes from :meth:`Recommender.recommend_many
<metarec.serving.recommender.Recommender.recommend_many>`, the path of :meth:`Recommender.recommend`
(and of the CLI and the HTTP service): the same fallbacks (an unknown user gets the launch
popularity, a category not adapted yet the meta-initialisation), the same exclusion of items the
user already liked there, the same retrieval and exact re-rank. Users go to it in batches of
``batch_size``, and it ranks a batch in passes (:func:`metarec.serving.batched.rank_many`), so a
batch pays the per-call costs once; the answer for each user is the one a single call gives
(``tests/cli/test_batch.py``).

Example::

    from metarec import Recommender, Store, recommend_batch, write_recommendations

    with Store.open("shop.duckdb", read_only=True) as store:
        recommender = Recommender.open("model/", store)
        table = recommend_batch(recommender, "Books > Literature > Poetry", None, k=10)
        write_recommendations(table, "recs.parquet")
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from metarec.atomic import write_atomic
from metarec.errors import DataError, MetarecError, NonFiniteError
from metarec.progress import progress_bar

if TYPE_CHECKING:
    from metarec.serving.recommender import Recommender

# Users per call of recommend_many: a progress step, and the users' lists held as objects at
# once. The ranking's memory is bounded below this, in passes (serving/batched.py).
BATCH_SIZE = 4096


def recommend_batch(
    recommender: Recommender,
    category: str,
    user_ids: Sequence[str] | None,
    k: int = 10,
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Top-``k`` items of ``category`` for each user, one row per (user, rank).

    Args:
        recommender: a model bound to a store.
        category: the category path.
        user_ids: external user ids (an unknown one gets the popularity fallback); None for
            every user of the store.
        k: items per user (fewer when the category has fewer the user has not seen).
        batch_size: users per call of :meth:`Recommender.recommend_many`; None: 4,096 (the
            ranking itself goes in passes of bounded memory whatever the size).
        progress: show progress on stderr (a bar on a terminal, lines otherwise).

    Returns:
        Columns ``user_id``, ``rank`` (1 = best), ``item_id``, ``score`` (the exact score, as
        :meth:`Recommender.recommend` gives it) and ``fallback`` (``"popularity"``,
        ``"zero-shot"``, or missing when personalised); users in the order given, each user's
        rows best first. ``attrs`` holds the category, ``k``, the model version and the
        adaptation version.

    Raises:
        UnknownCategoryError, DataError: unknown category, no items, ``k`` < 1,
            ``batch_size`` < 1, or ``user_ids`` given as one string.
        NonFiniteError: the model gives some user a non-finite score (no table is returned).
    """
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    if isinstance(user_ids, str):  # a string is a sequence too: of one-character "ids"
        raise DataError(
            f"user_ids is a list of ids, got the string {user_ids!r}; for one user pass "
            f"[{user_ids!r}] or use Recommender.recommend"
        )
    if batch_size is not None and batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    recommender.catalog.require_category(category)
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    if user_ids is None:
        user_ids = recommender.catalog.users["user_id"].astype(str).tolist()
    # columns gathered as flat lists, one entry per user or per row, and made arrays once
    users: list[str] = []
    fallbacks: list[str | None] = []
    lengths: list[int] = []
    item_ids: list[str] = []
    scores: list[float] = []
    with progress_bar(len(user_ids), "recommend", enabled=progress, unit="user") as bar:
        for start in range(0, len(user_ids), batch_size):
            chunk = user_ids[start : start + batch_size]
            for result in recommender.recommend_many(category, [(u, k) for u in chunk]):
                if isinstance(result, NonFiniteError):
                    raise NonFiniteError(f"{result}; no table was written") from result
                if isinstance(result, MetarecError):
                    raise result
                users.append(result.user_id)
                fallbacks.append(result.fallback)
                lengths.append(len(result.items))
                item_ids.extend([item.item_id for item in result.items])
                scores.extend([item.score for item in result.items])
            bar.update(len(chunk))
    per_user = np.asarray(lengths, dtype=np.int64)
    first = np.repeat(np.cumsum(per_user) - per_user, per_user)  # each row's user's first row
    table = pd.DataFrame(
        {
            "user_id": pd.array(np.repeat(np.asarray(users, dtype=object), per_user), "string"),
            "rank": (np.arange(len(item_ids)) - first + 1).astype(np.int32),
            "item_id": pd.array(item_ids, dtype="string"),
            "score": np.asarray(scores, dtype=np.float64),
            # missing (pd.NA): personalised
            "fallback": pd.array(
                np.repeat(np.asarray(fallbacks, dtype=object), per_user), "string"
            ),
        }
    )
    adaptation = recommender.adaptation(category)
    table.attrs.update(
        category=category,
        k=k,
        model_version=recommender.model_version,
        adaptation_version=None if adaptation is None else adaptation.version,
    )
    return table


def write_recommendations(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a :func:`recommend_batch` table to Parquet atomically (a reader never sees half a
    file; a crash leaves the previous file). ``table.attrs`` go into the file's metadata under
    ``metarec.<name>``."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    metadata = {
        **(arrow.schema.metadata or {}),
        **{f"metarec.{k}".encode(): str(v).encode() for k, v in table.attrs.items()},
    }
    buffer = io.BytesIO()
    pq.write_table(arrow.replace_schema_metadata(metadata), buffer)
    return write_atomic(path, buffer.getvalue())
