"""What every adapter uses: the files of a source, required columns, prefixed ids, items from
interactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metarec.data.schema import PROVENANCE_COLUMNS
from metarec.errors import DataError


def _files(source: Path) -> list[Path]:
    """The files of a source: itself, or a folder's files sorted by name."""
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
    if not source.exists():
        raise DataError(f"{source} does not exist; pass a data folder or files")
    return [source]


def _require(frame: pd.DataFrame, columns: Sequence[str], paths: Sequence[Path], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = [c for c in frame.columns if c not in PROVENANCE_COLUMNS]
        raise DataError(
            f"{what} file {', '.join(map(str, paths))} lacks column(s) {missing} "
            f"(found {found}); is this the right file and format?"
        )


def _prefixed(prefix: str, ids: pd.Series) -> pd.Series:
    """Ids with a namespace prefix; a missing (empty) id stays empty, to be reported as missing."""
    text = ids.astype(str)
    return text.where(text.str.strip() == "", prefix + text)


def _items_from_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """One item row per distinct item_id (its first interaction's category and location)."""
    # Rows without an item id are reported once, on the interaction itself.
    named = interactions.loc[interactions["item_id"].astype(str).str.strip() != ""]
    first = named.drop_duplicates("item_id", keep="first")
    return first[["item_id", "category", *PROVENANCE_COLUMNS]].reset_index(drop=True)
