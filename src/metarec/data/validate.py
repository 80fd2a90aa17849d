"""Validation of adapter output, once for every format: typed tables, bad rows marked.

Each bad row is marked with its (file, row, column, reason, value), never dropped silently;
:mod:`metarec.data.bad_rows` turns the marks into the load's report. Also here: the ``event_id``
of a row without one (an md5 of its values, computed in DuckDB).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from metarec.data.limits import range_text
from metarec.data.readers import BAD_JSON_COLUMN
from metarec.data.schema import (
    FILE_COLUMN,
    INTERACTION_COLUMNS,
    INTERACTION_OPTIONAL,
    ITEM_COLUMNS,
    ITEM_NUMBER_COLUMNS,
    ITEM_TEXT_COLUMNS,
    PROVENANCE_COLUMNS,
    ROW_COLUMN,
    SourceTables,
)
from metarec.data.values import (
    _extra_json,
    _ids,
    _nulls,
    _numbers,
    _out_of_range,
    _repeated,
    _shown,
    _text,
    _times,
)
from metarec.errors import DataError

# Unix seconds above this (year 2286) are likely milliseconds: loaded, with a finding.
_MAX_SECONDS = 10_000_000_000
# The event_id of a row without one (docs/DATA.md states it; changing it breaks idempotency).
_EVENT_ID_SQL = (
    "md5(user_id || '|' || item_id"
    " || '|' || coalesce(CAST(timestamp AS VARCHAR), '')"
    " || '|' || coalesce(event, '')"
    " || '|' || coalesce(CAST(rating AS VARCHAR), ''))"
)


@dataclass
class _Clean:
    """Validated, typed tables (bad rows removed) and what was found on the way."""

    interactions: pd.DataFrame
    items: pd.DataFrame | None
    new_items: pd.DataFrame | None
    users: pd.DataFrame | None
    categories: pd.DataFrame | None
    read: dict[str, int]
    n_bad: dict[str, int]
    bad: list[pd.DataFrame] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


class _Marks:
    """Bad-row marks of one table: (file, row, column, reason, value) per problem."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame.reset_index(drop=True)  # marks are positional
        self.bad = np.zeros(len(frame), dtype=bool)
        self.parts: list[pd.DataFrame] = []
        if BAD_JSON_COLUMN in self.frame.columns:  # lines of a JSON-lines file that did not parse
            broken = self.frame[BAD_JSON_COLUMN].notna().to_numpy()
            self.add(broken, BAD_JSON_COLUMN, "not a JSON object: the line is truncated or broken")
            self.frame = self.frame.drop(columns=BAD_JSON_COLUMN)

    def add(self, mask: np.ndarray | pd.Series, column: str, reason: str) -> None:
        """Mark the rows in ``mask`` bad for ``reason``, keeping the raw value of ``column``."""
        mask = np.asarray(mask, dtype=bool) & ~self.bad  # one problem per row is enough to say
        if not mask.any():
            return
        rows = self.frame.loc[mask]
        raw = rows[column] if column in rows.columns else pd.Series(None, index=rows.index)
        self.parts.append(
            pd.DataFrame(
                {
                    "file": rows[FILE_COLUMN].to_numpy(),
                    "row": rows[ROW_COLUMN].to_numpy(),
                    "column": column,
                    "reason": reason,
                    "value": [_shown(v) for v in raw.to_numpy()],
                }
            )
        )
        self.bad |= mask


def _kept(frame: pd.DataFrame, marks: _Marks) -> pd.DataFrame:
    """The rows of ``frame`` (indexed like the raw table) not marked bad."""
    return frame.loc[~marks.bad[frame.index.to_numpy()]]


def _check_columns(tables: SourceTables) -> None:
    """Required columns, checked before the store is touched."""
    required = {
        "interactions": ("user_id", "item_id"),
        "items": ("item_id", "category"),
        "users": ("user_id",),
        "categories": ("category",),
    }
    for name, columns in required.items():
        frame: pd.DataFrame | None = getattr(tables, name)
        if frame is None:
            continue
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            files = sorted(set(frame[FILE_COLUMN].astype(str))) if len(frame) else []
            found = [c for c in frame.columns if c not in PROVENANCE_COLUMNS]
            raise DataError(
                f"{name} table {', '.join(files)} lacks required column(s) {missing} "
                f"(found {found}); add them, or rename the columns (PROTOCOL.md §1)"
            )


