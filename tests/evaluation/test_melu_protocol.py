"""The MeLU-line protocol: its split rule, metrics, features, regression MAML, and a whole run
on a small DBook-shaped store whose right answer is known."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metarec.config import MetaConfig, ModelConfig, TaskConfig, TrainConfig
from metarec.data import ingest, ingest_frames
from metarec.errors import ConfigError, DataError
from metarec.evaluation.melu_protocol import (
    METHODS,
    RANKING,
    TEST_SPLITS,
    BiasReference,
    RatingFeatures,
    RatingMAML,
    UserTask,
    evaluate_melu,
    melu_config,
    melu_table,
    melu_tasks,
    ndcg_within,
    rating_loss,
    user_metrics,
)
from metarec.meta import Batch, adapt, stack_tasks
from metarec.models.scorer import init_params

# ---- metrics against hand-computed values ----------------------------------------------------


def test_ndcg_within_hand_computed() -> None:
    actual = np.array([5.0, 3.0, 4.0])
    no_ties = np.zeros(3)
    assert ndcg_within(np.array([0.9, 0.1, 0.5]), actual, 5, no_ties) == pytest.approx(1.0)
    # predicted order: book 1 (gain 2^3-1 = 7), book 2 (15); ideal: 31, 15.
    expected = (7 + 15 / math.log2(3)) / (31 + 15 / math.log2(3))
    got = ndcg_within(np.array([0.1, 0.9, 0.5]), actual, 2, no_ties)
    assert got == pytest.approx(expected)  # 0.4069


def test_ndcg_within_breaks_ties_by_the_key() -> None:
    actual = np.array([1.0, 5.0])
    flat = np.array([4.0, 4.0])
    assert ndcg_within(flat, actual, 1, np.array([0.2, 0.1])) == pytest.approx(1.0)
    assert ndcg_within(flat, actual, 1, np.array([0.1, 0.2])) == pytest.approx(1 / 31)


def test_user_metrics_hand_computed() -> None:
    values = user_metrics(np.array([4.0, 3.0]), np.array([5.0, 3.0]), (1,), np.zeros(2))
    assert values[("mae", None)] == pytest.approx(0.5)
    assert values[("rmse", None)] == pytest.approx(math.sqrt(0.5))
    assert values[("ndcg", 1)] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=12),
    st.integers(0, 2**31 - 1),
    st.integers(1, 12),
)
def test_ndcg_within_bounds_and_perfect_order(ratings: list[int], seed: int, k: int) -> None:
    actual = np.array(ratings, dtype=float)
    rng = np.random.default_rng(seed)
    tie_key = rng.random(len(actual))
    assert 0.0 <= ndcg_within(rng.normal(size=len(actual)), actual, k, tie_key) <= 1.0 + 1e-12
    assert ndcg_within(actual, actual, k, tie_key) == pytest.approx(1.0)


# ---- the split rule --------------------------------------------------------------------------


def ratings_frame(per_user: dict[int, int]) -> pd.DataFrame:
    rows = [
        (user, f"u{user}", item, float(1 + (user + item) % 5))
        for user, n in per_user.items()
        for item in range(n)
    ]
    return pd.DataFrame(rows, columns=["user_idx", "user_id", "item_idx", "rating"])


def test_melu_tasks_follow_melus_rule() -> None:
    frame = ratings_frame({0: 12, 1: 13, 2: 40, 3: 100, 4: 101})
    tasks = melu_tasks(frame, split="warm_up", seed=0)
    assert [t.user_idx for t in tasks] == [1, 2, 3]  # 13 to 100 ratings
    for task in tasks:
        assert len(task.query_items) == 10
        n = len(frame.loc[frame["user_idx"] == task.user_idx])
        assert len(task.support_items) == n - 10
        both = np.concatenate([task.support_items, task.query_items])
        assert sorted(both.tolist()) == list(range(n))  # every rating used exactly once
        expected = 1 + (task.user_idx + task.query_items) % 5  # ratings stay with their books
        assert np.array_equal(task.query_ratings, expected)


def test_melu_tasks_are_seeded_and_ignore_row_order() -> None:
    frame = ratings_frame({1: 30, 2: 30})
    first = melu_tasks(frame, split="warm_up", seed=3)
    shuffled = melu_tasks(frame.sample(frac=1.0, random_state=1), split="warm_up", seed=3)
    other = melu_tasks(frame, split="warm_up", seed=4)
    assert all(
        np.array_equal(a.query_items, b.query_items) for a, b in zip(first, shuffled, strict=True)
    )
    assert not all(
        np.array_equal(a.query_items, b.query_items) for a, b in zip(first, other, strict=True)
    )


# ---- features --------------------------------------------------------------------------------


def tiny_features() -> RatingFeatures:
    """Three books; user 0 rated all three in training (5, 3, 4), user 1 rated book 0 (4)."""
    items = pd.DataFrame(
        {
            "item_idx": [0, 1, 2],
            "item_id": ["a", "b", "c"],
            "category": ["Book"] * 3,
            "authors": ["x", "y", "x"],
            "publisher": ["p", "p", "q"],
            "extra": [None] * 3,
        }
    )
    users = pd.DataFrame(
        {"user_idx": [0, 1], "user_id": ["u", "v"], "extra": ['{"location": "9"}', None]}
    )
    train = pd.DataFrame(
        {"user_idx": [0, 0, 0, 1], "item_idx": [0, 1, 2, 0], "rating": [5.0, 3.0, 4.0, 4.0]}
    )
    return RatingFeatures.fit(items, users, train, melu_config().features)


def test_rows_leave_each_label_out() -> None:
    features = tiny_features()
    assert features.mu == pytest.approx(4.0)
    task = UserTask(0, np.array([0, 1]), np.array([5.0, 3.0]), np.array([2]), np.array([4.0]))
    support, query = features.rows(task, own_in_stats=True)
    d = features.dim
    assert support.x.shape == (2, d) and query.x.shape == (1, d)
    assert torch.allclose(support.y, torch.tensor([1.0, -1.0]))  # rating - mu
    user_residual, n_support, item_residual, item_count = (
        support.x[:, d - 5 + j] for j in range(4)
    )
    # Support row 0 sees only the other support rating (3 - 4), and vice versa.
    assert torch.allclose(user_residual, torch.tensor([-1.0, 1.0]))
    assert torch.allclose(n_support, torch.full((2,), math.log1p(1)))
    # Book 0 was rated 5 (this user) and 4 (another): leaving this user's rating out leaves
    # residual 0 over 1 rating; book 1's only training rating is this user's own.
    assert torch.allclose(item_residual, torch.zeros(2))
    assert torch.allclose(item_count, torch.log1p(torch.tensor([1.0, 0.0])))
    # The query row sees the whole support (mean residual 0, two ratings), and book 2's only
    # training rating is its own label: left out, the book looks unrated.
    assert query.x[0, d - 5].item() == pytest.approx(0.0)
    assert query.x[0, d - 4].item() == pytest.approx(math.log1p(2))
    assert query.x[0, d - 2].item() == pytest.approx(0.0)
    # For a user whose ratings are not in the statistics (validation, test), nothing is left out.
    support_test, _ = features.rows(task, own_in_stats=False)
    assert support_test.x[0, d - 2].item() == pytest.approx(math.log1p(2))
    assert support_test.x[0, d - 3].item() == pytest.approx(1.0 / (2 + 5.0))  # damped residual


def test_bias_reference_hand_computed() -> None:
    features = tiny_features()  # mu 4; residuals: book 0 +1 and 0, book 1 -1, book 2 0
    features = RatingFeatures(
        features.item_x,
        features.user_x,
        features.mu,
        np.array([1.0, -1.0, 0.0]),
        np.array([2.0, 1.0, 0.0]),  # book 2 never rated in training: an item-cold book
    )
    task = UserTask(1, np.array([0]), np.array([5.0]), np.array([1, 2]), np.array([3.0, 4.0]))
    reference = BiasReference(use_item=True, use_user=True, item_damping=0.0, user_damping=1.0)
    # b_0 = 0.5, b_1 = -1, b_2 = 0 (cold, 0 / 0); b_u = (5 - 4 - 0.5) / (1 + 1) = 0.25.
    assert np.allclose(reference.predict(features, task), [4.0 - 1.0 + 0.25, 4.0 + 0.25])


# ---- regression MAML -------------------------------------------------------------------------


def regression_rows(generator: torch.Generator, n: int, d: int = 6) -> Batch:
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return Batch(x, x[:, 0] - 0.5 * x[:, 1], torch.ones(n, dtype=torch.float64))


def test_adapt_lowers_the_support_loss_and_does_not_mutate() -> None:
    g = torch.Generator().manual_seed(0)
    params = init_params(6, ModelConfig(hidden=(8,)), generator=g, dtype=torch.float64)
    before = {k: v.clone() for k, v in params.items()}
    support = regression_rows(g, 12)
    adapted = adapt(params, support, steps=1, lr=0.05, loss=rating_loss)
    assert rating_loss(adapted, support) < rating_loss(params, support)
    assert all(torch.equal(before[k], params[k]) for k in params)


def test_second_order_meta_gradient_matches_finite_differences() -> None:
    g = torch.Generator().manual_seed(1)
    params = init_params(6, ModelConfig(hidden=(5,)), generator=g, dtype=torch.float64)
    tasks = stack_tasks(
        [
            (regression_rows(g, 7), regression_rows(g, 5)),
            (regression_rows(g, 4), regression_rows(g, 5)),
        ]
    )
    learner = RatingMAML(MetaConfig(inner_steps=2, inner_lr=0.1))
    _, grads = learner.meta_gradient(params, tasks)
    name, eps = "layers.0.weight", 1e-6
    for index in [(0, 0), (3, 2), (4, 5)]:
        bumped = {k: v.clone() for k, v in params.items()}
        bumped[name][index] += eps
        lowered = {k: v.clone() for k, v in params.items()}
        lowered[name][index] -= eps
        numeric = (learner.meta_loss(bumped, tasks) - learner.meta_loss(lowered, tasks)) / (2 * eps)
        assert grads[name][index].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-9)


# ---- a whole run on a DBook-shaped store with a known answer ---------------------------------


def write_known_dbook(folder: Path, seed: int = 0) -> Path:
    """Ratings = 4 + user bias + book quality + noise, rounded to 1..5 (neutral: every method
    sees the same data; the user bias is learnable from the support, the book quality from the
    training ratings, so both bias terms beat the global mean).

    Users 0-79 are "existing" (meta_training, warm_up, item_cold), 80-119 new (user_cold,
    user_and_item_cold); books 0-149 existing, 150-199 new. Each user rates 15 to 22 books per
    split, and no (user, book) pair is in two splits.
    """
    rng = np.random.default_rng(seed)
    user_bias = rng.normal(0.0, 0.7, 120)
    quality = rng.normal(0.0, 0.6, 200)

    def rate(user: int, books: np.ndarray) -> list[int]:
        raw = 4.0 + user_bias[user] + quality[books] + rng.normal(0.0, 0.3, len(books))
        return np.clip(np.rint(raw), 1, 5).astype(int).tolist()

    splits: dict[str, tuple[dict[str, list[int]], dict[str, list[int]]]] = {
        name: ({}, {}) for name in ("meta_training", *TEST_SPLITS)
    }
    for user in range(120):
        old = rng.permutation(150)
        new = 150 + rng.permutation(50)
        sizes = rng.integers(15, 23, 3)
        if user < 80:
            plan = {
                "meta_training": old[: sizes[0]],
                "warm_up": old[sizes[0] : sizes[0] + sizes[1]],
            }
            plan["item_cold_testing"] = new[: sizes[2]]
        else:
            plan = {
                "user_cold_testing": old[: sizes[0]],
                "user_and_item_cold_testing": new[: sizes[2]],
            }
        for split, books in plan.items():
            splits[split][0][str(user)] = books.tolist()
            splits[split][1][str(user)] = rate(user, books)
    folder.mkdir(parents=True, exist_ok=True)
    for split, (books, ratings) in splits.items():
        (folder / f"{split}.json").write_text(json.dumps(books))
        (folder / f"{split}_y.json").write_text(json.dumps(ratings))
    original = folder / "original"
    original.mkdir(exist_ok=True)
    (original / "book_author.dat").write_text("".join(f"{b}\t{b % 30}\n" for b in range(200)))
    (original / "book_publisher.dat").write_text("".join(f"{b}\t{b % 7}\n" for b in range(200)))
    (original / "book_year.dat").write_text("".join(f"{b}\t{b % 11}\n" for b in range(200)))
    (original / "user_location.dat").write_text("".join(f"{u}\t{u % 5}\n" for u in range(120)))
    return folder


def small_config(seed: int = 0) -> TrainConfig:
    base = melu_config(seed=seed)
    return base.model_copy(
        update={
            "model": ModelConfig(hidden=(16,)),
            "tasks": TaskConfig(kind="user"),
            "meta": MetaConfig(
                inner_steps=2,
                inner_lr=0.05,
                outer_lr=0.01,
                meta_batch_size=16,
                meta_steps=50,
                first_order=True,
            ),
        }
    )


@pytest.fixture(scope="module")
def known_dbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("melu")
    ingest(write_known_dbook(folder / "dbook"), folder / "store.duckdb", fmt="dbook")
    return folder / "store.duckdb"


@pytest.fixture(scope="module")
def known_records(known_dbook: Path) -> list[dict[str, object]]:
    return evaluate_melu(known_dbook, config=small_config(), n_resamples=100)


def by_key(records: list[dict[str, object]]) -> dict[tuple[object, ...], dict[str, object]]:
    return {(r["method"], r["category"], r["metric"], r["k"]): r for r in records}


def test_run_writes_labelled_records_for_every_method_and_split(
    known_records: list[dict[str, object]],
) -> None:
    records = by_key(known_records)
    assert len(records) == len(known_records) == len(METHODS) * len(TEST_SPLITS) * 3
    for record in known_records:
        assert record["protocol"] == "melu"
        assert "NOT full ranking" in str(record["ranking"]) and record["ranking"] == RANKING
        assert record["family"] == METHODS[str(record["method"])]
        assert record["ci_low"] <= record["mean"] <= record["ci_high"]
    # every existing user has 15 to 22 ratings per split: all take part
    assert records[("bias", "warm_up", "mae", None)]["n_users"] == 80
    assert records[("bias", "user_cold_testing", "ndcg", 5)]["n_users"] == 40
    maml = records[("metarec-maml", "user_cold_testing", "mae", None)]
    assert METHODS[str(maml["vs_baseline"])] == "baseline"
    assert 0.0 <= float(maml["p_value"]) <= 1.0
    # the best baseline is the one with the lowest error on that split
    best = min(
        (m for m in METHODS if METHODS[m] == "baseline"),
        key=lambda m: float(records[(m, "user_cold_testing", "mae", None)]["mean"]),
    )
    assert maml["vs_baseline"] == best
    assert maml["baseline_mean"] == pytest.approx(
        records[(best, "user_cold_testing", "mae", None)]["mean"]
    )
    assert "| user_cold_testing | metarec-maml |" in melu_table(known_records)


def test_run_learns_the_known_answer(known_records: list[dict[str, object]]) -> None:
    records = by_key(known_records)

    def mae(method: str, split: str) -> float:
        return float(records[(method, split, "mae", None)]["mean"])

    for split in TEST_SPLITS:
        # the user's bias is in their support: every method that reads it beats the mean
        assert mae("bias", split) < mae("global-mean", split) - 0.08
        assert mae("metarec-maml", split) < mae("global-mean", split) - 0.04
    for split in ("warm_up", "user_cold_testing"):  # known books: their quality helps too
        assert mae("metarec-maml", split) < mae("user-mean", split) - 0.04
    # on existing books the crowd's ratings rank better than a random order
    assert float(records[("item-mean", "user_cold_testing", "ndcg", 5)]["mean"]) > float(
        records[("global-mean", "user_cold_testing", "ndcg", 5)]["mean"]
    )


def test_run_is_deterministic(known_dbook: Path, known_records: list[dict[str, object]]) -> None:
    again = evaluate_melu(
        known_dbook, methods=["metarec-maml", "bias"], config=small_config(), n_resamples=100
    )
    first = by_key(known_records)
    for record in again:
        key = (record["method"], record["category"], record["metric"], record["k"])
        assert record["mean"] == first[key]["mean"]
        assert record["split_checksum"] == first[key]["split_checksum"]


def test_bad_requests_fail_before_training(known_dbook: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown melu method"):
        evaluate_melu(known_dbook, methods=["melu-magic"])
    with pytest.raises(ConfigError, match="users as tasks"):
        evaluate_melu(
            known_dbook,
            config=small_config().model_copy(update={"tasks": TaskConfig(kind="category")}),
        )
    with pytest.raises(DataError, match="does not exist"):
        evaluate_melu(tmp_path / "missing.duckdb")
    other = tmp_path / "other.duckdb"
    interactions = pd.DataFrame({"user_id": ["u"], "item_id": ["i"], "rating": [4.0]})
    items = pd.DataFrame({"item_id": ["i"], "category": ["Book"]})
    ingest_frames(interactions, other, items=items)
    with pytest.raises(DataError, match="--format dbook"):
        evaluate_melu(other)
