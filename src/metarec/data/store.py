"""The store: one DuckDB file holding items, users, interactions and category descriptions.

The schema is created once, with the file; nothing alters it later. ``item_idx`` and
``user_idx`` are dense indices 0..n-1 in insertion order, so they can index embedding tables
directly. DuckDB lets one process open a file read-write, and while it does no other process can
open it at all: the service owns the live store; training reads a snapshot or runs while the
service is down (docs/DATA.md).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from metarec.data.limits import NUMBER_LIMITS, range_text
from metarec.data.schema import (
    DDL,
    INTERACTIONS_DTYPES,
    ITEMS_DTYPES,
    SCHEMA_VERSION,
    USERS_DTYPES,
)
from metarec.errors import StoreError

if TYPE_CHECKING:  # imported where used: `metarec categories` needs neither (docs/BENCHMARKS.md)
    import pandas as pd

TEXT_EMBEDDINGS_DDL = """CREATE TABLE IF NOT EXISTS text_embeddings (
    kind VARCHAR NOT NULL, key VARCHAR NOT NULL, model VARCHAR NOT NULL,
    text_hash VARCHAR NOT NULL, embedding FLOAT[] NOT NULL,
    PRIMARY KEY (kind, key, model, text_hash))"""
"""The text-embedding cache (:mod:`metarec.features.text`): one row per (kind, key, model,
sha256 of the text); a changed text gets a new hash, so it is embedded again."""


class Store:
    """A metarec store file. Open it with :meth:`Store.open`; use it as a context manager.

    Example:
        >>> with Store.open("shop.duckdb", read_only=True) as store:  # doctest: +SKIP
        ...     store.stats()
        {'n_users': 943, 'n_items': 1682, 'n_interactions': 100000, 'n_categories': 19}
    """

    def __init__(self, path: Path, connection: duckdb.DuckDBPyConnection, read_only: bool) -> None:
        """Wrap an open connection; call :meth:`Store.open` instead."""
        self.path = path
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = connection

    @classmethod
    def open(cls, path: str | Path, *, read_only: bool = False, create: bool = False) -> Store:
        """Open a store file, creating it (with its schema) when ``create`` and it is missing.

        Args:
            path: the DuckDB file (a folder written by ``metarec export`` opens with
                :func:`metarec.data.export.open_store`).
            read_only: open without write access (several read-only handles may coexist in
                one process; no other process may hold the file read-write meanwhile).
            create: create the file and its schema when it does not exist.

        Raises:
            StoreError: the file is missing (and ``create`` is False), locked by another process,
                not a DuckDB file, or not a metarec store; or ``path`` is a folder.
        """
        path = Path(path)
        if path.is_dir():
            raise StoreError(
                f"{path} is a folder, not a store file; a Parquet export (`metarec export`) opens "
                "read-only with metarec.data.open_store"
            )
        exists = path.exists()
        if not exists and not create:
            raise StoreError(
                f"no store at {path}; create one by loading data: "
                f"`metarec ingest <data> --store {path}`"
            )
        if not exists and read_only:
            raise StoreError(f"cannot create {path} read-only; open it with read_only=False")
        if not exists:
            path.parent.mkdir(parents=True, exist_ok=True)
        con = _connect(path, read_only)
        try:
            if not exists:
                _create_schema(con)
            _check_schema(con, path)
        except BaseException:
            con.close()
            raise
        return cls(path, con, read_only)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection (for the data layer's writers and ad-hoc reads; never run DDL).

        Raises:
            StoreError: the store was closed.
        """
        if self._con is None:
            raise StoreError(f"store {self.path} is closed; open it again with Store.open")
        return self._con

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._con is None else ("read-only" if self.read_only else "open")
        return f"Store({str(self.path)!r}, {state})"

    # ---- read API -------------------------------------------------------------------------

    def items(self) -> pd.DataFrame:
        """Every item, by ``item_idx``.

        Returns:
            Columns item_idx (int64), item_id, category, title, description, authors, publisher,
            brand (str or None), year, price (float64, NaN when unknown), extra (JSON text of
            other attributes, e.g. ``{"genres": "Action|Comedy"}``, or None).
        """
        columns = [
            f"CASE WHEN {_out_of_range(c)} THEN NULL ELSE {c} END AS {c}"
            if c in NUMBER_LIMITS
            else c
            for c in ITEMS_DTYPES
        ]
        # A number outside its range (stored before ingest checked ranges) reads as unknown.
        query = f"SELECT {', '.join(columns)} FROM items ORDER BY item_idx"
        return _typed(self.connection.execute(query).df(), ITEMS_DTYPES)

    def users(self) -> pd.DataFrame:
        """Every user, by ``user_idx``: user_idx (int64), user_id, extra (JSON text or None)."""
        query = f"SELECT {', '.join(USERS_DTYPES)} FROM users ORDER BY user_idx"
        return _typed(self.connection.execute(query).df(), USERS_DTYPES)

    def interactions(self) -> pd.DataFrame:
        """Every interaction, in insertion order.

        Rows with a rating or weight outside its range (non-finite, or beyond what float32
        features carry: stored before ingest checked ranges) are left out; :meth:`bad_rows`
        lists them and `metarec check` reports them.

        Returns:
            Columns user_idx, item_idx (int64), timestamp (Int64 unix seconds, <NA> when
            unknown), rating, weight (float64, NaN when absent), event (str or None).
        """
        query = (
            f"SELECT {', '.join(INTERACTIONS_DTYPES)} FROM interactions "
            f"WHERE NOT ({_out_of_range('rating')} OR {_out_of_range('weight')})"
        )
        return _typed(self.connection.execute(query).df(), INTERACTIONS_DTYPES)

    def bad_counts(self) -> dict[str, int]:
        """How many stored numbers lie outside the range ingest now accepts, per column.

        Returns:
            ``"<table>.<column>"`` -> count, only columns with some (empty: nothing to report).
        """
        counts = {}
        for table, _, column in _NUMBER_COLUMNS:
            (n_bad,) = _one_row(
                self.connection, f"SELECT count(*) FROM {table} WHERE {_out_of_range(column)}"
            )
            if n_bad:
                counts[f"{table}.{column}"] = int(n_bad)
        return counts

    def bad_rows(self, limit: int = 1000) -> pd.DataFrame:
        """Stored numbers outside the range ingest now accepts (``NUMBER_LIMITS``).

        Reads skip them: :meth:`interactions` leaves such rows out, :meth:`items` reads such a
        year or price as unknown. Written before ingest checked ranges (or by another tool).

        Args:
            limit: rows listed at most per column (:meth:`bad_counts` has the full counts).

        Returns:
            Columns table, key (the row's event_id or item_id), column, value (as text),
            reason; by table and column, then key.
        """
        parts: list[tuple[str, str, str, str, str]] = []
        for table, key, column in _NUMBER_COLUMNS:
            rows = self.connection.execute(
                f"SELECT {key}, CAST({column} AS VARCHAR) FROM {table} "
                f"WHERE {_out_of_range(column)} ORDER BY {key} LIMIT ?",
                [limit],
            ).fetchall()
            reason = f"{column} is not a finite number in {range_text(column)}"
            parts.extend((table, k, column, v, reason) for k, v in rows)
        import pandas as pd

        return pd.DataFrame(parts, columns=["table", "key", "column", "value", "reason"])

    def category_descriptions(self) -> dict[str, str]:
        """Descriptions given in a ``categories`` table, by category (only non-empty ones)."""
        rows = self.connection.execute(
            "SELECT category, description FROM categories WHERE description IS NOT NULL "
            "ORDER BY category"
        ).fetchall()
        return {category: description for category, description in rows}

    def categories(self) -> pd.DataFrame:
        """Every category that has items, with its size.

        Returns:
            Columns category (str), n_items, n_users, n_interactions (int64), by category.
        """
        frame = self.connection.execute(
            """SELECT i.category, count(DISTINCT i.item_idx) AS n_items,
                      count(DISTINCT x.user_idx) AS n_users, count(x.item_idx) AS n_interactions
               FROM items i LEFT JOIN interactions x ON x.item_idx = i.item_idx
               GROUP BY i.category ORDER BY i.category"""
        ).df()
        dtypes = {"category": "object", "n_items": "int64", "n_users": "int64"}
        return _typed(frame, {**dtypes, "n_interactions": "int64"})

    def has_timestamps(self) -> bool:
        """Whether every interaction has a timestamp (False for a store without interactions)."""
        total, timed = _one_row(
            self.connection, "SELECT count(*), count(timestamp) FROM interactions"
        )
        return bool(total) and total == timed

    def user_index(self, user_id: str) -> int | None:
        """The ``user_idx`` of an external user id, or None when the user is unknown."""
        rows = self.connection.execute(
            "SELECT user_idx FROM users WHERE user_id = ?", [user_id]
        ).fetchall()
        return int(rows[0][0]) if rows else None

    def text_embeddings(self, kind: str, model: str) -> dict[str, tuple[str, np.ndarray]]:
        """Cached text embeddings (see :mod:`metarec.features.text`) of one kind and model.

        Args:
            kind: ``"item"`` (keyed by item_id) or ``"category"`` (keyed by category path).
            model: the text encoder's name.

        Returns:
            key -> (sha256 of the embedded text, (dim,) float32 embedding); empty when nothing
            was cached yet.
        """
        if not self._has_table("text_embeddings"):
            return {}
        table = self.connection.sql(
            "SELECT key, text_hash, embedding FROM text_embeddings WHERE kind = ? AND model = ?",
            params=[kind, model],
        ).to_arrow_table()
        if table.num_rows == 0:
            return {}
        column = table.column("embedding").combine_chunks()
        vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        vectors = vectors.reshape(table.num_rows, -1)
        keys, hashes = table.column("key").to_pylist(), table.column("text_hash").to_pylist()
        return {key: (h, vectors[i]) for i, (key, h) in enumerate(zip(keys, hashes, strict=True))}

    def write_text_embeddings(
        self, kind: str, model: str, keys: list[str], hashes: list[str], vectors: np.ndarray
    ) -> None:
        """Cache embeddings, replacing any earlier ones of the same keys and model.

        One transaction: after a failure the cache is exactly as before. The cache table is
        created on first use (stores made before text features lack it) and checkpointed at
        once, so no DDL is left in the write-ahead log (DESIGN.md: WAL replay and DDL).

        Args:
            kind, model: as :meth:`text_embeddings`.
            keys: (n,) item ids or category paths; hashes: (n,) sha256 of each embedded text.
            vectors: (n, dim) float32 embeddings.

        Raises:
            StoreError: the store is read-only.
        """
        if self.read_only:
            raise StoreError(
                f"store {self.path} is open read-only; open it writable to cache text embeddings"
            )
        con = self.connection
        if not self._has_table("text_embeddings"):
            con.execute(TEXT_EMBEDDINGS_DDL)
            con.execute("CHECKPOINT")
        import pyarrow as pa

        flat = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = flat.shape
        offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32))
        rows = pa.table(
            {
                "kind": pa.array([kind] * n, pa.string()),
                "key": pa.array(keys, pa.string()),
                "model": pa.array([model] * n, pa.string()),
                "text_hash": pa.array(hashes, pa.string()),
                "embedding": pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1))),
            }
        )
        con.register("_text_rows", rows)
        con.begin()
        try:
            con.execute(
                "DELETE FROM text_embeddings WHERE kind = ? AND model = ? "
                "AND key IN (SELECT key FROM _text_rows)",
                [kind, model],
            )
            con.execute("INSERT INTO text_embeddings SELECT * FROM _text_rows")
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            con.unregister("_text_rows")

    def _has_table(self, name: str) -> bool:
        rows = self.connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()
        return bool(rows[0][0])

    def stats(self) -> dict[str, int]:
        """Counts: n_users, n_items, n_interactions, n_categories (categories with items)."""
        row = _one_row(
            self.connection,
            """SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items),
                      (SELECT count(*) FROM interactions),
                      (SELECT count(DISTINCT category) FROM items)""",
        )
        keys = ("n_users", "n_items", "n_interactions", "n_categories")
        return {key: int(value) for key, value in zip(keys, row, strict=True)}


