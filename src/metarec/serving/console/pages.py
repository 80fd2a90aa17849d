"""What the launch console shows, computed from the service's current snapshot (no HTML here).

Every figure comes from the same objects the JSON API answers from: the counts of
:meth:`Service.category_status <metarec.serving.service.Service.category_status>`, the lists of
:meth:`Recommender.recommend_many <metarec.serving.recommender.Recommender.recommend_many>`. The
one list the API has no endpoint for is a category's *zero-shot* list once the category is
adapted ("before"); it is ranked by the same ranker with the model's start (``adapt=False``,
:meth:`Recommender.zero_shot_top_k`), through the same retrieval.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from metarec.serving.schemas import CategoryStatus

if TYPE_CHECKING:
    from metarec.serving.recommender import Recommender
    from metarec.serving.service import Service

TOP1_SAMPLE = 200  # users whose top-1 the popularity share is measured on (seeded sample)
RUN_FILES = {".png": "image/png", ".svg": "image/svg+xml", ".md": "text/markdown"}


@dataclass(frozen=True)
class ListedItem:
    rank: int
    item_id: str
    title: str
    score: float


@dataclass(frozen=True)
class Lookup:
    """One user's top-K in a category: zero-shot (meta-initialisation) and as served now."""

    user_id: str
    known: bool  # the store knows the user (else both lists are the popularity fallback)
    zero_shot: list[ListedItem]
    served: list[ListedItem]
    served_fallback: str | None
    adaptation_version: int | None


def category_rows(service: Service) -> list[CategoryStatus]:
    """:meth:`Service.category_status` of every category with items, by name."""
    catalog = service.snapshot.recommender.catalog
    return [service.category_status(category) for category in catalog.categories]


def age(seconds_since: float | None) -> str:
    """``3 min``, ``5 h``, ``2 d``: how long ago, for a table cell."""
    if seconds_since is None:
        return ""
    elapsed = max(0.0, time.time() - seconds_since)
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if elapsed >= size:
            return f"{elapsed / size:.0f} {unit}"
    return f"{elapsed:.0f} s"


def support_over_time(recommender: Recommender, category: str) -> list[tuple[int, int]]:
    """(unix day start, positives so far) at the end of each day with new positives; positives
    without a time count from the first day."""
    catalog = recommender.catalog
    here = catalog.positives_in([category])
    times = here["timestamp"].dropna().to_numpy(dtype=np.int64)
    if len(times) == 0:
        return []
    days, counts = np.unique(times // 86_400 * 86_400, return_counts=True)
    undated = len(here) - len(times)
    return list(zip(days.tolist(), (np.cumsum(counts) + undated).tolist(), strict=True))


def top1_popular_share(recommender: Recommender, category: str, seed: int = 0) -> float | None:
    """Share of users (a seeded sample of the category's users) whose served top-1 is the
    category's most supported item: near 1 means personalisation has collapsed to popularity."""
    view = recommender.serving_view(category)
    users = view.data.users
    if len(users) == 0 or len(view.popular) == 0:
        return None
    sample = np.random.default_rng(seed).permutation(users)[:TOP1_SAMPLE]
    ids = recommender.catalog.users["user_id"].astype(str).to_numpy()[sample]
    most_popular = str(view.item_ids[int(view.popular[0])])
    results = recommender.recommend_many(category, [(str(u), 1) for u in ids])
    tops = [r.items[0].item_id for r in results if not isinstance(r, Exception) and r.items]
    return None if not tops else sum(t == most_popular for t in tops) / len(tops)


def lookup(recommender: Recommender, category: str, user_id: str, k: int) -> Lookup:
    """The user's zero-shot and served top-``k`` side by side (the before and after of an
    adaptation; the same list twice while the category is not adapted).

    Raises:
        UnknownCategoryError, DataError, NonFiniteError: as :meth:`Recommender.recommend`.
    """
    served = recommender.recommend(user_id, category, k)
    listed = [
        ListedItem(rank, item.item_id, item.title or "", item.score)
        for rank, item in enumerate(served.items, 1)
    ]
    user_idx = recommender.user_index(user_id)
    if user_idx is None or recommender.adaptation(category) is None:
        return Lookup(user_id, user_idx is not None, listed, listed, served.fallback, None)
    view = recommender.serving_view(category)
    positions, scores = recommender.zero_shot_top_k(category, user_idx, k)
    chosen = positions.numpy()
    zero_shot = [
        ListedItem(rank, str(item_id), "" if _missing(title) else str(title), float(score))
        for rank, (item_id, title, score) in enumerate(
            zip(view.item_ids[chosen], view.titles[chosen], scores.tolist(), strict=True), 1
        )
    ]
    return Lookup(user_id, True, zero_shot, listed, served.fallback, served.adaptation_version)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---- evaluation runs (`metarec serve --runs DIR`) ---------------------------------------------


@dataclass(frozen=True)
class Run:
    name: str  # the folder's path relative to the runs folder
    folder: Path
    modified: float
    plots: list[str]


_RUN_NAME = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?$")


def list_runs(runs_dir: Path) -> list[Run]:
    """Evaluation run folders (with a ``report.md`` or ``metrics.json``) in ``runs_dir`` and
    one level below, newest first."""
    found = []
    for folder in [runs_dir, *sorted(runs_dir.glob("*/")), *sorted(runs_dir.glob("*/*/"))]:
        if not folder.is_dir() or folder.is_symlink():
            continue
        if (folder / "report.md").is_file() or (folder / "metrics.json").is_file():
            name = folder.relative_to(runs_dir).as_posix()
            found.append(_run(runs_dir, "." if name == "." else name))
    return sorted(found, key=lambda run: run.modified, reverse=True)


def find_run(runs_dir: Path, name: str) -> Run | None:
    """The run folder ``name`` (as :func:`list_runs` names it), never outside ``runs_dir``."""
    if name != "." and not _RUN_NAME.match(name):
        return None
    folder = (runs_dir / name).resolve()
    root = runs_dir.resolve()
    if folder != root and root not in folder.parents:
        return None
    if not ((folder / "report.md").is_file() or (folder / "metrics.json").is_file()):
        return None
    return _run(runs_dir, name)


def run_file(run: Run, file_name: str) -> Path | None:
    """A plot or report of the run: a regular file directly in its folder, of a known type."""
    if "/" in file_name or "\\" in file_name or file_name.startswith("."):
        return None
    path = run.folder / file_name
    if path.suffix not in RUN_FILES or path.is_symlink() or not path.is_file():
        return None
    return path


def _run(runs_dir: Path, name: str) -> Run:
    folder = runs_dir / name
    stamp = folder / "report.md" if (folder / "report.md").is_file() else folder / "metrics.json"
    plots = sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".svg"))
    return Run(name=name, folder=folder, modified=stamp.stat().st_mtime, plots=plots)
