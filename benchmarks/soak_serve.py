"""Soak: minutes of mixed load on one `metarec serve` process, its memory sampled (not CI).

Reuses ``bench_serve.py``'s data, models and server (run that first, or let this build them in
the same workdir). For ``--minutes``, at once:

- ``GET /recommend`` from keep-alive connections over the benchmark categories (5% unknown users);
- ``POST /events`` batches of 100 new events into the smallest category, one every 0.5 s
  (new event ids on the same 100 user-item pairs each time: the store gains 200 rows a second,
  the positives the server holds stay as they are, so memory that grows is the process's);
- an adaptation of a benchmark category every ``--adapt-every`` seconds;
- a hot swap (model B, A, B, ...) every ``--swap-every`` seconds.

The server's resident memory (``VmRSS``) is sampled every ``--sample-every`` seconds (0.5;
printed every 5 s), often enough that every quarter of the run catches its swaps' and
adaptations' peaks (sampled every 5 s, a quarter could catch one swap or none, and the
peaks compared a swap with none). After a warm-up (the first fifth
of the run, at least a minute: views, projections and both models get built then), the check
``flat within 10%`` compares the last quarter of the samples after warm-up with the first
quarter: their peaks and their medians (a swap holds two models for a moment, so single
samples swing by 10 to 20%). Any non-2xx
answer or broken connection is a failure. The last line printed is one JSON object.

Usage::

    .venv/bin/python benchmarks/soak_serve.py [--workdir /tmp/bench-serve] [--minutes 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np

from bench_serve import (
    TOKEN,
    add_categories,
    category_of,
    free_port,
    load,
    load_average,
    post_events,
    prepare_models,
    request_users,
    start_server,
    stop_server,
)
from metarec.data import Store
from metarec.serving.settings import ServeSettings


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def admin(
    url: str,
    stop: threading.Event,
    every: float,
    act: Callable[[httpx.Client], int],
    done: list[dict],
) -> None:
    """Call ``act(http)`` every ``every`` seconds until ``stop``; record each status."""
    with httpx.Client(base_url=url, timeout=600) as http:
        while not stop.wait(every):
            started = time.perf_counter()
            status = act(http)
            done.append({"status": status, "seconds": round(time.perf_counter() - started, 2)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    parser.add_argument("--sizes", default="1e4,1e5")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--adapt-every", type=float, default=20.0)
    parser.add_argument("--swap-every", type=float, default=30.0)
    parser.add_argument("--sample-every", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--method",
        choices=("mlp", "ridge"),
        default="mlp",
        help="the served models: the MLP meta-learner or metarec-ridge (bench_serve.py's)",
    )
    args = parser.parse_args()

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    base, model_a, model_b = prepare_models(workdir, args.steps, args.method)
    store = workdir / "soak.duckdb"
    shutil.copy(base, store)
    add_categories(store, sizes)
    with Store.open(store, read_only=True) as opened:
        users = opened.users()["user_id"].tolist()
    settings = ServeSettings(
        model_dir=model_a, store_path=store, token=TOKEN, port=free_port(), max_in_flight=1024
    )
    process = start_server(settings, workdir, torch_threads=1)
    url = f"http://127.0.0.1:{settings.port}"
    seconds = args.minutes * 60
    warm_up = max(60.0, seconds / 5)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    adapts: list[dict] = []
    swaps: list[dict] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    categories = itertools.cycle([category_of(n) for n in sizes])
    models = itertools.cycle([model_b, model_a])

    def adapt(http: httpx.Client) -> int:
        category = quote(next(categories), safe="")
        return http.post(f"/categories/{category}/adapt", headers=headers).status_code

    def swap(http: httpx.Client) -> int:
        return http.post(
            "/admin/model", json={"path": str(next(models))}, headers=headers
        ).status_code

    def sample() -> None:
        begun = printed = time.monotonic()
        while not stop.wait(args.sample_every):
            samples.append((round(time.monotonic() - begun, 1), round(rss_mb(process.pid), 1)))
            if time.monotonic() - printed >= 5:
                printed = time.monotonic()
                print(
                    f"t={samples[-1][0]:.0f} s rss {samples[-1][1]:.0f} MB {load_average()}",
                    flush=True,
                )

    threads = [
        threading.Thread(target=sample),
        threading.Thread(target=admin, args=(url, stop, args.adapt_every, adapt, adapts)),
        threading.Thread(target=admin, args=(url, stop, args.swap_every, swap, swaps)),
    ]
    started = time.monotonic()
    begin_rss = rss_mb(process.pid)
    try:
        for thread in threads:
            thread.start()

        async def mixed() -> list[dict]:
            reads = [
                load(
                    settings.port,
                    category_of(n),
                    request_users(np.array(users), 10**7, seed=n),
                    args.concurrency,
                    seconds,
                )
                for n in sizes
            ]
            events = _paced_events(settings.port, users, sizes, seconds)
            return await asyncio.gather(*reads, events)

        *reads, events = asyncio.run(mixed())
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        statuses = _category_statuses(url, sizes)
        stop_server(process)
    elapsed = time.monotonic() - started
    # Swaps hold two models for a moment, so single samples swing; compare the first and the
    # last quarter of the samples after warm-up (their peaks and their medians).
    after = [rss for t, rss in samples if t >= warm_up] or [begin_rss]
    quarter = max(1, len(after) // 4)
    first, last = after[:quarter], after[-quarter:]
    growth = max(last) / max(first) - 1
    median_growth = float(np.median(last)) / float(np.median(first)) - 1
    failed = sum(r["failed"] for r in reads) + events["failed"]
    failed += sum(a["status"] not in (200, 202) for a in [*adapts, *swaps])
    print(f"\nsoak of {elapsed / 60:.1f} minutes, {os.cpu_count()} CPUs, {load_average()}")
    for n, r in zip(sizes, reads, strict=True):
        print(f"recommend {category_of(n)}: {r}")
    print(f"events: {events}")
    print(f"adaptations {len(adapts)} {[a['status'] for a in adapts]}")
    for status in statuses:  # what the last adaptation of each category trained on
        print(f"category {status}")
    print(
        f"swaps {len(swaps)} {[s['status'] for s in swaps]} seconds {[s['seconds'] for s in swaps]}"
    )
    print(
        f"rss MB: start {begin_rss:.0f}; after warm-up ({warm_up:.0f} s) min {min(after):.0f}, "
        f"max {max(after):.0f}; first quarter peak {max(first):.0f} median "
        f"{np.median(first):.0f}; last quarter peak {max(last):.0f} median {np.median(last):.0f}"
    )
    flat = abs(growth) <= 0.10 and abs(median_growth) <= 0.10
    print(
        f"flat within 10%: {'yes' if flat else 'NO'} (last vs first quarter after warm-up: "
        f"peak {100 * growth:+.1f}%, median {100 * median_growth:+.1f}%)"
    )
    print(
        json.dumps(
            {
                "minutes": round(elapsed / 60, 1),
                "failed": failed,
                "requests": sum(r["n"] for r in reads),
                "events": round(events["events_per_s"] * events["seconds"]),
                "adaptations": len(adapts),
                "swaps": len(swaps),
                "rss_mb_first_quarter_peak": max(first),
                "rss_mb_last_quarter_peak": max(last),
                "rss_peak_growth": round(growth, 3),
                "rss_median_growth": round(median_growth, 3),
                "flat_within_10pct": flat,
            }
        )
    )


def _category_statuses(url: str, sizes: list[int]) -> list[dict]:
    """Each benchmark category's positives and its last adaptation (GET /categories/...)."""
    found = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for n in sizes:
            body = http.get(f"/categories/{quote(category_of(n), safe='')}").json()
            adapted = body.get("adaptation") or {}
            found.append(
                {
                    "category": category_of(n),
                    "positives": body.get("support_size"),
                    "adaptation_version": adapted.get("version"),
                    "adapted_on": adapted.get("support_size"),
                    "adaptation_seconds": adapted.get("seconds"),
                }
            )
    return found


async def _paced_events(port: int, users: list[str], sizes: list[int], seconds: float) -> dict:
    """Batches of 100 new events, one at a time, at most one every 0.5 s."""
    n = min(sizes)
    items = [f"b1e{len(str(n)) - 1}-{i}" for i in range(n)]
    deadline = time.monotonic() + seconds
    total = {"failed": 0, "n": 0, "events_per_s": 0.0, "seconds": 0.0}
    tag = f"soak-{time.time_ns()}"
    run = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        one = await post_events(port, users, items, 100, 1, 0.01, f"{tag}-{run}")
        run += 1
        total["failed"] += one["failed"]
        total["n"] += one["n"]
        await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    total["seconds"] = seconds
    total["events_per_s"] = round(100 * (total["n"] - total["failed"]) / seconds, 1)
    return total


if __name__ == "__main__":
    main()
