"""One adapter per public format: each reads its files into the generic tables (PROTOCOL.md §1).

An adapter only renames, splits and derives columns; it does not validate. Values stay raw
(text, numbers or missing) so that :mod:`metarec.data.ingest` checks every format the same way
and reports each bad row with its line in the original file. The registry is the ``ADAPTERS``
dict; :func:`detect_format` picks a key from file names (rules in docs/DATA.md).

Primary category: MovieLens-style data lists several genres per item while the store keeps one
category per item, so an item's category is the *first genre listed* and all of them are kept in
the extra attribute ``genres``, ``|``-joined. (MovieLens lists genres alphabetically, so this
favours Action, Adventure, Animation over later genres; documented in docs/DATA.md.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from metarec.data.readers import read_file, table_kind, table_stem
from metarec.data.schema import FILE_COLUMN, ROW_COLUMN, SourceFile, SourceTables
from metarec.errors import DataError

Adapter = Callable[[Sequence[Path]], SourceTables]

TABLE_ROLES = ("interactions", "items", "users", "categories")
_KEEP = [FILE_COLUMN, ROW_COLUMN]


# ---- generic table format --------------------------------------------------------------------


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


# ---- RecBole atomic files --------------------------------------------------------------------

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
    interactions = inter[keep + _KEEP].copy()
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


# ---- MovieLens official CSV ------------------------------------------------------------------

_RATINGS_KEEP = {"userId", "movieId", "rating", "timestamp", *_KEEP}
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


# ---- Douban (GA-DTCDR ratings files) ---------------------------------------------------------


def read_douban(sources: Sequence[Path]) -> SourceTables:
    """Read Douban ``<domain>_ratings.dat`` files (``user<TAB>item<TAB>rating``, no header).

    Each file is one domain and category (``book_ratings.dat`` gives "Book"). Item ids restart
    in every file, so they are prefixed by the domain (``book:123``); user ids are shared across
    files (the same person), so they are kept as they are. No timestamps; event ``rating``.

    Raises:
        DataError: no ``*_ratings.dat`` file.
    """
    paths = [p for source in sources for p in _files(source) if _douban_domain(p)]
    if not paths:
        raise DataError(
            f"no Douban ratings file (<domain>_ratings.dat) in {', '.join(map(str, sources))}"
        )
    files: dict[str, SourceFile] = {}
    frames = []
    for path in paths:
        domain = _douban_domain(path)
        frame, source = read_file(path, "tsv", names=["user_id", "item_id", "rating"], what=domain)
        files[source.path] = source
        frame["item_id"] = _prefixed(domain.lower() + ":", frame["item_id"])
        frame["event"] = "rating"
        frame["category"] = domain
        frames.append(frame)
    interactions = pd.concat(frames, ignore_index=True)
    items = _items_from_interactions(interactions)
    return SourceTables(interactions.drop(columns="category"), items, None, None, files)


def _douban_domain(path: Path) -> str:
    name = path.name.lower()
    return name.removesuffix("_ratings.dat").title() if name.endswith("_ratings.dat") else ""


# ---- Goodreads (UCSD Book Graph interactions) ------------------------------------------------

# The UCSD per-genre files and the genre names the UCSD site uses for them.
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


# ---- Amazon category pairs (DisenCDR) --------------------------------------------------------

_PAIR_FILES = ("train.txt", "test_original.txt", "test.txt")


def read_amazon_pairs(sources: Sequence[Path]) -> SourceTables:
    """Read DisenCDR Amazon pair folders ``A_B/`` (``train.txt``, ``test_original.txt``,
    ``test.txt``; ``user<TAB>item<TAB>1``): category A's interactions by users shared with B.

    Category is A title-cased; every row is an implicit positive (no rating, no timestamp, event
    ``review``). Ids are re-indexed per pair, and user ids are shared between ``A_B`` and
    ``B_A`` (checked: docs/DATA.md), so users become ``<pair>:<id>`` with the pair's names
    sorted (``cloth-sport:17``) and items ``<a>:<pair>:<id>``. A (user, item) pair repeated
    across the files (``test.txt`` is a subset of ``test_original.txt``) is loaded once. A folder
    holding pair folders loads them all.

    Raises:
        DataError: no pair folder with a train.txt, or a folder name that is not ``A_B``.
    """
    folders = [p for source in sources for p in _pair_folders(source)]
    if not folders:
        raise DataError(
            f"no Amazon pair folder (A_B/ with train.txt) in {', '.join(map(str, sources))}"
        )
    files: dict[str, SourceFile] = {}
    frames = []
    for folder in folders:
        a, b = _pair_names(folder)
        pair = "-".join(sorted((a, b)))
        for name in _PAIR_FILES:
            if not (folder / name).is_file():
                continue
            frame, source = read_file(
                folder / name, "tsv", names=["user_id", "item_id", "value"], what=f"{a} ({name})"
            )
            files[source.path] = source
            frame["user_id"] = _prefixed(f"{pair}:", frame["user_id"])
            frame["item_id"] = _prefixed(f"{a}:{pair}:", frame["item_id"])
            frame["event"] = "review"
            frame["category"] = a.title()
            frame["_pair"] = folder.name
            frames.append(frame.drop(columns="value"))
    merged = pd.concat(frames, ignore_index=True)
    repeated = merged.duplicated(["user_id", "item_id"], keep="first").to_numpy()
    findings = []
    if repeated.any():
        findings.append(
            f"{int(repeated.sum())} (user, item) rows repeat across train/test files "
            "(test.txt is a subset of test_original.txt); each was loaded once"
        )
    pairs_per_category = merged.groupby("category")["_pair"].unique()
    for category, pairs in pairs_per_category.items():
        if len(pairs) > 1:
            findings.append(
                f"category {category!r} comes from several pairs ({', '.join(sorted(pairs))}) "
                "whose ids are unrelated: its items and users are disjoint per pair"
            )
    merged = merged.loc[~repeated].drop(columns="_pair").reset_index(drop=True)
    items = _items_from_interactions(merged)
    return SourceTables(merged.drop(columns="category"), items, None, None, files, findings)


def _pair_folders(source: Path) -> list[Path]:
    if (source / "train.txt").is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if (p / "train.txt").is_file())
    return []


def _pair_names(folder: Path) -> tuple[str, str]:
    parts = folder.name.lower().split("_")
    if len(parts) != 2 or not all(parts):
        raise DataError(
            f"Amazon pair folder {folder} must be named A_B (category A restricted to users "
            "shared with category B), e.g. sport_cloth"
        )
    return parts[0], parts[1]


# ---- DBook (MetaHIN's Douban Book splits) ----------------------------------------------------

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
        return pd.DataFrame(columns=["id", *_KEEP])
    merged = frames[0]
    for frame in frames[1:]:
        merged = merged.merge(frame, on="id", how="outer", suffixes=("", "_next"), sort=False)
        for keep in _KEEP:
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


# ---- registry and detection ------------------------------------------------------------------

ADAPTERS: dict[str, Adapter] = {
    "table": read_table,
    "recbole": read_recbole,
    "movielens": read_movielens,
    "douban": read_douban,
    "goodreads": read_goodreads,
    "amazon-pairs": read_amazon_pairs,
    "dbook": read_dbook,
}


def detect_format(sources: Sequence[Path]) -> str:
    """Pick an adapter from file names (folders are looked into, one level).

    Rules, first match wins: a ``*.inter`` file: ``recbole``; ``ratings.csv`` with
    ``movies.csv``: ``movielens``; a ``*_ratings.dat`` file: ``douban``; a
    ``goodreads_interactions_<genre>`` JSON file: ``goodreads``; ``meta_training.json`` next to
    ``meta_training_y.json``: ``dbook``; a folder with ``train.txt`` (or folders of them):
    ``amazon-pairs``; an ``interactions.*`` table: ``table``.

    Raises:
        DataError: no rule matches; the message lists the formats and how to name one.
    """
    paths = [p for source in sources for p in _files(source)]
    names = {p.name.lower() for p in paths}
    if any(p.suffix == ".inter" for p in paths):
        return "recbole"
    if {"ratings.csv", "movies.csv"} <= names:
        return "movielens"
    if any(_douban_domain(p) for p in paths):
        return "douban"
    if any(_goodreads_genre(p) for p in paths):
        return "goodreads"
    if {"meta_training.json", "meta_training_y.json"} <= names:
        return "dbook"
    if any(_pair_folders(source) for source in sources):
        return "amazon-pairs"
    if any(_table_role(p) == "interactions" for p in paths):
        return "table"
    raise DataError(
        f"cannot tell the format of {', '.join(map(str, sources))}; pass one of "
        f"{', '.join(ADAPTERS)} (CLI: --format). The generic `table` format needs a file named "
        "interactions.csv (.tsv, .parquet, .jsonl); see docs/DATA.md"
    )


# ---- helpers ---------------------------------------------------------------------------------


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
        found = [c for c in frame.columns if c not in _KEEP]
        raise DataError(
            f"{what} file {', '.join(map(str, paths))} lacks column(s) {missing} "
            f"(found {found}); is this the right file and format?"
        )


def _ignored_columns(frame: pd.DataFrame, kept: Sequence[str], what: str) -> list[str]:
    ignored = [c for c in frame.columns if c not in kept and c not in _KEEP]
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


def _prefixed(prefix: str, ids: pd.Series) -> pd.Series:
    """Ids with a namespace prefix; a missing (empty) id stays empty, to be reported as missing."""
    text = ids.astype(str)
    return text.where(text.str.strip() == "", prefix + text)


def _items_from_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """One item row per distinct item_id (its first interaction's category and location)."""
    # Rows without an item id are reported once, on the interaction itself.
    named = interactions.loc[interactions["item_id"].astype(str).str.strip() != ""]
    first = named.drop_duplicates("item_id", keep="first")
    return first[["item_id", "category", *_KEEP]].reset_index(drop=True)