_NUMBER_COLUMNS = (
    ("interactions", "event_id", "rating"),
    ("interactions", "event_id", "weight"),
    ("items", "item_id", "year"),
    ("items", "item_id", "price"),
)


def _out_of_range(column: str) -> str:
    """SQL that is true when ``column`` holds a value outside its range (NaN and +-inf too)."""
    low, high = NUMBER_LIMITS[column]
    return (
        f"({column} IS NOT NULL AND (isnan({column}) OR NOT ({column} BETWEEN {low!r} AND "
        f"{high!r})))"
    )


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            raise StoreError(
                f"store {path} is in use by another process ({text}). DuckDB lets only one "
                "process open a file read-write, and then no other process can open it at all: "
                "stop that process (e.g. `metarec serve`) or work on a copy of the file."
            ) from exc
        if "not a valid DuckDB database" in text:
            raise StoreError(
                f"{path} is not a metarec store (not a DuckDB file); pass the .duckdb file "
                "written by `metarec ingest`"
            ) from exc
        raise StoreError(f"cannot open store {path}: {text}") from exc
    except duckdb.Error as exc:
        # e.g. the same file already open in this process with another read_only setting.
        raise StoreError(
            f"cannot open store {path}: {exc}. Close other handles to it in this process first."
        ) from exc
    # No progress bar: the library never prints (DuckDB draws one on long queries).
    con.execute("SET enable_progress_bar = false")
    return con


