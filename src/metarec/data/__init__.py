"""The data layer: ingest any supported format into a DuckDB store, and read it back.

Read this package top to bottom: :mod:`~metarec.data.readers` (files to raw frames),
:mod:`~metarec.data.adapters` (one function per public format, to the generic tables),
:mod:`~metarec.data.ingest` (validate once, write in one transaction),
:mod:`~metarec.data.store` (the tables and the read API the rest of metarec codes against),
:mod:`~metarec.data.export` (Parquet by category, and :func:`open_store` for either),
:mod:`~metarec.data.catalog` (a store's items, users and positives, as the next steps read them).
"""

from metarec.data.catalog import Catalog
from metarec.data.export import open_store
from metarec.data.ingest import ingest, ingest_frames
from metarec.data.schema import BadRow, Format, LoadReport, TableCounts
from metarec.data.store import Store

__all__ = [
    "BadRow",
    "Catalog",
    "Format",
    "LoadReport",
    "Store",
    "TableCounts",
    "ingest",
    "ingest_frames",
    "open_store",
]
