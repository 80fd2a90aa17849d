"""Serving benchmark: latency and throughput of `metarec serve` at 1e4, 1e5 and 1e6 items.

What it does (bounded: a fixed number of requests per catalogue, a fixed concurrency, a
duration cap; it stops by itself, in about 5 minutes on 2 cores):

1. simulate the bookstore, ingest it, meta-train a small model A (or reuse ``--model`` and
   ``--store``), and write model B: A's features with perturbed parameters (a retrained head);
2. add one synthetic category per size to a copy of the store: items resampled from the
   bookstore's with new ids, and 600 users x 5 support events drawn from a long tail;
3. in process: open the service, adapt the categories, time ``Service.recommend`` for
   known and unknown users one at a time, the same requests ranked ``--max-batch`` at a time
   (``Service.recommend_many``), and recall@10 of the served top 10 against the exact full
   ranking (every item scored by the MLP);
4. over HTTP: start the service as `metarec serve` does, pinned to the first CPU (the load
   generator, this process, on the others; ``--no-pin`` to share), and drive ``GET /recommend``
   from keep-alive connections (a minimal asyncio HTTP/1.1 client, so that the load generator
   spends as little CPU as possible): every size with micro-batching off (``max_batch=1``), then
   on, in the same run, so the ratio is measured under the same machine load; then, batched,
   ``POST /events`` batches of ``--events-batch`` new events, and the 1e5 run again while the
   model is hot-swapped 20 times (B, A, B, ...); before those, batched, open-loop load on the
   1e5 category at each of ``--open-rates`` (Poisson arrivals, latency from each request's
   scheduled arrival: :func:`open_load`). Any non-200 answer (swaps included) or broken
   connection is a failure.

The last line printed is one JSON object::

    {"failed_requests": n, "swaps": s, "http_p99_ms": {"1e4": a, ...} (batched),
     "inproc_p99_ms": {...}, "rps_1e5": r, "rps_1e5_unbatched": u, "batching_ratio": r / u,
     "events_per_s": e, "events_p99_ms": p, "open_loop": {"1500": {"p99_ms": .., "rps": ..}}}

Usage::

    .venv/bin/python benchmarks/bench_serve.py [--workdir /tmp/bench-serve] [--sizes 1e4,1e5,1e6]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pandas as pd
import torch

from metarec.config import load_config
from metarec.data import Store, ingest
from metarec.data.ingest import ingest_frames
from metarec.data.simulate import simulate
from metarec.meta.model import load_model, save_model
from metarec.ranking.ridge import RidgeRanker
from metarec.selection import train_selected
from metarec.serving.service import Service
from metarec.serving.settings import ServeSettings
from metarec.training import train

TOKEN = "bench-serve-token"
SUPPORT_USERS, SUPPORT_PER_USER = 600, 5
UNKNOWN_SHARE = 0.05  # share of requests from users the store has never seen (fallback path)


def label(n: int) -> str:
    return f"1e{len(str(n)) - 1}"


def category_of(n: int) -> str:
    return f"Bench > Items {label(n)}"


# ---- 1. data and models ------------------------------------------------------------------------


def prepare_models(workdir: Path, steps: int, method: str = "mlp") -> tuple[Path, Path, Path]:
    """Simulate and ingest the store, train model A, write model B (A with perturbed
    parameters). Returns (store, model A, model B).

    ``method``: model A is the MLP meta-learner (``mlp``, ``steps`` meta-steps) or metarec-ridge
    (``ridge``, :func:`prepare_ridge`)."""
    data, store = workdir / "data", workdir / "base.duckdb"
    if not store.exists():
        simulate(data, seed=0)
        ingest(data, store, fmt="table")
    if method == "ridge":
        ridge = prepare_ridge(workdir)
        return store, ridge, perturbed(ridge, workdir / "model-ridge-b")
    model_a = workdir / "model-a"
    if not (model_a / "manifest.json").exists():
        config = load_config(data / "metarec.toml", seed=0)
        config = config.model_copy(
            update={"meta": config.meta.model_copy(update={"meta_steps": steps})}
        )
        with Store.open(store, read_only=True) as opened:
            save_model(train(opened, config, progress=False, validate_every=steps), model_a)
    return store, model_a, perturbed(model_a, workdir / "model-b")


def perturbed(folder: Path, out: Path) -> Path:
    """The model in ``folder`` with every parameter moved a little (a retrained model B)."""
    model = load_model(folder)
    generator = torch.Generator().manual_seed(1)
    params = {
        k: v + 0.01 * torch.randn(v.shape, generator=generator, dtype=v.dtype)
        for k, v in model.params.items()
    }
    return save_model(dataclasses.replace(model, params=params), out)


def prepare_ridge(workdir: Path) -> Path:
    """metarec-ridge trained on the same store (``train --method ridge``): the kind of model
    ``metarec train``'s default chose on every store measured (docs/BENCHMARKS.md)."""
    store, folder = workdir / "base.duckdb", workdir / "model-ridge"
    if not (folder / "manifest.json").exists():
        config = load_config(workdir / "data" / "metarec.toml", seed=0)
        with Store.open(store, read_only=True) as opened:
            save_model(train_selected(opened, config, choice="ridge", progress=False).model, folder)
    return folder