def _create_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.begin()
    for statement in DDL:
        con.execute(statement)
    con.execute(
        "INSERT INTO meta VALUES ('schema_version', ?), ('created_at', CAST(now() AS VARCHAR))",
        [SCHEMA_VERSION],
    )
    con.commit()
    con.execute("CHECKPOINT")


def _check_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    try:
        rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    except duckdb.Error as exc:
        raise StoreError(
            f"{path} is a DuckDB file but not a metarec store (it has no meta table); "
            "pass a store written by `metarec ingest`, or ingest into a new file"
        ) from exc
    if not rows:
        raise StoreError(f"{path} is not a metarec store (meta has no schema_version)")
    if rows[0][0] != SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {rows[0][0]}, this metarec reads version "
            f"{SCHEMA_VERSION}; re-ingest the data into a new store"
        )


def _one_row(con: duckdb.DuckDBPyConnection, query: str) -> tuple:
    """The single row of an aggregate query (fetched completely: DuckDB refuses further work on
    a connection while a result is partly read)."""
    return tuple(con.execute(query).fetchall()[0])


def _typed(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    """Give a DuckDB result the documented dtypes; text columns become object with None."""
    import pandas as pd

    out = {}
    for name, dtype in dtypes.items():
        column = frame[name]
        if dtype == "object":
            values = column.astype(object)
            out[name] = values.where(column.notna(), None)
        else:
            out[name] = column.astype(dtype)
    return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))
