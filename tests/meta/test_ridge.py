"""The closed-form inner loop: ALS fold-in as its special case, gradients through the solve."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from metarec.baselines.mf import solve_rows
from metarec.features.affinity import ContentIndex
from metarec.meta.ridge import (
    RidgeSupport,
    _top_discount,
    fold_in,
    init_ridge,
    lambda_loss,
    listwise_loss,
    ridge_scores,
    uses_content,
    zero_shot_affinity,
)


def _problem(seed: int = 0, n_users: int = 30, n_items: int = 7, f: int = 4, d: int = 3):
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n_users, f))
    factors[:3] = 0.0  # users without history
    users = rng.integers(0, n_users, size=25)
    items = rng.integers(0, n_items - 1, size=25)  # the last item has no support
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    weights = rng.uniform(0.5, 2.0, size=len(pairs))
    support = RidgeSupport(
        users=torch.as_tensor(pairs[:, 0]),
        items=torch.as_tensor(pairs[:, 1]),
        weights=torch.as_tensor(weights),
        n_items=n_items,
    )
    content = torch.as_tensor(rng.normal(size=(n_items, d)))
    return torch.as_tensor(factors), support, content, pairs, weights


def test_identity_parameters_are_als_fold_in() -> None:
    factors, support, content, pairs, weights = _problem()
    regularization, alpha = 3.0, 10.0
    params = init_ridge(factors.shape[1], content.shape[1], regularization, alpha)
    ours = fold_in(params, factors, support, content)
    confidence = sp.csr_matrix(
        (alpha * weights, (pairs[:, 1], pairs[:, 0])), shape=(support.n_items, len(factors))
    )
    reference = solve_rows(confidence, factors.numpy(), regularization)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5, rtol=1e-5)
    assert torch.all(ours[-1] == 0)  # no support and a zero prior: a zero vector, as in ALS


def test_an_item_without_support_gets_its_prior_shrunk_by_the_gram() -> None:
    factors, support, content, _, _ = _problem()
    params = init_ridge(factors.shape[1], content.shape[1], 3.0, 10.0)
    params["prior"] = torch.ones_like(params["prior"])
    vectors = fold_in(params, factors, support, content)
    g = factors.T @ factors
    expected = torch.linalg.solve(
        g + 3.0 * torch.eye(4, dtype=g.dtype),
        3.0 * content[-1].sum() * torch.ones(4, dtype=g.dtype),
    )
    torch.testing.assert_close(vectors[-1], expected)


def test_fold_in_is_the_documented_solve_item_by_item() -> None:
    """Each item's own system, written out (the module docstring's formula), against the solve
    that builds systems only for supported items and shares one for the rest."""
    factors, support, content, _, _ = _problem(seed=2, n_items=12)  # items 6..11 unsupported
    generator = torch.Generator().manual_seed(3)
    params = init_ridge(factors.shape[1], content.shape[1], 3.0, 10.0)
    params = {
        k: v + 0.2 * torch.randn(v.shape, generator=generator, dtype=v.dtype)
        for k, v in params.items()
    }  # a user map, a prior and a ridge strength that depends on the support size
    vectors = fold_in(params, factors, support, content)
    x = factors @ params["user_map"]
    counts = support.counts
    assert (counts == 0).sum() >= 2 and (counts > 0).sum() >= 2
    for j in range(support.n_items):
        mine = support.items == j
        x_j = x[support.users[mine]]
        c_j = torch.exp(params["log_alpha"]) * support.weights[mine]
        reg = torch.exp(params["log_reg"] + params["reg_slope"] * torch.log1p(counts[j]))
        system = x.T @ x + (x_j.T * (c_j - 1.0)) @ x_j + reg * torch.eye(x.shape[1])
        rhs = (c_j[:, None] * x_j).sum(0) + reg * (content[j] @ params["prior"])
        torch.testing.assert_close(vectors[j], torch.linalg.solve(system, rhs))


def test_fold_in_builds_systems_for_supported_items_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory follows the support, not the catalogue: 10,000 items with 6 supported ones solve
    six systems and one shared one (a system per item was 8 GB at 1e6 items)."""
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(40, 4, generator=generator, dtype=torch.float64)
    support = RidgeSupport(
        users=torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]),
        items=torch.tensor([3, 3, 10, 99, 5000, 5000, 7777, 9999]),
        weights=torch.ones(8, dtype=torch.float64),
        n_items=10_000,
    )
    content = torch.randn(10_000, 3, generator=generator, dtype=torch.float64)
    params = init_ridge(4, 3, 3.0, 10.0)
    params["prior"] = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    shapes: list[tuple[int, ...]] = []
    solve = torch.linalg.solve

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(a.shape))
        return solve(a, b)

    monkeypatch.setattr(torch.linalg, "solve", spy)
    vectors = fold_in(params, factors, support, content)
    assert sorted(shapes) == [(4, 4), (6, 4, 4)]
    assert vectors.shape == (10_000, 4) and bool(vectors.abs().sum(1).gt(0).all())


