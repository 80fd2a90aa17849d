"""Implicit-feedback least squares (Hu, Koren, Volinsky, ICDM 2008): the closed-form half-step.

ALS alternates these solves; fold-in runs one of them with the other side held fixed. Every
method that folds users or items in (the ALS/BPR/EMCDR/iALS baselines, metarec-ridge in
evaluation and in serving) calls :func:`solve_rows`, so they cannot disagree on the algebra.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

# A batch's padded (rows, width, f) gather and its (rows, f, f) systems each stay under this many
# float64 values (8 MiB): under glibc's largest mmap threshold (32 MiB), so they come from the
# heap and are reused batch after batch instead of being mapped and page-faulted in afresh.
# Batches of up to 1,024 rows with 4M-value gathers (systems of 128 MiB at f = 128) solved
# benchmarks/bench_solve.py's rows 1.24x to 1.5x slower, to the same factors (docs/BENCHMARKS.md,
# "Fourth pass").
_SOLVE_BUDGET = 1 << 20
_SOLVE_MAX_ROWS = 1024


def positive_matrix(positives: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    """(n_users, n_items) float32 CSR of the positives' weights (zero elsewhere)."""
    return sp.csr_matrix(
        (
            positives["weight"].to_numpy(dtype=np.float32),
            (positives["user_idx"].to_numpy(), positives["item_idx"].to_numpy()),
        ),
        shape=(n_users, n_items),
        dtype=np.float32,
    )


def solve_rows(
    confidence: sp.csr_matrix,
    factors: np.ndarray,
    regularization: float | np.ndarray,
    *,
    gram: np.ndarray | None = None,
) -> np.ndarray:
    """Least-squares factors of each row against fixed factors of the other side (Hu et al.).

    For row ``r`` with confidences ``c_rj`` on its positives (preference 1) and confidence one on
    every other column (preference 0)::

        x_r = (G + sum_j (c_rj - 1) y_j y_j^T + lambda I)^-1  sum_j c_rj y_j,   G = Y^T Y

    This is ALS's half-step, and implicit's ``recalculate_item`` / ``recalculate_user``. Rows
    without a positive get zero factors. Rows are solved in batches padded to a common width.

    Args:
        confidence: (n_rows, m) CSR, the confidence ``c_rj`` of each positive.
        factors: (m, f) the other side's fixed factors ``Y``.
        regularization: ``lambda``, or (n_rows,) one per row (frequency-scaled, as in iALS).
        gram: (f, f) ``G`` when the zero-preference columns are not all of ``factors`` (for
            instance only some categories' items); ``factors.T @ factors`` by default.

    Returns:
        (n_rows, f) float64 factors.
    """
    y = torch.as_tensor(np.asarray(factors, dtype=np.float64))
    f = y.shape[1]
    g = y.T @ y if gram is None else torch.as_tensor(np.asarray(gram, dtype=np.float64))
    penalty = torch.as_tensor(np.broadcast_to(regularization, confidence.shape[:1]).copy())
    out = torch.zeros((confidence.shape[0], f), dtype=torch.float64)
    counts = np.diff(confidence.indptr)
    max_rows = max(1, min(_SOLVE_MAX_ROWS, _SOLVE_BUDGET // (f * f)))
    for rows in _row_batches(counts, f, max_rows=max_rows):
        offsets = np.arange(counts[rows].max())
        valid = offsets[None, :] < counts[rows][:, None]
        entry = np.where(valid, confidence.indptr[rows][:, None] + offsets[None, :], 0)
        c = torch.from_numpy(np.where(valid, confidence.data[entry], 0.0).astype(np.float64))
        yr = y[torch.from_numpy(confidence.indices[entry].astype(np.int64))]  # (b, width, f)
        # padding entries have c = 0: they add nothing to either side
        weighted = yr * torch.where(c > 0, c - 1.0, 0.0)[..., None]
        a = torch.baddbmm(g.expand(len(rows), f, f), weighted.transpose(1, 2), yr)
        a.diagonal(dim1=1, dim2=2).add_(penalty[torch.from_numpy(rows)].double()[:, None])
        rhs = torch.bmm(c[:, None, :], yr).transpose(1, 2)
        # a is symmetric positive definite for lambda > 0 and confidences >= 1: Cholesky does
        # half of LU's work (benchmarks/bench_solve.py); LU only for a row where it fails
        factor, info = torch.linalg.cholesky_ex(a)
        solved = torch.cholesky_solve(rhs, factor)[..., 0]
        failed = info != 0
        if failed.any():
            solved[failed] = torch.linalg.solve(a[failed], rhs[failed][..., 0])
        out[torch.from_numpy(rows)] = solved
    return out.numpy()


def _row_batches(counts: np.ndarray, width_cost: int, *, max_rows: int) -> Iterator[np.ndarray]:
    """Rows with positives, by increasing count, in batches of at most ``max_rows`` whose padded
    gather fits the budget."""
    rows = np.flatnonzero(counts)
    rows = rows[np.argsort(counts[rows], kind="stable")]
    start = 0
    while start < len(rows):
        # counts grow along ``rows``, so the last row of a batch sets its width
        stop = start + 1
        while (
            stop < len(rows)
            and stop - start < max_rows
            and (stop + 1 - start) * counts[rows[stop]] * width_cost <= _SOLVE_BUDGET
        ):
            stop += 1
        yield rows[start:stop]
        start = stop
