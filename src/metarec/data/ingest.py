"""Load data into a store: read (an adapter), validate (here, once for every format), write.

The contract is PROTOCOL.md §1. A load is one transaction: either every good row lands or
nothing changes. Bad rows are never dropped silently: by default the load is refused with a
report of each (line, column, reason); with ``skip_bad_rows`` the rest is loaded and the report
is written beside the store. Re-running a load changes nothing: each interaction has an
``event_id`` (given, or an md5 of its values) and ids already in the store are not inserted again.
Everything is bulk: validation is vectorised in pandas, writes are ``INSERT ... SELECT`` from
registered Arrow tables (row-by-row inserts run at about 640 rows/s, DESIGN.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from metarec.data.adapters import ADAPTERS, detect_format
from metarec.data.readers import files_sha256, line_numbers
from metarec.data.schema import (
    FILE_COLUMN,
    INTERACTION_COLUMNS,
    INTERACTION_OPTIONAL,
    ITEM_COLUMNS,
    ITEM_NUMBER_COLUMNS,
    ITEM_TEXT_COLUMNS,
    ROW_COLUMN,
    BadRow,
    Format,
    LoadReport,
    SourceFile,
    SourceTables,
    TableCounts,
)
from metarec.data.store import Store
from metarec.errors import BadRowsError, DataError, StoreError

__all__ = ["Format", "LoadReport", "ingest", "ingest_frames", "load_tables"]

# Text a number or time column may hold to mean "no value" (ids never: "NA" can be an id).
_MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none")
# Unix seconds above this (year 2286) are likely milliseconds: loaded, with a finding.
_MAX_SECONDS = 10_000_000_000
# Beyond this a time value is not a time at all (even in microseconds): a bad row.
_MAX_TIME_VALUE = 10**17
_SHOWN_BAD_ROWS = 5
# The event_id of a row without one (docs/DATA.md states it; changing it breaks idempotency).
_EVENT_ID_SQL = (
    "md5(user_id || '|' || item_id"
    " || '|' || coalesce(CAST(timestamp AS VARCHAR), '')"
    " || '|' || coalesce(event, '')"
    " || '|' || coalesce(CAST(rating AS VARCHAR), ''))"
)
_KEEP = [FILE_COLUMN, ROW_COLUMN]


def ingest(
    source: str | Path | Sequence[str | Path],
    store: str | Path | Store,
    *,
    fmt: Format = "auto",
    skip_bad_rows: bool = False,
    progress: bool = False,
) -> LoadReport:
    """Load a dataset into a store (created when missing), atomically and idempotently.

    Args:
        source: a folder, a file, or several of either.
        store: the DuckDB store file, or an open writable :class:`Store` (left open).
        fmt: the input format (``auto`` detects it from file names; rules in docs/DATA.md).
        skip_bad_rows: load the good rows and write the bad ones to ``<store>.bad-rows.csv``
            instead of refusing the whole load.
        progress: show a progress bar (stderr).

    Returns:
        What the load did, per table, with its bad rows and findings.

    Raises:
        DataError: unknown format, missing file or required column, empty or unreadable file.
        BadRowsError: some rows break the format (and ``skip_bad_rows`` is False); the store is
            unchanged and ``error.report`` lists them.
        StoreError: the store is locked by another process or is not a metarec store.

    Example:
        >>> report = ingest("../shared/data/ml-100k", "ml100k.duckdb")  # doctest: +SKIP
        >>> report.interactions.inserted
        100000
    """
    started = time.perf_counter()
    sources = [Path(source)] if isinstance(source, str | Path) else [Path(s) for s in source]
    if not sources:
        raise DataError("no input given: pass a data folder or files")
    for path in sources:
        if not path.exists():
            raise DataError(f"{path} does not exist; pass a data folder or files")
    with tqdm(total=4, desc="ingest", unit="step", disable=not progress) as bar:
        bar.set_postfix_str("read")
        name = detect_format(sources) if fmt == "auto" else str(fmt)
        if name not in ADAPTERS:
            raise DataError(f"unknown format {name!r}; use one of {', '.join(ADAPTERS)} or auto")
        tables = ADAPTERS[name](sources)
        digest = files_sha256([Path(f.path) for f in tables.files.values()])
        bar.update()
        return load_tables(
            tables,
            store,
            fmt=name,
            sources=tuple(map(str, sources)),
            sha256=digest,
            skip_bad_rows=skip_bad_rows,
            started=started,
            bar=bar,
        )


def ingest_frames(
    interactions: pd.DataFrame,
    store: str | Path | Store,
    *,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    categories: pd.DataFrame | None = None,
    skip_bad_rows: bool = False,
    source: str = "frames",
) -> LoadReport:
    """Load in-memory tables in the generic format (PROTOCOL.md §1), with the same checks.

    For generated data (the simulator) and notebooks. Bad rows are reported by 1-based row
    number with files named ``<interactions>``, ``<items>``...

    Args:
        interactions: user_id, item_id and optional timestamp, rating, event, weight, event_id,
            category columns.
        store: the store file (created when missing), or an open writable :class:`Store`.
        items: item_id, category and optional attributes (other columns become extra).
        users: user_id and optional attributes (kept as extra).
        categories: category and optional description.
        skip_bad_rows: as in :func:`ingest`.
        source: what to record as the load's source.

    Returns:
        The load report. Raises as :func:`ingest` does.
    """
    started = time.perf_counter()
    files: dict[str, SourceFile] = {}
    tables = SourceTables(
        interactions=_labelled(interactions, "interactions", files),
        items=None if items is None else _labelled(items, "items", files),
        users=None if users is None else _labelled(users, "users", files),
        categories=None if categories is None else _labelled(categories, "categories", files),
        files=files,
    )
    return load_tables(
        tables,
        store,
        fmt="frames",
        sources=(source,),
        sha256=None,
        skip_bad_rows=skip_bad_rows,
        started=started,
    )


def _labelled(frame: pd.DataFrame, name: str, files: dict[str, SourceFile]) -> pd.DataFrame:
    """An in-memory table with the ``_file``/``_row`` columns (named ``<name>``)."""
    label = f"<{name}>"
    files[label] = SourceFile(label, "frame")
    return frame.reset_index(drop=True).assign(
        **{FILE_COLUMN: label, ROW_COLUMN: np.arange(len(frame), dtype=np.int64)}
    )


def load_tables(
    tables: SourceTables,
    store: str | Path | Store,
    *,
    fmt: str,
    sources: tuple[str, ...],
    sha256: str | None,
    skip_bad_rows: bool = False,
    started: float | None = None,
    bar: tqdm | None = None,
) -> LoadReport:
    """Validate adapter output and write it to the store in one transaction.

    The step every format shares; :func:`ingest` and :func:`ingest_frames` call it.

    Raises:
        DataError, BadRowsError, StoreError: as :func:`ingest`.
    """
    started = time.perf_counter() if started is None else started
    _check_columns(tables)
    if isinstance(store, Store):  # handed in (e.g. the service's live store): left open
        handle, owned, created = store, False, False
    else:
        owned, created = True, not Path(store).exists()
        handle = Store.open(store, create=True)
    store_path = handle.path
    if handle.read_only:
        raise StoreError(f"store {store_path} is open read-only; open it with read_only=False")
    succeeded = False
    try:
        clean = _validate(tables, handle.connection)
        _advance(bar, "validate")
        report = LoadReport(
            store=store_path,
            sources=sources,
            format=fmt,
            interactions=TableCounts(
                read=clean.read["interactions"], bad=clean.n_bad["interactions"]
            ),
            items=TableCounts(read=clean.read["items"], bad=clean.n_bad["items"]),
            users=TableCounts(read=clean.read["users"], bad=clean.n_bad["users"]),
            categories=TableCounts(read=clean.read["categories"], bad=clean.n_bad["categories"]),
            bad_rows=_bad_rows(clean.bad, tables.files),
            findings=[*tables.findings, *clean.findings],
        )
        if report.bad_rows:
            report = replace(report, report_path=_write_bad_rows(report.bad_rows, store_path))
            if not skip_bad_rows:
                report = replace(report, seconds=time.perf_counter() - started)
                raise BadRowsError(_bad_rows_message(report), report)
        report = _write(handle.connection, clean, report, sha256)
        _advance(bar, "write")
        handle.connection.execute("CHECKPOINT")
        _advance(bar, "done")
        succeeded = True
        return replace(report, seconds=time.perf_counter() - started)
    finally:
        if owned:
            handle.close()
        if created and not succeeded:
            # A refused load into a new store leaves nothing behind, not an empty store.
            for leftover in (store_path, store_path.with_name(store_path.name + ".wal")):
                leftover.unlink(missing_ok=True)


def _advance(bar: tqdm | None, step: str) -> None:
    if bar is not None:
        bar.set_postfix_str(step)
        bar.update()


# ---- validation ------------------------------------------------------------------------------


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
            found = [c for c in frame.columns if c not in _KEEP]
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
    store_items = set(con.sql("SELECT item_id FROM items").to_arrow_table().column(0).to_pylist())
    interactions, new_items = _check_items_known(
        marks["interactions"], interactions, items, store_items
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
            out[column], bad = _numbers(raw[column])
            marks.add(bad, column, f"{column} is not a number")
        else:
            out[column] = pd.Series(np.nan, index=raw.index)
    extra_columns = [c for c in raw.columns if c not in ITEM_COLUMNS and c not in _KEEP]
    out["extra"] = _extra_json(raw, extra_columns)
    marks.add(_repeated(item_id), "item_id", "duplicate item_id within this load")
    return _kept(pd.DataFrame(out), marks)


def _clean_users(marks: _Marks) -> pd.DataFrame:
    raw = marks.frame
    user_id = _ids(raw["user_id"])
    marks.add(user_id.isna(), "user_id", "missing user_id")
    marks.add(_repeated(user_id), "user_id", "duplicate user_id within this load")
    extra_columns = [c for c in raw.columns if c != "user_id" and c not in _KEEP]
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
            out[column], bad = _numbers(raw[column])
            marks.add(bad, column, f"{column} is not a number")
        else:
            out[column] = pd.Series(np.nan, index=raw.index)
    for column in ("event", "event_id", "category"):
        out[column] = _text(raw[column]) if column in raw.columns else _nulls(len(raw))
    ignored = [
        c for c in raw.columns if c not in (*INTERACTION_COLUMNS, *INTERACTION_OPTIONAL, *_KEEP)
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


def _check_items_known(
    marks: _Marks,
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    store_items: set[str],
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Mark interactions whose item is unknown; list the items to create from a category column.

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
    computed = _event_md5(interactions, con)
    given = interactions["event_id"].notna()
    event_id = interactions["event_id"].where(given, computed)
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


# ---- typed columns ---------------------------------------------------------------------------


def _ids(column: pd.Series) -> pd.Series:
    """External ids as text, stripped; missing (or empty) as NaN. Integral numbers lose ``.0``."""
    if pd.api.types.is_float_dtype(column.dtype):
        finite = column.dropna()
        if (finite == np.floor(finite)).all():
            column = column.astype("Int64")
    if pd.api.types.is_object_dtype(column.dtype):
        column = column.map(_id_text, na_action="ignore")
    text = column.astype("str").str.strip()
    return text.where(text != "")


def _id_text(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


def _text(column: pd.Series) -> pd.Series:
    """Free text, stripped; missing or empty as NaN."""
    text = column.astype("str").str.strip()
    return text.where(text != "")


def _nulls(n: int) -> pd.Series:
    return pd.Series([None] * n, dtype="str")


def _missing(column: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The column as stripped text, and where it holds no value (NaN or a missing token)."""
    text = column.astype("str").str.strip()
    return text, column.isna() | text.str.lower().isin(_MISSING_TOKENS)