def bench_store(workdir: Path, base: Path, sizes: list[int]) -> Path:
    """``workdir/bench.duckdb``: the base store plus the benchmark categories, built once and
    reused (``bench_serve.py`` itself rebuilds it every run)."""
    store = workdir / "bench.duckdb"
    if not store.exists():
        shutil.copy(base, store)
        add_categories(store, sizes)
    return store


def add_categories(store: Path, sizes: list[int], seed: int = 0) -> None:
    """One synthetic category per size: resampled items, long-tailed support events."""
    rng = np.random.default_rng(seed)
    with Store.open(store) as opened:
        base = opened.items()
        users = opened.users()["user_id"].to_numpy()
        frames, events = [], []
        for n in sizes:
            source = base.sample(n, replace=True, random_state=seed).reset_index(drop=True)
            ids = np.char.add(f"b{label(n)}-", np.arange(n).astype(str))
            frames.append(
                pd.DataFrame(
                    {
                        "item_id": ids,
                        "category": category_of(n),
                        "title": source["title"],
                        "authors": source["authors"],
                        "publisher": source["publisher"],
                        "brand": source["brand"],
                        "year": source["year"] + rng.integers(-3, 4, n),
                        "price": source["price"] * rng.uniform(0.8, 1.2, n),
                    }
                )
            )
            weights = 1.0 / np.arange(1, n + 1) ** 0.8
            weights /= weights.sum()
            for user in rng.choice(users, SUPPORT_USERS, replace=False):
                for item in rng.choice(n, SUPPORT_PER_USER, replace=False, p=weights):
                    events.append((user, ids[item], 1_800_000_000 + len(events), "order"))
        ingest_frames(
            pd.DataFrame(events, columns=["user_id", "item_id", "timestamp", "event"]),
            opened,
            items=pd.concat(frames, ignore_index=True),
        )


