"""Users as tasks: MeLU's split rule, its checksum, and the seeded hold-out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.store import Store
from metarec.errors import DataError
from metarec.evaluation.melu_protocol.constants import TEST_SPLITS, TRAIN_SPLIT
from metarec.seeds import derived_seed

_VALIDATION_SHARE = 0.1


# ---- the split: users as tasks ---------------------------------------------------------------


@dataclass(frozen=True)
class SplitRule:
    """MeLU's task rule: users with ``min_items``..``max_items`` ratings, last ``query_size``
    of a seeded shuffle as query."""

    min_items: int = 13
    max_items: int = 100
    query_size: int = 10


@dataclass(frozen=True)
class UserTask:
    """One user's task in one split: support and query books with their ratings.

    Attributes:
        user_idx: the user's store index.
        support_items, query_items: ``(n_s,)`` and ``(n_q,)`` item indices.
        support_ratings, query_ratings: the matching ratings, float64.
    """

    user_idx: int
    support_items: np.ndarray
    support_ratings: np.ndarray
    query_items: np.ndarray
    query_ratings: np.ndarray


def melu_tasks(
    ratings: pd.DataFrame, *, split: str, seed: int, rule: SplitRule = SplitRule()
) -> list[UserTask]:
    """Cut one split's ratings into MeLU tasks.

    Each eligible user's books, taken in item-index order, are permuted with a generator seeded
    by ``(seed, split, user_id)``: the last ``rule.query_size`` are the query, the rest the
    support. The result does not depend on the row order of ``ratings``.

    Args:
        ratings: one split's rows: user_idx, user_id, item_idx, rating.
        split: the split's name (part of each user's seed).
        seed: the run seed.
        rule: eligibility and query size.

    Returns:
        One task per eligible user, by ascending user_idx.
    """
    tasks = []
    ordered = ratings.sort_values(["user_idx", "item_idx"], kind="stable")
    for (user_idx, user_id), rows in ordered.groupby(["user_idx", "user_id"], sort=True):
        if not rule.min_items <= len(rows) <= rule.max_items:
            continue
        rng = np.random.default_rng(derived_seed(seed, f"melu:{split}:{user_id}"))
        order = rng.permutation(len(rows))
        items = rows["item_idx"].to_numpy()[order]
        values = rows["rating"].to_numpy(dtype=np.float64)[order]
        cut = len(rows) - rule.query_size
        tasks.append(UserTask(int(user_idx), items[:cut], values[:cut], items[cut:], values[cut:]))
    return tasks


def split_checksum(tasks: dict[str, list[UserTask]]) -> str:
    """sha256 over every split's (user, support items, query items), to compare two runs."""
    digest = hashlib.sha256()
    for name in sorted(tasks):
        for task in tasks[name]:
            digest.update(f"{name}|{task.user_idx}|".encode())
            digest.update(task.support_items.astype(np.int64).tobytes())
            digest.update(b"|")
            digest.update(task.query_items.astype(np.int64).tobytes())
    return digest.hexdigest()


def load_ratings(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Items, users and rated interactions (with user_id and event) of a DBook store."""
    if not path.exists():
        raise DataError(f"store {path} does not exist; ingest DBook first (--format dbook)")
    with Store.open(path, read_only=True) as store:
        items, users, interactions = store.items(), store.users(), store.interactions()
    rated = interactions.loc[interactions["rating"].notna()]
    missing = [s for s in (TRAIN_SPLIT, *TEST_SPLITS) if s not in set(rated["event"].dropna())]
    if missing:
        raise DataError(
            f"store {path} has no rated interactions with event {missing}: the melu protocol "
            "needs MetaHIN's DBook splits, ingested with `metarec ingest <dbook folder> "
            "--format dbook`"
        )
    user_id = users.set_index("user_idx")["user_id"]
    ratings = rated.assign(user_id=user_id.reindex(rated["user_idx"]).to_numpy())
    return items, users, ratings[["user_idx", "user_id", "item_idx", "rating", "event"]]


def hold_out_users(tasks: list[UserTask], seed: int) -> tuple[list[UserTask], list[UserTask]]:
    """Training users, and a seeded share held out for model selection."""
    rng = np.random.default_rng(derived_seed(seed, "melu-validation"))
    n_val = max(1, round(_VALIDATION_SHARE * len(tasks)))
    held = set(rng.permutation(len(tasks))[:n_val].tolist())
    return (
        [t for i, t in enumerate(tasks) if i not in held],
        [t for i, t in enumerate(tasks) if i in held],
    )
