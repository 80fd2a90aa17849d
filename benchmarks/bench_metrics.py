"""What the harness does with a block of scores, at catalogue sizes from ML-1M's to Amazon's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py [--users 1024] [--repeat 3]

Per size, one block of ``--users`` users is scored the way ``evaluation/cases.py::score_case``
does it: the seeded tie order applied to the scores and both masks, every metric at k = 5, 10,
20 with AUC, and the top-20 lists. Timed apart: the launch-popularity tie-break the fold-in
baselines add to their scores first (``ranking.popularity.tie_broken``, float64 sums). Users
get 1 to 5 query positives and 3 support items, as in a k-shot launch of a sparse catalogue,
and every 50th user 60 positives (a heavy user). The script runs on any revision
(``benchmarks/against.sh REV ...`` compares two): where ``ranked_metrics`` is missing it ranks
a second time with ``rank_top_k``, as the harness then did. Metrics of both revisions agree
exactly (tests/ranking/test_metrics.py); here only time is measured.

Prints a table and, last, a JSON summary: seconds per block, users per second
and the tie-break's seconds, per size.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from bench_scoring import mean_seconds  # benchmarks/ is the script's directory
from metarec.evaluation.records import random_tie_order
from metarec.ranking import metrics
from metarec.ranking.popularity import tie_broken

SIZES = (3_700, 20_000, 93_000)
KS = (5, 10, 20)


def _block(n_users: int, n_items: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed)
    scores = torch.from_numpy(rng.standard_normal((n_users, n_items)).astype(np.float32))
    relevant = torch.zeros(n_users, n_items, dtype=torch.bool)
    exclude = torch.zeros(n_users, n_items, dtype=torch.bool)
    for user in range(n_users):
        n_relevant = 60 if user % 50 == 0 else int(rng.integers(1, 6))
        picked = rng.choice(n_items, n_relevant + 3, replace=False)
        relevant[user, picked[:n_relevant]] = True
        exclude[user, picked[n_relevant:]] = True
    return scores, relevant, exclude


def _score(scores: torch.Tensor, relevant: torch.Tensor, exclude: torch.Tensor) -> None:
    scores, relevant, exclude = random_tie_order(0, "bench", scores, relevant, exclude)
    ranked = getattr(metrics, "ranked_metrics", None)
    if ranked is not None:
        ranked(scores, relevant, KS, exclude)
    else:  # before ranked_metrics: metrics, then the lists ranked again
        metrics.ranking_metrics(scores, relevant, KS, exclude)
        metrics.rank_top_k(scores, max(KS), exclude)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    summary: dict[str, dict[str, float]] = {}
    print(f"| items | metrics: seconds per {args.users} users | users per second | tie-break s |")
    print("|---|---|---|---|")
    for n_items in SIZES:
        block = _block(args.users, n_items)
        counts = torch.from_numpy(np.random.default_rng(1).poisson(0.3, n_items))
        seconds = mean_seconds(lambda block=block: _score(*block), args.repeat)
        tie = mean_seconds(
            lambda block=block, counts=counts: tie_broken(block[0], counts, seed=0, key="b"),
            args.repeat,
        )
        summary[f"items_{n_items}"] = {
            "seconds": seconds,
            "users_per_s": args.users / seconds,
            "tie_break_seconds": tie,
        }
        print(f"| {n_items:,} | {seconds:.3f} | {args.users / seconds:,.0f} | {tie:.3f} |")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
