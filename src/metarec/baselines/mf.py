"""Matrix factorisation with fold-in: ``implicit``'s ALS and BPR, fitted on the training categories.

A model fitted on the training categories knows nothing of a new category's items. At launch each
item gets a vector *folded in* from the support users who liked it, with the users' trained
vectors held fixed: the implicit-feedback least-squares solve of Hu et al. (the same closed form
ALS alternates on), every other user counting as a zero preference of confidence one. Scores are
``user · item`` plus a popularity tie-break. A user with no positive in the training categories
has a zero vector, so their scores are the tie-break alone: launch popularity order.

References:
    Hu, Koren, Volinsky. Collaborative Filtering for Implicit Feedback Datasets. ICDM 2008.
    Rendle, Freudenthaler, Gantner, Schmidt-Thieme. BPR: Bayesian Personalized Ranking from
    Implicit Feedback. UAI 2009.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from metarec.baselines.base import Family, FitContext, Launch, launch_popularity
from metarec.errors import NotAdaptedError
from metarec.ranking import popularity_scores

TIE_BREAK = 1e-6
"""Weight of launch popularity (scaled to [0, 1]) added to every score: it orders ties only."""

# Padded (rows, width, factors) gathers in solve_rows stay under this many float64 values.
_SOLVE_BUDGET = 1 << 22
_SOLVE_MAX_ROWS = 1024

QUICK_ALS_ITERATIONS = 3
QUICK_BPR_ITERATIONS = 30


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
    eye = torch.eye(f, dtype=torch.float64)
    penalty = torch.as_tensor(np.broadcast_to(regularization, confidence.shape[:1]).copy())
    out = torch.zeros((confidence.shape[0], f), dtype=torch.float64)
    counts = np.diff(confidence.indptr)
    for rows in _row_batches(counts, f):
        offsets = np.arange(counts[rows].max())
        valid = offsets[None, :] < counts[rows][:, None]
        entry = np.where(valid, confidence.indptr[rows][:, None] + offsets[None, :], 0)
        c = torch.from_numpy(np.where(valid, confidence.data[entry], 0.0).astype(np.float64))
        yr = y[torch.from_numpy(confidence.indices[entry].astype(np.int64))]  # (b, width, f)
        # padding entries have c = 0: they add nothing to either side
        weighted = yr * torch.where(c > 0, c - 1.0, 0.0)[..., None]
        ridge = penalty[torch.from_numpy(rows)].double()[:, None, None] * eye
        a = g + ridge + torch.bmm(weighted.transpose(1, 2), yr)
        rhs = torch.bmm(c[:, None, :], yr)[:, 0]
        out[torch.from_numpy(rows)] = torch.linalg.solve(a, rhs)
    return out.numpy()


def _row_batches(counts: np.ndarray, width_cost: int) -> Iterator[np.ndarray]:
    """Rows with positives, by increasing count, in batches whose padded gather fits the budget."""
    rows = np.flatnonzero(counts)
    rows = rows[np.argsort(counts[rows], kind="stable")]
    start = 0
    while start < len(rows):
        # counts grow along ``rows``, so the last row of a batch sets its width
        stop = start + 1
        while (
            stop < len(rows)
            and stop - start < _SOLVE_MAX_ROWS
            and (stop + 1 - start) * counts[rows[stop]] * width_cost <= _SOLVE_BUDGET
        ):
            stop += 1
        yield rows[start:stop]
        start = stop


def support_confidence(launch: Launch, alpha: float) -> sp.csr_matrix:
    """(n_items, n_users) CSR: ``alpha * weight`` of each support positive of the launch.

    Rows follow ``launch.category.item_idx``; columns are global user indices.
    """
    category = launch.category
    support = launch.catalog.positives_in([launch.name])
    rows = np.searchsorted(category.item_idx, support["item_idx"].to_numpy())
    return sp.csr_matrix(
        (
            alpha * support["weight"].to_numpy(dtype=np.float64),
            (rows, support["user_idx"].to_numpy()),
        ),
        shape=(category.n_items, len(launch.catalog.users)),
    )


def with_tie_break(scores: torch.Tensor, launch: Launch, seed: int) -> torch.Tensor:
    """``scores`` (b, n_items) plus :data:`TIE_BREAK` times launch popularity scaled to [0, 1).

    Items of equal popularity are ordered by a seeded random jitter (the same for every user,
    as in :class:`~metarec.baselines.simple.Popularity`), never by item index, which may encode
    something (MovieLens numbers its best-known films first).

    Returns:
        (b, n_items) float32 scores.
    """
    counts = launch_popularity(launch).double()
    ranked = popularity_scores(counts, seed=seed, key=launch.name, dtype=torch.float64)
    return (scores.double() + TIE_BREAK * ranked / (counts.max() + 1.0)).float()


def fit_factors(
    make_model: Callable[[], AlternatingLeastSquares | BayesianPersonalizedRanking],
    matrix: sp.csr_matrix,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a new model on ``matrix`` (n_users, n_items): user and item factors.

    A user or item without a positive keeps whatever the model initialised it to (random for
    BPR, a few conjugate-gradient steps from random for ALS); it is set to zero, so that such a
    user's scores are the popularity tie-break alone and such an item weighs nothing in a solve.

    Returns:
        ``(users, items)``: (n_users, f) and (n_items, f) float64 factors.
    """
    # implicit warns when its model is built, and slows down, if BLAS runs its own thread pool
    with threadpool_limits(1, "blas"):
        model = make_model()
        model.fit(matrix, show_progress=False)
    users = np.asarray(model.user_factors, dtype=np.float64)
    items = np.asarray(model.item_factors, dtype=np.float64)
    users[np.diff(matrix.indptr) == 0] = 0.0
    items[np.bincount(matrix.indices, minlength=matrix.shape[1]) == 0] = 0.0
    return users, items