def _numbers(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse a number column. Returns (float64 values, NaN when missing; bad-row mask)."""
    if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_numeric_dtype(column.dtype):
        values = column.astype("float64")
        return values, (values.notna() & ~np.isfinite(values)).to_numpy()
    text, missing = _missing(column)
    values = pd.to_numeric(text.where(~missing), errors="coerce").astype("float64")
    bad = ~missing & ~np.isfinite(values.fillna(np.inf))
    return values.where(~bad), bad.to_numpy()


def _times(column: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Parse a time column: unix seconds (int or float) or ISO-8601 text (naive means UTC).

    Returns:
        Int64 unix seconds (<NA> when missing), and the bad-row mask.
    """
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return _seconds(pd.to_datetime(column, utc=True)), np.zeros(len(column), dtype=bool)
    iso = pd.Series(False, index=column.index)
    if pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(column):
        numbers = column.astype("float64")
        present = numbers.notna()
    else:
        text, missing = _missing(column)
        numbers = pd.to_numeric(text.where(~missing), errors="coerce").astype("float64")
        present = ~missing
        iso = present & numbers.isna()
    in_range = np.isfinite(numbers.fillna(np.inf)) & (numbers.abs() < _MAX_TIME_VALUE)
    seconds = np.floor(numbers.where(in_range)).astype("Int64")
    if iso.any():
        parsed = pd.to_datetime(text[iso], format="ISO8601", utc=True, errors="coerce")
        seconds[iso] = _seconds(parsed)
    return seconds, (present & seconds.isna()).to_numpy()


def _seconds(times: pd.Series) -> pd.Series:
    return ((times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("Int64")


def _repeated(keys: pd.Series) -> pd.Series:
    """Rows whose (non-missing) key already appeared earlier in the load."""
    return keys.notna() & keys.duplicated(keep="first")


def _kept(frame: pd.DataFrame, marks: _Marks) -> pd.DataFrame:
    """The rows of ``frame`` (indexed like the raw table) not marked bad."""
    return frame.loc[~marks.bad[frame.index.to_numpy()]]


def _extra_json(raw: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Other attributes as one JSON object per row (sorted keys, missing values left out)."""
    if not columns:
        return _nulls(len(raw)).set_axis(raw.index)
    records = raw[columns].to_dict("records")
    texts = []
    for record in records:
        kept = {str(k): v for k, v in record.items() if not _is_missing(v)}
        texts.append(
            json.dumps(kept, sort_keys=True, ensure_ascii=False, default=_jsonable)
            if kept
            else None
        )
    return pd.Series(texts, index=raw.index, dtype="str")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, list | tuple | dict | np.ndarray):
        return len(value) == 0
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return str(value)


def _shown(value: Any) -> str | None:
    if _is_missing(value):
        return None
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


# ---- bad-row report --------------------------------------------------------------------------


def _bad_rows(parts: list[pd.DataFrame], files: dict[str, SourceFile]) -> list[BadRow]:
    """Turn bad-row marks into BadRows with line numbers (one scan of each file involved)."""
    if not parts:
        return []
    marks = pd.concat(parts, ignore_index=True)
    lines = np.empty(len(marks), dtype=np.int64)
    for file, group in marks.groupby("file", sort=False):
        source = files.get(str(file), SourceFile(str(file), "frame"))
        lines[group.index.to_numpy()] = line_numbers(source, group["row"].to_numpy())
    marks["line"] = lines
    marks = marks.sort_values(["file", "line"], kind="stable")
    return [
        BadRow(int(line), str(file), str(column), str(reason), value)
        for line, file, column, reason, value in marks[
            ["line", "file", "column", "reason", "value"]
        ].itertuples(index=False)
    ]


def _write_bad_rows(rows: list[BadRow], store_path: Path) -> Path | None:
    path = store_path.with_name(store_path.name + ".bad-rows.csv")
    if not path.parent.is_dir():
        return None
    frame = pd.DataFrame(
        [(r.line, r.file, r.column, r.reason, r.value) for r in rows],
        columns=["line", "file", "column", "reason", "value"],
    )
    frame.to_csv(path, index=False)
    return path


def _bad_rows_message(report: LoadReport) -> str:
    rows = report.bad_rows
    shown = "; ".join(row.describe() for row in rows[:_SHOWN_BAD_ROWS])
    more = f" (and {len(rows) - _SHOWN_BAD_ROWS} more)" if len(rows) > _SHOWN_BAD_ROWS else ""
    where = f"; full list in {report.report_path}" if report.report_path else ""
    return (
        f"{len(rows)} bad row(s), nothing was loaded (the store is unchanged): {shown}{more}"
        f"{where}. Fix these rows, or load the rest with skip_bad_rows=True "
        "(CLI: --skip-bad-rows)."
    )


# ---- writing ---------------------------------------------------------------------------------

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
        return _count(
            con,
            """INSERT INTO interactions
               SELECT s.event_id, u.user_idx, i.item_idx, s.timestamp, s.rating, s.event, s.weight
               FROM _src_interactions s
               JOIN users u ON u.user_id = s.user_id
               JOIN items i ON i.item_id = s.item_id
               ANTI JOIN interactions t ON t.event_id = s.event_id
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
