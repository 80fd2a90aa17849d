"""Parquet snapshots of a store, partitioned by category: what training reads at scale.

A store file has one owner at a time (DuckDB's lock, docs/DATA.md), so training elsewhere, or on
many machines, reads a snapshot instead: ``metarec export --store S --out DIR`` writes

::

    DIR/manifest.json                                   format, row counts, sha256 of every file
    DIR/items/category=<value>/data_0.parquet           hive style: the folder names the category
    DIR/interactions/category=<value>/data_0.parquet    (percent-encoded: "Books%20%3E%20Poetry")
    DIR/users/data_0.parquet
    DIR/categories/data_0.parquet
    DIR/<any other table>/data_0.parquet                e.g. a text-embedding cache

atomically: into ``DIR.tmp``, every file fsynced, then one rename. :func:`open_export` (and
``Store.open(DIR, read_only=True)``) reads it back as a read-only :class:`~metarec.data.Store`
whose tables are DuckDB views over the files, so everything that reads a store reads an export.
Given ``categories`` or ``exclude``, the interactions view lists only those categories' files:
the others are never opened (nor hashed). Items and users are read whole: ``item_idx`` and
``user_idx`` must stay dense, and they are small next to the interactions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import urllib.parse
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq

from metarec.atomic import fsync_dir, fsync_file
from metarec.data.schema import INTERACTIONS_DTYPES, ITEMS_DTYPES, SCHEMA_VERSION, USERS_DTYPES
from metarec.data.store import Store
from metarec.errors import StoreError, UnknownCategoryError

MANIFEST = "manifest.json"
FORMAT = "metarec-export"
VERSION = 1
PARTITIONED = ("items", "interactions")
_BOOKKEEPING = ("loads", "meta")  # about the store file itself, not the data
_POSITION = "interaction_pos"  # the store's row order, so an export reads back in that order
_HIVE = "hive_partitioning = true, hive_types = {'category': VARCHAR}"  # '1990' stays text


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_store` wrote.

    Attributes:
        folder: the export folder.
        n_categories: categories with items.
        rows: rows per table.
        n_files: Parquet files written.
        n_bytes: their total size.
        seconds: wall time.
    """

    folder: Path
    n_categories: int
    rows: dict[str, int]
    n_files: int
    n_bytes: int
    seconds: float

    def __str__(self) -> str:
        tables = ", ".join(f"{name} {n:,}" for name, n in self.rows.items())
        return (
            f"{self.n_categories} categories; rows: {tables}; {self.n_files} files, "
            f"{self.n_bytes / 1e6:.1f} MB in {self.seconds:.1f} s"
        )


