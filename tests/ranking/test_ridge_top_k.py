"""A ridge ranker's top-k in a large category: coarse low-precision scores, a proven error bound,
exact scores for the candidates the bound cannot rule out (``ranking.ridge.CoarseItems``).

The reference is the same ranker scoring every item exactly (the path of small categories).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import metarec.ranking.ridge as ridge_ranking
from metarec.config import load_config
from metarec.meta.ridge import init_ridge
from metarec.meta.ridge_model import RidgeModel
from metarec.ranking.popularity import tie_break
from metarec.ranking.ridge import COARSE_MIN_ITEMS, CoarseItems, RidgeRanker

F = 8
N_ITEMS = COARSE_MIN_ITEMS + 1_000
N_USERS = 40


def _ranker(vectors: torch.Tensor, counts: torch.Tensor, factors: torch.Tensor) -> RidgeRanker:
    params = init_ridge(F, 3, regularization=1.0, alpha=10.0)
    params["support_bias"] = torch.tensor(0.05, dtype=torch.float64)
    params["user_map"] = params["user_map"] + 0.1 * torch.randn(
        F, F, generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )
    model = RidgeModel(
        config=load_config(None, seed=0),
        encoder=None,  # type: ignore[arg-type]  # not read when ranking
        params=params,
        item_factors=torch.zeros(0, F, dtype=torch.float64),
        factor_item_ids=[],
        regularization=1.0,
        alpha=10.0,
        splits={},
    )
    category = SimpleNamespace(
        name="Big", n_items=len(vectors), item_x=torch.zeros(len(vectors), 3)
    )
    return RidgeRanker(
        model,
        category,  # type: ignore[arg-type]  # the fields a ranker reads
        factors,
        {"item_vectors": vectors, "counts": counts},
        adapted=True,
    )


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Item vectors of mixed scale (most items unsupported: zero vectors), with near-twins of
    supported items a relative 1e-4 apart, far below bfloat16's resolution (4e-3)."""
    g = torch.Generator().manual_seed(seed)
    vectors = torch.zeros(N_ITEMS, F, dtype=torch.float64)
    supported = torch.randperm(N_ITEMS, generator=g)[:3_000]
    scale = torch.exp(torch.randn(len(supported), 1, generator=g, dtype=torch.float64))
    vectors[supported] = scale * torch.randn(len(supported), F, generator=g, dtype=torch.float64)
    twins = torch.randperm(N_ITEMS, generator=g)[:500]
    vectors[twins] = vectors[supported[:500]] * (1.0 + 1e-4 * torch.rand(500, 1, generator=g))
    counts = torch.zeros(N_ITEMS, dtype=torch.float64)
    counts[supported] = torch.randint(1, 30, (len(supported),), generator=g).double()
    factors = torch.randn(N_USERS, F, generator=g, dtype=torch.float64)
    factors[:5] *= 1e3  # large and small users: the bound scales with |x_u|
    factors[5:10] *= 1e-3
    return vectors, counts, factors


