"""Top-K lists for many users of one category at once, as a table or a Parquet file.

Every list comes from :meth:`Recommender.recommend_many
<metarec.serving.recommender.Recommender.recommend_many>`, the path of :meth:`Recommender.recommend`
(and of the CLI and the HTTP service): the same fallbacks (an unknown user gets the launch
popularity, a category not adapted yet the meta-initialisation), the same exclusion of items the
user already liked there, the same retrieval and exact re-rank. Users are ranked in batches of
``batch_size`` (:func:`metarec.serving.batched.rank_many`), so a batch pays the per-call costs
once; the answer for each user is the one a single call gives (``tests/cli/test_batch.py``).

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

MAX_BATCH_SIZE = 1024  # users ranked per call (larger batches were slower: bigger temporaries)
_BATCH_FLOATS = 20_000_000  # a batch's (users x items) dot products held at once: 80 MB
COLUMNS = ("user_id", "rank", "item_id", "score", "fallback")


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
        batch_size: users ranked per call; None: up to 1,024, fewer in large categories so a
            batch's dot products stay under 80 MB.
        progress: show progress on stderr (a bar on a terminal, lines otherwise).

    Returns:
        Columns ``user_id``, ``rank`` (1 = best), ``item_id``, ``score`` (the exact score, as
        :meth:`Recommender.recommend` gives it) and ``fallback`` (``"popularity"``,
        ``"zero-shot"``, or missing when personalised); users in the order given, each user's
        rows best first. ``attrs`` holds the category, ``k``, the model version and the
        adaptation version.

    Raises:
        UnknownCategoryError, DataError: unknown category, no items, ``k`` < 1 or
            ``batch_size`` < 1.
        NonFiniteError: the model gives some user a non-finite score (no table is returned).
    """
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    if batch_size is not None and batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    recommender.catalog.require_category(category)
    if batch_size is None:
        n_items = int(recommender.catalog.category_sizes[category])
        batch_size = max(1, min(MAX_BATCH_SIZE, _BATCH_FLOATS // max(1, n_items)))
    if user_ids is None:
        user_ids = recommender.catalog.users["user_id"].astype(str).tolist()
    parts: dict[str, list] = {name: [] for name in COLUMNS}
    with progress_bar(len(user_ids), "recommend", enabled=progress, unit="user") as bar:
        for start in range(0, len(user_ids), batch_size):
            chunk = user_ids[start : start + batch_size]
            for result in recommender.recommend_many(category, [(u, k) for u in chunk]):
                if isinstance(result, NonFiniteError):
                    raise NonFiniteError(f"{result}; no table was written") from result
                if isinstance(result, MetarecError):
                    raise result
                n = len(result.items)
                parts["user_id"].append(np.full(n, result.user_id, dtype=object))
                parts["rank"].append(np.arange(1, n + 1, dtype=np.int32))
                parts["item_id"].append(np.array([i.item_id for i in result.items], dtype=object))
                parts["score"].append(np.array([i.score for i in result.items], dtype=np.float64))
                parts["fallback"].append(np.full(n, result.fallback, dtype=object))
            bar.update(len(chunk))
    table = pd.DataFrame(
        {
            name: np.concatenate(values) if values else np.array([], dtype=object)
            for name, values in parts.items()
        }
    ).astype({"user_id": "string", "rank": "int32", "item_id": "string", "score": "float64"})
    table["fallback"] = table["fallback"].astype("string")  # missing (pd.NA): personalised
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
