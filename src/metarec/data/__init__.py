"""The data layer: ingest any supported format into a DuckDB store, and read it back.

Read this package top to bottom: :mod:`~metarec.data.readers` (files to raw frames),
:mod:`~metarec.data.adapters` (one module per public format, to the generic tables),
:mod:`~metarec.data.ingest` (the entry point: read, validate, write),
:mod:`~metarec.data.validate` (columns, ids and values checked once, before the store is touched;
:mod:`~metarec.data.values` parses, :mod:`~metarec.data.bad_rows` reports what was refused),
:mod:`~metarec.data.write` (one transaction, so a load lands whole or not at all),
:mod:`~metarec.data.store` (the tables and the read API the rest of metarec codes against),
:mod:`~metarec.data.export` (Parquet by category, and :func:`open_store` for either),
:mod:`~metarec.data.catalog` (a store's items, users and positives, as the next steps read them),
:mod:`~metarec.data.simulate` (the offline bookstore the demo and tests run on).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> defining module, imported on first use (PEP 562): reading a store's category counts
# (`metarec categories`) need not import every adapter and validator
_EXPORTS = {
    "Catalog": "metarec.data.catalog",
    "open_store": "metarec.data.export",
    "ingest": "metarec.data.ingest",
    "ingest_frames": "metarec.data.ingest",
    "BadRow": "metarec.data.schema",
    "Format": "metarec.data.schema",
    "LoadReport": "metarec.data.schema",
    "TableCounts": "metarec.data.schema",
    "Store": "metarec.data.store",
}

if TYPE_CHECKING:
    from metarec.data.catalog import Catalog
    from metarec.data.export import open_store
    from metarec.data.ingest import ingest, ingest_frames
    from metarec.data.schema import BadRow, Format, LoadReport, TableCounts
    from metarec.data.store import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metarec.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