def als_model(
    factors: int, regularization: float, alpha: float, iterations: int, seed: int
) -> AlternatingLeastSquares:
    """implicit's CPU ALS, single-threaded so that a seed gives the same factors every time."""
    return AlternatingLeastSquares(
        factors=factors,
        regularization=regularization,
        alpha=alpha,
        iterations=iterations,
        num_threads=1,  # reproducible; costs up to 2x wall time on 2 cores
        random_state=seed,
    )


class _FoldInMF:
    """Shared fit / fold-in / score logic; subclasses build the ``implicit`` model."""

    name: ClassVar[str]
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]]

    def __init__(self, factors: int, regularization: float, fold_in_regularization: float) -> None:
        self.factors = factors
        self.regularization = regularization
        self.fold_in_regularization = fold_in_regularization
        self.user_factors: np.ndarray | None = None  # (n_users, f), zero rows: no history
        self.seed = 0

    def _model(self, context: FitContext) -> AlternatingLeastSquares | BayesianPersonalizedRanking:
        raise NotImplementedError

    def _alpha(self) -> float:
        """Confidence scale of a positive at fold-in."""
        return 1.0

    def fit(self, context: FitContext) -> None:
        """Train on the training categories' positives (users x every item of the store)."""
        catalog = context.catalog
        matrix = positive_matrix(catalog.positives, len(catalog.users), len(catalog.items))
        self.seed = context.seed
        self.user_factors, _ = fit_factors(lambda: self._model(context), matrix)

    def scores(self, launch: Launch) -> torch.Tensor:
        """(len(launch.users), n_items) ``user · folded-in item`` plus the popularity tie-break.

        Raises:
            NotAdaptedError: :meth:`fit` was not called.
        """
        if self.user_factors is None:
            raise NotAdaptedError(f"{self.name}: call fit(context) before scores(launch)")
        items = solve_rows(
            support_confidence(launch, self._alpha()),
            self.user_factors,
            self.fold_in_regularization,
        )
        dots = torch.from_numpy(self.user_factors[launch.users] @ items.T)
        return with_tie_break(dots, launch, self.seed)


class ALS(_FoldInMF):
    """Implicit-feedback ALS (Hu et al. 2008) with least-squares fold-in of new items.

    Example:
        >>> method = ALS(factors=32, regularization=30.0)
        >>> method.fit(context)  # doctest: +SKIP
        >>> scores = method.scores(launch)  # (len(launch.users), n_items)  # doctest: +SKIP
    """

    name: ClassVar[str] = "als"
    grid: ClassVar[list[dict[str, Any]]] = [
        {"factors": 32, "regularization": 30.0},
        {"factors": 64, "regularization": 30.0},
        {"factors": 32, "regularization": 10.0},
        {"factors": 32, "regularization": 100.0},
    ]

    def __init__(
        self,
        factors: int = 32,
        regularization: float = 30.0,
        alpha: float = 10.0,
        iterations: int = 15,
    ) -> None:
        super().__init__(factors, regularization, regularization)
        self.alpha = alpha
        self.iterations = iterations

    def _alpha(self) -> float:
        return self.alpha

    def _model(self, context: FitContext) -> AlternatingLeastSquares:
        iterations = QUICK_ALS_ITERATIONS if context.quick else self.iterations
        return als_model(self.factors, self.regularization, self.alpha, iterations, context.seed)


class BPR(_FoldInMF):
    """BPR matrix factorisation (Rendle et al. 2009); new items by least-squares fold-in.

    BPR's user vectors carry a constant last entry (the item bias), so the fold-in also solves
    each new item's bias. The fold-in is the same ridge solve as ALS's with confidence one
    (``alpha = 1``): the item vector that best separates its supporters from everyone else.
    """

    name: ClassVar[str] = "bpr"
    grid: ClassVar[list[dict[str, Any]]] = [
        {"factors": 32, "fold_in_regularization": 30.0},
        {"factors": 64, "fold_in_regularization": 30.0},
        {"factors": 32, "fold_in_regularization": 10.0},
        {"factors": 32, "fold_in_regularization": 100.0},
    ]

    def __init__(
        self,
        factors: int = 32,
        regularization: float = 0.01,
        learning_rate: float = 0.01,
        iterations: int = 100,
        fold_in_regularization: float = 30.0,
    ) -> None:
        super().__init__(factors, regularization, fold_in_regularization)
        self.learning_rate = learning_rate
        self.iterations = iterations

    def _model(self, context: FitContext) -> BayesianPersonalizedRanking:
        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=QUICK_BPR_ITERATIONS if context.quick else self.iterations,
            num_threads=1,  # Hogwild SGD is only reproducible on one thread
            random_state=context.seed,
        )
