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

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from metarec.baselines.base import Family, FitContext, Launch, launch_popularity
from metarec.errors import NotAdaptedError
from metarec.models.least_squares import positive_matrix, solve_rows
from metarec.ranking.popularity import TIE_BREAK, tie_broken

__all__ = ["TIE_BREAK", "positive_matrix", "solve_rows"]  # shared with the other fold-in methods

QUICK_ALS_ITERATIONS = 3
QUICK_BPR_ITERATIONS = 30


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
    """``scores`` (b, n_items) plus the launch popularity tie-break
    (:func:`metarec.ranking.popularity.tie_broken`): float32."""
    return tie_broken(scores, launch_popularity(launch), seed=seed, key=launch.name)


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