def request_users(store_users: np.ndarray, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    users = rng.choice(store_users, count).astype(object)
    unknown = rng.random(count) < UNKNOWN_SHARE
    users[unknown] = [f"nobody-{i}" for i in range(int(unknown.sum()))]
    return [str(u) for u in users]


# ---- 3. in process -------------------------------------------------------------------------------


def in_process(
    settings: ServeSettings, sizes: list[int], requests: dict[int, int], max_batch: int
) -> dict:
    service = Service.open(settings)
    service.start()
    try:
        for n in sizes:
            started = time.perf_counter()
            service.submit_adapt(category_of(n)).future.result(timeout=600)
            print(f"adapted {category_of(n)} in {time.perf_counter() - started:.1f} s", flush=True)
        users = service.snapshot.recommender.catalog.users["user_id"].astype(str).to_numpy()
        out = {}
        for n in sizes:
            category = category_of(n)
            names = request_users(users, requests[n], seed=n)
            for name in names[:20]:  # warm-up
                service.recommend(name, category, 10)
            latencies = []
            for name in names:
                started = time.perf_counter()
                service.recommend(name, category, 10)
                latencies.append(time.perf_counter() - started)
            # the same requests ranked ``max_batch`` at a time (Service.recommend_many)
            started = time.perf_counter()
            for i in range(0, len(names), max_batch):
                service.recommend_many(category, [(name, 10) for name in names[i : i + max_batch]])
            batched = (time.perf_counter() - started) / len(names)
            recall = short_list_recall(service, category, users, 20 if n <= 100_000 else 10)
            out[n] = {
                **percentiles(latencies),
                "batched_ms_per_request": round(batched * 1000, 3),
                "recall_at_10": recall,
            }
            print(f"in-process {label(n)}: {out[n]} {load_average()}", flush=True)
        return out
    finally:
        service.close()


def short_list_recall(service: Service, category: str, users: np.ndarray, count: int) -> float:
    """Mean recall@10 of the served top 10 against the exact full ranking (every item scored
    by the scorer, through the same ranker with no short list)."""
    recommender = service.snapshot.recommender
    view = recommender.serving_view(category)
    ranker = recommender.ranker(category)
    rng = np.random.default_rng(7)
    recalls = []
    for name in rng.choice(users, count, replace=False):
        served = service.recommend(str(name), category, 10)
        user_idx = recommender.user_index(str(name))
        assert user_idx is not None
        user = recommender.user_inputs(view, user_idx)
        if isinstance(ranker, RidgeRanker):  # every item scored exactly, no coarse pass
            scores = ranker.scores(np.array([user_idx]))[0]
            scores[user.seen] = -torch.inf
            exact = torch.topk(scores, 10).indices
        else:
            exact, _ = ranker.top_k(user, 10, short_list=view.data.n_items)
        top = set(view.item_ids[exact.numpy()].tolist())
        recalls.append(len(top & {item.item_id for item in served.items}) / 10)
    return float(np.mean(recalls))


def percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "n": len(latencies),
    }


# ---- 4. over HTTP --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# What `metarec serve` does (metarec/cli/serve.py), with the settings the benchmark varies
# (micro-batching on or off) instead of the command's flags.
_SERVE = """
import json, sys
import torch, uvicorn
from metarec.serving.app import create_app
from metarec.serving.process import freeze_heap
from metarec.serving.service import Service
from metarec.serving.settings import ServeSettings
options = json.loads(sys.argv[1])
torch.set_num_threads(options.pop("torch_threads"))
freeze = options.pop("freeze_heap", True)
settings = ServeSettings(**options)
service = Service.open(settings)
try:
    app = create_app(settings, service=service)
    if freeze:
        freeze_heap()
    uvicorn.run(app, host=settings.host, port=settings.port,
                workers=1, access_log=False, log_level="warning")
finally:
    service.close()
"""


def start_server(
    settings: ServeSettings,
    workdir: Path,
    torch_threads: int,
    cpus: set[int] | None = None,
    *,
    freeze_heap: bool = True,
) -> subprocess.Popen:
    """Start the service on ``settings`` (its own process, on ``cpus`` when given); with
    ``freeze_heap=False``, without freezing the start-up objects as `metarec serve` does."""
    options = json.loads(settings.model_dump_json())
    options["token"] = settings.token.get_secret_value()
    options["torch_threads"] = torch_threads
    options["freeze_heap"] = freeze_heap
    command = [sys.executable, "-c", _SERVE, json.dumps(options)]
    log = (workdir / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    if cpus:
        os.sched_setaffinity(process.pid, cpus)
    deadline = time.monotonic() + 600
    url = f"http://127.0.0.1:{settings.port}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {(workdir / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    process.kill()
    raise SystemExit("the server did not become ready in 600 s")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


async def load(
    port: int,
    category: str,
    users: list[str],
    concurrency: int,
    max_seconds: float,
    until: threading.Thread | None = None,
) -> dict:
    """Send one GET /recommend per user over ``concurrency`` keep-alive connections; with
    ``until``, keep cycling through the users while that thread runs (within ``max_seconds``)."""
    cat = quote(category)
    queue = iter(users) if until is None else _while_alive(users, until)
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + max_seconds

    async def connection() -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for user in queue:
                if time.monotonic() > deadline:
                    return
                started = time.perf_counter()
                status = await ask(reader, writer, user, cat)
                if status is None:
                    failures += 1
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    failures += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        **percentiles(latencies),
        "failed": failures,
        "rps": round(len(latencies) / elapsed, 1),
        "seconds": round(elapsed, 2),
    }


