"""The data layer: ingest any supported format into a DuckDB store, and read it back.

Read this package top to bottom: :mod:`~metarec.data.readers` (files to raw frames),
:mod:`~metarec.data.adapters` (one function per public format, to the generic tables),
:mod:`~metarec.data.ingest` (validate once, write in one transaction),
:mod:`~metarec.data.store` (the tables and the read API the rest of metarec codes against).
"""

from metarec.data.ingest import ingest, ingest_frames
from metarec.data.schema import BadRow, Format, LoadReport, TableCounts
from metarec.data.store import Store

__all__ = ["BadRow", "Format", "LoadReport", "Store", "TableCounts", "ingest", "ingest_frames"]
