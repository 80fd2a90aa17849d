"""`metarec batch` with a ridge model on the serving benchmark's 1e5-item category: one call of
``recommend_batch`` for every store user, timed (run it under ``/usr/bin/time -v`` for memory).

    .venv/bin/python benchmarks/bench_ridge_batch.py --workdir /tmp/bench-serve [--out t.parquet]

Uses ``bench_serve.py``'s data and ridge model (``--method ridge``; prepared in ``--workdir``
when missing). ``--out`` writes the table, so that two revisions' lists can be compared.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench_serve import bench_store, category_of, prepare_models
from metarec.data import Store
from metarec.serving.batch import recommend_batch
from metarec.serving.recommender import Recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    parser.add_argument("--out", type=Path, default=None, help="write the table (Parquet)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the server does
    base, model, _ = prepare_models(args.workdir, steps=100, method="ridge")
    store = bench_store(args.workdir, base, [100_000])
    category = category_of(100_000)
    with Store.open(store, read_only=True) as opened:
        recommender = Recommender.open(model, opened)
        recommender.adapt(category)
        users = recommender.catalog.users["user_id"].astype(str).tolist()
        started = time.perf_counter()
        table = recommend_batch(recommender, category, user_ids=users, k=10, progress=False)
        seconds = time.perf_counter() - started
    if args.out is not None:
        table.to_parquet(args.out)
    print(json.dumps({"users": len(users), "rows": len(table), "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
