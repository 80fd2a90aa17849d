"""Wall time of everyday CLI commands, as a user's shell sees them (a fresh process each time).

    .venv/bin/python benchmarks/bench_cli.py [--store shop.duckdb] [--repeat 7]

Times ``metarec --help``, ``metarec --version`` and ``metarec categories --store S`` (on the
simulated bookstore, simulated and ingested into a temporary folder unless ``--store`` is given),
and the import time of ``metarec.cli`` and of the heavy libraries the commands no longer load
(``python -X importtime``). Prints one JSON object: the median and best of ``--repeat`` runs, and
the machine's load average before and after (the figures are only comparable on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METAREC = str(Path(sys.executable).with_name("metarec"))
TARGET_SECONDS = 1.0


def wall(args: list[str], repeat: int) -> dict[str, float]:
    """Median and best wall seconds of ``args`` run ``repeat`` times (after one warm-up run, so
    the page cache holds the interpreter and libraries as on a machine in use)."""
    subprocess.run(args, capture_output=True, check=True)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(times), 3), "best_s": round(min(times), 3)}


def import_seconds(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter (``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    last = [line for line in done.stderr.splitlines() if line.rstrip().endswith(f"| {module}")]
    return round(int(last[-1].split("|")[1]) / 1e6, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="A store to list (default: the simulated one).")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            store = Path(tmp) / "shop.duckdb"
            subprocess.run([METAREC, "simulate", "--out", f"{tmp}/data"], check=True, **_quiet())
            subprocess.run(
                [METAREC, "ingest", f"{tmp}/data", "--store", str(store), "--quiet"],
                check=True,
                **_quiet(),
            )
        commands = {
            "metarec --help": [METAREC, "--help"],
            "metarec --version": [METAREC, "--version"],
            "metarec categories": [METAREC, "categories", "--store", str(store)],
        }
        results: dict[str, object] = {
            name: wall(command, args.repeat) for name, command in commands.items()
        }
    results["import_s"] = {
        module: import_seconds(module)
        for module in ("metarec.cli", "pandas", "torch", "metarec.serving.recommender")
    }
    results["target_s"] = TARGET_SECONDS
    results["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(results, indent=1))


def _quiet() -> dict[str, int]:
    return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


if __name__ == "__main__":
    main()
