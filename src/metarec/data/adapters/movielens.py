"""The official MovieLens CSV layout: ``ratings.csv`` and ``movies.csv``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metarec.data.adapters.common import _files, _require
from metarec.data.readers import read_file
from metarec.data.schema import (
    FILE_COLUMN,
    PROVENANCE_COLUMNS,
    ROW_COLUMN,
    SourceFile,
    SourceTables,
)
from metarec.errors import DataError

_RATINGS_KEEP = {"userId", "movieId", "rating", "timestamp", *PROVENANCE_COLUMNS}
_TITLE_YEAR = re.compile(r"^(?P<name>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*(?:\d{4})?)?\)\s*$")


def read_movielens(sources: Sequence[Path]) -> SourceTables:
    """Read the official MovieLens CSV layout (ml-latest, ml-latest-small, ml-25m...).

    ``ratings.csv`` (userId, movieId, rating, timestamp) is required; ``movies.csv`` (movieId,
    title, genres ``a|b|c``) gives items: the year is parsed out of ``Name (1995)``, the primary
    category is the first genre, all genres go to extra ``genres``. ``tags.csv`` and
    ``links.csv`` are not loaded: tags are written by users after a movie's release, so as item
    attributes they would leak post-launch feedback into a "new" category.

    Raises:
        DataError: no ratings.csv, or a file missing its columns.
    """
    paths = {p.name.lower(): p for source in sources for p in _files(source)}
    if "ratings.csv" not in paths:
        raise DataError(
            f"no ratings.csv in {', '.join(map(str, sources))}: the MovieLens layout needs "
            "ratings.csv (userId,movieId,rating,timestamp) and, for categories, movies.csv"
        )
    files: dict[str, SourceFile] = {}
    ratings, source = read_file(paths["ratings.csv"], "csv", what="ratings")
    files[source.path] = source
    _require(ratings, ("userId", "movieId", "rating"), [paths["ratings.csv"]], "MovieLens ratings")
    interactions = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"}).drop(
        columns=[c for c in ratings.columns if c not in _RATINGS_KEEP]
    )
    interactions["event"] = "rating"
    items = None
    if "movies.csv" in paths:
        movies, source = read_file(paths["movies.csv"], "csv", what="movies")
        files[source.path] = source
        _require(movies, ("movieId", "title", "genres"), [paths["movies.csv"]], "MovieLens movies")
        items = _movielens_items(movies)
    ignored = sorted(name for name in ("tags.csv", "links.csv") if name in paths)
    findings = (
        [
            f"not loaded: {', '.join(ignored)} (tags are user feedback written after release; "
            "as item attributes they would leak into a new category)"
        ]
        if ignored
        else []
    )
    return SourceTables(interactions, items, None, None, files, findings)


def _movielens_items(movies: pd.DataFrame) -> pd.DataFrame:
    parsed = movies["title"].astype(str).str.extract(_TITLE_YEAR)
    has_year = parsed["year"].notna()
    genres = movies["genres"].astype(str).str.split("|")
    return pd.DataFrame(
        {
            "item_id": movies["movieId"],
            "category": genres.str[0],
            "title": movies["title"].where(~has_year, parsed["name"]),
            "year": parsed["year"].where(has_year, ""),
            "genres": genres.str.join("|"),
            FILE_COLUMN: movies[FILE_COLUMN],
            ROW_COLUMN: movies[ROW_COLUMN],
        }
    )
