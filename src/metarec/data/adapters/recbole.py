"""RecBole atomic files: ``X.inter``, ``X.item``, ``X.user`` with ``name:type`` headers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.adapters.common import _files, _require
from metarec.data.readers import read_file
from metarec.data.schema import PROVENANCE_COLUMNS, SourceFile, SourceTables
from metarec.errors import DataError

_RECBOLE_TITLE = ("movie_title", "title")
_RECBOLE_YEAR = ("release_year", "year")
_RECBOLE_GENRES = ("class", "genre", "genres", "categories")


def read_recbole(sources: Sequence[Path]) -> SourceTables:
    """Read RecBole atomic files: ``X.inter`` (required), ``X.item``, ``X.user``.

    Tab-separated with ``name:type`` headers. Interactions keep user_id, item_id, rating and
    timestamp, with event ``rating`` when there are ratings. Items: ``movie_title``/``title``
    becomes title, ``release_year``/``year`` year; the genre field (``class``, ``genre``,
    ``genres`` or ``categories``, space-separated) gives the primary category (first genre) and
    extra ``genres`` (``|``-joined). User fields and other item fields are kept as extra
    (``float``-typed fields as numbers).

    Raises:
        DataError: no ``.inter`` file, missing id columns, or an item file without a genre field.
    """
    paths = [p for source in sources for p in _files(source)]
    by_ext = {ext: [p for p in paths if p.suffix == ext] for ext in (".inter", ".item", ".user")}
    if not by_ext[".inter"]:
        raise DataError(f"no RecBole .inter file in {', '.join(map(str, sources))}")
    files: dict[str, SourceFile] = {}
    inter = _recbole_frames(by_ext[".inter"], files, "interactions")
    _require(inter, ("user_id", "item_id"), by_ext[".inter"], "RecBole .inter")
    keep = [c for c in ("user_id", "item_id", "rating", "timestamp") if c in inter.columns]
    interactions = inter[keep + PROVENANCE_COLUMNS].copy()
    if "rating" in interactions.columns:
        interactions["event"] = "rating"
    findings = _ignored_columns(inter, keep, "RecBole .inter")

    items = None
    if by_ext[".item"]:
        raw = _recbole_frames(by_ext[".item"], files, "items")
        _require(raw, ("item_id",), by_ext[".item"], "RecBole .item")
        items = _recbole_items(raw, by_ext[".item"], findings)
    users = None
    if by_ext[".user"]:
        users = _recbole_frames(by_ext[".user"], files, "users")
        _require(users, ("user_id",), by_ext[".user"], "RecBole .user")
    return SourceTables(interactions, items, users, None, files, findings)


def _recbole_frames(paths: list[Path], files: dict[str, SourceFile], what: str) -> pd.DataFrame:
    frames = []
    for path in paths:
        frame, source = read_file(path, "tsv", what=what)
        files[source.path] = source
        renamed = {}
        for column in frame.columns:
            name, _, field_type = str(column).partition(":")
            renamed[column] = name
            if field_type == "float" and what != "interactions":
                # Kept as extra attributes: numbers where RecBole says so (interaction values
                # are parsed, and bad ones reported, by the validator).
                frame[column] = _numbers_if_all_parse(frame[column])
        frames.append(frame.rename(columns=renamed))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def _recbole_items(raw: pd.DataFrame, paths: list[Path], findings: list[str]) -> pd.DataFrame:
    genre_field = next((c for c in _RECBOLE_GENRES if c in raw.columns), None)
    if genre_field is None:
        raise DataError(
            f"RecBole item file {', '.join(map(str, paths))} has no genre field "
            f"({', '.join(_RECBOLE_GENRES)}) to take a category from; convert it to the generic "
            "table format with an items table that has a category column"
        )
    items = raw.rename(
        columns=_first_present(raw, {"title": _RECBOLE_TITLE, "year": _RECBOLE_YEAR})
    )
    genres = items.pop(genre_field).astype(str).str.split()
    items["category"] = genres.str[0]
    items["genres"] = genres.str.join("|")
    if "year" in items.columns and not pd.api.types.is_numeric_dtype(items["year"].dtype):
        # RecBole types release_year as a token, and ml-100k writes "unkonwn" for an unknown
        # year: a token that is not a number means "no year", reported rather than refused.
        text = items["year"].astype(str).str.strip()
        not_number = (text != "") & pd.to_numeric(text, errors="coerce").isna()
        if not_number.any():
            values = sorted(set(text[not_number]))
            findings.append(
                f"{int(not_number.sum())} item(s) have a non-numeric year {values[:5]}: "
                "loaded without a year"
            )
            items["year"] = text.where(~not_number, "")
    return items


def _ignored_columns(frame: pd.DataFrame, kept: Sequence[str], what: str) -> list[str]:
    ignored = [c for c in frame.columns if c not in kept and c not in PROVENANCE_COLUMNS]
    return [f"{what}: columns not loaded: {', '.join(map(str, ignored))}"] if ignored else []


def _first_present(frame: pd.DataFrame, wanted: dict[str, Sequence[str]]) -> dict[str, str]:
    """Renames {found source column: target} for the first candidate present of each target."""
    renames = {}
    for target, candidates in wanted.items():
        found = next((c for c in candidates if c in frame.columns), None)
        if found is not None and found != target:
            renames[found] = target
    return renames


def _numbers_if_all_parse(column: pd.Series) -> pd.Series:
    """A RecBole ``float`` field as numbers, unless some value does not parse (then as text)."""
    numbers = pd.to_numeric(column.replace("", np.nan), errors="coerce")
    return numbers if numbers.notna().sum() == (column != "").sum() else column
