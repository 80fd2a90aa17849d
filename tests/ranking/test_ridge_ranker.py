"""A launch's own choice of support bias (``ranking.launch_bias.support_bias``), for ridge
models that had no validation category to choose it in training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import metarec.ranking.launch_bias as launch_bias
from metarec.config import load_config
from metarec.meta.ridge import RidgeSupport, init_ridge
from metarec.meta.ridge_model import RidgeModel
from metarec.ranking.launch_bias import (
    BIAS_GRID,
    MIN_HELD_OUT,
    _BiasedLists,
    _HeldOut,
    support_bias,
)
from metarec.ranking.metrics import rank_top_k, ranking_metrics

N_ITEMS = 40


def _model(factors: int) -> RidgeModel:
    return RidgeModel(
        config=load_config(None, seed=0),
        encoder=None,  # type: ignore[arg-type]  # not read by support_bias
        params=init_ridge(factors, 3, regularization=1.0, alpha=10.0),
        item_factors=torch.zeros(0, factors, dtype=torch.float64),
        factor_item_ids=[],
        regularization=1.0,
        alpha=10.0,
        splits={},
        bias_from_support=True,
    )


def _category() -> SimpleNamespace:
    return SimpleNamespace(name="C", n_items=N_ITEMS, item_x=torch.zeros(N_ITEMS, 3))


def _support(users: list[int], items: list[int]) -> RidgeSupport:
    return RidgeSupport(
        users=torch.tensor(users),
        items=torch.tensor(items),
        weights=torch.ones(len(users), dtype=torch.float64),
        n_items=N_ITEMS,
    )


def test_where_users_say_nothing_popularity_is_chosen() -> None:
    """No history anywhere (zero factors): only the support counts can rank, so a bias > 0."""
    rng = np.random.default_rng(0)
    n_users = 200
    popular = np.arange(30, 40)  # high indices: a tie order by index would not find them
    items = [
        int(rng.choice(popular)) if rng.random() < 0.8 else int(rng.integers(30))
        for _ in range(n_users)
    ]
    factors = torch.zeros(n_users, 4, dtype=torch.float64)
    bias = support_bias(
        _model(4), _category(), _support(list(range(n_users)), items), factors, factors.T @ factors
    )
    assert float(bias) > 0


def test_where_users_tastes_decide_fold_in_is_kept() -> None:
    """Two groups with orthogonal tastes; group B is larger, so its items are the popular ones:
    a large bias would push B's items to A's users, so the choice stays small."""
    users, items = [], []
    factors = torch.zeros(300, 2, dtype=torch.float64)
    rng = np.random.default_rng(1)
    for user in range(300):
        group = 0 if user < 100 else 1
        factors[user, group] = 1.0
        users.append(user)
        items.append(int(rng.integers(0, 20)) + 20 * group)  # A: items 0-19, B: 20-39
    bias = support_bias(
        _model(2), _category(), _support(users, items), factors, factors.T @ factors
    )
    assert float(bias) < BIAS_GRID[-1]
    assert float(bias) <= 0.1


def test_a_small_launch_still_chooses_from_every_supporter() -> None:
    """40 supporters: a held-out quarter (10) was too few to choose from, so such a launch kept
    fold-in; with every supporter held out once it finds the popular items."""
    rng = np.random.default_rng(2)
    n_users = 40
    items = [
        int(rng.choice([38, 39])) if rng.random() < 0.9 else int(rng.integers(30))
        for _ in range(n_users)
    ]
    factors = torch.zeros(n_users, 4, dtype=torch.float64)
    model = _model(4)
    bias = support_bias(
        model, _category(), _support(list(range(n_users)), items), factors, factors.T @ factors
    )
    assert float(model.params["support_bias"]) == 0.0
    assert float(bias) > 0


def test_too_few_supporters_keep_the_models_bias() -> None:
    factors = torch.zeros(MIN_HELD_OUT - 1, 4, dtype=torch.float64)
    users = list(range(MIN_HELD_OUT - 1))
    bias = support_bias(
        _model(4), _category(), _support(users, [39] * len(users)), factors, factors.T @ factors
    )
    assert float(bias) == 0.0


def _tied_scores(rng: np.random.Generator, users: int, items: int) -> torch.Tensor:
    """Scores on a coarse grid, so that many are equal (the tie rule decides the lists)."""
    return torch.from_numpy(rng.integers(-3, 4, (users, items)) / 4.0)


@pytest.mark.parametrize("supported", [0, 3, 10, 25, 40])
def test_biased_lists_are_rank_top_k_of_the_biased_scores(supported: int) -> None:
    """The lists from the unsupported items' top 10 and the supported items' equal rank_top_k
    over every item, ties to the lower index, for each bias of the grid."""
    rng = np.random.default_rng(supported)
    dots = _tied_scores(rng, 30, N_ITEMS)
    popularity = torch.zeros(N_ITEMS, dtype=torch.float64)
    chosen = rng.choice(N_ITEMS, supported, replace=False)
    popularity[chosen] = torch.log1p(torch.from_numpy(rng.integers(1, 4, supported).astype(float)))
    lists = _BiasedLists(dots, popularity)
    for bias in BIAS_GRID:
        assert torch.equal(lists.top_10(bias), rank_top_k(dots + bias * popularity, 10))


def test_held_out_ndcg_is_ranking_metrics_ndcg() -> None:
    rng = np.random.default_rng(3)
    scores = _tied_scores(rng, 25, N_ITEMS)
    rows = torch.from_numpy(rng.integers(0, 24, 60))  # user 24 has none: NaN
    items = torch.from_numpy(rng.integers(0, N_ITEMS, 60))
    rows, items = torch.cat([rows, rows[:5]]), torch.cat([items, items[:5]])  # repeats
    relevant = torch.zeros(25, N_ITEMS, dtype=torch.bool)
    relevant[rows, items] = True
    expected = ranking_metrics(scores, relevant, (10,))[("ndcg", 10)]
    got = _HeldOut(rows, items, 25, N_ITEMS).ndcg_at_10(rank_top_k(scores, 10))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert np.isnan(got[24])


def test_a_large_launch_scores_a_bounded_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past BIAS_SCORED_USERS supporters (fewer in a large catalogue, never fewer than
    BIAS_MIN_SCORED) the choice scores a seeded sample of them (a launch of 20,000 supporters
    at 1e5 items took 80 s and 8.7 GB scoring every held-out user of a quarter)."""
    scored: list[int] = []
    original = _HeldOut.__init__

    def spy(self: _HeldOut, rows: torch.Tensor, items: torch.Tensor, n: int, m: int) -> None:
        scored.append(n)
        original(self, rows, items, n, m)

    monkeypatch.setattr(_HeldOut, "__init__", spy)
    monkeypatch.setattr(launch_bias, "BIAS_SCORED_USERS", 60)
    monkeypatch.setattr(launch_bias, "BIAS_MIN_SCORED", 20)
    n_users = 400
    rng = np.random.default_rng(4)
    items = [int(rng.integers(N_ITEMS)) for _ in range(n_users)]
    factors = torch.from_numpy(rng.normal(size=(n_users, 4)))
    model = _model(4)
    support = _support(list(range(n_users)), items)
    first = support_bias(model, _category(), support, factors, factors.T @ factors)
    assert sum(scored) == 60
    again = support_bias(model, _category(), support, factors, factors.T @ factors)
    assert float(first) == float(again)  # the sample is seeded
    # a large catalogue scores fewer (users x items bounded), never fewer than the floor
    scored.clear()
    monkeypatch.setattr(launch_bias, "BIAS_SCORED_ENTRIES", 10 * N_ITEMS)
    support_bias(model, _category(), support, factors, factors.T @ factors)
    assert sum(scored) == 20