def _seen(seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    seen = [
        torch.from_numpy(np.sort(rng.choice(N_ITEMS, 30, replace=False))) for _ in range(N_USERS)
    ]
    seen[0] = torch.arange(N_ITEMS - 4)  # fewer unseen items than k
    seen[1] = torch.empty(0, dtype=torch.long)
    return seen


def _exact(monkeypatch: pytest.MonkeyPatch, *data: torch.Tensor) -> RidgeRanker:
    monkeypatch.setattr(ridge_ranking, "COARSE_MIN_ITEMS", 10**9)
    ranker = _ranker(*data)
    assert ranker._coarse is None  # every item scored exactly
    monkeypatch.undo()
    return ranker


@pytest.mark.parametrize("bfloat16", [True, False])
def test_coarse_scores_stay_within_their_bound(
    monkeypatch: pytest.MonkeyPatch, bfloat16: bool
) -> None:
    monkeypatch.setattr(ridge_ranking, "_native_bfloat16", lambda: bfloat16)
    vectors, counts, factors = _data()
    ranker = _ranker(vectors, counts, factors)
    coarse = ranker._coarse
    assert coarse is not None
    assert coarse.vectors.dtype == (torch.bfloat16 if bfloat16 else torch.float32)
    users = np.arange(N_USERS)
    x = ranker._user_vectors(torch.as_tensor(users))
    approx = coarse.scores(x).view(N_USERS, -1)
    assert bool(approx[:, N_ITEMS:].eq(-torch.inf).all())  # past the last item
    error = (approx[:, :N_ITEMS].double() - ranker.scores(users).double()).abs().max(1).values
    bound = coarse.error_bound(x)
    assert bool((error <= bound).all())
    error64 = (approx[:, :N_ITEMS].double() - ranker.scores64(users)).abs().max(1).values
    assert bool((error64 <= bound).all())  # what lists are ordered by
    assert bool((error > 0).any())  # the coarse scores do differ: the bound is doing work


@pytest.mark.parametrize("bfloat16", [True, False])
def test_bounded_top_k_equals_scoring_every_item(
    monkeypatch: pytest.MonkeyPatch, bfloat16: bool
) -> None:
    data = _data()
    reference = _exact(monkeypatch, *data)
    monkeypatch.setattr(ridge_ranking, "_native_bfloat16", lambda: bfloat16)
    ranker = _ranker(*data)
    assert ranker._coarse is not None
    users, seen = np.arange(N_USERS), _seen(1)
    deepest = ranker._coarse.n_blocks // 4  # deeper lists score every item
    ks = [10] * (N_USERS - 3) + [1, 3, deepest]
    with monkeypatch.context() as patch:  # the bounded path never scores every item
        patch.setattr(RidgeRanker, "scores64", _refused)
        got = ranker.top_k_many(users, seen, ks)
    want = reference.top_k_many(users, seen, ks)
    for (positions, values), (want_positions, want_values), k, mine in zip(
        got, want, ks, seen, strict=True
    ):
        assert len(positions) == min(k, N_ITEMS - len(mine))
        assert torch.equal(positions, want_positions)
        torch.testing.assert_close(values, want_values, rtol=1e-6, atol=0.0)
        assert not bool(torch.isin(positions, mine).any())
    if bfloat16:  # the coarse order alone is wrong somewhere: the exact rescoring matters
        coarse = ranker._coarse
        approx = coarse.scores(ranker._user_vectors(torch.as_tensor(users))).view(N_USERS, -1)
        for row, mine in enumerate(seen):
            approx[row, mine] = -torch.inf
        coarse_top = torch.topk(approx, 10, dim=1).indices
        assert any(
            not torch.equal(coarse_top[row], got[row][0][:10]) for row in range(2, N_USERS - 3)
        )


def test_the_margin_keeps_the_items_coarse_rounding_moves_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cluster of items around one direction, scoring about 1 with every user, each
    component 1e-2 apart: each user's exact top 10 lies in the cluster, spread over a few of
    bfloat16's steps (2^-7 near 1), and the rounding of the inputs moves some across a step, so
    only the bound's margin below the coarse 10th best keeps them all."""
    vectors, counts, _ = _data()
    vectors *= 1e-3  # the rest of the catalogue far below the cluster
    g = torch.Generator().manual_seed(4)
    base = torch.randn(F, generator=g, dtype=torch.float64)
    cluster = torch.randperm(N_ITEMS, generator=g)[:40]
    spread = 1.0 + 1e-2 * torch.rand(40, F, generator=g, dtype=torch.float64)
    vectors[cluster] = base / base.dot(base) * spread
    counts[cluster] = 5.0  # one support term for the cluster: the dot products order it
    factors = base + 0.05 * torch.randn(N_USERS, F, generator=g, dtype=torch.float64)
    data = (vectors, counts, factors)
    reference = _exact(monkeypatch, *data)
    monkeypatch.setattr(ridge_ranking, "_native_bfloat16", lambda: True)
    ranker = _ranker(*data)
    users, seen = np.arange(N_USERS), [torch.empty(0, dtype=torch.long)] * N_USERS
    got = ranker.top_k_many(users, seen, [10] * N_USERS)
    want = reference.top_k_many(users, seen, [10] * N_USERS)
    for (positions, _), (want_positions, _) in zip(got, want, strict=True):
        assert torch.equal(positions, want_positions)
    coarse = ranker._coarse
    assert coarse is not None
    approx = coarse.scores(ranker._user_vectors(torch.as_tensor(users))).view(N_USERS, -1)
    tenth = torch.topk(approx, 10, dim=1).values[:, -1]
    below = [
        row
        for row, (positions, _) in enumerate(want)
        if bool((approx[row, positions] < tenth[row]).any())
    ]
    assert below  # some exact top-10 item lies below the coarse 10th best: the margin matters


@pytest.mark.parametrize("coarse", [True, False])
def test_many_users_are_ranked_in_passes_with_the_same_lists(
    monkeypatch: pytest.MonkeyPatch, coarse: bool
) -> None:
    data = _data()
    ranker = _exact(monkeypatch, *data) if not coarse else _ranker(*data)
    users, seen, ks = np.arange(N_USERS), _seen(3), [10] * N_USERS
    whole = ranker.top_k_many(users, seen, ks)
    monkeypatch.setattr(ridge_ranking, "PASS_SCORES", 7 * N_ITEMS)  # passes of 7 users
    calls: list[int] = []  # users per pass
    if coarse:
        bounded = RidgeRanker._top_k_bounded
        monkeypatch.setattr(
            RidgeRanker,
            "_top_k_bounded",
            lambda self, x, *rest: calls.append(len(x)) or bounded(self, x, *rest),
        )
    else:
        scores = RidgeRanker.scores64
        monkeypatch.setattr(
            RidgeRanker, "scores64", lambda self, u: calls.append(len(u)) or scores(self, u)
        )
    in_passes = ranker.top_k_many(users, seen, ks)
    assert calls == [7] * 5 + [5]
    for (positions, values), (want_positions, want_values) in zip(in_passes, whole, strict=True):
        assert torch.equal(positions, want_positions)
        assert torch.equal(values, want_values)


@pytest.mark.parametrize("coarse", [True, False])
def test_equal_float32_scores_are_ordered_by_the_tie_break(
    monkeypatch: pytest.MonkeyPatch, coarse: bool
) -> None:
    """Twins (same vector, same support count) score the same in float32; the popularity
    tie-break, a millionth of a score, still orders them, never their positions."""
    vectors, counts, factors = _data()
    g = torch.Generator().manual_seed(5)
    twins = torch.randperm(N_ITEMS, generator=g)[:6]
    vectors[twins] = 100.0 * factors[2] / factors[2].norm()  # at the top of user 2's list
    counts[twins] = 4.0
    data = (vectors, counts, factors)
    ranker = _ranker(*data) if coarse else _exact(monkeypatch, *data)
    assert (ranker._coarse is not None) == coarse
    ((positions, values),) = ranker.top_k_many(
        np.array([2]), [torch.empty(0, dtype=torch.long)], [6]
    )
    assert set(positions.tolist()) == set(twins.tolist())
    assert len(set(values.tolist())) < 6  # equal in float32
    tie = ranker._items.tie
    assert torch.equal(positions, twins[torch.argsort(tie[twins], descending=True)])
    assert not torch.equal(positions, torch.sort(twins).values)  # not by position here


def test_deep_lists_score_every_item(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data()
    reference = _exact(monkeypatch, *data)
    ranker = _ranker(*data)
    users, seen = np.arange(N_USERS), _seen(2)
    ks = [10] * (N_USERS - 1) + [ranker._coarse.n_blocks // 4 + 1]
    for (positions, values), (want_positions, want_values) in zip(
        ranker.top_k_many(users, seen, ks), reference.top_k_many(users, seen, ks), strict=True
    ):
        assert torch.equal(positions, want_positions)
        assert torch.equal(values, want_values)


def _refused(*_: object) -> None:
    raise AssertionError("scored every item")


def test_coarse_copy_refused_for_values_it_cannot_bound() -> None:
    vectors, counts, _ = _data()
    offsets = tie_break(counts, seed=0, key="Big").float()
    assert CoarseItems.build(vectors, offsets) is not None
    broken = vectors.clone()
    broken[3, 0] = float("nan")
    assert CoarseItems.build(broken, offsets) is None
    assert CoarseItems.build(vectors * 1e31, offsets) is None
    coarse = CoarseItems.build(vectors, offsets)
    assert coarse is not None
    assert not coarse.bounds(torch.full((1, F), float("inf"), dtype=torch.float64))
    assert coarse.bounds(torch.ones((1, F), dtype=torch.float64))


def test_non_finite_items_are_still_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN item vector takes the exact path, whose lists carry the NaN (the service answers
    NonFiniteError for it)."""
    vectors, counts, factors = _data()
    vectors[7] = float("nan")
    ranker = _ranker(vectors, counts, factors)
    assert ranker._coarse is None
    ((_, values),) = ranker.top_k_many(np.array([2]), [torch.empty(0, dtype=torch.long)], [10])
    assert bool(values.isnan().any())


def test_scores_are_the_float32_rounding_of_scores64() -> None:
    """Evaluation ranks by ``scores`` (summed a few rows at a time), lists by ``scores64``."""
    ranker = _ranker(*_data())
    users = np.arange(N_USERS)
    assert torch.equal(ranker.scores(users), ranker.scores64(users).float())
