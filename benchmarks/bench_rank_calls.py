"""What one ranking call of the service costs by the number of requests it ranks together.

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/bench_rank_calls.py \
        [--workdir /tmp/bench-serve] [--method mlp] [--groups 1,2,4,7,8,16]

The micro-batcher (``serving/batcher.py``) hands ``Service.recommend_many`` groups of a
category's concurrent requests; a closed loop of 8 connections settles into alternating groups
(such as 7 and 1: ``drive_recommend.py`` prints the calls by size), so the cost of a call of g
requests, ``T(g)``, sets the throughput there: 8 requests per ``T(g) + T(8 - g)`` plus the HTTP
work. This measures ``T(g)`` in process on the 1e5-item benchmark category of
``bench_serve.py`` (its store and models, prepared in ``--workdir`` when missing), adapted
first, with the same users each run (seeded), one torch thread. Prints one line per group size
and, last, a JSON summary (``benchmarks/against.sh`` compares two revisions).

``--stages`` (MLP learner) also splits the calls of the last group size by stage: the time
inside each function ``serving/batched.py`` calls (wrapped by name for the run; the
first layer's rows, ``short_list_h1``, once for the reference items and once for the short
lists), what is left of the batch's ranking around them (``_retrieve_group``: the retrieval
product, the seen items' mask, the sort) and of the call outside it (the users' inputs, the
per-request answers).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench_serve import TOKEN, bench_store, category_of, prepare_models, request_users
from metarec.serving import batched
from metarec.serving.service import Service
from metarec.serving.settings import ServeSettings

N_ITEMS = 100_000
REQUESTS = 2_000  # requests ranked per group size (after a warm-up)
# what _retrieve_group calls, by name in serving/batched.py
STAGES = (
    "fold_users",
    "column_weights",
    "head_gradient",
    "queries",
    "asinh",
    "top_k_positions",
    "_distinct",
    "short_list_rows",
    "head",
)


def timed_stages(seconds: defaultdict[str, float]) -> Callable[[], None]:
    """Wrap the stages of a batched ranking call so their time adds up in ``seconds``;
    returns the function that unwraps them."""
    names = (*STAGES, "short_list_h1", "_retrieve_group")
    originals = {name: getattr(batched, name) for name in names}

    def timer(key: Callable[..., str], function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args)
            finally:
                seconds[key(*args)] += time.perf_counter() - started

        return timed

    for name in (*STAGES, "_retrieve_group"):
        setattr(batched, name, timer(lambda *_, name=name: name, originals[name]))
    # once for the reference items (every user the same 64), once for the short lists
    batched.short_list_h1 = timer(
        lambda *args: f"short_list_h1 ({args[3].shape[1]} items)", originals["short_list_h1"]
    )

    def unwrap() -> None:
        for name, function in originals.items():
            setattr(batched, name, function)

    return unwrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    parser.add_argument("--method", choices=("mlp", "ridge"), default="mlp")
    parser.add_argument("--groups", default="1,2,4,7,8,16")
    parser.add_argument("--stages", action="store_true", help="split the last size's calls")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    base, served, _ = prepare_models(args.workdir, steps=100, method=args.method)
    store = bench_store(args.workdir, base, [N_ITEMS])
    settings = ServeSettings(model_dir=served, store_path=store, token=TOKEN, port=1)
    service = Service.open(settings)
    service.start()
    category = category_of(N_ITEMS)
    summary: dict[str, float] = {}
    try:
        service.submit_adapt(category).future.result(timeout=600)
        users = service.snapshot.recommender.catalog.users["user_id"].astype(str).to_numpy()
        names = request_users(users, REQUESTS, seed=5)
        for g in [int(part) for part in args.groups.split(",")]:
            full = range(0, REQUESTS - g + 1, g)  # whole groups only
            calls = [[(name, 10) for name in names[i : i + g]] for i in full]
            for requests in calls[:10]:  # warm-up
                service.recommend_many(category, requests)
            started = time.perf_counter()
            for requests in calls:
                service.recommend_many(category, requests)
            ms = (time.perf_counter() - started) / len(calls) * 1000
            summary[f"ms_per_call_{g}"] = round(ms, 3)
            print(f"{g:3d} requests per call: {ms:.3f} ms per call, {ms / g:.3f} per request")
        if args.stages and args.method == "mlp":
            seconds: defaultdict[str, float] = defaultdict(float)
            unwrap = timed_stages(seconds)
            started = time.perf_counter()
            try:
                for requests in calls:
                    service.recommend_many(category, requests)
            finally:
                unwrap()
            ms_of = {name: spent / len(calls) * 1000 for name, spent in seconds.items()}
            whole = (time.perf_counter() - started) / len(calls) * 1000
            group = ms_of.pop("_retrieve_group")
            print(f"stages of a call of {g} ({whole:.3f} ms, timed):")
            for name, ms in sorted(ms_of.items(), key=lambda item: -item[1]):
                print(f"  {name:34s} {ms:6.3f} ms")
            print(f"  {'the rest of _retrieve_group':34s} {group - sum(ms_of.values()):6.3f} ms")
            print(f"  {'the call outside _retrieve_group':34s} {whole - group:6.3f} ms")
    finally:
        service.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