def export_store(store: str | Path | Store, out: str | Path) -> ExportSummary:
    """Write a store as Parquet partitioned by category, atomically (see the module docstring).

    Args:
        store: a store file, or an open store (read-only is enough; it is left open).
        out: the folder to create; it must not exist. A stale ``<out>.tmp`` from an export
            that crashed is removed first.

    Returns:
        The summary of what was written.

    Raises:
        StoreError: ``out`` exists, or the store cannot be opened.
    """
    started = time.perf_counter()
    out = Path(out)
    if out.exists():
        raise StoreError(f"{out} already exists; remove it or choose another --out")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    opened = Store.open(store, read_only=True) if isinstance(store, str | Path) else store
    try:
        manifest = _write_tables(opened, tmp)
        files = [tmp / entry["path"] for entry in _file_entries(manifest)]
        for path in files:
            fsync_file(path)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        fsync_file(tmp / MANIFEST)
        for folder in {p.parent for p in files} | {tmp}:
            fsync_dir(folder)
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if opened is not store:
            opened.close()
    return ExportSummary(
        folder=out,
        n_categories=len(manifest["categories"]),
        rows=manifest["rows"],
        n_files=len(files),
        n_bytes=sum(e["bytes"] for e in _file_entries(manifest)),
        seconds=time.perf_counter() - started,
    )


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder.

    Raises:
        StoreError: no manifest, not a metarec export, or another export version.
    """
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(
            f"{folder} is not a metarec export (no readable {MANIFEST}); write one with "
            "`metarec export --store STORE --out FOLDER`, or pass a .duckdb store"
        ) from exc
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise StoreError(
            f"{folder} holds export format {manifest.get('format')!r} version "
            f"{manifest.get('version')!r}; this metarec reads {FORMAT!r} version {VERSION}: "
            "export the store again"
        )
    return manifest


class ExportedStore(Store):
    """A read-only :class:`Store` over an export folder; build it with :func:`open_export`.

    Attributes:
        manifest: the export's manifest.
        interaction_categories: the categories whose interactions it reads.
    """

    def __init__(
        self,
        path: Path,
        connection: duckdb.DuckDBPyConnection,
        manifest: dict[str, Any],
        interaction_categories: tuple[str, ...],
    ) -> None:
        super().__init__(path, connection, read_only=True)
        self.manifest = manifest
        self.interaction_categories = interaction_categories

    def __repr__(self) -> str:
        read, total = len(self.interaction_categories), len(self.manifest["categories"])
        return f"ExportedStore({str(self.path)!r}, interactions of {read}/{total} categories)"


def open_store(path: str | Path, *, read_only: bool = False, create: bool = False) -> Store:
    """A store file (:meth:`Store.open`), or a folder written by ``metarec export``, which opens
    read-only with every category's interactions (:func:`open_export`).

    Raises:
        StoreError: as :meth:`Store.open`; an export opened for writing, or not a valid export.
    """
    if not Path(path).is_dir():
        return Store.open(path, read_only=read_only, create=create)
    if not read_only:
        raise StoreError(
            f"{path} is a folder (a Parquet export is read-only); open it with read_only=True, "
            "or pass the .duckdb store to write"
        )
    return open_export(path)


def open_export(
    folder: str | Path,
    *,
    categories: Iterable[str] | None = None,
    exclude: Collection[str] = (),
    verify: bool = True,
) -> ExportedStore:
    """Open an export folder as a read-only store, reading only some categories' interactions.

    Args:
        folder: written by :func:`export_store`.
        categories: whose interactions to read (default: every category).
        exclude: categories whose interactions are never read (e.g. sealed hold-out ones);
            names the export does not hold are ignored (the caller's own checks name them).
        verify: check the sha256 of every file it will read against the manifest.

    Returns:
        The store; its ``interactions`` hold the selected categories' rows only, in the
        original store's order.

    Raises:
        StoreError: not an export, or a file that is missing or fails its checksum.
        UnknownCategoryError: ``categories`` names a category the export does not hold.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    known = manifest["categories"]
    wanted = list(known) if categories is None else list(dict.fromkeys(categories))
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise UnknownCategoryError(
            f"categories {unknown[:5]} are not in the export {folder}; see `metarec categories "
            f"--store {folder}`"
        )
    selected = tuple(c for c in wanted if c not in set(exclude))
    files = {
        "items": [e for c in known for e in known[c]["items"]],
        "interactions": [e for c in selected for e in known[c]["interactions"]],
        **manifest["tables"],
    }
    for entry in (e for entries in files.values() for e in entries):
        _check_file(folder, entry, verify=verify)
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")  # the library never prints
        for name, entries in files.items():
            con.execute(_view_sql(name, [str(folder / e["path"]) for e in entries]))
    except BaseException:
        con.close()
        raise
    return ExportedStore(folder, con, manifest, selected)


def _write_tables(store: Store, tmp: Path) -> dict[str, Any]:
    """COPY every table into ``tmp``; the manifest describing what was written."""
    con = store.connection
    items = ", ".join(ITEMS_DTYPES)
    interactions = ", ".join(f"x.{c}" for c in INTERACTIONS_DTYPES)
    partitioned = {
        "items": f"SELECT {items} FROM items ORDER BY item_idx",
        # rowid: the table's row order, which Store.interactions() returns
        "interactions": f"SELECT {interactions}, x.rowid AS {_POSITION}, i.category "
        "FROM interactions x JOIN items i USING (item_idx) ORDER BY x.rowid",
    }
    for name, query in partitioned.items():
        con.execute(
            f"COPY ({query}) TO {_literal(tmp / name)} (FORMAT parquet, PARTITION_BY (category))"
        )
    whole = {
        "users": f"SELECT {', '.join(USERS_DTYPES)} FROM users ORDER BY user_idx",
        "categories": "SELECT category, description FROM categories ORDER BY category",
    }
    others = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        "ORDER BY table_name"
    ).fetchall()
    for (name,) in others:
        if name not in (*PARTITIONED, *whole, *_BOOKKEEPING):
            whole[name] = f'SELECT * FROM "{name}"'
    for name, query in whole.items():
        (tmp / name).mkdir()
        con.execute(f"COPY ({query}) TO {_literal(tmp / name / 'data_0.parquet')} (FORMAT parquet)")
    categories: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name in PARTITIONED:
        for part in sorted((tmp / name).iterdir()):
            category = urllib.parse.unquote(part.name.split("=", 1)[1])
            entry = categories.setdefault(category, {table: [] for table in PARTITIONED})
            entry[name] = [_describe(tmp, f) for f in sorted(part.glob("*.parquet"))]
    tables = {name: [_describe(tmp, tmp / name / "data_0.parquet")] for name in whole}
    expected = {row[0] for row in con.execute("SELECT DISTINCT category FROM items").fetchall()}
    if set(categories) != expected:  # a naming round trip that lost or merged a category
        raise StoreError(
            f"export of {store.path} wrote partitions for {len(categories)} categories but the "
            f"store has {len(expected)}; please report this with the category names"
        )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "schema_version": SCHEMA_VERSION,
        "source": str(store.path),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "categories": dict(sorted(categories.items())),
        "tables": tables,
    }
    manifest["rows"] = {
        name: sum(e["rows"] for c in categories.values() for e in c[name]) for name in PARTITIONED
    } | {name: sum(e["rows"] for e in entries) for name, entries in tables.items()}
    return manifest


