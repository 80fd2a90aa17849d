"""One adapter per public format: each reads its files into the generic tables (PROTOCOL.md §1).

An adapter only renames, splits and derives columns; it does not validate. Values stay raw
(text, numbers or missing) so that :mod:`metarec.data.ingest` checks every format the same way
and reports each bad row with its line in the original file. The registry is the ``ADAPTERS``
dict; :func:`detect_format` picks a key from file names (rules in docs/DATA.md). Each format has
its own module in this package (``table``, ``recbole``, ``movielens``, ``douban``, ``goodreads``,
``amazon_pairs``, ``dbook``); ``common`` holds what they share.

Primary category: MovieLens-style data lists several genres per item while the store keeps one
category per item, so an item's category is the *first genre listed* and all of them are kept in
the extra attribute ``genres``, ``|``-joined. (MovieLens lists genres alphabetically, so this
favours Action, Adventure, Animation over later genres; documented in docs/DATA.md.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from metarec.data.adapters.amazon_pairs import _pair_folders, read_amazon_pairs
from metarec.data.adapters.common import _files
from metarec.data.adapters.dbook import DBOOK_CATEGORY, DBOOK_SPLITS, read_dbook
from metarec.data.adapters.douban import _douban_domain, read_douban
from metarec.data.adapters.goodreads import GOODREADS_GENRES, _goodreads_genre, read_goodreads
from metarec.data.adapters.movielens import read_movielens
from metarec.data.adapters.recbole import read_recbole
from metarec.data.adapters.table import TABLE_ROLES, _table_role, read_table
from metarec.data.schema import SourceTables
from metarec.errors import DataError

__all__ = [
    "ADAPTERS",
    "DBOOK_CATEGORY",
    "DBOOK_SPLITS",
    "GOODREADS_GENRES",
    "TABLE_ROLES",
    "Adapter",
    "detect_format",
    "read_amazon_pairs",
    "read_dbook",
    "read_douban",
    "read_goodreads",
    "read_movielens",
    "read_recbole",
    "read_table",
]

Adapter = Callable[[Sequence[Path]], SourceTables]


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
