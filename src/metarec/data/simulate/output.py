"""The simulator's output: CSV and TOML files written atomically, and the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metarec.atomic import write_atomic
from metarec.data.simulate.config import EVENTS, POSITIVE_EVENTS, CategoryLaunch, SimulationSummary
from metarec.data.simulate.items import _Items
from metarec.data.simulate.tree import _Tree
from metarec.data.simulate.users import _Users
from metarec.data.simulate.vocabulary import LEAVES


def _feedback_toml() -> str:
    events = ", ".join(f'"{e}"' for e in POSITIVE_EVENTS)
    return (
        "# Recommended settings for the simulated bookstore: views are exposure, not preference.\n"
        f"[feedback]\npositive_events = [{events}]\n"
    )


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return _write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def _write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically: a reader never sees a half-written table."""
    return write_atomic(path, text)


def _summarise(
    seed: int,
    tree: _Tree,
    items: _Items,
    users: _Users,
    events: pd.DataFrame,
    files: list[Path],
) -> SimulationSummary:
    item_leaf = pd.Series(items.category, index=items.table["item_id"])
    per_leaf = np.bincount(item_leaf.reindex(events["item_id"]).to_numpy(), minlength=len(LEAVES))
    item_counts = np.bincount(items.category, minlength=len(LEAVES))
    order = np.lexsort((np.arange(len(LEAVES)), tree.launch))
    counts = events["event"].value_counts()
    return SimulationSummary(
        seed=seed,
        n_users=len(users.table),
        n_items=len(items.table),
        n_events=len(events),
        events={e: int(counts.get(e, 0)) for e in EVENTS},
        n_ratings=int(events["rating"].notna().sum()),
        categories=tuple(
            CategoryLaunch(
                category=LEAVES[c].path,
                launch_time=int(tree.launch[c]),
                n_items=int(item_counts[c]),
                n_events=int(per_leaf[c]),
            )
            for c in order
        ),
        files=tuple(files),
    )
