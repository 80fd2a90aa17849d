"""Is iALS-refit's lead the refit of the supporters, or its factorization? Scored on the
*validation* categories of a store's quick fold only.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/probe_ials_fold_in.py runs/ml-1m.duckdb

Rows: ``ials-refit`` as the harness runs it (two sweeps over the launch's items and its
supporters); ``ials fold-in`` the same fit with one item half-step and no user re-solved (the
launch's items solved against fixed user factors, as ALS fold-in does); ``als fold-in`` is
metarec-ridge with nothing learned (implicit's ALS, the harness's settings).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from metarec.baselines.base import Method
from metarec.baselines.ials import IALSRefit, ials_sweeps
from metarec.evaluation.cases import pooled_score
from metarec.evaluation.ridge import MetarecRidge
from quick_fold import quick_fold


class IALSFoldIn(IALSRefit):
    """iALS with the launch's items solved once against fixed user factors."""

    def _refit(self, launch):
        matrix, start, _, items = self._launch_rows(launch)
        none = np.array([], dtype=np.int64)  # no user re-solved
        return ials_sweeps(matrix, start, 1, self.hyper, user_rows=none, item_rows=items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--shots", default="1,3,5")
    parser.add_argument("--full", action="store_true", help="full-length fits (not --quick)")
    args = parser.parse_args()
    fold = quick_fold(args.store, args.config, quick=not args.full)
    plain = replace(fold.context, validate=None, validate_users=None)
    methods: dict[str, Method] = {}
    for i, setting in enumerate(IALSRefit.grid):
        refit, fold_in = IALSRefit(**setting), IALSFoldIn(**setting)
        refit.fit(fold.context)
        fold_in.fit(fold.context)
        methods[f"ials-refit g{i}"] = refit
        methods[f"ials fold-in g{i}"] = fold_in
    als = MetarecRidge(launch_bias=False)
    als.fit(plain)
    methods["als fold-in"] = als
    for shots in (int(s) for s in args.shots.split(",")):
        validation = fold.validation(shots)
        print(f"{args.store.name} {shots} shots")
        for name, method in methods.items():
            print(f"  {name:18s} {pooled_score(validation.per_user(method)):.4f}")


if __name__ == "__main__":
    main()
