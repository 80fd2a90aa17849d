"""The store's schema, the normalised tables adapters produce, and what a load reports.

Every format is read into the same :class:`SourceTables` (the generic table format of
PROTOCOL.md §1, values still raw), validated once in :mod:`metarec.data.ingest`, then written to
the DuckDB tables defined here. The DDL runs once, when a store is created: no DDL afterwards
(DuckDB's known WAL-replay failures involve run-time DDL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = "1"

Format = Literal[
    "table", "recbole", "movielens", "douban", "goodreads", "amazon-pairs", "dbook", "auto"
]
"""Input formats :func:`metarec.data.ingest` understands; ``auto`` detects one by file names."""

DDL: tuple[str, ...] = (
    """CREATE TABLE items (
        item_idx INTEGER PRIMARY KEY, item_id VARCHAR NOT NULL UNIQUE, category VARCHAR NOT NULL,
        title VARCHAR, description VARCHAR, authors VARCHAR, publisher VARCHAR, brand VARCHAR,
        year DOUBLE, price DOUBLE, extra VARCHAR)""",
    "CREATE TABLE users (user_idx INTEGER PRIMARY KEY, user_id VARCHAR NOT NULL UNIQUE, "
    "extra VARCHAR)",
    """CREATE TABLE interactions (
        event_id VARCHAR PRIMARY KEY, user_idx INTEGER NOT NULL, item_idx INTEGER NOT NULL,
        timestamp BIGINT, rating DOUBLE, event VARCHAR, weight DOUBLE)""",
    "CREATE TABLE categories (category VARCHAR PRIMARY KEY, description VARCHAR)",
    """CREATE TABLE loads (
        load_id INTEGER, source VARCHAR, format VARCHAR, sha256 VARCHAR, rows_in BIGINT,
        rows_inserted BIGINT, loaded_at TIMESTAMP)""",
    "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
)

# Columns of the generic table format (PROTOCOL.md §1). Anything else in items/users goes to extra.
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating", "event", "weight")
INTERACTION_OPTIONAL = ("event_id", "category")  # stable client key; category of a new item
ITEM_TEXT_COLUMNS = ("title", "description", "authors", "publisher", "brand")
ITEM_NUMBER_COLUMNS = ("year", "price")
ITEM_COLUMNS = ("item_id", "category", *ITEM_TEXT_COLUMNS, *ITEM_NUMBER_COLUMNS)
USER_COLUMNS = ("user_id",)
CATEGORY_COLUMNS = ("category", "description")

# Bookkeeping columns every adapter adds to each frame, for the bad-row report.
FILE_COLUMN = "_file"  # the source file's key in SourceTables.files
ROW_COLUMN = "_row"  # 0-based record index inside that file (mapped to a line number on demand)
PROVENANCE_COLUMNS = [FILE_COLUMN, ROW_COLUMN]  # carried through validation, never stored

# What the read API returns, in order (Store.items() etc.).
ITEMS_DTYPES: dict[str, str] = {
    "item_idx": "int64",
    "item_id": "object",
    "category": "object",
    "title": "object",
    "description": "object",
    "authors": "object",
    "publisher": "object",
    "brand": "object",
    "year": "float64",
    "price": "float64",
    "extra": "object",
}
USERS_DTYPES: dict[str, str] = {"user_idx": "int64", "user_id": "object", "extra": "object"}
INTERACTIONS_DTYPES: dict[str, str] = {
    "user_idx": "int64",
    "item_idx": "int64",
    "timestamp": "Int64",
    "rating": "float64",
    "event": "object",
    "weight": "float64",
}

FileKind = Literal["csv", "tsv", "jsonl", "parquet", "frame"]
"""How a source file is laid out, which decides how a record index maps to a line number."""


@dataclass(frozen=True)
class SourceFile:
    """One input file and how to find a record's line in it.

    Attributes:
        path: the file (for in-memory frames, a label such as ``<interactions>``).
        kind: its layout; ``csv`` honours quotes (records may span lines), ``tsv`` does not.
        header: whether the first line is a header.
    """

    path: str
    kind: FileKind
    header: bool = True


@dataclass
class SourceTables:
    """Tables in the generic format, as an adapter read them, before validation.

    Each frame holds the generic columns (values still raw: strings, numbers or missing) plus
    ``_file`` and ``_row``, which locate each row in its source file for the bad-row report.

    Attributes:
        interactions: user_id, item_id and optional timestamp, rating, event, weight, event_id,
            category columns.
        items: item_id, category, optional attribute columns; any other column becomes extra.
        users: user_id and any attribute columns (kept as extra).
        categories: category and optional description.
        files: the source files by key (the values of the ``_file`` columns).
        findings: non-fatal notes the adapter made (rows merged across files, ignored files).
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    categories: pd.DataFrame | None = None
    files: dict[str, SourceFile] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BadRow:
    """One row that breaks the format.

    Attributes:
        line: line number in the source file (1-based, the header is line 1); for Parquet files
            and in-memory frames, the 1-based row number.
        file: the source file.
        column: the offending column.
        reason: what is wrong, in words.
        value: the offending value as text (None when it was missing).
    """

    line: int
    file: str
    column: str
    reason: str
    value: str | None = None

    def describe(self) -> str:
        """One line: ``file:line, column 'c': reason (value 'v')``."""
        shown = "" if self.value is None else f" (value {self.value!r})"
        return f"{self.file}:{self.line}, column {self.column!r}: {self.reason}{shown}"


