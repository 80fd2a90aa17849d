"""DBook, MetaHIN's Douban Book splits: ``<split>.json``, ``<split>_y.json``, ``original/*.dat``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.adapters.common import _files, _items_from_interactions
from metarec.data.readers import read_file
from metarec.data.schema import (
    FILE_COLUMN,
    PROVENANCE_COLUMNS,
    ROW_COLUMN,
    SourceFile,
    SourceTables,
)
from metarec.errors import DataError

DBOOK_SPLITS = (
    "meta_training",
    "warm_up",
    "user_cold_testing",
    "item_cold_testing",
    "user_and_item_cold_testing",
)
"""MetaHIN's shipped splits, in load order; each becomes the ``event`` of its interactions."""
DBOOK_CATEGORY = "Book"
# original/<file>: (table, column it fills). Each .dat is `id<TAB>value`, ids only (no names).
_DBOOK_ATTRIBUTES = {
    "book_author.dat": ("items", "authors"),
    "book_publisher.dat": ("items", "publisher"),
    "book_year.dat": ("items", "year_id"),
    "user_location.dat": ("users", "location"),
}


def read_dbook(sources: Sequence[Path]) -> SourceTables:
    """Read MetaHIN's DBook folder: ``<split>.json`` + ``<split>_y.json`` and ``original/*.dat``.

    Each split file maps a user id to the list of books they rated (``{"1": [879, 36, ...]}``)
    and ``<split>_y.json`` holds the ratings (1 to 5) aligned with those lists. Every rating is
    one interaction with event = the split's name (``meta_training``, ``warm_up``,
    ``user_cold_testing``, ``item_cold_testing``, ``user_and_item_cold_testing``), so the
    shipped split membership survives ingestion (the ``melu`` protocol reads it back). There is
    no timestamp and no genre: every book is in the one category "Book".

    Attributes are anonymous ids: ``book_author.dat`` gives ``authors``, ``book_publisher.dat``
    ``publisher``, ``book_year.dat`` the extra ``year_id`` (an index of publication years whose
    mapping to calendar years is not shipped, so it is not the numeric ``year``), and
    ``user_location.dat`` the user extra ``location``; an id listed twice is ``|``-joined.
    ``user_user.dat`` (social links) has no table in the store and is not loaded (a finding
    says so). A folder is read with its ``original/`` sub-folder. A bad rating is reported with
    the JSON file and its 1-based position in the file's ratings (there are no lines to cite).

    Raises:
        DataError: no split file, a split without its ``_y`` file, or a ``_y`` file whose users
            or list lengths differ from its split's.
    """
    paths = [p for source in sources for p in _dbook_files(source)]
    by_name = {p.name: p for p in paths}
    present = [s for s in DBOOK_SPLITS if f"{s}.json" in by_name]
    if not present:
        raise DataError(
            f"no DBook split file ({', '.join(s + '.json' for s in DBOOK_SPLITS)}) in "
            f"{', '.join(map(str, sources))}"
        )
    files: dict[str, SourceFile] = {}
    frames = []
    for split in present:
        if f"{split}_y.json" not in by_name:
            raise DataError(
                f"DBook split {by_name[split + '.json']} has no {split}_y.json beside it with its "
                "ratings; copy both files of the split"
            )
        frame = _dbook_split(by_name[f"{split}.json"], by_name[f"{split}_y.json"], split)
        files[str(by_name[f"{split}.json"])] = SourceFile(str(by_name[f"{split}.json"]), "frame")
        frames.append(frame)
    interactions = pd.concat(frames, ignore_index=True)

    attributes: dict[str, list[pd.DataFrame]] = {"items": [], "users": []}
    for name, (table, column) in _DBOOK_ATTRIBUTES.items():
        if name in by_name:
            frame, source = read_file(by_name[name], "tsv", names=["id", column], what=name)
            files[source.path] = source
            attributes[table].append(_joined_by_id(frame, column))
    items = _dbook_items(interactions, attributes["items"])
    users = (
        _outer_by_id(attributes["users"]).rename(columns={"id": "user_id"})
        if attributes["users"]
        else None
    )
    findings = [
        "interactions.event holds the shipped DBook split of each rating: " + ", ".join(present)
    ]
    missing = [name for name in _DBOOK_ATTRIBUTES if name not in by_name]
    if missing:
        findings.append(f"attribute files not found (loaded without them): {', '.join(missing)}")
    if "user_user.dat" in by_name:
        findings.append("not loaded: user_user.dat (social links; the store has no such table)")
    bare = int(items["authors"].isna().sum()) if "authors" in items.columns else len(items)
    if bare:
        findings.append(f"{bare} book(s) have no author row")
    return SourceTables(interactions, items, users, None, files, findings)


