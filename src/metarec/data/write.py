"""The write of a validated load into a store, in one transaction: upserts, inserts, the record.

Everything is bulk: ``INSERT ... SELECT`` from registered Arrow tables (row-by-row inserts run at
about 640 rows/s, DESIGN.md). Any error rolls the whole load back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from metarec.data.schema import ITEM_NUMBER_COLUMNS, ITEM_TEXT_COLUMNS, LoadReport, TableCounts
from metarec.data.validate import _Clean

_ITEM_VALUES = ("category", *ITEM_TEXT_COLUMNS, *ITEM_NUMBER_COLUMNS, "extra")


def _write(
    con: duckdb.DuckDBPyConnection, clean: _Clean, report: LoadReport, sha256: str | None
) -> LoadReport:
    """Everything in one transaction; any error rolls it all back."""
    con.begin()
    try:
        items = _upsert_items(con, clean)
        users = _upsert_users(con, clean)
        categories = _upsert_categories(con, clean.categories)
        inserted = _insert_interactions(con, clean.interactions)
        interactions = TableCounts(
            read=report.interactions.read,
            inserted=inserted,
            unchanged=len(clean.interactions) - inserted,
            bad=report.interactions.bad,
        )
        report = replace(
            report,
            interactions=interactions,
            items=replace(items, read=report.items.read, bad=report.items.bad),
            users=replace(users, read=report.users.read, bad=report.users.bad),
            categories=replace(categories, read=report.categories.read, bad=report.categories.bad),
        )
        load_id = _record_load(con, report, sha256)
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return replace(report, load_id=load_id)


def _registered(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> None:
    """Register a frame as an Arrow view with an ``_ord`` column (its row order)."""
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    table = table.append_column("_ord", pa.array(np.arange(len(frame), dtype=np.int64)))
    con.register(name, table)


def _next_index(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    return _count(con, f"SELECT coalesce(max({column}) + 1, 0) FROM {table}")


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    # fetchall, not fetchone: DuckDB refuses more work on a connection with a half-read result.
    rows = con.execute(query).fetchall()
    return int(rows[0][0]) if rows else 0


def _upsert(
    con: duckdb.DuckDBPyConnection,
    table: str,
    key: str,
    values: Sequence[str],
    source: str,
    *,
    update_where: str = "TRUE",
) -> tuple[int, int]:
    """Count rows of ``source`` equal to the store's, update the differing ones.

    Returns:
        (unchanged, updated).
    """

    def same_as_source(alias: str) -> str:
        return " AND ".join(f"{alias}.{c} IS NOT DISTINCT FROM s.{c}" for c in values) or "TRUE"

    same = same_as_source("t")
    count_same = (
        f"SELECT count(*) FROM {source} s JOIN {table} t ON t.{key} = s.{key} "
        f"WHERE {update_where} AND {same}"
    )
    unchanged = _count(con, count_same)
    updated = 0
    if values:
        assignments = ", ".join(f"{c} = s.{c}" for c in values)
        update = (
            f"UPDATE {table} SET {assignments} FROM {source} s "
            f"WHERE {table}.{key} = s.{key} AND {update_where} AND NOT ({same_as_source(table)})"
        )
        updated = _count(con, update)
    return unchanged, updated


def _upsert_items(con: duckdb.DuckDBPyConnection, clean: _Clean) -> TableCounts:
    frames = [f for f in (clean.items, clean.new_items) if f is not None and len(f)]
    if not frames:
        return TableCounts()
    items = pd.concat([f[["item_id", *_ITEM_VALUES]] for f in frames], ignore_index=True)
    _registered(con, "_src_items", items)
    try:
        unchanged = updated = 0
        if clean.items is not None:  # items made from interactions never overwrite stored ones
            unchanged, updated = _upsert(con, "items", "item_id", _ITEM_VALUES, "_src_items")
        base = _next_index(con, "items", "item_idx")
        inserted = _count(
            con,
            f"""INSERT INTO items SELECT {base} + row_number() OVER (ORDER BY s._ord) - 1,
                       s.item_id, {", ".join(f"s.{c}" for c in _ITEM_VALUES)}
                FROM _src_items s ANTI JOIN items t ON t.item_id = s.item_id""",
        )
    finally:
        con.unregister("_src_items")
    return TableCounts(inserted=inserted, unchanged=unchanged, updated=updated)


def _upsert_users(con: duckdb.DuckDBPyConnection, clean: _Clean) -> TableCounts:
    listed = clean.users
    if listed is None:
        listed = pd.DataFrame({"user_id": pd.Series(dtype="str"), "extra": pd.Series(dtype="str")})
    seen = clean.interactions["user_id"].drop_duplicates()
    implied = pd.DataFrame({"user_id": seen[~seen.isin(listed["user_id"])], "extra": None})
    users = pd.concat(
        [listed.assign(_listed=True), implied.assign(_listed=False)], ignore_index=True
    )
    users["extra"] = users["extra"].astype("str")
    _registered(con, "_src_users", users)
    try:
        unchanged = updated = 0
        if len(listed):  # users only implied by interactions never overwrite stored ones
            unchanged, updated = _upsert(
                con, "users", "user_id", ("extra",), "_src_users", update_where="s._listed"
            )
        base = _next_index(con, "users", "user_idx")
        inserted = _count(
            con,
            f"""INSERT INTO users SELECT {base} + row_number() OVER (ORDER BY s._ord) - 1,
                       s.user_id, s.extra
                FROM _src_users s ANTI JOIN users t ON t.user_id = s.user_id""",
        )
    finally:
        con.unregister("_src_users")
    return TableCounts(inserted=inserted, unchanged=unchanged, updated=updated)


def _upsert_categories(
    con: duckdb.DuckDBPyConnection, categories: pd.DataFrame | None
) -> TableCounts:
    if categories is None or not len(categories):
        return TableCounts()
    _registered(con, "_src_categories", categories)
    try:
        unchanged, updated = _upsert(
            con, "categories", "category", ("description",), "_src_categories"
        )
        inserted = _count(
            con,
            """INSERT INTO categories SELECT s.category, s.description
               FROM _src_categories s ANTI JOIN categories t ON t.category = s.category
               ORDER BY s._ord""",
        )
    finally:
        con.unregister("_src_categories")
    return TableCounts(inserted=inserted, unchanged=unchanged, updated=updated)


def _insert_interactions(con: duckdb.DuckDBPyConnection, interactions: pd.DataFrame) -> int:
    if not len(interactions):
        return 0
    columns = ["event_id", "user_id", "item_id", "timestamp", "rating", "event", "weight"]
    _registered(con, "_src_interactions", interactions[columns])
    try:
        # The anti-join is against the stored ids *of this load* (a semi-join that hashes the
        # load, not the store): against the whole table it hashed every stored event_id, a cost
        # that grows with the store. ON CONFLICT DO NOTHING is no shortcut: DuckDB runs it as a
        # MERGE that scans the table too, and it loses the insertion order.
        return _count(
            con,
            """INSERT INTO interactions
               SELECT s.event_id, u.user_idx, i.item_idx, s.timestamp, s.rating, s.event, s.weight
               FROM _src_interactions s
               JOIN users u ON u.user_id = s.user_id
               JOIN items i ON i.item_id = s.item_id
               ANTI JOIN (SELECT event_id FROM interactions
                          WHERE event_id IN (SELECT event_id FROM _src_interactions)) t
                 ON t.event_id = s.event_id
               ORDER BY s._ord""",
        )
    finally:
        con.unregister("_src_interactions")


def _record_load(con: duckdb.DuckDBPyConnection, report: LoadReport, sha256: str | None) -> int:
    load_id = _next_index(con, "loads", "load_id")
    tables = (report.interactions, report.items, report.users, report.categories)
    con.execute(
        "INSERT INTO loads VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            load_id,
            ", ".join(report.sources),
            report.format,
            sha256,
            sum(t.read for t in tables),
            sum(t.inserted for t in tables),
            datetime.now(UTC).replace(tzinfo=None),
        ],
    )
    return load_id
