"""ALS and BPR with fold-in: the least-squares solve, the fallback, known answers.

Shapes, determinism, blindness to the query and sealing: tests/evaluation/test_method_contract.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from tests.conftest import KnownFold, fold_of
from threadpoolctl import threadpool_limits

from metarec.baselines.base import launch_popularity
from metarec.baselines.mf import ALS, BPR, TIE_BREAK, solve_rows
from metarec.baselines.simple import Popularity
from metarec.errors import NotAdaptedError


def test_solve_rows_matches_implicit_fold_in() -> None:
    """Our batched solve is implicit's recalculate_item / recalculate_user (Hu et al.)."""
    rng = np.random.default_rng(0)
    matrix = sp.random(120, 60, density=0.08, format="csr", random_state=1, dtype=np.float32)
    matrix.data[:] = rng.uniform(0.5, 1.5, matrix.nnz)
    with threadpool_limits(1, "blas"):  # implicit warns about a multi-threaded BLAS otherwise
        model = AlternatingLeastSquares(
            factors=6, regularization=0.7, alpha=5.0, iterations=3, num_threads=1, random_state=0
        )
        model.fit(matrix, show_progress=False)
    item_users = matrix.T.tocsr()
    expected_items = model.recalculate_item(np.arange(60), item_users)
    expected_users = model.recalculate_user(np.arange(120), matrix)
    items = solve_rows(item_users * 5.0, model.user_factors, 0.7)
    users = solve_rows(matrix * 5.0, model.item_factors, 0.7)
    np.testing.assert_allclose(items, expected_items, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(users, expected_users, rtol=1e-3, atol=1e-4)


def test_solve_rows_with_gram_is_the_closed_form_row_by_row() -> None:
    rng = np.random.default_rng(3)
    factors = rng.normal(size=(9, 3))
    dense = np.where(rng.random((5, 9)) < 0.3, rng.uniform(1, 4, (5, 9)), 0.0)
    dense[2] = 0.0  # a row without positives
    gram = factors[:4].T @ factors[:4]
    out = solve_rows(sp.csr_matrix(dense), factors, 0.5, gram=gram)
    for r, conf in enumerate(dense):
        on = conf > 0
        a = gram + 0.5 * np.eye(3) + (factors[on].T * (conf[on] - 1)) @ factors[on]
        expected = np.linalg.solve(a, factors[on].T @ conf[on]) if on.any() else np.zeros(3)
        np.testing.assert_allclose(out[r], expected, atol=1e-10)
    assert not out[2].any()


def test_solve_rows_does_not_depend_on_its_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows are solved in memory-bounded batches: one row per batch, small batches and one
    batch for every row give the same factors (to float rounding: a batched LAPACK call may
    round differently from a single one at small sizes)."""
    from metarec.models import least_squares

    rng = np.random.default_rng(4)
    factors = rng.normal(size=(40, 6))
    dense = np.where(rng.random((300, 40)) < 0.2, rng.uniform(1, 4, (300, 40)), 0.0)
    ridge = rng.uniform(0.5, 2.0, 300)
    results = []
    for budget, max_rows in ((36, 1), (36 * 5, 1024), (1 << 30, 1 << 30)):
        monkeypatch.setattr(least_squares, "_SOLVE_BUDGET", budget)
        monkeypatch.setattr(least_squares, "_SOLVE_MAX_ROWS", max_rows)
        results.append(solve_rows(sp.csr_matrix(dense), factors, ridge))
    assert results[0].any()
    for other in results[1:]:
        np.testing.assert_allclose(other, results[0], rtol=1e-10, atol=1e-14)


def test_solve_rows_solves_a_row_cholesky_cannot_factor() -> None:
    """A confidence below one can make a row's system indefinite: that row is solved by LU."""
    factors = np.eye(3)
    dense = np.array([[0.1, 0.0, 0.0], [2.0, 3.0, 0.0]])  # row 0: 1 - 0.9 + 0.05 < 0 at (0, 0)
    gram = 0.0 * np.eye(3)
    out = solve_rows(sp.csr_matrix(dense), factors, 0.05, gram=gram)
    # row 0: (0.05 + (0.1 - 1)) x_0 = 0.1; row 1 is positive definite
    np.testing.assert_allclose(out[0], [0.1 / (0.05 - 0.9), 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out[1], [2.0 / 1.05, 3.0 / 2.05, 0.0], atol=1e-12)


@pytest.mark.parametrize("method", [ALS, BPR])
def test_taste_from_other_categories_beats_popularity(known_fold: KnownFold, method: type) -> None:
    """Users' publisher taste carries across categories; popularity is blind to it."""
    model, popularity = method(), Popularity()
    model.fit(known_fold.context)
    popularity.fit(known_fold.context)
    # measured at 3 shots: ALS 0.69, BPR 0.72, popularity 0.52 (ceiling about 0.74)
    assert known_fold.auc(model, 3) > 0.65
    assert known_fold.auc(model, 3) > known_fold.auc(popularity, 3) + 0.12
    # measured at 1 shot: ALS 0.67, BPR 0.71, popularity 0.52
    assert known_fold.auc(model, 1) > known_fold.auc(popularity, 1) + 0.1


def test_user_without_training_history_falls_back_to_popularity(known_fold: KnownFold) -> None:
    launch, _ = known_fold.launch(3)
    user = int(launch.users[0])
    catalog = known_fold.catalog
    in_train = catalog.in_categories(known_fold.train)
    blank = fold_of(catalog.restricted(~(in_train & (catalog.positives["user_idx"] == user))))
    blank_launch, _ = blank.launch(3)
    row = int(np.flatnonzero(blank_launch.users == user)[0])
    model = ALS()
    model.fit(blank.context)
    assert model.user_factors is not None and not model.user_factors[user].any()
    scores = model.scores(blank_launch)[row].double()
    pop = launch_popularity(blank_launch)
    # the scores are the tie-break alone: popularity order, ties in a seeded random order
    assert scores.max() <= TIE_BREAK
    order = torch.argsort(scores, descending=True)
    assert (pop[order][:-1] >= pop[order][1:]).all()
    assert pop.max() > pop.min()  # not vacuous: popularity does vary


def test_scores_before_fit_are_refused(known_fold: KnownFold) -> None:
    launch, _ = known_fold.launch(1)
    with pytest.raises(NotAdaptedError, match="fit"):
        ALS().scores(launch)
