"""Closed-loop ``GET /recommend`` load on one category, the server pinned to one core.

    .venv/bin/python benchmarks/drive_recommend.py --workdir /tmp/bench-serve \
        --category "Books > Fiction > Fantasy"

A narrower probe than ``bench_serve.py``: one server (micro-batching on, as served), one
category, ``/health/live`` first (the HTTP stack alone), then ``--requests`` recommendations
over ``--concurrency`` keep-alive connections from the other core. A small category makes the
ranking cheap, so the request's HTTP and event-loop cost shows; the 1e5-item benchmark
category (the default) shows the ranking. It prints the ranking calls by requests per call
(how the micro-batcher grouped the closed loop), and with ``--open-rates R1,R2`` then offers
open-loop Poisson load at each rate (``bench_serve.open_load``: latency from each request's
scheduled arrival); ``--floor`` also offers each rate to ``/health/live``, the load
generator's own latency on the same schedule. ``--no-freeze-heap`` serves without freezing
the start-up objects. Uses ``bench_serve.py``'s data, models and server start (it prepares
them in ``--workdir`` when missing). The last line is a JSON summary, so
``benchmarks/against.sh`` can compare two revisions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from bench_serve import (
    TOKEN,
    batch_sizes,
    bench_store,
    category_of,
    free_port,
    load,
    mean_batch,
    open_load,
    prepare_models,
    read_response,
    request_users,
    start_server,
    stop_server,
)
from metarec.data import Store
from metarec.serving.settings import ServeSettings


async def live(port: int, requests: int, concurrency: int) -> float:
    """Requests per second of ``GET /health/live`` (the HTTP stack without any work)."""

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(requests // concurrency):
            writer.write(b"GET /health/live HTTP/1.1\r\nHost: bench\r\n\r\n")
            await read_response(reader)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return round(requests / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    parser.add_argument("--category", default=category_of(100_000))
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--method",
        choices=("mlp", "ridge"),
        default="mlp",
        help="the served model: the MLP meta-learner (model A) or metarec-ridge",
    )
    parser.add_argument(
        "--open-rates",
        default="",
        help="also offer open-loop Poisson load at these rates (req/s, comma-separated), "
        "--requests each, latency from each request's scheduled arrival",
    )
    parser.add_argument("--open-connections", type=int, default=64)
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also offer each open-loop rate to /health/live: the load generator's own latency",
    )
    parser.add_argument(
        "--batch-wait-seconds",
        type=float,
        default=ServeSettings.model_fields["batch_wait_seconds"].default,
        help="the server's batch_wait_seconds (default: the service's default)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=ServeSettings.model_fields["max_batch"].default,
        help="the server's max_batch (default: the service's default)",
    )
    parser.add_argument(
        "--no-freeze-heap",
        action="store_true",
        help="serve without freezing the start-up objects (serving/process.py), to compare",
    )
    args = parser.parse_args()

    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    base, served, _ = prepare_models(workdir, steps=100, method=args.method)
    store = bench_store(workdir, base, [100_000])
    with Store.open(store, read_only=True) as source:
        users = source.users()["user_id"].astype(str).to_numpy()

    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = {cpus[0]} if len(cpus) > 1 else None
    if server_cpus:  # the load generator (this process) on the other cores
        os.sched_setaffinity(0, set(cpus[1:]))
    port = free_port()
    settings = ServeSettings(
        model_dir=served,
        store_path=store,
        token=TOKEN,
        port=port,
        max_in_flight=1024,
        batch_wait_seconds=args.batch_wait_seconds,
        max_batch=args.max_batch,
    )
    process = start_server(settings, workdir, 1, server_cpus, freeze_heap=not args.no_freeze_heap)
    try:
        names = request_users(users, args.requests, seed=3)
        asyncio.run(load(port, args.category, names[:200], 4, 30))  # warm-up
        live_rps = asyncio.run(live(port, args.requests, args.concurrency))
        measured = asyncio.run(load(port, args.category, names, args.concurrency, 120))
        batch = mean_batch(port)
        sizes = batch_sizes(port)
        opened: dict[str, dict] = {}
        for rate in [float(r) for r in args.open_rates.split(",") if r]:
            names = request_users(users, args.requests, seed=int(rate))
            opened[f"{rate:g}"] = asyncio.run(
                open_load(port, args.category, names, rate, args.open_connections)
            )
            print(f"open loop, {rate:g} req/s offered: {opened[f'{rate:g}']}", flush=True)
            if args.floor:
                floor = asyncio.run(
                    open_load(
                        port, args.category, names, rate, args.open_connections, path="/health/live"
                    )
                )
                opened[f"floor {rate:g}"] = floor
                print(f"open loop, {rate:g} req/s offered to /health/live: {floor}", flush=True)
    finally:
        stop_server(process)
    print(f"/health/live: {live_rps} req/s", flush=True)
    print(f"/recommend {args.category!r}: {measured}, {batch} requests per ranking call")
    print(f"ranking calls by requests per call: {sizes}")
    summary = {
        "live_rps": live_rps,
        "recommend_rps": measured["rps"],
        "recommend_p99_ms": measured["p99_ms"],
        "failed": measured["failed"],
        "mean_batch": batch,
        "calls_by_batch_size": sizes,
        "open_loop": opened,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
