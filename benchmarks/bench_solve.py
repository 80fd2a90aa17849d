"""The least-squares half-step every fold-in method calls, on an ML-1M-shaped matrix.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_solve.py [--repeat 3]
    benchmarks/against.sh REV runs/solve-cmp benchmarks/bench_solve.py   # a ratio against REV

``metarec.models.least_squares.solve_rows`` solves 6,040 user rows (lognormal positive counts,
about 660k positives, as ML-1M's users) against 3,700 item factors at f = 64, 128 and 192, the
factor sizes of ALS, metarec-ridge and iALS's grid. This solve is 93% of ``ials-refit``'s time
on full ML-1M (py-spy, docs/BENCHMARKS.md). The answer itself is checked in
tests/baselines/test_mf.py; here only time is measured, best of ``--repeat``.

Prints a table and, last, a JSON summary: seconds per solve, per factor size.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.sparse as sp

from metarec.models.least_squares import solve_rows

FACTORS = (64, 128, 192)


def _matrix(n_rows: int = 6_040, n_cols: int = 3_700, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    counts = np.minimum(rng.lognormal(4.2, 1.0, n_rows).astype(int) + 1, n_cols)
    rows = np.repeat(np.arange(n_rows), counts)
    cols = np.concatenate([rng.choice(n_cols, c, replace=False) for c in counts])
    # ALS's confidence 1 + alpha * weight with alpha = 10
    return sp.csr_matrix((np.full(len(rows), 11.0), (rows, cols)), shape=(n_rows, n_cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    matrix = _matrix()
    rng = np.random.default_rng(1)
    summary: dict[str, float] = {}
    print(f"{matrix.shape[0]} rows, {matrix.nnz} positives")
    for f in FACTORS:
        factors = rng.normal(0.0, 0.1, (matrix.shape[1], f))
        ridge = rng.uniform(0.5, 2.0, matrix.shape[0])  # per row, as iALS's scaled ridge
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            solve_rows(matrix, factors, ridge)
            best = min(best, time.perf_counter() - start)
        summary[f"f={f} s"] = round(best, 3)
        print(f"f = {f:3d}: {best:6.2f} s per solve")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
