"""A simulated store shaped like a public product-review dataset: ~100k items, ~7.4k users.

    .venv/bin/python benchmarks/make_large_store.py runs/large     # writes runs/large.duckdb

The evaluation-speed targets of docs/BENCHMARKS.md are measured on it: all 22 leaf categories
of the simulated bookstore, 100,000 items, 7,400 users and a visit rate that gives roughly
300k positive interactions (clicks, carts, orders), ingested in the generic table format.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from metarec.data import ingest
from metarec.data.simulate import SimulationConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder prefix: OUT-data/ and OUT.duckdb")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = SimulationConfig(
        n_users=7_400, n_items=100_000, n_authors=1_600, mean_visits_per_user=26.0
    )
    started = time.perf_counter()
    summary = simulate(args.out.with_name(args.out.name + "-data"), seed=args.seed, config=config)
    print(summary.model_dump_json(indent=1))
    report = ingest(
        args.out.with_name(args.out.name + "-data"),
        args.out.with_suffix(".duckdb"),
        fmt="table",
    )
    print(report.model_dump_json(indent=1) if hasattr(report, "model_dump_json") else report)
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