def _validate(tables: SourceTables, con: duckdb.DuckDBPyConnection) -> _Clean:
    findings: list[str] = []
    read = {
        name: 0 if getattr(tables, name) is None else len(getattr(tables, name))
        for name in ("interactions", "items", "users", "categories")
    }
    marks: dict[str, _Marks] = {}

    items = None
    if tables.items is not None:
        marks["items"] = _Marks(tables.items)
        items = _clean_items(marks["items"])
    users = None
    if tables.users is not None:
        marks["users"] = _Marks(tables.users)
        users = _clean_users(marks["users"])
    categories = None
    if tables.categories is not None:
        marks["categories"] = _Marks(tables.categories)
        categories = _clean_categories(marks["categories"])

    marks["interactions"] = _Marks(tables.interactions)
    interactions = _clean_interactions(marks["interactions"], findings)
    interactions, new_items = _check_items_known(
        marks["interactions"], interactions, items, _stored_item_ids(con, interactions["item_id"])
    )
    interactions = _with_event_ids(marks["interactions"], interactions, con)

    if categories is not None:
        with_items = _store_categories(con) | _categories_of(items, new_items)
        empty = sorted(set(categories["category"]) - with_items)
        if empty:
            findings.append(
                f"{len(empty)} categor{'y' if len(empty) == 1 else 'ies'} listed in the "
                f"categories table without any item: {', '.join(map(repr, empty[:10]))}"
            )
    return _Clean(
        interactions=interactions,
        items=items,
        new_items=new_items,
        users=users,
        categories=categories,
        read=read,
        n_bad={name: int(marks[name].bad.sum()) if name in marks else 0 for name in read},
        bad=[part for m in marks.values() for part in m.parts],
        findings=findings,
    )


