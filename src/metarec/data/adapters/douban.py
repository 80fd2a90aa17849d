"""Douban ratings files (GA-DTCDR): one ``<domain>_ratings.dat`` per domain and category."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metarec.data.adapters.common import _files, _items_from_interactions, _prefixed
from metarec.data.readers import read_file
from metarec.data.schema import SourceFile, SourceTables
from metarec.errors import DataError


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