@dataclass(frozen=True)
class TableCounts:
    """What a load did to one table.

    Attributes:
        read: rows read from the source (0 when the table was not given).
        inserted: new rows written.
        unchanged: rows already in the store with identical values (for interactions: an event
            with the same event_id was already present).
        updated: rows already in the store whose values changed and were overwritten.
        bad: rows refused as bad (see ``LoadReport.bad_rows``).
    """

    read: int = 0
    inserted: int = 0
    unchanged: int = 0
    updated: int = 0
    bad: int = 0


@dataclass(frozen=True)
class LoadReport:
    """The outcome of one :func:`metarec.data.ingest` call.

    Attributes:
        store: the store written to.
        sources: the input paths as given.
        format: the format used (after auto-detection).
        interactions, items, users, categories: per-table counts.
        bad_rows: every bad row (line, file, column, reason, value).
        findings: non-fatal data-quality notes, e.g. a category listed with no items.
        report_path: where the bad-row CSV was written, or None.
        seconds: wall time of the whole load.
        load_id: the row written to the store's ``loads`` table (None when nothing was written).
    """

    store: Path
    sources: tuple[str, ...]
    format: str
    interactions: TableCounts = TableCounts()
    items: TableCounts = TableCounts()
    users: TableCounts = TableCounts()
    categories: TableCounts = TableCounts()
    bad_rows: list[BadRow] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    report_path: Path | None = None
    seconds: float = 0.0
    load_id: int | None = None

    def summary(self) -> str:
        """A few human-readable lines: counts per table, bad rows and findings."""
        lines = [f"{self.format} from {', '.join(self.sources)} into {self.store}"]
        for name in ("interactions", "items", "users", "categories"):
            c: TableCounts = getattr(self, name)
            lines.append(
                f"  {name}: read {c.read}, inserted {c.inserted}, unchanged {c.unchanged}, "
                f"updated {c.updated}, bad {c.bad}"
            )
        if self.bad_rows:
            where = f" (listed in {self.report_path})" if self.report_path else ""
            lines.append(f"  {len(self.bad_rows)} bad rows{where}")
        lines.extend(f"  note: {finding}" for finding in self.findings)
        lines.append(f"  {self.seconds:.2f} s")
        return "\n".join(lines)
