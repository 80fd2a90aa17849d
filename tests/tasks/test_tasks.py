"""Support/query splits, row construction (leave-one-out, train/serve parity), sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.config import TaskConfig
from metarec.errors import DataError
from metarec.features.users import ProfileTable
from metarec.tasks import (
    TaskSampler,
    build_categories,
    candidate_rows,
    order_positives,
    pair_rows,
    split_k_shot,
    split_launch,
    support_batch,
    support_state,
)
from metarec.tasks.rows import sample_negatives

N_ITEMS, D, R = 12, 3, 2


def _category(seed: int = 0):
    """One category "A" of 12 items, 6 users with 1..6 positives, and a second category "B"."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {
            "item_idx": np.arange(N_ITEMS + 3),
            "category": ["A"] * N_ITEMS + ["B"] * 3,
        }
    )
    rows = []
    for user in range(6):
        for rank, item in enumerate(rng.choice(N_ITEMS, size=user + 1, replace=False)):
            rows.append((user, int(item), 1000 * user + 10 * rank, 1.0))
        rows.append((user, N_ITEMS + user % 3, 1, 1.0))  # one positive in B each
    pos = pd.DataFrame(rows, columns=["user_idx", "item_idx", "timestamp", "weight"])
    pos["timestamp"] = pos["timestamp"].astype("Int64")
    item_x = torch.randn(N_ITEMS + 3, D, generator=torch.Generator().manual_seed(seed))
    factors = torch.randn(N_ITEMS + 3, R, generator=torch.Generator().manual_seed(seed + 1))
    profile_x = torch.cat([item_x, factors], dim=1)
    table = ProfileTable.build(
        pos["user_idx"].to_numpy(),
        pos["item_idx"].to_numpy(),
        pos["weight"].to_numpy(),
        profile_x,
        n_users=6,
    )
    data = build_categories(
        items, pos, item_x, profile_x, table, ["A"], profile_includes=["A", "B"], seed=seed
    )
    return data["A"], profile_x


def test_order_positives_by_time_with_seeded_ties() -> None:
    frame = pd.DataFrame(
        {"user_idx": [0, 0, 0, 1, 1], "timestamp": pd.array([30, 10, 20, None, None], "Int64")}
    )
    assert order_positives(frame, seed=0)[:3].tolist() == [2, 0, 1]
    untimed = [tuple(order_positives(frame, seed=s)[3:]) for s in range(20)]
    assert set(untimed) == {(0, 1), (1, 0)}  # random without time ...
    assert order_positives(frame, seed=3).tolist() == order_positives(frame, seed=3).tolist()


def test_k_shot_split_takes_the_first_positives_of_eligible_users() -> None:
    category, _ = _category()
    split = split_k_shot(category, 3)
    assert split.eligible.tolist() == [c >= 4 for c in category.user_count]
    assert not (split.support & split.query).any()
    for user in np.flatnonzero(split.eligible):
        mine = category.pos_user == user
        assert sorted(category.pos_rank[mine & split.support]) == [0, 1, 2]
        assert (category.pos_rank[mine & split.query] >= 3).all()
    assert not (split.support | split.query)[~split.eligible[category.pos_user]].any()
    launch = split_launch(category)
    assert launch.support.all() and not launch.query.any()


def test_profiles_leave_out_the_target_category(category_and_x=None) -> None:
    category, profile_x = _category()
    # every user has exactly one positive outside A, so their profile is that item's vector
    for position, user in enumerate(category.users):
        assert torch.allclose(category.profile[position], profile_x[N_ITEMS + user % 3])
    assert category.n_other.tolist() == [1.0] * 6


def test_candidate_rows_equal_pair_rows_for_the_same_pair() -> None:
    """Ranking at serving time sees exactly the inputs query rows had in training."""
    category, _ = _category()
    split = split_k_shot(category, 2)
    state = support_state(category, split)
    users = torch.tensor([2, 4, 5])
    grid = candidate_rows(category, state, users)
    for b, user in enumerate(users):
        items = torch.arange(N_ITEMS)
        single = pair_rows(category, state, user.repeat(N_ITEMS), items)
        assert torch.allclose(grid[b], single, atol=1e-6)