def test_meta_gradient_through_the_solve_matches_finite_differences() -> None:
    factors, support, content, _, _ = _problem(seed=1)
    params = init_ridge(factors.shape[1], content.shape[1], 3.0, 10.0)
    generator = torch.Generator().manual_seed(0)
    params = {
        k: v + 0.1 * torch.randn(v.shape, generator=generator, dtype=v.dtype)
        for k, v in params.items()
    }
    users = torch.arange(5, 15)
    relevant = torch.rand((10, support.n_items), generator=generator) < 0.3
    relevant[:, 0] = True
    exclude = torch.zeros_like(relevant)
    exclude[:, 1] = True
    relevant &= ~exclude
    names = list(params)

    def loss(*values: torch.Tensor) -> torch.Tensor:
        p = dict(zip(names, values, strict=True))
        vectors = fold_in(p, factors, support, content)
        scores = ridge_scores(p, factors[users], vectors, support.counts)
        return listwise_loss(scores, relevant, exclude, temperature=0.5)

    inputs = tuple(params[n].clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5)


def test_lambda_loss_by_hand() -> None:
    scores = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    relevant = torch.tensor([[False, True, False]])
    exclude = torch.zeros_like(relevant)
    # ranks 1, 2, 3: discounts 1, 1/log2(3), 1/2; one relevant item, so IDCG = 1
    d = 1 / np.log2(3)
    expected = abs(d - 1) * np.log1p(np.exp(1.0)) + abs(d - 0.5) * np.log1p(np.exp(-1.0))
    value = lambda_loss(scores, relevant, exclude, temperature=1.0, negatives=2)
    assert float(value) == pytest.approx(expected, rel=1e-9)
    # an excluded item is neither a negative nor a place in the ranking
    exclude[0, 0] = True
    d1 = 1.0  # item 1 now ranks first, item 2 second
    expected = abs(d1 - d) * np.log1p(np.exp(-1.0))
    value = lambda_loss(scores, relevant, exclude, temperature=1.0, negatives=2)
    assert float(value) == pytest.approx(expected, rel=1e-9)


def _sorted_discount(arranged: torch.Tensor, shuffle: torch.Tensor, cutoff: int) -> torch.Tensor:
    """The discount from a full stable sort (what lambda_loss computed before the top-only
    ranks)."""
    b, n = arranged.shape
    order = shuffle.gather(1, torch.argsort(arranged, dim=1, descending=True, stable=True))
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(1, n + 1).expand(b, n).clone())
    return 1.0 / torch.log2(1.0 + rank.to(arranged.dtype)) * (rank <= cutoff)


@pytest.mark.parametrize("seed", range(6))
def test_top_only_discount_equals_the_full_sorts(seed: int) -> None:
    """Bit for bit, with ties at and inside the top (scores rounded to a few values), excluded
    items at -inf, and rows with fewer finite scores than places."""
    generator = torch.Generator().manual_seed(seed)
    b, n, cutoff = 40, 60, 10
    scores = torch.randint(0, 5 + 10 * seed, (b, n), generator=generator).to(torch.float64)
    scores[torch.rand((b, n), generator=generator) < 0.2] = float("-inf")
    scores[0, 5:] = float("-inf")  # five finite scores for ten places
    scores[1] = 3.0  # every item tied
    shuffle = torch.argsort(torch.rand((b, n), generator=generator), dim=1)
    arranged = scores.gather(1, shuffle)
    expected = _sorted_discount(arranged, shuffle, cutoff)
    assert torch.equal(_top_discount(arranged, shuffle, cutoff), expected)
    assert int((expected > 0).sum()) == b * cutoff