async def open_load(
    port: int,
    category: str,
    users: list[str],
    rate: float,
    connections: int,
    seed: int = 0,
    *,
    path: str | None = None,
) -> dict:
    """Open-loop ``GET /recommend``: one request per user at Poisson arrival times of ``rate``
    per second (seeded), whatever the answers' pace, over a pool of ``connections`` keep-alive
    connections opened beforehand (as a front end's pool; a request waits for a free one when
    all are busy). A request's latency runs from its *scheduled* arrival, so a server
    that falls behind shows it in the percentiles (no coordinated omission: a closed loop of
    c connections never offers more than c requests at once, and waits when the server does).

    With ``path`` (such as ``/health/live``), that path instead of ``/recommend``, on the
    same schedule: the load generator's own floor, since that endpoint does almost nothing.

    Returns:
        percentiles, failed, ``offered_rps``, ``rps`` (answered per second, first arrival to
        last answer), ``late`` (requests that waited for a free connection) and
        ``max_in_flight``.
    """
    # The load generator's own full collections (its imports hold some 300,000 tracked
    # objects) would stall the schedule and count as the server's latency: frozen first.
    gc.collect()
    gc.freeze()
    cat = quote(category)
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, len(users))
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    latencies: list[float] = []
    failures = late = in_flight = max_in_flight = 0

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    for _ in range(connections):
        pool.put_nowait(await connect())

    async def one(user: str, due: float) -> None:
        nonlocal failures, in_flight, max_in_flight, late
        in_flight += 1
        max_in_flight = max(max_in_flight, in_flight)
        late += pool.empty()
        reader, writer = await pool.get()
        status = await ask(reader, writer, user, cat, path=path)
        if status is None:
            failures += 1
            pool.put_nowait(await connect())
        else:
            latencies.append(time.perf_counter() - due)
            failures += status != 200
            pool.put_nowait((reader, writer))
        in_flight -= 1

    started = time.perf_counter()
    due = started + np.cumsum(gaps)
    tasks = []
    for user, at in zip(users, due, strict=True):
        wait = at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.ensure_future(one(user, float(at))))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait()[1].close()
    return {
        **percentiles(latencies),
        "failed": failures,
        "offered_rps": round(len(users) / float(due[-1] - started), 1),
        "rps": round(len(latencies) / elapsed, 1),
        "late": late,
        "max_in_flight": max_in_flight,
        "seconds": round(elapsed, 2),
    }


