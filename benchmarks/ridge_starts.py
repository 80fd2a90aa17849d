"""metarec-ridge's validated starts on a store's quick fold: fold-in, each support bias, and
EMCDR's map (validation categories only; nothing is scored on test).

    .venv/bin/python benchmarks/ridge_starts.py runs/ml-1m.duckdb
    .venv/bin/python benchmarks/ridge_starts.py runs/bookstore.duckdb \
        --config runs/bookstore-data/metarec.toml

Fits the method as ``metarec evaluate --quick`` does on its one fold and prints one row per
start it validated (validation NDCG@10; paired gains in standard errors against fold-in and,
for the mapped starts, against the best start without the map), then whether the kept model's
user map is EMCDR's. docs/META.md, "EMCDR's map as a start", is made of these rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from metarec.evaluation.ridge import MetarecRidge
from quick_fold import quick_fold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args()
    method = MetarecRidge()
    method.fit(quick_fold(args.store, args.config).context)
    print("| start | support bias | validation NDCG@10 | vs fold-in (SE) | vs best start (SE) |")
    print("|---|---|---|---|---|")
    for entry in method.history:
        if "support_bias" not in entry:
            continue
        start = "EMCDR's map" if entry.get("mapped") else "fold-in's users"
        print(
            f"| {start} | {entry['support_bias']:g} | {entry['validation_ndcg@10']:.4f} "
            f"| {entry.get('gain_se', 0.0):+.1f} | {_signed(entry.get('gain_se_vs_start'))} |"
        )
    identity = torch.eye(method.factors, dtype=torch.float64)
    kept = not torch.equal(method.params["user_map"], identity)
    print(f"\nthe kept model's user map is EMCDR's: {'yes' if kept else 'no'}")


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}"


if __name__ == "__main__":
    main()
