"""metarec-ridge's fold-in of one category (``meta.ridge.fold_in``): time and peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_fold_in.py [--sizes 1e4,1e5,1e6]

The solve a launch, an adaptation in the service and every validation of metarec-ridge run:
6,040 users with 32 factors (ML-1M's users), a category of n items with 3,000 support
positives from 600 users (the serving benchmark's launch: 600 users x 5), a learned prior over
40 content features. Each size runs in a fresh process, so its peak resident memory
(``ru_maxrss``, minus the process's memory before the solve) is the solve's alone. Prints one
row per size and a JSON line; ``benchmarks/against.sh`` compares two revisions. The vectors'
checksum lets two revisions' outputs be compared too.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

USERS, FACTORS, CONTENT, SUPPORT_USERS, SHOTS = 6040, 32, 40, 600, 5


def one(n_items: int) -> dict[str, float]:
    """Fold in one category of ``n_items`` items in this process: seconds, peak MB, checksum."""
    from metarec.meta.ridge import RidgeSupport, fold_in, init_ridge

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    f64 = torch.float64
    factors = torch.randn(USERS, FACTORS, generator=generator, dtype=f64) * 0.1
    users = torch.randperm(USERS, generator=generator)[:SUPPORT_USERS].repeat_interleave(SHOTS)
    # long-tailed items: a few popular ones, most supported once or never
    weights = 1.0 / torch.arange(1, n_items + 1, dtype=f64) ** 0.8
    items = torch.multinomial(weights, len(users), replacement=True, generator=generator)
    support = RidgeSupport(users, items, torch.ones(len(users), dtype=f64), n_items)
    content = torch.randn(n_items, CONTENT, generator=generator, dtype=f64)
    params = init_ridge(FACTORS, CONTENT, regularization=30.0, alpha=10.0)
    params["prior"] = torch.randn(CONTENT, FACTORS, generator=generator, dtype=f64) * 0.01
    gram = factors.T @ factors
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with torch.no_grad():
        vectors = fold_in(params, factors, support, content, gram=gram)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {
        "items": n_items,
        "seconds": round(seconds, 4),
        "peak_mb": round(peak / 1024, 1),
        "checksum": float(vectors.abs().sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1e4,1e5")
    parser.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(int(args.one))))
        return
    rows = []
    for size in args.sizes.split(","):
        done = subprocess.run(
            [sys.executable, __file__, "--one", size], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"{row['items']:>9,} items: {row['seconds']:.3f} s, peak +{row['peak_mb']:.0f} MB, "
            f"checksum {row['checksum']:.12g}",
            flush=True,
        )
    print(json.dumps({"fold_in": rows}))


if __name__ == "__main__":
    main()
