"""Would metarec-ridge gain from refitting the launch's supporters, as iALS-refit does? Scored on
the *validation* categories of a store's first fold only.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_als_refit.py runs/ml-1m.duckdb --full

metarec-ridge is fitted as the harness fits it (its validation, guard and all). Each validation
launch is then ranked (1) as the method ranks it (fold-in over the users' history factors) and
(2) after ``--sweeps`` ALS sweeps restricted to the launch: each supporter's factors re-solved
over every positive they have (their history against the ALS item factors, their support
against the launch's solved item vectors), then the launch's items folded in again over the
new factors. ``benchmarks/probe_ials_fold_in.py`` found iALS's refit 0.4 to 2.3% above iALS
folded in on these categories.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from metarec.baselines.base import Family, FitContext, Launch
from metarec.evaluation.cases import pooled_score
from metarec.evaluation.ridge import MetarecRidge
from metarec.meta.ridge import fold_in
from metarec.models.least_squares import positive_matrix, solve_rows
from metarec.ranking.ridge import RidgeRanker, category_support
from quick_fold import quick_fold


class Refitted:
    """metarec-ridge's launch with the supporters refitted (``sweeps`` ALS sweeps)."""

    name: ClassVar[str] = "refitted"
    family: ClassVar[Family] = "metarec"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self, method: MetarecRidge, sweeps: int) -> None:
        self.method, self.sweeps = method, sweeps

    def fit(self, context: FitContext) -> None:
        self.method.fit(context)

    def scores(self, launch: Launch) -> torch.Tensor:
        method = self.method
        model = method.model()
        factors, gram, profiles = method._user_factors(launch, model)
        support = category_support(launch.catalog, launch.category, launch.split)
        catalog, category = launch.catalog, launch.category
        items = np.asarray(method.item_factors, dtype=np.float64).copy()
        positives = catalog.positives  # the visible history and the launch's support
        supporters = torch.unique(support.users).numpy()
        confidence = positive_matrix(positives, len(catalog.users), len(catalog.items))
        rows = (confidence * model.alpha)[supporters]
        vectors = fold_in(model.params, factors, support, category.item_x, gram=gram)
        for _ in range(self.sweeps):
            items[category.item_idx] = vectors.numpy()  # the launch's items, as solved
            solved = solve_rows(rows, items, model.regularization)
            factors = factors.clone()
            factors[torch.from_numpy(supporters)] = torch.from_numpy(solved)
            gram = factors.T @ factors
            vectors = fold_in(model.params, factors, support, category.item_x, gram=gram)
        params = {"item_vectors": vectors, "counts": support.counts}
        ranker = RidgeRanker.launch(
            model, category, support, factors, gram, params=params, profiles=profiles
        )
        return ranker.scores(launch.users)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--shots", default="1,3,5")
    parser.add_argument("--sweeps", default="1,2")
    parser.add_argument("--full", action="store_true", help="full-length fits (not --quick)")
    args = parser.parse_args()
    fold = quick_fold(args.store, args.config, quick=not args.full)
    method = MetarecRidge()
    method.fit(fold.context)
    for shots in (int(s) for s in args.shots.split(",")):
        validation = fold.validation(shots)
        base = validation.per_user(method)
        print(f"{args.store.name} {shots} shots: metarec-ridge {pooled_score(base):.4f}")
        for sweeps in (int(s) for s in args.sweeps.split(",")):
            values = validation.per_user(Refitted(method, sweeps))
            both = np.isfinite(base) & np.isfinite(values)
            gain = values[both] - base[both]
            se = gain.std(ddof=1) / np.sqrt(both.sum())
            paired = f"{gain.mean() / se:+.1f} SE" if se > 0 else "the same lists"
            change = pooled_score(values) / pooled_score(base) - 1
            print(
                f"  refit, {sweeps} sweep(s): {pooled_score(values):.4f} ({change:+.2%}, {paired})"
            )


if __name__ == "__main__":
    main()
