"""Amazon category pairs (DisenCDR): ``A_B/`` folders of ``user<TAB>item<TAB>1`` files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metarec.data.adapters.common import _items_from_interactions, _prefixed
from metarec.data.readers import read_file
from metarec.data.schema import SourceFile, SourceTables
from metarec.errors import DataError

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
