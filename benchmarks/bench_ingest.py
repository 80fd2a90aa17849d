"""Time ingestion of MovieLens 100K and 1M (RecBole files) into a fresh store; print rows/s.

Run from the project root:

    PYTHONPATH=src .venv/bin/python benchmarks/bench_ingest.py [--repeat 3] [--data ../shared/data]

For each dataset it reports the best of ``--repeat`` fresh loads (wall time of ``ingest``:
read, validate, write, checkpoint) and one re-run of the same load into the filled store, which
must insert nothing. The target is ML-1M under 30 s on 2 cores (docs/DATA.md has the numbers).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from metarec.data import ingest

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def bench(folder: Path, repeat: int) -> None:
    """Print the best fresh-load time and the re-run time for one dataset folder."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(repeat):
            store = Path(tmp) / f"bench-{attempt}.duckdb"
            started = time.perf_counter()
            report = ingest(folder, store)
            times.append(time.perf_counter() - started)
        rows = report.interactions.inserted
        started = time.perf_counter()
        again = ingest(folder, store)
        rerun = time.perf_counter() - started
        assert again.interactions.inserted == 0, "a re-run must insert nothing"
        size_mb = store.stat().st_size / 1e6
    best = min(times)
    print(
        f"{folder.name:>8}: {rows:>9,} interactions  fresh load best {best:6.2f} s "
        f"({rows / best:>9,.0f} rows/s; runs {', '.join(f'{t:.2f}' for t in times)})  "
        f"re-run {rerun:5.2f} s  store {size_mb:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--repeat", type=int, default=3, help="fresh loads per dataset")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, data: {args.data}")
    for name in ("ml-100k", "ml-1m"):
        folder = args.data / name
        if not folder.is_dir():
            print(f"{name}: skipped, {folder} is absent")
            continue
        bench(folder, args.repeat)


if __name__ == "__main__":
    main()
