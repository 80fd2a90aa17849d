"""Evaluate a meta-model on sealed categories (PROTOCOL.md §2, steps 4 to 6).

For each held-out category and each shot count: every eligible user's first ``shots`` positives
are the support, the rest the query; the model adapts on the support (the same inner loop as
serving), ranks every item of the category except the user's own support items, and the
metrics compare that full ranking with the query. Reference methods get exactly the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from metarec.data.catalog import Catalog
from metarec.errors import DataError
from metarec.evaluation.records import random_tie_order
from metarec.evaluation.stats import bootstrap_ci
from metarec.meta.model import MetaModel
from metarec.ranking import category_scores, popularity_scores, ranked_metrics
from metarec.seeds import derived_seed
from metarec.tasks import CategoryData, Split, evaluation_masks, split_k_shot, support_state

Scorer = Callable[[CategoryData, Split, np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A named way to score a category's items for users, and its family in reports."""

    name: str
    family: str  # "metarec" or "baseline"
    scores: Scorer


def standard_methods(model: MetaModel) -> list[Method]:
    """The adapted meta-model, its un-adapted initialisation, popularity and random."""

    def random_scores(category: CategoryData, split: Split, users: np.ndarray) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derived_seed(model.config.seed, category.name))
        return torch.rand((len(users), category.n_items), generator=generator)

    return [
        Method(
            f"metarec-{model.config.meta.algorithm}",
            "metarec",
            lambda c, s, u: category_scores(model, c, s, u),
        ),
        Method(
            "meta-init", "metarec", lambda c, s, u: category_scores(model, c, s, u, adapt=False)
        ),
        Method(
            "popularity",
            "baseline",
            lambda c, s, u: popularity_scores(
                support_state(c, s).pop, seed=model.config.seed, key=c.name
            ).expand(len(u), -1),
        ),
        Method("random", "baseline", random_scores),
    ]


def evaluate_holdout(
    model: MetaModel,
    catalog: Catalog,
    categories: Sequence[str],
    *,
    shots: Sequence[int] = (5,),
    ks: Sequence[int] = (5, 10, 20),
    methods: Sequence[Method] | None = None,
    min_users: int = 1,
    n_resamples: int = 1000,
) -> list[dict[str, object]]:
    """Metrics of each method on each held-out category and shot count.

    Users' profiles come from every other category (a launch sees the user's history elsewhere).

    Returns:
        PROTOCOL.md §4 records: method, family, shots, category (a name, or ``"all"`` pooled over
        the categories' users), metric, k, mean, ci_low, ci_high, n_users.

    Raises:
        DataError: a category has fewer than ``min_users`` eligible users at some shot count, or
            too few items for the largest ``k``.
    """
    for name in categories:
        catalog.require_category(name)
    methods = list(methods) if methods is not None else standard_methods(model)
    data = model.category_data(catalog, list(categories), visible=catalog.categories)
    records: list[dict[str, object]] = []
    for n_shots in shots:
        pooled: dict[tuple[str, str, int | None], list[np.ndarray]] = {}
        for name in categories:
            category = data[name]
            split = split_k_shot(category, n_shots)
            users = np.flatnonzero(split.eligible)
            if len(users) < min_users:
                raise DataError(
                    f"category {name!r} has {len(users)} users with more than {n_shots} "
                    f"positives; need at least {min_users}. Lower the shots or pick a larger "
                    "category"
                )
            relevant, exclude = evaluation_masks(category, split, users)
            for method in methods:
                scores, relevant_p, exclude_p = random_tie_order(
                    model.config.seed,
                    name,
                    method.scores(category, split, users),
                    relevant,
                    exclude,
                )
                # one ranking: each top-k is the start of the top-max(ks) list
                values, ranked = ranked_metrics(scores, relevant_p, ks, exclude=exclude_p)
                for (metric, k), per_user in values.items():
                    pooled.setdefault((method.name, metric, k), []).append(per_user)
                    records.append(_record(method, n_shots, name, metric, k, per_user, n_resamples))
                for k in ks:
                    share = len(np.unique(ranked[:, :k].numpy())) / category.n_items
                    records.append(
                        {
                            "method": method.name,
                            "family": method.family,
                            "shots": n_shots,
                            "category": name,
                            "metric": "coverage",
                            "k": k,
                            "mean": share,
                            "ci_low": share,
                            "ci_high": share,
                            "n_users": len(users),
                        }
                    )
        if len(categories) > 1:
            families = {m.name: m for m in methods}
            for (method_name, metric, k), parts in pooled.items():
                records.append(
                    _record(
                        families[method_name],
                        n_shots,
                        "all",
                        metric,
                        k,
                        np.concatenate(parts),
                        n_resamples,
                    )
                )
    return records


def _record(
    method: Method,
    shots: int,
    category: str,
    metric: str,
    k: int | None,
    per_user: np.ndarray,
    n_resamples: int,
) -> dict[str, object]:
    values = per_user[~np.isnan(per_user)]
    mean, low, high = (
        bootstrap_ci(values, n_resamples=n_resamples) if len(values) else (np.nan,) * 3
    )
    return {
        "method": method.name,
        "family": method.family,
        "shots": shots,
        "category": category,
        "metric": metric,
        "k": k,
        "mean": float(mean),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_users": len(values),
    }