def _store_categories(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT DISTINCT category FROM items").fetchall()}


def _categories_of(items: pd.DataFrame | None, new_items: pd.DataFrame | None) -> set[str]:
    found: set[str] = set()
    for frame in (items, new_items):
        if frame is not None:
            found |= set(frame["category"].dropna())
    return found


def _clean_items(marks: _Marks) -> pd.DataFrame:
    raw = marks.frame
    item_id = _ids(raw["item_id"])
    marks.add(item_id.isna(), "item_id", "missing item_id")
    category = _text(raw["category"])
    marks.add(category.isna(), "category", "missing category")
    out = {"item_id": item_id, "category": category}
    for column in ITEM_TEXT_COLUMNS:
        out[column] = _text(raw[column]) if column in raw.columns else _nulls(len(raw))
    for column in ITEM_NUMBER_COLUMNS:
        if column in raw.columns:
            out[column] = _checked_numbers(marks, raw[column], column)
        else:
            out[column] = pd.Series(np.nan, index=raw.index)
    extra_columns = [
        c for c in raw.columns if c not in ITEM_COLUMNS and c not in PROVENANCE_COLUMNS
    ]
    out["extra"] = _extra_json(raw, extra_columns)
    marks.add(_repeated(item_id), "item_id", "duplicate item_id within this load")
    return _kept(pd.DataFrame(out), marks)


def _checked_numbers(marks: _Marks, raw: pd.Series, column: str) -> pd.Series:
    """A number column with non-numbers, non-finite and out-of-range values marked bad."""
    values, bad = _numbers(raw)
    marks.add(bad, column, f"{column} is not a number, or not finite")
    marks.add(
        _out_of_range(values, column),
        column,
        f"{column} is outside {range_text(column)}, the range the model can carry in float32",
    )
    return values


def _clean_users(marks: _Marks) -> pd.DataFrame:
    raw = marks.frame
    user_id = _ids(raw["user_id"])
    marks.add(user_id.isna(), "user_id", "missing user_id")
    marks.add(_repeated(user_id), "user_id", "duplicate user_id within this load")
    extra_columns = [c for c in raw.columns if c != "user_id" and c not in PROVENANCE_COLUMNS]
    return _kept(
        pd.DataFrame({"user_id": user_id, "extra": _extra_json(raw, extra_columns)}), marks
    )


def _clean_categories(marks: _Marks) -> pd.DataFrame:
    raw = marks.frame
    category = _text(raw["category"])
    marks.add(category.isna(), "category", "missing category")
    marks.add(_repeated(category), "category", "duplicate category within this load")
    description = _text(raw["description"]) if "description" in raw.columns else _nulls(len(raw))
    return _kept(pd.DataFrame({"category": category, "description": description}), marks)


def _clean_interactions(marks: _Marks, findings: list[str]) -> pd.DataFrame:
    raw = marks.frame
    out: dict[str, pd.Series] = {}
    for column in ("user_id", "item_id"):
        out[column] = _ids(raw[column])
        marks.add(out[column].isna(), column, f"missing {column}")
    if "timestamp" in raw.columns:
        out["timestamp"], bad = _times(raw["timestamp"])
        marks.add(bad, "timestamp", "timestamp is neither unix seconds nor an ISO-8601 time")
    else:
        out["timestamp"] = pd.Series(pd.NA, index=raw.index, dtype="Int64")
    for column in ("rating", "weight"):
        if column in raw.columns:
            out[column] = _checked_numbers(marks, raw[column], column)
        else:
            out[column] = pd.Series(np.nan, index=raw.index)
    for column in ("event", "event_id", "category"):
        out[column] = _text(raw[column]) if column in raw.columns else _nulls(len(raw))
    ignored = [
        c
        for c in raw.columns
        if c not in (*INTERACTION_COLUMNS, *INTERACTION_OPTIONAL, *PROVENANCE_COLUMNS)
    ]
    if ignored:
        findings.append(f"interactions columns not loaded: {', '.join(map(str, ignored))}")
    stamps = out["timestamp"].dropna()
    if len(stamps) and stamps.abs().median() > _MAX_SECONDS:
        findings.append(
            "timestamps look like milliseconds (median "
            f"{int(stamps.median())}); the store expects unix seconds: divide by 1000"
        )
    n_missing = int(out["timestamp"].isna().sum())
    if 0 < n_missing < len(raw):
        findings.append(
            f"{n_missing} of {len(raw)} interactions have no timestamp: the launch-time "
            "protocol needs every interaction timed"
        )
    return pd.DataFrame(out)


def _stored_item_ids(con: duckdb.DuckDBPyConnection, item_id: pd.Series) -> set[str]:
    """The ids among ``item_id`` that the store's items table holds.

    A semi-join in DuckDB on the load's distinct ids, so its cost follows the load, not the
    catalogue: a Python set of every stored id, built and probed per load, took 1.6 s of each
    100-event ``POST /events`` batch at 1.1e5 items (docs/SERVING.md).
    """
    wanted = item_id.dropna().unique().tolist()
    if not wanted:
        return set()
    rows = con.execute(
        "SELECT item_id FROM items WHERE item_id IN (SELECT unnest(?::VARCHAR[]))", [wanted]
    ).fetchall()
    return {row[0] for row in rows}


def _check_items_known(
    marks: _Marks,
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    store_items: set[str],
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Mark interactions whose item is unknown; list the items to create from a category column.

    ``store_items`` holds the load's item ids that the store knows (:func:`_stored_item_ids`).

    Returns:
        The interactions with every bad row removed, and the new items (item_id, category, with
        the first row's location) when there is no items table, else None.
    """
    item_id = interactions["item_id"]
    if items is not None:
        known = item_id.isin(store_items) | item_id.isin(items["item_id"])
        unknown = ~known & item_id.notna()
        marks.add(unknown, "item_id", "item_id is in neither the items table nor the store")
        return _kept(interactions, marks), None
    in_store = item_id.isin(store_items)
    category = interactions["category"]
    marks.add(
        ~in_store & item_id.notna() & category.isna(),
        "item_id",
        "unknown item: not in the store, and no items table or category value to create it with",
    )
    candidates = ~in_store & category.notna() & ~marks.bad
    first = interactions.loc[candidates].drop_duplicates("item_id")
    first_category = item_id.map(first.set_index("item_id")["category"])
    conflicting = candidates & (category != first_category)
    marks.add(conflicting, "category", "category differs from an earlier row of the same new item")
    new_items = first[["item_id", "category"]].assign(
        **{c: None for c in ITEM_TEXT_COLUMNS}, year=np.nan, price=np.nan, extra=None
    )
    new_items = new_items.loc[~marks.bad[first.index.to_numpy()]]
    return _kept(interactions, marks), (
        new_items.reset_index(drop=True) if len(new_items) else None
    )


def _with_event_ids(
    marks: _Marks, interactions: pd.DataFrame, con: duckdb.DuckDBPyConnection
) -> pd.DataFrame:
    """Fill event_id (md5 of the row's values where not given); mark repeats within the load."""
    given = interactions["event_id"].notna()
    event_id = interactions["event_id"]
    if not given.all():  # hashed only where missing (POST /events always gives ids)
        missing = interactions.loc[~given.to_numpy()]
        event_id = event_id.where(given, _event_md5(missing, con))
    repeated = _repeated(event_id)
    subset = marks.frame.index.isin(interactions.index[repeated])
    given_full = np.zeros(len(marks.frame), dtype=bool)
    given_full[interactions.index[given.to_numpy()]] = True
    marks.add(subset & given_full, "event_id", "duplicate event_id within this load")
    marks.add(
        subset & ~given_full,
        "item_id",
        "duplicate row: same user_id, item_id, timestamp, event and rating as an earlier row",
    )
    interactions = interactions.assign(event_id=event_id)
    return interactions.loc[~repeated.to_numpy()]


def _event_md5(interactions: pd.DataFrame, con: duckdb.DuckDBPyConnection) -> pd.Series:
    """md5 of ``user_id|item_id|timestamp|event|rating`` (missing values as empty text).

    Computed in DuckDB (vectorised); timestamp as integer text, rating as DuckDB's DOUBLE text
    (``4.0``), so the same event read from CSV, JSON or Parquet gets the same id.
    """
    table = pa.table(
        {
            "user_id": pa.array(interactions["user_id"], pa.string()),
            "item_id": pa.array(interactions["item_id"], pa.string()),
            "timestamp": pa.array(interactions["timestamp"], pa.int64()),
            "event": pa.array(interactions["event"], pa.string()),
            "rating": pa.array(interactions["rating"], pa.float64(), from_pandas=True),
        }
    )
    con.register("_event_rows", table)
    try:
        hashed = con.sql(f"SELECT {_EVENT_ID_SQL} FROM _event_rows").to_arrow_table()
    finally:
        con.unregister("_event_rows")
    return pd.Series(hashed.column(0).to_pandas().to_numpy(), index=interactions.index)
