"""What the service's cap on an adaptation's positives (``max_adapt_positives``) saves and costs.

``cost``: adapt ``bench_serve.py``'s 1e4-item category with ``--positives`` extra positives
(inserted into a copy of its store), once per cap, each in a fresh process (one torch thread):
wall time of the adaptation and the peak resident size it added.

``quality``: ``metarec evaluate`` with every category-level launch's support capped (the
harness itself never caps: its launches use every support positive), once per cap: compare
the runs' ``metrics.json`` (``--out OUT/cap-<n>``; 0 = no cap). One process (``--jobs 1``):
the cap is patched into this process's harness, and workers would not carry it.

Usage::

    .venv/bin/python benchmarks/adapt_cap.py cost --workdir /tmp/bench-serve --positives 300000
    .venv/bin/python benchmarks/adapt_cap.py quality --out /tmp/cap -- \\
        --store runs/ml-1m.duckdb --quick --methods metarec-maml --shots 5,10 --jobs 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

CATEGORY = "Bench > Items 1e4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cost = sub.add_parser("cost")
    cost.add_argument("--workdir", type=Path, default=Path("/tmp/bench-serve"))
    cost.add_argument("--positives", type=int, default=300_000)
    cost.add_argument("--caps", default="0,10000,20000,30000,100000")
    quality = sub.add_parser("quality")
    quality.add_argument("--out", type=Path, required=True)
    quality.add_argument("--caps", default="0,20000")
    quality.add_argument("evaluate", nargs=argparse.REMAINDER)
    one = sub.add_parser("one")  # internal: one adaptation in this process
    one.add_argument("store", type=Path)
    one.add_argument("model", type=Path)
    one.add_argument("cap", type=int)
    args = parser.parse_args()
    if args.command == "cost":
        run_costs(args.workdir, args.positives, [int(c) for c in args.caps.split(",")])
    elif args.command == "quality":
        extra = [a for a in args.evaluate if a != "--"]
        if "--jobs" in extra and extra[extra.index("--jobs") + 1] != "1":
            parser.error("quality needs --jobs 1: worker processes would not carry the cap")
        extra = extra if "--jobs" in extra else [*extra, "--jobs", "1"]
        for cap in (int(c) for c in args.caps.split(",")):
            capped_evaluate(cap, [*extra, "--out", str(args.out / f"cap-{cap}")])
    else:
        adapt_once(args.store, args.model, args.cap)


def run_costs(workdir: Path, extra: int, caps: list[int]) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_serve import add_categories, prepare_models

    base, model_a, _ = prepare_models(workdir, 100, "mlp")
    store = workdir / "adapt-cap.duckdb"
    shutil.copy(base, store)
    add_categories(store, [10_000])
    _add_positives(store, extra)
    for cap in caps:
        model = workdir / "adapt-cap-model"
        shutil.rmtree(model, ignore_errors=True)
        shutil.copytree(model_a, model)
        command = [sys.executable, __file__, "one", str(store), str(model), str(cap)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        print(result.stdout.strip().splitlines()[-1], flush=True)


def _add_positives(store: Path, n: int) -> None:
    """``n`` clicks on the category's items by the store's users, pseudo-random pairs."""
    import duckdb

    with duckdb.connect(str(store)) as con:
        users = con.execute("SELECT count(*) FROM users").fetchall()[0][0]
        low, high = con.execute(
            "SELECT min(item_idx), max(item_idx) FROM items WHERE category = ?", [CATEGORY]
        ).fetchall()[0]
        con.execute(
            "INSERT INTO interactions SELECT 'cap-' || i, (hash(i) % ?)::INTEGER, "
            "(? + hash(i * 7 + 1) % ?)::INTEGER, 1900000000 + i, NULL, 'click', NULL "
            "FROM range(?) t(i)",
            [users, low, high - low + 1, n],
        )


def adapt_once(store_path: Path, model: Path, cap: int) -> None:
    import torch

    from metarec.data import Store
    from metarec.serving.recommender import Recommender

    torch.set_num_threads(1)
    with Store.open(store_path, read_only=True) as store:
        recommender = Recommender.open(model, store, max_adapt_positives=cap or None)
        recommender.view(CATEGORY)  # built before the baseline: the view is not the adaptation
        before = _resident_mb()
        started = time.perf_counter()
        adaptation = recommender.adapt(CATEGORY)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "cap": cap,
                "positives": len(recommender.view(CATEGORY).data.pos_user),
                "trained_on": adaptation.support_size,
                "seconds": round(seconds, 1),
                "peak_added_mb": round(peak - before),
            }
        )
    )


def capped_evaluate(cap: int, evaluate: list[str]) -> None:
    """``metarec evaluate`` in a child process whose launches sample at most ``cap``."""
    code = (
        "import sys, metarec.ranking.ranker as rk\n"
        "original = rk.support_batch\n"
        f"cap = {cap} or None\n"
        "def capped(*a, **k):\n"
        "    k['max_positives'] = cap\n"
        "    return original(*a, **k)\n"
        "rk.support_batch = capped\n"
        "from metarec.cli import main\n"
        "sys.argv = ['metarec', 'evaluate', *sys.argv[1:]]\n"
        "main()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"== cap {cap or 'none'}: metarec evaluate {' '.join(evaluate)}", flush=True)
    subprocess.run([sys.executable, "-c", code, *evaluate], env=env, check=True)


def _resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


if __name__ == "__main__":
    main()
