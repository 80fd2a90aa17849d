"""Batch scoring benchmark: top-10 for every user of a 10k-item category with 100k users.

    .venv/bin/python benchmarks/bench_batch.py [--workdir /tmp/bench-batch] [--users 100000]
        [--items 10000] [--threads 2]

1. simulates the bookstore (3,000 users), ingests it and meta-trains a short model (60 steps);
2. adds a category of ``--items`` items (resampled from the bookstore's, attributes jittered) and
   new users up to ``--users`` in all, each with 3 positives in the bookstore's categories (so
   they have a history elsewhere), and gives every user 1 to 3 orders in the new category
   (long-tailed popularity): the category has ``--users`` users;
3. times ``metarec recommend --category C --all-users -k 10 --out recs.parquet`` in a fresh
   process (what a user runs), with the library's phases timed in-process before it: binding
   the model to the store, adapting (skipped when an earlier run adapted it), preparing the
   view, ranking ``--sample`` users (``recommend_batch``: wall and CPU seconds), writing Parquet.

Prints one JSON object: wall seconds, and CPU seconds (user + system, of the CLI process and
of the in-process ranking), which depend less on what else the machine runs; the load average
before and after. The target (issue 14): the CLI command under 60 s on the 2-core machine.
Steps 1 and 2 are cached in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metarec.config import load_config
from metarec.data import Store, ingest
from metarec.data.ingest import ingest_frames
from metarec.data.simulate import simulate
from metarec.meta.model import save_model
from metarec.serving.batch import recommend_batch, write_recommendations
from metarec.serving.recommender import Recommender
from metarec.training import train

CATEGORY = "Bench > Batch"
TARGET_SECONDS = 60.0
EPOCH = 1_800_000_000


def prepare(workdir: Path, n_users: int, n_items: int, steps: int) -> tuple[Path, Path]:
    """The store with the big category and the model (cached). Returns (store, model)."""
    data, store, model = workdir / "data", workdir / "store.duckdb", workdir / "model"
    if not (model / "manifest.json").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        simulate(data, seed=0)
        ingest(data, store, fmt="table")
        config = load_config(data / "metarec.toml", seed=0)
        config = config.model_copy(
            update={"meta": config.meta.model_copy(update={"meta_steps": steps})}
        )
        with Store.open(store, read_only=True) as opened:
            save_model(train(opened, config, progress=False, validate_every=steps), model)
        add_category(store, n_users, n_items)
    return store, model


def add_category(store: Path, n_users: int, n_items: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with Store.open(store) as opened:
        base = opened.items()
        old_users = opened.users()["user_id"].astype(str).to_numpy()
        source = base.sample(n_items, replace=True, random_state=seed).reset_index(drop=True)
        ids = np.char.add("batch-", np.arange(n_items).astype(str))
        items = pd.DataFrame(
            {
                "item_id": ids,
                "category": CATEGORY,
                "title": source["title"],
                "authors": source["authors"],
                "publisher": source["publisher"],
                "brand": source["brand"],
                "year": source["year"] + rng.integers(-3, 4, n_items),
                "price": source["price"] * rng.uniform(0.8, 1.2, n_items),
            }
        )
        new_users = np.char.add("bu", np.arange(max(0, n_users - len(old_users))).astype(str))
        # a history elsewhere: 3 orders of the bookstore's items for each new user
        elsewhere_items = rng.choice(base["item_id"].astype(str).to_numpy(), (len(new_users), 3))
        users = np.concatenate([old_users, new_users])
        popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
        per_user = rng.integers(1, 4, len(users))
        here_items = rng.choice(n_items, per_user.sum(), p=popularity / popularity.sum())
        user_col = np.concatenate([np.repeat(new_users, 3), np.repeat(users, per_user)])
        item_col = np.concatenate([elsewhere_items.reshape(-1), ids[here_items]])
        events = pd.DataFrame(
            {
                "user_id": user_col,
                "item_id": item_col,
                "timestamp": EPOCH + np.arange(len(user_col)),
                "event": "order",
            }
        )
        ingest_frames(events, opened, items=items)


def in_process(store: Path, model: Path, k: int, sample: int) -> dict[str, float | int]:
    """The library's phases, timed one by one; ranking on the first ``sample`` users (the CLI
    run ranks them all)."""
    timings: dict[str, float | int] = {}
    started = time.perf_counter()
    with Store.open(store, read_only=True) as opened:
        recommender = Recommender.open(model, opened)
        timings["open_s"] = time.perf_counter() - started
        mark = time.perf_counter()
        adaptation = recommender.adaptation(CATEGORY)
        if adaptation is None:  # adapting takes a minute: once per workdir is enough
            adaptation = recommender.adapt(CATEGORY)
            timings["adapt_s"] = time.perf_counter() - mark
        timings["support_size"] = adaptation.support_size
        mark = time.perf_counter()
        recommender.prepare(CATEGORY)  # the view, ranker and retrieval projection
        timings["prepare_s"] = time.perf_counter() - mark
        mark, cpu = time.perf_counter(), time.process_time()
        users = recommender.catalog.users["user_id"].astype(str).tolist()[:sample]
        table = recommend_batch(recommender, CATEGORY, users, k)
        timings["rank_s"] = time.perf_counter() - mark
        timings["rank_cpu_s"] = time.process_time() - cpu
        timings["users"] = int(table["user_id"].nunique())
        timings["users_per_s"] = timings["users"] / timings["rank_s"]
        mark = time.perf_counter()
        write_recommendations(table, store.with_name("recs-inprocess.parquet"))
        timings["write_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    return {key: round(v, 3) if isinstance(v, float) else v for key, v in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-batch"))
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 cores)")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--sample", type=int, default=10_000, help="users ranked in-process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    store, model = prepare(args.workdir, args.users, args.items, args.steps)
    prepared_s = time.perf_counter() - started
    load_before = os.getloadavg()[0]
    out = args.workdir / "recs.parquet"
    command = [str(Path(sys.executable).with_name("metarec")), "recommend", "--model", str(model)]
    command += ["--store", str(store), "--category", CATEGORY, "--all-users"]
    command += ["-k", str(args.k), "--out", str(out), "--json", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    # in-process first: it adapts the category, which the CLI run then serves
    inside = in_process(store, model, args.k, args.sample)
    mark, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    cli_s = time.perf_counter() - mark
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli_cpu_s = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    rows = pd.read_parquet(out)
    result = {
        "category_items": args.items,
        "users": int(rows["user_id"].nunique()),
        "rows": len(rows),
        "cli_wall_s": round(cli_s, 2),
        "cli_cpu_s": round(cli_cpu_s, 2),
        "cli_summary": json.loads(done.stdout),
        "in_process": inside,
        "target_s": TARGET_SECONDS,
        "met": cli_s < TARGET_SECONDS,
        "threads": args.threads,
        "prepare_data_and_model_s": round(prepared_s, 1),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
