"""User-kNN across categories: similarities and scores by hand, a dense reference, fallbacks, the
known answer.

Shapes, determinism, blindness to the query and sealing: tests/evaluation/test_method_contract.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from tests.conftest import KnownFold, fold_of

from metarec.baselines.base import launch_popularity
from metarec.baselines.mf import TIE_BREAK
from metarec.baselines.simple import Popularity
from metarec.baselines.user_knn import UserKNN, neighbour_weights, user_similarity
from metarec.errors import NotAdaptedError

# Four users' histories over items a, b, c: u0 = {a, b}, u1 = {a, b}, u2 = {b, c}, u3 = {}.
HISTORY = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=float))
EVERYONE = np.arange(4)


def test_cosine_by_hand() -> None:
    sims = user_similarity(HISTORY, EVERYONE, EVERYONE, shrinkage=0.0, idf=False)
    # u0.u1 = 2 / (sqrt 2 sqrt 2); u0.u2 = 1 / (sqrt 2 sqrt 2); u3 has no history
    np.testing.assert_allclose(sims[0], [1.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(sims[2], [0.5, 0.5, 1.0, 0.0])
    assert not sims[3].any()


def test_shrinkage_by_hand() -> None:
    sims = user_similarity(HISTORY, np.array([0]), np.array([1, 2]), shrinkage=1.0, idf=False)
    # two shared items: 1 * 2 / (2 + 1); one shared item: 0.5 * 1 / (1 + 1)
    np.testing.assert_allclose(sims, [[2 / 3, 0.25]])


def test_idf_by_hand() -> None:
    """n = 3 users with history; df(a, b, c) = (2, 3, 1): b, liked by all, weighs log(4/4) = 0."""
    sims = user_similarity(HISTORY, np.array([0, 2]), EVERYONE, shrinkage=0.0, idf=True)
    # u0 = (log 4/3, 0, 0) = u1; u2 = (0, 0, log 2): orthogonal to both
    np.testing.assert_allclose(sims, [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], atol=1e-12)


def test_neighbour_weights_keep_the_k_largest() -> None:
    sims = np.array([[0.2, 0.9, 0.5, 0.0], [0.3, 0.1, 0.0, 0.7]])
    np.testing.assert_allclose(
        neighbour_weights(sims, 2), [[0.0, 0.9, 0.5, 0.0], [0.3, 0.0, 0.0, 0.7]]
    )
    assert neighbour_weights(sims, 4) is sims  # k covers everyone: nothing to drop


def dense_reference(method: UserKNN, launch) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The scores user by user, from dense arrays (what the vectorised path must equal)."""
    catalog, category = launch.catalog, launch.category
    positives = catalog.positives
    in_launch = catalog.item_category[positives["item_idx"].to_numpy()] == launch.name
    history = np.zeros((len(catalog.users), len(catalog.items)))
    history[positives["user_idx"][~in_launch], positives["item_idx"][~in_launch]] = 1.0
    votes = np.zeros((len(catalog.users), category.n_items))
    columns = np.searchsorted(category.item_idx, positives["item_idx"][in_launch])
    votes[positives["user_idx"][in_launch], columns] = 1.0
    n = (history.sum(axis=1) > 0).sum()
    x = history * np.log((1 + n) / (1 + history.sum(axis=0)))
    norms = np.linalg.norm(x, axis=1)
    out = np.zeros((len(launch.users), category.n_items))
    for row, u in enumerate(launch.users):
        for v in np.flatnonzero(votes.any(axis=1)):
            if v == u or norms[u] == 0 or norms[v] == 0:
                continue
            common = history[u] @ history[v]
            sim = x[u] @ x[v] / (norms[u] * norms[v]) * common / (common + method.shrinkage)
            out[row] += sim * votes[v]
    return out


@pytest.mark.parametrize("shots", [1, 3])
def test_scores_equal_a_dense_user_by_user_reference(known_fold: KnownFold, shots: int) -> None:
    method = UserKNN(neighbours=10_000, shrinkage=10.0, idf=True)  # every supporter a neighbour
    method.fit(known_fold.context)
    launch, _ = known_fold.launch(shots)
    scores = method.scores(launch).double()
    expected = torch.from_numpy(dense_reference(method, launch))
    assert expected.abs().max() > 0.5  # not vacuous
    # float32 scores, plus a tie-break below TIE_BREAK
    torch.testing.assert_close(scores, expected, atol=TIE_BREAK + 1e-5, rtol=1e-6)


def test_taste_from_other_categories_beats_popularity(known_fold: KnownFold) -> None:
    method, popularity = UserKNN(), Popularity()
    method.fit(known_fold.context)
    popularity.fit(known_fold.context)
    # measured: 0.71 at 3 shots and 0.68 at 1, popularity 0.52 (ceiling about 0.74)
    assert known_fold.auc(method, 3) > known_fold.auc(popularity, 3) + 0.12
    assert known_fold.auc(method, 1) > known_fold.auc(popularity, 1) + 0.1


def test_zero_shots_and_users_without_history_get_popularity_order(
    known_fold: KnownFold,
) -> None:
    method = UserKNN()
    method.fit(known_fold.context)
    launch, _ = known_fold.launch(0)
    assert method.scores(launch).abs().max() <= TIE_BREAK  # no supporter: tie-break alone

    launch, _ = known_fold.launch(3)
    user = int(launch.users[0])
    catalog = known_fold.catalog
    in_train = catalog.in_categories(known_fold.train)
    blank = fold_of(catalog.restricted(~(in_train & (catalog.positives["user_idx"] == user))))
    blank_launch, _ = blank.launch(3)
    row = int(np.flatnonzero(blank_launch.users == user)[0])
    method.fit(blank.context)
    scores = method.scores(blank_launch)
    assert scores[row].abs().max() <= TIE_BREAK
    pop = launch_popularity(blank_launch)
    order = torch.argsort(scores[row], descending=True)
    assert (pop[order][:-1] >= pop[order][1:]).all()  # popularity order (ties: seeded jitter)
    assert pop.max() > pop.min()  # not vacuous
    assert scores.abs().max() > 0.1  # the other users do get neighbours' votes


def test_scores_before_fit_are_refused(known_fold: KnownFold) -> None:
    launch, _ = known_fold.launch(1)
    with pytest.raises(NotAdaptedError, match="fit"):
        UserKNN().scores(launch)