def test_lambda_loss_gradient_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.randn((4, 9), generator=generator, dtype=torch.float64, requires_grad=True)
    relevant = torch.rand((4, 9), generator=generator) < 0.3
    relevant[:, 0] = True
    exclude = torch.zeros_like(relevant)
    exclude[:, 8] = True
    relevant &= ~exclude

    def loss(s: torch.Tensor) -> torch.Tensor:
        return lambda_loss(s, relevant, exclude, temperature=0.5, negatives=4)

    assert torch.autograd.gradcheck(loss, (scores,), eps=1e-6, atol=1e-5)


def test_the_zero_shot_content_term_applies_only_to_a_category_without_support() -> None:
    factors, support, content, _, _ = _problem()
    params = init_ridge(4, 3, regularization=2.0, alpha=5.0)
    assert float(params["zero_shot_content"]) == 0.0  # fold-in: no content term
    rows = factors[:5]
    affinity = torch.rand(5, support.n_items, dtype=torch.float64)
    vectors = fold_in(params, factors, support, content)
    zero = torch.zeros(support.n_items, dtype=torch.float64)
    plain = ridge_scores(params, rows, vectors, zero)
    assert not uses_content(params, zero)
    torch.testing.assert_close(ridge_scores(params, rows, vectors, zero, affinity), plain)
    weighted = {**params, "zero_shot_content": torch.tensor(2.0, dtype=torch.float64)}
    assert uses_content(weighted, zero) and not uses_content(weighted, support.counts)
    torch.testing.assert_close(
        ridge_scores(weighted, rows, vectors, zero, affinity), plain + 2.0 * affinity
    )
    with_support = ridge_scores(params, rows, vectors, support.counts)
    torch.testing.assert_close(
        ridge_scores(weighted, rows, vectors, support.counts, affinity), with_support
    )
    with pytest.raises(ValueError, match="affinity"):
        ridge_scores(weighted, rows, vectors, zero)
    saved_before = {k: v for k, v in params.items() if k != "zero_shot_content"}
    assert not uses_content(saved_before, zero)  # models saved before the term score as before
    torch.testing.assert_close(ridge_scores(saved_before, rows, vectors, zero), plain)


def test_zero_shot_gradient_through_the_prior_and_the_feature_scale_matches_fd() -> None:
    """With no support, the scores are the prior's dot products plus ``c_0`` times the scaled
    content affinity: the meta-gradient reaches the prior and the per-feature scale."""
    factors, support, _, _, _ = _problem(seed=2)
    generator = torch.Generator().manual_seed(1)
    content = (torch.rand((support.n_items, 3), generator=generator) < 0.5).double()
    profiles = torch.rand((10, 3), generator=generator, dtype=torch.float64)
    index = ContentIndex(content, torch.tensor([False, False, True]))
    empty = RidgeSupport(
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0, dtype=torch.float64),
        support.n_items,
    )
    params = init_ridge(factors.shape[1], 3, 3.0, 10.0)
    params["prior"] = 0.3 * torch.randn((3, 4), generator=generator, dtype=torch.float64)
    params["zero_shot_content"] = torch.tensor(2.0, dtype=torch.float64)
    params["zero_shot_log_scale"] = 0.2 * torch.randn(3, generator=generator, dtype=torch.float64)
    users = torch.arange(5, 15)
    relevant = torch.rand((10, support.n_items), generator=generator) < 0.3
    relevant[:, 0] = True
    exclude = torch.zeros_like(relevant)
    zero = torch.zeros(support.n_items, dtype=torch.float64)

    def loss(prior: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
        p = {**params, "prior": prior, "zero_shot_log_scale": log_scale}
        vectors = fold_in(p, factors, empty, content)
        affinity = zero_shot_affinity(p, index, profiles)
        return listwise_loss(
            ridge_scores(p, factors[users], vectors, zero, affinity), relevant, exclude, 0.5
        )

    inputs = (
        params["prior"].clone().requires_grad_(True),
        params["zero_shot_log_scale"].clone().requires_grad_(True),
    )
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5)
    # every scale one is the cosine; a model saved before the scale scores the same
    plain = {**params, "zero_shot_log_scale": torch.zeros(3, dtype=torch.float64)}
    torch.testing.assert_close(zero_shot_affinity(plain, index, profiles), index.affinity(profiles))
    older = {k: v for k, v in plain.items() if k != "zero_shot_log_scale"}
    torch.testing.assert_close(zero_shot_affinity(older, index, profiles), index.affinity(profiles))
