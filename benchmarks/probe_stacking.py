"""Validation-only probe: does stacking another method's scores onto metarec-ridge's help?

Issue 12 names feature-weighted linear stacking (Sill et al. 2009) of fold-in, user-kNN,
popularity and content scores as a candidate. Before building it, this measures the simplest
version on one fold's *validation* categories (test categories are never scored): both
methods fitted as the harness fits them, each user's scores standardised per row, and
``z(ridge) + w z(other)`` scored for a few weights ``w``. If no weight helps here, per-category
weights adapted in an inner loop have little to work with.

Usage::

    .venv/bin/python benchmarks/probe_stacking.py --store runs/ml-1m.duckdb \\
        --other user-knn --shots 1,3,5 [--fold 0] [--full]

Prints one line per shot count: each method's validation NDCG@10 and each blend's, with its
change against metarec-ridge alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from metarec.baselines.base import Launch, Method
from metarec.evaluation.methods import METHODS
from quick_fold import quick_fold

WEIGHTS = (0.1, 0.2, 0.3, 0.5, 1.0)


def standardised(scores: torch.Tensor) -> torch.Tensor:
    """Each row at mean 0 and standard deviation 1 (the two methods' scales differ)."""
    scores = scores.double()
    spread = scores.std(dim=1, keepdim=True).clamp_min(1e-9)
    return (scores - scores.mean(dim=1, keepdim=True)) / spread


class Blend:
    """``z(first) + weight z(second)`` as a method the validator can score."""

    name = "blend"

    def __init__(self, first: Method, second: Method, weight: float) -> None:
        self.first, self.second, self.weight = first, second, weight

    def scores(self, launch: Launch) -> torch.Tensor:
        first = standardised(self.first.scores(launch))
        return first + self.weight * standardised(self.second.scores(launch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--other", default="user-knn", help="the method stacked onto the ridge")
    parser.add_argument("--shots", default="1,3,5")
    parser.add_argument("--fold", type=int, default=0, help="0-based (the harness's fold 1 is 0)")
    parser.add_argument("--full", action="store_true", help="full-length fits (default: quick)")
    args = parser.parse_args()
    quick = quick_fold(Path(args.store), None, fold=args.fold, quick=not args.full)
    started = time.perf_counter()
    ridge, other = METHODS["metarec-ridge"](), METHODS[args.other]()
    ridge.fit(quick.context)
    other.fit(quick.context)
    seconds = time.perf_counter() - started
    print(f"fold {args.fold + 1}: validation {quick.fold.validation}; fits {seconds:.0f} s")
    for shots in (int(s) for s in args.shots.split(",")):
        validation = quick.validation(shots)
        alone = float(np.nanmean(validation.per_user(ridge)))
        line = [
            f"{shots} shots: metarec-ridge {alone:.4f}",
            f"{args.other} {float(np.nanmean(validation.per_user(other))):.4f}",
        ]
        for weight in WEIGHTS:
            blended = float(np.nanmean(validation.per_user(Blend(ridge, other, weight))))
            line.append(f"w {weight:g}: {blended:.4f} ({100 * (blended / alone - 1):+.1f}%)")
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
