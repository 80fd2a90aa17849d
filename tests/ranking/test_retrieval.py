"""Dot-product retrieval + exact re-rank: the linear form is exact, and the short list finds the
exact ranking's top items."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metarec.config import ModelConfig
from metarec.features import input_dim
from metarec.meta.inner import task_loss
from metarec.models.folded import fold_users, head, head_gradient, linear_features
from metarec.models.scorer import init_params, score
from metarec.ranking.inputs import UserInputs, item_side
from metarec.ranking.retrieval import (
    DEFAULT_REFERENCE_ITEMS,
    ItemIndex,
    Projection,
    build_index,
    category_fingerprint,
    fit_projection,
    recall_at_k,
    retrieve_top_k,
    top_k_positions,
    user_query,
)
from metarec.tasks import (
    CategoryData,
    candidate_rows_for,
    split_launch,
    support_batch,
    support_state,
)

D_ATTR, D_CF = 12, 4


def synthetic_category(n_items: int = 3000, n_users: int = 120, seed: int = 0) -> CategoryData:
    """A category with one-hot-ish attributes whose users pick items by popularity (long tail)
    and by taste (their profile against the item's attributes), six positives each."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    item_x = (torch.rand(n_items, D_ATTR, generator=g) < 0.25).float()
    item_x[:, 0] = 1.0  # a constant column, like the category path
    profile = torch.rand(n_users, D_ATTR + D_CF, generator=g)
    popularity = -0.9 * np.log(np.arange(1, n_items + 1))
    per_user = 6
    picks = []
    for user in range(n_users):
        logits = popularity + 4.0 * (item_x @ (profile[user, :D_ATTR] - 0.5)).numpy()
        p = np.exp(logits - logits.max())
        picks.append(rng.choice(n_items, per_user, replace=False, p=p / p.sum()))
    return CategoryData(
        name="Synthetic",
        item_idx=np.arange(n_items),
        item_x=item_x,
        users=np.arange(n_users),
        pos_user=np.repeat(np.arange(n_users), per_user),
        pos_item=np.concatenate(picks),
        pos_rank=np.tile(np.arange(per_user), n_users),
        pos_time=np.full(n_users * per_user, np.nan),
        user_count=np.full(n_users, per_user),
        profile=profile,
        n_other=torch.full((n_users,), 7.0),
    )


def user_inputs(category: CategoryData, state, position: int) -> UserInputs:
    mine = category.pos_user == position
    return UserInputs(
        position,
        category.profile[position],
        category.n_other[position],
        state.user_sum[position],
        state.user_n[position],
        torch.from_numpy(np.unique(category.pos_item[mine])),
    )


def exact_scores(params, category, state, user: UserInputs) -> torch.Tensor:
    rows = candidate_rows_for(
        category,
        state,
        profile=user.profile[None],
        n_other=user.n_other[None],
        support_sum=user.support_sum[None],
        support_n=user.support_n[None],
    )
    scores = score(params, rows)[0]
    scores[user.seen] = -torch.inf
    return scores


def make_params(hidden: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return init_params(input_dim(D_ATTR + D_CF), ModelConfig(hidden=hidden), generator=generator)


def fitted(category, state, index: ItemIndex, params, *, rank: int, users) -> Projection:
    """A projection fitted to the queries of ``users`` (positions in the category)."""
    queries = torch.stack(
        [user_query(params, index, user_inputs(category, state, u), D_CF).attributes for u in users]
    )
    return fit_projection(category, state, index, queries, rank=rank)


@pytest.fixture(scope="module")
def category() -> CategoryData:
    return synthetic_category()


def test_linear_scorer_is_ranked_exactly_by_the_dot_product(category: CategoryData) -> None:
    """With no hidden layer the scorer *is* its first layer: the dot product must equal the exact
    score up to a per-user constant (this pins the layout of pair_features)."""
    state = support_state(category, split_launch(category))
    params = make_params(hidden=())
    index = build_index(category, state)
    # the whole width, fitted to other users' queries: no projection error
    projection = fitted(category, state, index, params, rank=1_000, users=range(50, 60))
    assert projection.rank == 2 * (D_ATTR + D_CF)
    for position in (0, 7, 33):
        user = user_inputs(category, state, position)
        query = user_query(params, index, user, D_CF)
        layer = fold_users(params, user.side(D_CF))
        approx = projection.vectors @ query.project(projection)
        approx += query.affinity * layer.affinity(item_side(category, state))[0]
        exact = score(params, _rows(category, state, user))
        offset = exact - approx
        assert float(offset.std()) < 1e-4 * float(exact.std())


def test_index_keeps_the_affinity_rows_of_supported_items_only(category: CategoryData) -> None:
    """Retrieval adds the affinity over supported items only: exact, because every other item's
    summed supporter profile is zero."""
    state = support_state(category, split_launch(category))
    index = build_index(category, state)
    assert torch.equal(index.supported, torch.nonzero(state.pop > 0).squeeze(1))
    assert 0 < len(index.supported) < category.n_items
    assert torch.equal(index.supported_unit_sum, state.item_unit_sum[index.supported])
    assert not state.item_unit_sum[state.pop == 0].any()


def test_first_layer_folded_with_the_user_equals_the_scorer_rows(category: CategoryData) -> None:
    state = support_state(category, split_launch(category))
    params = make_params(hidden=(16, 8), seed=4)
    items = torch.arange(0, category.n_items, 7)
    d = D_ATTR + D_CF
    no_history = UserInputs(
        None,
        torch.zeros(d),
        torch.zeros(()),
        torch.zeros(d),
        torch.zeros(()),
        torch.zeros(0).long(),
    )
    for user in (user_inputs(category, state, 0), user_inputs(category, state, 5), no_history):
        layer = fold_users(params, user.side(D_CF))
        chosen = item_side(category, state, items)
        folded = layer.h1(chosen)[0]
        rows = _rows(category, state, user)[items]
        direct = F.linear(rows, params["layers.0.weight"], params["layers.0.bias"])
        assert torch.allclose(folded, direct, atol=1e-5)
        assert torch.allclose(head(params, folded), score(params, rows), atol=1e-5)
        # the same layer as an affine map of the items' linear features (what retrieval reads)
        weight, bias = layer.as_linear()
        linear = F.linear(linear_features(chosen), weight[0], bias[0])
        linear += layer.affinity(chosen)[0][:, None] * layer.column("affinity")
        assert torch.allclose(linear, direct, atol=1e-5)


def _rows(category, state, user):
    return candidate_rows_for(
        category,
        state,
        profile=user.profile[None],
        n_other=user.n_other[None],
        support_sum=user.support_sum[None],
        support_n=user.support_n[None],
    )[0]


def test_head_gradient_matches_autograd() -> None:
    params = make_params(hidden=(16, 8))
    h1 = torch.randn(50, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    hidden = torch.relu(h1)
    hidden = torch.relu(
        torch.nn.functional.linear(hidden, params["layers.1.weight"], params["layers.1.bias"])
    )
    out = torch.nn.functional.linear(hidden, params["layers.2.weight"], params["layers.2.bias"])
    (out.sum() / len(h1)).backward()
    assert torch.allclose(head_gradient(params, h1.detach()), h1.grad.sum(0), atol=1e-6)


@pytest.mark.parametrize("hidden", [(16, 8), (16,), ()])
def test_head_gradient_of_many_users_equals_each(hidden: tuple[int, ...]) -> None:
    """(b, m, h) rows give each user's (m, h) gradient: the service's batches call it so."""
    params = make_params(hidden=hidden)  # (): no hidden layer, the first layer is the score
    h = params["layers.0.weight"].shape[0]
    h1 = torch.randn(5, 40, h, generator=torch.Generator().manual_seed(2))
    batched = head_gradient(params, h1)
    assert batched.shape == (5, h)
    for user in range(5):
        torch.testing.assert_close(
            batched[user], head_gradient(params, h1[user]), rtol=1e-6, atol=1e-7
        )


def trained_params(category: CategoryData, hidden: tuple[int, ...], steps: int = 100):
    """A scorer fitted to the category's positives (plain Adam on the support rows)."""
    state = support_state(category, split_launch(category))
    params = {k: v.requires_grad_(True) for k, v in make_params(hidden, seed=3).items()}
    optimiser = torch.optim.Adam(params.values(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = support_batch(
            category, state, split_launch(category), n_negatives=8, generator=generator
        )
        loss = task_loss(params, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return {k: v.detach() for k, v in params.items()}


def test_short_list_recalls_the_exact_top_10_of_a_trained_scorer(
    category: CategoryData,
) -> None:
    """A 150-item short list (5% of the category) holds >= 95% of the exact top 10. (Trained
    scorers are close to linear around their top items; an untrained random MLP is not, and
    gets about 0.8: docs/SERVING.md.)"""
    state = support_state(category, split_launch(category))
    params = trained_params(category, hidden=(32, 16))
    index = build_index(category, state)
    # fitted to half the users, tested on the other half
    projection = fitted(category, state, index, params, rank=8, users=range(1, 120, 2))
    recalls = []
    for position in range(0, category.n_users, 2):
        user = user_inputs(category, state, position)
        exact = exact_scores(params, category, state, user)
        found, scores = retrieve_top_k(
            params, category, state, index, projection, user, 10, short_list=150
        )
        recalls.append(recall_at_k(found, torch.topk(exact, 10).indices))
        # what is returned carries its exact score, best first
        assert torch.allclose(scores, exact[found], atol=1e-5)
        assert torch.all(scores[:-1] >= scores[1:])
    assert np.mean(recalls) >= 0.95, recalls


def test_short_list_covering_the_category_is_the_full_ranking(category: CategoryData) -> None:
    state = support_state(category, split_launch(category))
    params = make_params(hidden=(8,), seed=5)
    user = user_inputs(category, state, 2)
    exact = exact_scores(params, category, state, user)
    found, scores = retrieve_top_k(params, category, state, None, None, user, 20, short_list=10)
    # a full ranking: the best 20 scores (equal scores may come in either order)
    assert len(set(found.tolist())) == 20
    assert torch.allclose(exact[found], torch.topk(exact, 20).values, atol=1e-6)
    assert torch.allclose(scores, torch.topk(exact, 20).values, atol=1e-6)


def test_seen_items_are_never_returned_and_k_is_capped() -> None:
    small = synthetic_category(n_items=30, n_users=5)
    state = support_state(small, split_launch(small))
    params = make_params(hidden=(8,))
    user = user_inputs(small, state, 1)
    found, _ = retrieve_top_k(params, small, state, None, None, user, 1_000, short_list=5)
    assert len(found) == small.n_items - len(user.seen)
    assert not set(found.tolist()) & set(user.seen.tolist())


def test_index_and_projection_shapes(category: CategoryData) -> None:
    state = support_state(category, split_launch(category))
    index = build_index(category, state)
    width = 2 * (D_ATTR + D_CF)
    phi = linear_features(item_side(category, state))
    assert torch.allclose(index.gram, phi[:, :width].double().T @ phi[:, :width].double())
    # reference items are the most supported ones
    others = torch.ones(category.n_items, dtype=torch.bool)
    others[index.reference] = False
    assert len(index.reference) == DEFAULT_REFERENCE_ITEMS
    assert state.pop[index.reference].min() >= state.pop[others].max()

    params = make_params(hidden=(8,))
    projection = fitted(category, state, index, params, rank=4, users=range(10))
    assert projection.vectors.shape == (category.n_items, 6)
    assert projection.columns.is_contiguous() and projection.transform.shape == (4, width)
    assert torch.equal(projection.vectors[:, -2:], phi[:, -2:])  # popularity kept exactly


def test_fingerprint_follows_support(category: CategoryData) -> None:
    index = build_index(category, support_state(category, split_launch(category)))
    fewer = dataclasses.replace(
        category, pos_user=category.pos_user[:-1], pos_item=category.pos_item[:-1]
    )
    assert category_fingerprint(fewer) != index.fingerprint
    assert category_fingerprint(category) == index.fingerprint


def test_recall_at_k() -> None:
    assert recall_at_k(torch.tensor([1, 2, 3]), torch.tensor([3, 4])) == 0.5
    assert recall_at_k(torch.tensor([1]), torch.tensor([], dtype=torch.long)) == 1.0


@pytest.mark.parametrize("n", [1_000, 300_000, 300_001 + 77])
def test_top_k_positions_equal_torch_topk(n: int) -> None:
    values = torch.randn(n, generator=torch.Generator().manual_seed(n))
    values[::5] = -torch.inf  # seen items
    found = top_k_positions(values, 300)
    assert set(found.tolist()) == set(torch.topk(values, 300).indices.tolist())