def test_support_positive_rows_leave_themselves_out() -> None:
    category, _ = _category()
    split = split_k_shot(category, 2)
    state = support_state(category, split)
    idx = np.flatnonzero(split.support)[0]
    user = torch.tensor([category.pos_user[idx]])
    item = torch.tensor([category.pos_item[idx]])
    loo = pair_rows(category, state, user, item, leave_one_out=torch.tensor([True]))
    full = pair_rows(category, state, user, item)
    # the last scalars: log1p(pop), ..., log1p(n_support), asinh(affinity); leaving out lowers
    # the counts by one and the affinity by the user's cosine with themselves (1)
    assert torch.isclose(torch.expm1(full[0, -7]) - torch.expm1(loo[0, -7]), torch.tensor(1.0))
    assert torch.isclose(torch.expm1(full[0, -2]) - torch.expm1(loo[0, -2]), torch.tensor(1.0))
    assert torch.isclose(torch.sinh(full[0, -1]) - torch.sinh(loo[0, -1]), torch.tensor(1.0))


def test_affinity_is_the_summed_cosine_to_the_supporters() -> None:
    """Hand-computed: sum over the item's supporters of cos(cf profile of u, cf profile of v)."""
    category, _ = _category()
    split = split_k_shot(category, 2)
    state = support_state(category, split)
    d = category.item_x.shape[1]
    cf = category.profile[:, d:]
    support_users = category.pos_user[split.support]
    support_items = category.pos_item[split.support]
    item = int(np.bincount(support_items).argmax())  # the most supported item
    supporters = support_users[support_items == item]
    assert len(supporters) >= 2
    for user in range(3):
        expected = sum(
            torch.nn.functional.cosine_similarity(cf[user], cf[v], dim=0) for v in supporters
        )
        row = pair_rows(category, state, torch.tensor([user]), torch.tensor([item]))
        assert torch.isclose(torch.sinh(row[0, -1]), expected, atol=1e-5)


def test_negatives_never_hit_forbidden_pairs() -> None:
    category, _ = _category()
    forbidden = category.positive_codes()
    users = torch.as_tensor(np.repeat(np.arange(6), 50))
    items, valid = sample_negatives(category, users, 3, forbidden, torch.Generator().manual_seed(0))
    codes = users[:, None] * N_ITEMS + items
    hit = torch.isin(codes, forbidden)
    assert not (hit & valid).any()
    assert valid.float().mean() > 0.9


def test_support_batch_labels_and_masks() -> None:
    category, _ = _category()
    split = split_k_shot(category, 2)
    batch = support_batch(
        category,
        support_state(category, split),
        split,
        n_negatives=3,
        generator=torch.Generator().manual_seed(0),
    )
    n_pos = int(split.support.sum())
    assert batch.x.shape[0] == n_pos * 4
    assert batch.y[:n_pos].eq(1).all() and batch.y[n_pos:].eq(0).all()
    assert torch.isfinite(batch.x).all()


@pytest.mark.parametrize("kind", ["category", "user"])
def test_sampler_builds_padded_task_batches(kind: str) -> None:
    category, _ = _category()
    config = TaskConfig(kind=kind, train_shots=(1, 2), negatives=2, max_support=30, max_query=30)
    sampler = TaskSampler([category], config)
    tasks = sampler(5, torch.Generator().manual_seed(0))
    assert tasks.n_tasks == 5
    assert tasks.support.x.shape[1] <= 30 and tasks.query.x.shape[1] <= 30
    assert (tasks.support.mask.sum(1) > 0).all() and (tasks.query.mask.sum(1) > 0).all()
    again = sampler(5, torch.Generator().manual_seed(0))
    assert torch.equal(tasks.support.x, again.support.x)


def test_sampler_refuses_categories_too_small_for_any_shot() -> None:
    category, _ = _category()
    with pytest.raises(DataError, match="train_shots"):
        TaskSampler([category], TaskConfig(train_shots=(10,)))