def _view_sql(name: str, paths: list[str]) -> str:
    """A view named like the store's table over ``paths`` (an empty one when none)."""
    if name == "interactions":
        if not paths:  # no category selected, or none has interactions: typed, empty
            columns = ", ".join(
                f"CAST(NULL AS {t}) AS {c}"
                for c, t in {
                    "user_idx": "BIGINT",
                    "item_idx": "BIGINT",
                    "timestamp": "BIGINT",
                    "rating": "DOUBLE",
                    "event": "VARCHAR",
                    "weight": "DOUBLE",
                    "category": "VARCHAR",
                    _POSITION: "BIGINT",
                }.items()
            )
            return f"CREATE VIEW interactions AS SELECT {columns} WHERE false"
        source = f"read_parquet({_list(paths)}, {_HIVE})"
        return f"CREATE VIEW interactions AS SELECT * FROM {source} ORDER BY {_POSITION}"
    if name == "items":
        return f"CREATE VIEW items AS SELECT * FROM read_parquet({_list(paths)}, {_HIVE})"
    return f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet({_list(paths)})'


def _describe(root: Path, path: Path) -> dict[str, Any]:
    return {
        "path": path.relative_to(root).as_posix(),
        "rows": pq.read_metadata(path).num_rows,
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
    }


def _check_file(folder: Path, entry: dict[str, Any], *, verify: bool) -> None:
    path = folder / entry["path"]
    if not path.is_file():
        raise StoreError(f"export {folder} lacks {entry['path']}; export the store again")
    if verify and (path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]):
        raise StoreError(
            f"{path} fails its checksum (changed or damaged since the export); export the "
            "store again"
        )


def _file_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    per_category = [e for c in manifest["categories"].values() for t in c.values() for e in t]
    return per_category + [e for entries in manifest["tables"].values() for e in entries]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _literal(value: str | Path) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + str(value).replace("'", "''") + "'"


def _list(paths: list[str]) -> str:
    return "[" + ", ".join(_literal(p) for p in paths) + "]"
