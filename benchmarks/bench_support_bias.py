"""Time and memory of a launch's own support-bias choice (``ranking.launch_bias.support_bias``), the
cross-validation a ridge model trained without validation categories runs at every launch and
adaptation, on a synthetic category.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_support_bias.py \
        --items 100000 --supporters 20000 --shots 3

Each run is a fresh process (so its peak resident size is its own): random user factors, a
category of ``--items`` items with content, ``--supporters`` users with ``--shots`` support
positives each on popularity-skewed items. Prints seconds and the process's peak RSS, and a
JSON line (``benchmarks/against.sh`` compares two revisions).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from types import SimpleNamespace

import numpy as np
import torch

from metarec.config import load_config
from metarec.meta.ridge import RidgeSupport, init_ridge
from metarec.meta.ridge_model import RidgeModel
from metarec.ranking.launch_bias import support_bias

FACTORS = 32
CONTENT = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--supporters", type=int, default=20_000)
    parser.add_argument("--shots", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    model = RidgeModel(
        config=load_config(None, seed=0),
        encoder=None,  # type: ignore[arg-type]  # not read by support_bias
        params=init_ridge(FACTORS, CONTENT, regularization=30.0, alpha=10.0),
        item_factors=torch.zeros(0, FACTORS, dtype=torch.float64),
        factor_item_ids=[],
        regularization=30.0,
        alpha=10.0,
        splits={},
        bias_from_support=True,
    )
    category = SimpleNamespace(
        name="Bench", n_items=args.items, item_x=torch.randn(args.items, CONTENT)
    )
    factors = torch.from_numpy(rng.normal(0, 0.3, (args.supporters, FACTORS)))
    users = np.repeat(np.arange(args.supporters), args.shots)
    weights = 1.0 / np.arange(1, args.items + 1) ** 0.8  # a long tail of item popularity
    items = rng.choice(args.items, size=len(users), p=weights / weights.sum())
    support = RidgeSupport(
        users=torch.from_numpy(users),
        items=torch.from_numpy(items),
        weights=torch.ones(len(users), dtype=torch.float64),
        n_items=args.items,
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    bias = support_bias(model, category, support, factors, factors.T @ factors)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{args.supporters:,} supporters x {args.shots} shots, {args.items:,} items: "
        f"bias {float(bias):g} in {seconds:.2f} s, peak RSS {peak:,.0f} MB "
        f"({peak - before:+,.0f} MB over the set-up)"
    )
    print(
        json.dumps(
            {"seconds": round(seconds, 3), "peak_mb": round(peak), "added_mb": round(peak - before)}
        )
    )


if __name__ == "__main__":
    main()
