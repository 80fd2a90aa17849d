"""The generic table format: ``interactions.*``, ``items.*``, ``users.*``, ``categories.*``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metarec.data.adapters.common import _files
from metarec.data.readers import read_file, table_kind, table_stem
from metarec.data.schema import SourceFile, SourceTables
from metarec.errors import DataError

TABLE_ROLES = ("interactions", "items", "users", "categories")


def read_table(sources: Sequence[Path]) -> SourceTables:
    """Read the generic table format: ``interactions.*`` (required), ``items.*``, ``users.*``,
    ``categories.*`` as CSV, TSV, Parquet or JSON lines (by extension).

    A folder contributes every file whose name (without extension) is a table name, optionally
    followed by ``_``, ``-`` or ``.`` and anything (``interactions_2024-01.csv``); several files of
    one table are concatenated. Explicit files must be named the same way.

    Raises:
        DataError: no interactions file, or an explicit file whose name is not a table name.
    """
    by_role: dict[str, list[Path]] = {role: [] for role in TABLE_ROLES}
    ignored: list[str] = []
    for source in sources:
        explicit = not source.is_dir()
        for path in _files(source):
            role = _table_role(path)
            if role is not None:
                by_role[role].append(path)
            elif explicit:
                raise DataError(
                    f"{path} is not a table of the generic format: name it interactions.*, "
                    "items.*, users.* or categories.* with extension .csv, .tsv, .parquet, "
                    ".jsonl or .json"
                )
            else:
                ignored.append(path.name)
    if not by_role["interactions"]:
        raise DataError(
            f"no interactions table in {', '.join(map(str, sources))}: the generic format needs "
            "a file named interactions.csv (or .tsv, .parquet, .jsonl, .json) with columns "
            "user_id, item_id"
        )
    files: dict[str, SourceFile] = {}
    tables = {
        role: _read_all(paths, role, files) if paths else None for role, paths in by_role.items()
    }
    findings = (
        [f"ignored files that are not tables: {', '.join(sorted(ignored))}"] if ignored else []
    )
    interactions = tables["interactions"]
    assert interactions is not None
    return SourceTables(
        interactions=interactions,
        items=tables["items"],
        users=tables["users"],
        categories=tables["categories"],
        files=files,
        findings=findings,
    )


def _table_role(path: Path) -> str | None:
    if table_kind(path) is None:
        return None
    stem = table_stem(path).lower()
    for role in TABLE_ROLES:
        if stem == role or (stem.startswith(role) and stem[len(role)] in "_-."):
            return role
    return None


def _read_all(paths: list[Path], what: str, files: dict[str, SourceFile]) -> pd.DataFrame:
    frames = []
    for path in paths:
        kind = table_kind(path)
        assert kind is not None
        frame, source = read_file(path, kind, what=what)
        files[source.path] = source
        frames.append(frame)
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