def _dbook_files(source: Path) -> list[Path]:
    """A source's files, plus those of its ``original/`` sub-folder."""
    found = _files(source)
    if source.is_dir() and (source / "original").is_dir():
        found += _files(source / "original")
    return found


def _dbook_split(path: Path, path_y: Path, split: str) -> pd.DataFrame:
    """One split as interaction rows: user_id, item_id, rating (raw), event = ``split``."""
    books, ratings = _json_object(path), _json_object(path_y)
    if books.keys() != ratings.keys():
        only = sorted(set(books) ^ set(ratings))[:5]
        raise DataError(
            f"{path.name} and {path_y.name} list different users (e.g. {only}); the ratings file "
            "must have exactly one list per user of the split file"
        )
    users, items, values = [], [], []
    for user, listed in books.items():
        rated = ratings[user]
        if not isinstance(listed, list) or not isinstance(rated, list) or len(listed) != len(rated):
            raise DataError(
                f"user {user!r}: {path.name} and {path_y.name} must hold lists of the same length "
                "(one rating per book, in the same order)"
            )
        users.extend([user] * len(listed))
        items.extend(listed)
        values.extend(rated)
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": ["" if i is None else str(i) for i in items],
            "rating": pd.Series(values),
            "event": split,
            FILE_COLUMN: str(path),
            ROW_COLUMN: np.arange(len(users), dtype=np.int64),
        }
    )


def _json_object(path: Path) -> dict[str, object]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold one JSON object {{user: [...]}}, got {type(data)}")
    return data


def _joined_by_id(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per id, its distinct values ``|``-joined, located at the id's first row."""
    grouped = frame.groupby("id", sort=False)
    first = grouped[[FILE_COLUMN, ROW_COLUMN]].first()
    first[column] = grouped[column].agg(lambda v: "|".join(dict.fromkeys(v)))
    return first.reset_index()


def _outer_by_id(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Attribute frames merged on ``id``; a row keeps the location of its first listing."""
    if not frames:
        return pd.DataFrame(columns=["id", *PROVENANCE_COLUMNS])
    merged = frames[0]
    for frame in frames[1:]:
        merged = merged.merge(frame, on="id", how="outer", suffixes=("", "_next"), sort=False)
        for keep in PROVENANCE_COLUMNS:
            merged[keep] = merged[keep].fillna(merged.pop(f"{keep}_next"))
    merged[ROW_COLUMN] = merged[ROW_COLUMN].astype(np.int64)
    return merged


def _dbook_items(interactions: pd.DataFrame, attributes: list[pd.DataFrame]) -> pd.DataFrame:
    """Books with attributes, plus rated books without any (category "Book" for all)."""
    described = _outer_by_id(attributes).rename(columns={"id": "item_id"})
    rated = _items_from_interactions(interactions.assign(category=DBOOK_CATEGORY))
    bare = rated.loc[~rated["item_id"].isin(described["item_id"])]
    items = pd.concat([described, bare.drop(columns="category")], ignore_index=True)
    items["category"] = DBOOK_CATEGORY
    return items
