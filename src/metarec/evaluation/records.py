"""From per-user metric values to PROTOCOL.md §4 records, paired comparisons and checksums."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from metarec.config import EvalConfig
from metarec.evaluation.folds import Fold
from metarec.evaluation.stats import bootstrap_cis, paired_test
from metarec.seeds import derived_seed

VALIDATION_K = 10


@dataclass
class Result:
    """What an evaluation produced; :mod:`metarec.evaluation.report` writes it out.

    Attributes:
        records: PROTOCOL.md §4 records.
        comparisons: paired tests of each method against the best baseline, per shots.
        tuning: every (method, fold, setting) tried, with its validation NDCG@10.
        folds: the folds used.
        split_keys: per (fold, category, shots): support and query (user_idx, item_idx) pairs.
        timings: wall seconds per method (fit and scoring), kept out of ``metrics.json``.
        skipped: (category, shots) launches left out because the category is not eligible at
            that shot count (too few users with enough positives, or too few items).
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    folds: list[Fold] = field(default_factory=list)
    split_keys: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def random_tie_order(
    seed: int, key: str, scores: torch.Tensor, *masks: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Permute the item columns by a seeded random order before ranking.

    The metrics break ties by the lower column index. Item indices follow the data's ids, and
    ids often encode popularity (MovieLens and Douban number well-known items first), so a method
    that returns equal scores (popularity at zero shots, a model that cannot tell items apart)
    would be rewarded for the id order. A seeded permutation makes ties random but reproducible;
    the metrics are otherwise invariant to it.
    """
    generator = torch.Generator().manual_seed(derived_seed(seed, f"ties:{key}"))
    order = torch.randperm(scores.shape[-1], generator=generator)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order))  # original column -> its new place
    return (scores.index_select(-1, order), *(_moved(mask, order, position) for mask in masks))


def _moved(mask: torch.Tensor, order: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """``mask[..., order]``; a sparse 2-D bool mask (query positives, support items) is rebuilt
    from its few True entries: about 4x faster than ``index_select`` of every column at 93k
    items (measured: 0.26 s against 1.04 s for 2,048 users)."""
    if mask.dtype != torch.bool or mask.dim() != 2:
        return mask.index_select(-1, order)
    rows, columns = mask.nonzero(as_tuple=True)
    moved = torch.zeros_like(mask)
    moved[rows, position[columns]] = True
    return moved


PerUser = dict[tuple[str, int | None, str], dict[tuple[str, int | None], np.ndarray]]
Tops = dict[tuple[str, int | None, str, str, int], float]


def method_records(
    method: str,
    family: str,
    per_user: PerUser,
    tops: Tops,
    n_users: dict[tuple[str, int | None, str], int],
    shots_list: Sequence[int | None],
    config: EvalConfig,
) -> list[dict[str, Any]]:
    """One method's records: per category and pooled (``"all"``), per shot count in
    ``shots_list``'s order; per-user metrics with bootstrap CIs, list statistics as they are.

    The inputs may hold other methods' entries too (they are skipped), or only this method's:
    each method's records depend on nothing else, so a run computes them method by method, in
    its worker processes as soon as a method's units are done.
    """
    records: list[dict[str, Any]] = []
    lists: dict[tuple[int | None, str], list[tuple[str, int, float]]] = {}
    for (m, s, c, metric, k), share in tops.items():
        if m == method:
            lists.setdefault((s, c), []).append((metric, k, share))
    for shots in shots_list:
        keys = sorted(c for m, s, c in per_user if m == method and s == shots)
        pooled: dict[tuple[str, int | None], list[np.ndarray]] = {}
        for category in keys:
            metrics = per_user[(method, shots, category)]
            for metric_k, values in metrics.items():
                pooled.setdefault(metric_k, []).append(values)
            records += launch_records(method, family, shots, category, metrics, config)
            for metric, k, share in lists.get((shots, category), []):
                # statistics of the lists, not of users: no interval
                n = n_users[(method, shots, category)]
                records.append(_record(method, family, shots, category, metric, k, (share,) * 3, n))
        together = {metric_k: np.concatenate(parts) for metric_k, parts in pooled.items()}
        records += launch_records(method, family, shots, "all", together, config)
    return records


def launch_records(
    method: str,
    family: str,
    shots: int | None,
    category: str,
    metrics: Mapping[tuple[str, int | None], np.ndarray],
    config: EvalConfig,
) -> list[dict[str, Any]]:
    """The records of one launch's (or a pooled launch's) per-user metrics, in ``metrics``'
    order; every interval is :func:`bootstrap_ci`'s over the users with a value, with the seed
    of the category, computed together so that metrics over the same users share the draws."""
    kept = {metric_k: values[~np.isnan(values)] for metric_k, values in metrics.items()}
    measured = [metric_k for metric_k, values in kept.items() if len(values)]
    intervals = dict(
        zip(
            measured,
            bootstrap_cis(
                [kept[metric_k] for metric_k in measured],
                n_resamples=config.n_resamples,
                seed=derived_seed(config.seed, category),
            ),
            strict=True,
        )
    )
    nan = (float("nan"),) * 3
    return [
        _record(
            method, family, shots, category, *metric_k, intervals.get(metric_k, nan), len(values)
        )
        for metric_k, values in kept.items()
    ]


def _record(
    method: str,
    family: str,
    shots: int | None,
    category: str,
    metric: str,
    k: int | None,
    interval: tuple[float, float, float],
    n_users: int,
) -> dict[str, Any]:
    """One PROTOCOL.md §4 record: ``interval`` is (mean, low, high)."""
    mean, low, high = interval
    return {
        "method": method,
        "family": family,
        "shots": shots,
        "category": category,
        "metric": metric,
        "k": k,
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "n_users": n_users,
    }


def comparisons(
    per_user: dict[tuple[str, int | None, str], dict[tuple[str, int | None], np.ndarray]],
    families: Mapping[str, str],
    shots_list: Sequence[int | None],
) -> list[dict[str, Any]]:
    """Paired tests on NDCG@10 of every method against the best baseline, per shots.

    Two tests per pair. Over users (``p_value``, Wilcoxon on the per-user differences): whether
    the two differ on these users. Over categories (``p_value_categories``, Wilcoxon on each
    test category's mean difference, with ``categories_ahead`` of ``n_categories``): whether
    the difference holds from one new category to the next, which is what a launch needs. The
    user test counts users as independent; where a method gives one list to every user of a
    category (popularity, or any method with nothing personal to go on, e.g. at zero shots
    without content) the users of a category share its one draw, and only the category test
    says how much of a difference that draw explains.
    """
    out: list[dict[str, Any]] = []
    methods = list(dict.fromkeys(m for m, _, _ in per_user))
    for shots in shots_list:
        by_category: dict[str, dict[str, np.ndarray]] = {}
        for (method, s, category), metrics in sorted(per_user.items(), key=lambda kv: kv[0][2]):
            if s == shots:
                by_category.setdefault(method, {})[category] = metrics[("ndcg", VALIDATION_K)]
        pooled = {
            method: np.concatenate(list(by_category[method].values()))
            for method in methods
            if method in by_category
        }
        baselines = [m for m in pooled if families[m] == "baseline"]
        if not baselines:
            continue
        best = max(baselines, key=lambda m: float(np.nanmean(pooled[m])))
        for method, values in pooled.items():
            if method == best:
                continue
            both = ~np.isnan(values) & ~np.isnan(pooled[best])
            a, b = values[both], pooled[best][both]
            ours, theirs = _category_means(by_category[method], by_category[best])
            out.append(
                {
                    "method": method,
                    "family": families[method],
                    "baseline": best,
                    "shots": shots,
                    "metric": "ndcg",
                    "k": VALIDATION_K,
                    "mean": float(a.mean()) if len(a) else float("nan"),
                    "baseline_mean": float(b.mean()) if len(b) else float("nan"),
                    "relative_change": float(a.mean() / b.mean() - 1)
                    if len(a) and b.mean()
                    else None,
                    "p_value": float(paired_test(a, b)) if len(a) else None,
                    "n_users": int(both.sum()),
                    "p_value_categories": float(paired_test(ours, theirs)) if len(ours) else None,
                    "categories_ahead": int((ours > theirs).sum()),
                    "n_categories": len(ours),
                }
            )
    return out


def _category_means(
    ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per test category, both methods' means over the users defined for both (categories
    with no such user are left out)."""
    a: list[float] = []
    b: list[float] = []
    for category, values in ours.items():
        other = theirs.get(category)
        if other is None:
            continue
        both = ~np.isnan(values) & ~np.isnan(other)
        if both.any():
            a.append(float(values[both].mean()))
            b.append(float(other[both].mean()))
    return np.asarray(a), np.asarray(b)


def checksum(rows: np.ndarray) -> str:
    """sha256 of an int64 array's bytes (the split keys' fingerprint)."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()
