"""UCSD Goodreads (Book Graph) interaction files: one JSON-lines file per genre (category)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from metarec.data.adapters.common import _files, _items_from_interactions, _require
from metarec.data.readers import read_file, table_kind, table_stem
from metarec.data.schema import FILE_COLUMN, ROW_COLUMN, SourceFile, SourceTables
from metarec.errors import DataError

GOODREADS_GENRES = {
    "children": "Children",
    "comics_graphic": "Comics & Graphic",
    "fantasy_paranormal": "Fantasy & Paranormal",
    "history_biography": "History & Biography",
    "mystery_thriller_crime": "Mystery, Thriller & Crime",
    "poetry": "Poetry",
    "romance": "Romance",
    "young_adult": "Young Adult",
}
_GOODREADS_PREFIX = "goodreads_interactions_"
_GOODREADS_DATE = "%a %b %d %H:%M:%S %z %Y"  # "Fri Feb 24 09:00:30 -0800 2017"
# The fields used; the full genre files are GBs, mostly review text, which is skipped.
_GOODREADS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("book_id", pa.string()),
        ("review_id", pa.string()),
        ("is_read", pa.bool_()),
        ("rating", pa.int64()),
        ("date_added", pa.string()),
    ]
)


def read_goodreads(sources: Sequence[Path]) -> SourceTables:
    """Read UCSD Goodreads JSON-lines interaction files, one genre (category) per file.

    The genre comes from the file name: ``goodreads_interactions_young_adult*.json[.gz]`` gives
    "Young Adult". book_id becomes item_id, review_id the event_id; ``rating`` 0 means unrated
    (rating left empty); event is ``read`` when ``is_read`` else ``shelve``; ``date_added`` is
    parsed to unix seconds. A book listed under several genres keeps the first file's genre as
    its category (files in the order given, folders sorted by name) and all of them in extra
    ``genres``; an interaction present in several files is loaded once.

    Raises:
        DataError: no goodreads_interactions_<genre> file, or a file missing its columns.
    """
    paths = [p for source in sources for p in _files(source) if _goodreads_genre(p)]
    if not paths:
        raise DataError(
            "no Goodreads file named goodreads_interactions_<genre>.json[.gz] in "
            f"{', '.join(map(str, sources))} (the genre in the name becomes the category)"
        )
    files: dict[str, SourceFile] = {}
    frames = []
    for path in paths:
        frame, source = read_file(
            path, "jsonl", schema=_GOODREADS_SCHEMA, what="goodreads interactions"
        )
        files[source.path] = source
        _require(frame, ("user_id", "book_id"), [path], "Goodreads")
        frames.append(_goodreads_interactions(frame, _goodreads_genre(path)))
    merged = pd.concat(frames, ignore_index=True)
    key = ["event_id"] if "event_id" in merged.columns else ["user_id", "item_id"]
    repeated = merged.duplicated(key, keep="first").to_numpy()
    findings = []
    if repeated.any():
        findings.append(
            f"{int(repeated.sum())} interactions appear in several genre files; each was loaded "
            "once (the book keeps the first file's genre as its category)"
        )
    genres = merged.groupby("item_id", sort=False)["category"].unique().map("|".join)
    items = _items_from_interactions(merged)
    items["genres"] = items["item_id"].map(genres)
    interactions = merged.loc[~repeated].drop(columns="category").reset_index(drop=True)
    return SourceTables(interactions, items, None, None, files, findings)


def _goodreads_genre(path: Path) -> str:
    stem = table_stem(path).lower()
    if not stem.startswith(_GOODREADS_PREFIX) or table_kind(path) != "jsonl":
        return ""
    genre = stem.removeprefix(_GOODREADS_PREFIX)
    for key, name in GOODREADS_GENRES.items():
        if genre == key or genre.startswith(key + "_"):
            return name
    return genre.removesuffix("_sample").replace("_", " ").title()


def _goodreads_interactions(frame: pd.DataFrame, genre: str) -> pd.DataFrame:
    out = pd.DataFrame({"user_id": frame["user_id"], "item_id": frame["book_id"]})
    if "review_id" in frame.columns:
        out["event_id"] = frame["review_id"]
    if "rating" in frame.columns:
        rating = pd.to_numeric(frame["rating"], errors="coerce")
        out["rating"] = frame["rating"].where(rating.isna() | (rating != 0), None)
    if "is_read" in frame.columns:
        is_read = frame["is_read"].astype(object).isin([True, "true", "True", 1])
        out["event"] = np.where(is_read, "read", "shelve")
    if "date_added" in frame.columns:
        out["timestamp"] = _goodreads_time(frame["date_added"])
    out["category"] = genre
    out[FILE_COLUMN] = frame[FILE_COLUMN]
    out[ROW_COLUMN] = frame[ROW_COLUMN]
    return out


def _goodreads_time(raw: pd.Series) -> pd.Series:
    """Unix seconds where ``date_added`` parses; the raw text otherwise (reported as bad)."""
    text = raw.astype(object).where(raw.notna(), None)
    parsed = pd.to_datetime(text, format=_GOODREADS_DATE, utc=True, errors="coerce")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.astype("Int64").astype(object).where(parsed.notna(), text)