async def post_events(
    port: int,
    users: list[str],
    items: list[str],
    batch: int,
    concurrency: int,
    seconds: float,
    tag: str,
) -> dict:
    """POST /events batches of ``batch`` new events from ``concurrency`` keep-alive connections
    for ``seconds`` (at least one batch each); events/s counts acknowledged (200) events."""
    rng = np.random.default_rng(0)
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def connection(number: int) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sent = 0
        try:
            while sent == 0 or time.monotonic() < deadline:  # at least one batch each
                rows = [
                    {
                        "event_id": f"{tag}-{number}-{sent}-{j}",
                        "user_id": users[int(rng.integers(len(users)))],
                        "item_id": items[int(rng.integers(len(items)))],
                        "event": "click",
                        "timestamp": 1_900_000_000 + sent,
                    }
                    for j in range(batch)
                ]
                sent += 1
                body = json.dumps({"events": rows}).encode()
                head = (
                    "POST /events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                    f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                started = time.perf_counter()
                writer.write(head + body)
                status = await asyncio.wait_for(read_response(reader), 60)
                latencies.append(time.perf_counter() - started)
                failures += status != 200
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - started
    ok = len(latencies) - failures
    return {
        **percentiles(latencies),
        "failed": failures,
        "batches_per_s": round(len(latencies) / elapsed, 1),
        "events_per_s": round(ok * batch / elapsed, 1),
        "seconds": round(elapsed, 2),
    }


def _while_alive(users: list[str], thread: threading.Thread) -> Iterator[str]:
    for n, user in enumerate(itertools.cycle(users)):
        if n >= len(users) and not thread.is_alive():
            return
        yield user


def load_average() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


async def ask(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    user: str,
    category: str,
    *,
    path: str | None = None,
) -> int | None:
    """One ``GET /recommend`` (k = 10) on a keep-alive connection: the answer's status, or
    None when the connection broke or the answer took over 30 s (the connection is closed).

    Args:
        category: URL-quoted.
        path: ``GET`` this path instead (user and category unused).
    """
    target = path or f"/recommend?user_id={quote(user)}&category={category}&k=10"
    request = f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    try:
        writer.write(request)
        return await asyncio.wait_for(read_response(reader), 30)
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        writer.close()
        return None


async def read_response(reader: asyncio.StreamReader) -> int:
    status = int((await reader.readline()).split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def swap_models(url: str, models: list[Path], count: int, done: list[dict]) -> None:
    """POST /admin/model ``count`` times, alternating ``models``; records each outcome."""
    with httpx.Client(base_url=url, timeout=600) as http:
        for path in itertools.islice(itertools.cycle(models), count):
            started = time.perf_counter()
            response = http.post(
                "/admin/model",
                json={"path": str(path)},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            done.append({"status": response.status_code, "seconds": time.perf_counter() - started})
            time.sleep(0.2)


@dataclasses.dataclass(frozen=True)
class HttpRun:
    """What the HTTP part of the benchmark does (see the module docstring)."""

    sizes: list[int]
    requests: dict[int, int]
    concurrency: int
    max_seconds: float
    swaps: int
    model_b: Path
    torch_threads: int
    max_batch: int
    events_seconds: float
    events_batch: int
    events_concurrency: int
    pin: bool
    open_rates: tuple[float, ...] = ()


def over_http(settings: ServeSettings, workdir: Path, run: HttpRun) -> tuple[dict, list[dict]]:
    """Every size with micro-batching off (``max_batch=1``), then on, in one run (so the ratio
    is measured under the same load); then, batched, ``POST /events`` and the hot swaps."""
    users = json.loads((workdir / "users.json").read_text())
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus = {cpus[0]} if run.pin and len(cpus) > 1 else None
    if server_cpus:  # the load generator (this process) on the other cores
        os.sched_setaffinity(0, set(cpus[1:]))
    results: dict[str, dict] = {"unbatched": {}, "batched": {}}
    swapped: list[dict] = []
    for mode in ("unbatched", "batched"):
        batch = 1 if mode == "unbatched" else run.max_batch
        served = settings.model_copy(update={"max_batch": batch})
        started = time.perf_counter()
        process = start_server(served, workdir, run.torch_threads, server_cpus)
        print(f"server ({mode}) ready in {time.perf_counter() - started:.1f} s", flush=True)
        try:
            for n in run.sizes:
                names = request_users(np.array(users), run.requests[n], seed=n + 1)
                asyncio.run(load(settings.port, category_of(n), names[:50], 4, 30))  # warm-up
                measured = asyncio.run(
                    load(settings.port, category_of(n), names, run.concurrency, run.max_seconds)
                )
                results[mode][label(n)] = measured
                print(f"http {mode} {label(n)}: {measured} {load_average()}", flush=True)
            if mode == "batched":
                results["mean_batch"] = mean_batch(settings.port)
                results["calls_by_batch_size"] = batch_sizes(settings.port)
                print(
                    f"requests per ranking call: {results['mean_batch']} (calls by requests "
                    f"per call: {results['calls_by_batch_size']})",
                    flush=True,
                )
                results["open_loop"] = open_runs(settings.port, users, run)
            if mode == "batched":
                results["events"] = events_run(settings.port, users, run)
                swapped = swaps_run(settings, workdir, users, run, results)
        finally:
            stop_server(process)
    return results, swapped


def mean_batch(port: int) -> float:
    """Mean requests per ranking call so far (metarec_recommend_batch_size from /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    value = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("metarec_recommend_batch_size_")
    }
    count = value.get("metarec_recommend_batch_size_count", 0.0)
    return round(value.get("metarec_recommend_batch_size_sum", 0.0) / max(count, 1.0), 2)


def batch_sizes(port: int) -> dict[str, int]:
    """Ranking calls so far by requests per call, as the histogram's buckets count them
    ("1", "2", "3-4", "5-8", ...; metarec_recommend_batch_size from /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    cumulative = [
        (float(line.split('le="')[1].split('"')[0]), int(float(line.split()[-1])))
        for line in text.splitlines()
        if line.startswith("metarec_recommend_batch_size_bucket")
    ]
    out, below, previous = {}, 0, 0.0
    for bound, count in cumulative:
        if count > below:
            low = int(previous) + 1
            name = str(low) if low >= bound else f"{low}-{bound:g}"
            out[name] = count - below
        below, previous = count, bound
    return out


def open_runs(port: int, users: list[str], run: HttpRun) -> dict[str, dict]:
    """Open-loop load on the middle catalogue at each of ``run.open_rates``."""
    n = 100_000 if 100_000 in run.sizes else run.sizes[len(run.sizes) // 2]
    out = {}
    for rate in run.open_rates:
        names = request_users(np.array(users), run.requests[n], seed=n + 3)
        out[f"{rate:g}"] = asyncio.run(open_load(port, category_of(n), names, rate, 64))
        print(f"http open loop {label(n)}, {rate:g} req/s: {out[f'{rate:g}']}", flush=True)
    return out


def events_run(port: int, users: list[str], run: HttpRun) -> dict:
    """POST /events batches of ``run.events_batch`` into the smallest benchmark category."""
    n = min(run.sizes)
    items = [f"b{label(n)}-{i}" for i in range(n)]
    tag = f"bench-{time.time_ns()}"
    measured = asyncio.run(
        post_events(
            port,
            users,
            items,
            run.events_batch,
            run.events_concurrency,
            run.events_seconds,
            tag,
        )
    )
    print(f"http events (batches of {run.events_batch}): {measured} {load_average()}", flush=True)
    return measured


def swaps_run(
    settings: ServeSettings, workdir: Path, users: list[str], run: HttpRun, results: dict
) -> list[dict]:
    """The middle catalogue's load again while the model is hot-swapped (B, A, B, ...)."""
    url = f"http://127.0.0.1:{settings.port}"
    sizes = run.sizes
    n = 100_000 if 100_000 in sizes else sizes[len(sizes) // 2]
    names = request_users(np.array(users), run.requests[n], seed=n + 2)
    swapped: list[dict] = []
    swapper = threading.Thread(
        target=swap_models, args=(url, [run.model_b, settings.model_dir], run.swaps, swapped)
    )
    swapper.start()
    results["swaps"] = asyncio.run(
        load(settings.port, category_of(n), names, run.concurrency, run.max_seconds, until=swapper)
    )
    swapper.join()
    results["swaps"]["items"] = label(n)
    print(f"http {label(n)} with {len(swapped)} swaps: {results['swaps']}", flush=True)
    return swapped


# ---- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    parser.add_argument("--sizes", default="1e4,1e5,1e6")
    parser.add_argument("--steps", type=int, default=100, help="meta-training steps of model A")
    parser.add_argument(
        "--method",
        choices=("mlp", "ridge"),
        default="mlp",
        help="the served models: the MLP meta-learner or metarec-ridge (what `metarec train` "
        "chose on every store measured)",
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", default="3000,6000,400", help="HTTP requests per size")
    parser.add_argument("--inproc-requests", default="2000,2000,200")
    parser.add_argument("--max-seconds", type=float, default=40.0, help="cap per HTTP run")
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per op")
    parser.add_argument("--max-batch", type=int, default=16, help="micro-batch size when on")
    parser.add_argument("--events-seconds", type=float, default=20.0)
    parser.add_argument("--events-batch", type=int, default=100)
    parser.add_argument("--events-concurrency", type=int, default=4)
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the server and the load generator"
    )
    parser.add_argument(
        "--open-rates",
        default="1500",
        help="open-loop rates (req/s, comma-separated; empty: none) offered to the 1e5 category",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.torch_threads)  # as the server does (metarec serve)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    http_requests = dict(zip(sizes, map(int, args.requests.split(",")), strict=False))
    inproc_requests = dict(zip(sizes, map(int, args.inproc_requests.split(",")), strict=False))
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    begun = time.perf_counter()

    base, model_a, model_b = prepare_models(workdir, args.steps, args.method)
    store = workdir / "bench.duckdb"
    shutil.copy(base, store)
    add_categories(store, sizes)
    with Store.open(store, read_only=True) as opened:
        (workdir / "users.json").write_text(json.dumps(opened.users()["user_id"].tolist()))
    print(f"data and models ready in {time.perf_counter() - begun:.0f} s", flush=True)

    settings = ServeSettings(
        model_dir=model_a, store_path=store, token=TOKEN, port=free_port(), max_in_flight=1024
    )
    inproc = in_process(settings, sizes, inproc_requests, args.max_batch)
    run = HttpRun(
        sizes=sizes,
        requests=http_requests,
        concurrency=args.concurrency,
        max_seconds=args.max_seconds,
        swaps=args.swaps,
        model_b=model_b,
        torch_threads=args.torch_threads,
        max_batch=args.max_batch,
        events_seconds=args.events_seconds,
        events_batch=args.events_batch,
        events_concurrency=args.events_concurrency,
        pin=not args.no_pin,
        open_rates=tuple(float(r) for r in args.open_rates.split(",") if r),
    )
    http, swapped = over_http(settings, workdir, run)

    print(f"\ntotal {time.perf_counter() - begun:.0f} s; {os.cpu_count()} CPUs; {load_average()}")
    print(
        "| items | in-process p50 / p95 / p99 ms | in-process ms per request, batched | "
        "recall@10 | HTTP p50 / p95 / p99 ms, unbatched | req/s | HTTP p50 / p95 / p99 ms, "
        "batched | req/s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        a, off, on = inproc[n], http["unbatched"][label(n)], http["batched"][label(n)]
        print(
            f"| {label(n)} | {a['p50_ms']} / {a['p95_ms']} / {a['p99_ms']} | "
            f"{a['batched_ms_per_request']} | {a['recall_at_10']:.3f} | "
            f"{off['p50_ms']} / {off['p95_ms']} / {off['p99_ms']} | {off['rps']} | "
            f"{on['p50_ms']} / {on['p95_ms']} / {on['p99_ms']} | {on['rps']} | "
            f"{on['rps'] / off['rps']:.2f} |"
        )
    during = http["swaps"]
    print(
        f"| {during['items']} during {len(swapped)} swaps, batched | | | | | | {during['p50_ms']}"
        f" / {during['p95_ms']} / {during['p99_ms']} | {during['rps']} | |"
    )
    events = http["events"]
    print(
        f"events: {events['events_per_s']} events/s in batches of {args.events_batch} "
        f"({events['batches_per_s']} batches/s, p50 / p99 {events['p50_ms']} / "
        f"{events['p99_ms']} ms, {args.events_concurrency} connections)"
    )
    for rate, measured in http["open_loop"].items():
        print(
            f"open loop at {rate} req/s offered: {measured['rps']} answered, p50 / p95 / p99 "
            f"{measured['p50_ms']} / {measured['p95_ms']} / {measured['p99_ms']} ms"
        )
    swap_seconds = [round(s["seconds"], 2) for s in swapped]
    print(f"swaps: statuses {[s['status'] for s in swapped]}, seconds {swap_seconds}")
    failed = (
        sum(r["failed"] for mode in ("unbatched", "batched") for r in http[mode].values())
        + during["failed"]
        + events["failed"]
        + sum(r["failed"] for r in http["open_loop"].values())
        + sum(s["status"] != 200 for s in swapped)
    )
    mid = "1e5" if "1e5" in http["batched"] else label(sizes[len(sizes) // 2])
    summary = {
        "failed_requests": failed,
        "swaps": sum(s["status"] == 200 for s in swapped),
        "http_p99_ms": {label(n): http["batched"][label(n)]["p99_ms"] for n in sizes},
        "inproc_p99_ms": {label(n): inproc[n]["p99_ms"] for n in sizes},
        f"rps_{mid}": http["batched"][mid]["rps"],
        f"rps_{mid}_unbatched": http["unbatched"][mid]["rps"],
        "batching_ratio": round(http["batched"][mid]["rps"] / http["unbatched"][mid]["rps"], 2),
        "mean_batch": http["mean_batch"],
        "calls_by_batch_size": http["calls_by_batch_size"],
        "events_per_s": events["events_per_s"],
        "events_p99_ms": events["p99_ms"],
        "open_loop": {
            rate: {"p99_ms": r["p99_ms"], "rps": r["rps"]} for rate, r in http["open_loop"].items()
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
