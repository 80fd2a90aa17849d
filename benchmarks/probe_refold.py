"""Probe: refold each user on the new category's solved items (ALS's next half-step) on top of
metarec-ridge, scored on a store's quick-fold validation launches only.

    .venv/bin/python benchmarks/probe_refold.py runs/ml-1m.duckdb
    .venv/bin/python benchmarks/probe_refold.py runs/ml-100k.duckdb --shots 1,3,5

metarec-ridge solves the items of a launch from the users' vectors and keeps each user at their
vector from other categories. ALS would next solve each user again from the category's items:
``x_u = argmin sum_j c_uj (p_uj - x . v_j)^2 + lam |x - u|^2`` over every item of the category
(support items with confidence ``1 + alpha w``, the others at zero with confidence 1), shrunk
toward the user's own vector ``u`` (``lam`` large: fold-in unchanged). A cheaper variant adds
``eta`` times the sum of the user's support items' vectors (a Rocchio step). Each setting is
scored by validation NDCG@10 and its paired gain over the fitted method in standard errors.
docs/META.md, "A user refold after the solve", is made of these rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from metarec.evaluation.ridge import MetarecRidge
from metarec.evaluation.stats import gain_in_standard_errors
from metarec.ranking.ridge import RidgeRanker, category_support
from quick_fold import quick_fold

RIDGE = (1e4, 1e3, 300.0, 100.0, 30.0, 10.0)
ROCCHIO = (0.01, 0.03, 0.1, 0.3, 1.0)


class Refold:
    """``fitted``'s scores with each user refolded on the launch's solved items (None: as is)."""

    name = "refold"
    family = "metarec"

    def __init__(self, fitted: MetarecRidge, strength: float | None, mode: str) -> None:
        self.fitted, self.strength, self.mode = fitted, strength, mode

    def scores(self, launch) -> torch.Tensor:  # type: ignore[no-untyped-def]
        model = self.fitted.model()
        factors, gram, profiles = self.fitted._user_factors(launch, model)
        support = category_support(launch.catalog, launch.category, launch.split)
        ranker = RidgeRanker.launch(
            model, launch.category, support, factors, gram, profiles=profiles
        )
        if self.strength is None:
            return ranker.scores(launch.users)
        users = torch.as_tensor(launch.users, dtype=torch.long)
        own = ranker._user_vectors(users).double()
        items = ranker.params["item_vectors"].double()
        terms = ranker._items
        refolded = own.clone()
        row = {int(user): i for i, user in enumerate(launch.users)}
        liked: dict[int, list[tuple[int, float]]] = {}
        for user, item, weight in zip(
            support.users.tolist(),
            support.items.tolist(),
            support.weights.tolist(),
            strict=True,
        ):
            if user in row:
                liked.setdefault(row[user], []).append((item, weight))
        gram_items = items.T @ items
        eye = torch.eye(items.shape[1], dtype=torch.float64)
        for r, pairs in liked.items():
            vectors = items[torch.tensor([item for item, _ in pairs])]
            weights = torch.tensor([weight for _, weight in pairs], dtype=torch.float64)
            if self.mode == "ridge":
                confidence = model.alpha * weights
                lhs = gram_items + (confidence[:, None] * vectors).T @ vectors
                rhs = ((1 + confidence)[:, None] * vectors).sum(0)
                refolded[r] = torch.linalg.solve(
                    lhs + self.strength * eye, rhs + self.strength * own[r]
                )
            else:
                refolded[r] = own[r] + self.strength * vectors.sum(0)
        return (refolded @ items.T + terms.bias).add(terms.tie).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--shots", default="1,3,5")
    args = parser.parse_args()
    quick = quick_fold(args.store, args.config)
    fitted = MetarecRidge()
    fitted.fit(quick.context)
    print("| shots | variant | strength | validation NDCG@10 | change | paired gain (SE) |")
    print("|---|---|---|---|---|---|")
    for shots in [int(s) for s in args.shots.split(",")]:
        launches = quick.validation(shots)
        base = np.asarray(launches.per_user(Refold(fitted, None, "ridge")), dtype=np.float64)
        print(f"| {shots} | metarec-ridge as fitted | | {np.nanmean(base):.4f} | | |")
        for mode, grid in (("ridge", RIDGE), ("rocchio", ROCCHIO)):
            for strength in grid:
                values = np.asarray(
                    launches.per_user(Refold(fitted, strength, mode)), dtype=np.float64
                )
                change = np.nanmean(values) / np.nanmean(base) - 1
                print(
                    f"| {shots} | {mode} | {strength:g} | {np.nanmean(values):.4f} "
                    f"| {change:+.2%} | {gain_in_standard_errors(values, base):+.1f} |"
                )


if __name__ == "__main__":
    main()
