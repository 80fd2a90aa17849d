"""Item features, feedback and cross-category profiles."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from metarec.config import FeatureConfig, FeedbackConfig
from metarec.data.positives import positives
from metarec.features import FeatureSpace, ProfileTable, Vocab, category_prefixes
from metarec.features.cf import item_factors


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_idx": [0, 1, 2, 3],
            "item_id": ["a", "b", "c", "d"],
            "category": [
                "Books > Literature > Poetry",
                "Books > Literature > Poetry",
                "Books > Fiction > Mystery",
                "Music > Vinyl",
            ],
            "authors": ["Ann|Bob", "Ann", "Cid", None],
            "publisher": ["P1", "P1", "P2", None],
            "brand": [None, None, None, "Acme"],
            "year": [2000.0, 2010.0, None, 1990.0],
            "price": [10.0, 20.0, 15.0, 30.0],
            "extra": [json.dumps({"genres": "x|y"}), None, None, None],
        }
    )


def test_category_prefixes_cover_every_level() -> None:
    assert category_prefixes("Books > Literature > Poetry") == [
        "Books",
        "Books > Literature",
        "Books > Literature > Poetry",
    ]
    assert category_prefixes("Poetry") == ["Poetry"]
    assert category_prefixes(" Books >Fiction ") == ["Books", "Books > Fiction"]


def test_vocab_keeps_frequent_tokens_and_hashes_the_rest_stably() -> None:
    vocab = Vocab.fit([["a", "b"], ["a"], ["c"]], max_size=1, oov_buckets=4)
    assert vocab.tokens == ("a",)
    assert vocab.slot("a") == 0
    assert 1 <= vocab.slot("zzz") < 5
    # crc32, not the per-process salted hash(): the same token always lands in the same slot
    assert vocab.slot("zzz") == Vocab(("a",), 4).slot("zzz")


def test_feature_space_encodes_blocks_normalised_per_field() -> None:
    items = _items()
    space = FeatureSpace.fit(items, FeatureConfig(oov_buckets=2))
    x = space.encode(items)
    assert x.shape == (4, space.dim)
    assert set(space.vocabs) == {"category", "authors", "publisher", "brand", "genres"}
    start = 0
    for name, vocab in space.vocabs.items():
        block = x[:, start : start + vocab.size]
        norms = block.norm(dim=1)
        # every block of an item that has the field has unit norm; absent fields are zero
        has = {
            "category": [1, 1, 1, 1],
            "authors": [1, 1, 1, 0],
            "publisher": [1, 1, 1, 0],
            "brand": [0, 0, 0, 1],
            "genres": [1, 0, 0, 0],
        }[name]
        assert torch.allclose(norms, torch.tensor(has, dtype=torch.float32), atol=1e-6), name
        start += vocab.size
    year = x[:, start]
    assert year[2] == 0  # missing year sits at the mean
    known = year[[0, 1, 3]].double()
    assert abs(float(known.mean())) < 1e-6  # standardised over the items that have a year
    assert abs(float(known.std(unbiased=False)) - 1.0) < 1e-5
    # two poetry books share their whole category block, the mystery only the root
    cat = x[:, : space.vocabs["category"].size]
    assert torch.allclose(cat[0], cat[1])
    assert 0 < float(cat[0] @ cat[2]) < 1


def test_unseen_values_fall_into_oov_slots_and_json_round_trips() -> None:
    items = _items()
    space = FeatureSpace.fit(items.iloc[:3], FeatureConfig(oov_buckets=2))
    new = items.assign(authors=["Zed", "Ann", "Cid", None], category="Books > Comics > Manga")
    x = space.encode(new)
    assert torch.isfinite(x).all()
    restored = FeatureSpace.from_json(json.loads(json.dumps(space.to_json())))
    assert torch.equal(restored.encode(new), x)


def test_positives_use_rating_threshold_then_events_and_collapse_repeats() -> None:
    interactions = pd.DataFrame(
        {
            "user_idx": [0, 0, 0, 1, 1, 2],
            "item_idx": [0, 0, 1, 0, 1, 1],
            "timestamp": pd.array([5, 3, 7, 1, None, 2], dtype="Int64"),
            "rating": [None, None, None, 5.0, 3.0, None],
            "event": ["click", "order", "view", "rating", "rating", "cart"],
            "weight": [None, None, None, None, None, 2.0],
        }
    )
    config = FeedbackConfig(positive_events=("click", "cart", "order"))
    pos = positives(interactions, config)
    got = {(int(u), int(i)): (t, w) for u, i, t, w in pos.itertuples(index=False)}
    # user 0: click and order of item 0 collapse (earliest time, largest weight);
    # a view is no positive
    assert got[(0, 0)] == (3, 1.0)
    assert (0, 1) not in got
    # rating 5 is positive, rating 3 is not, whatever the event
    assert (1, 0) in got and (1, 1) not in got
    # an explicit weight wins over the event weight
    assert got[(2, 1)][1] == 2.0


def test_profiles_exclude_the_target_category() -> None:
    item_x = torch.eye(3)
    table = ProfileTable.build(
        np.array([0, 0, 0]), np.array([0, 1, 2]), np.array([1.0, 1.0, 2.0]), item_x, n_users=2
    )
    # remove item 2 (weight 2) as if it were the target category's
    profile, n_other = table.without(
        torch.tensor([0, 1]),
        torch.stack([2 * item_x[2], torch.zeros(3)]),
        torch.tensor([2.0, 0.0]),
        torch.tensor([1.0, 0.0]),
    )
    assert torch.allclose(profile[0], torch.tensor([0.5, 0.5, 0.0]))
    assert torch.equal(profile[1], torch.zeros(3))  # no history: zeros, not NaN
    assert n_other.tolist() == [2.0, 0.0]


def test_item_factors_are_deterministic_and_separate_taste_groups() -> None:
    rng = np.random.default_rng(0)
    # two user groups, each liking one half of 20 items
    users = np.repeat(np.arange(40), 5)
    items = np.array([rng.choice(10) + 10 * (u % 2) for u in users])
    args = dict(n_users=40, n_items=20, rank=2, seed=0)
    first = item_factors(users, items, np.ones(len(users)), **args)
    second = item_factors(users, items, np.ones(len(users)), **args)
    assert torch.equal(first, second)
    sim = (
        torch.nn.functional.normalize(first, dim=1) @ torch.nn.functional.normalize(first, dim=1).T
    )
    assert sim[:10, :10].mean() > sim[:10, 10:].mean() + 0.5


@pytest.mark.parametrize("rank", [0, 50])
def test_item_factors_handle_degenerate_ranks(rank: int) -> None:
    out = item_factors(
        np.array([0, 1]), np.array([0, 1]), np.ones(2), n_users=2, n_items=3, rank=rank, seed=0
    )
    assert out.shape == (3, rank)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("power", [-1.0, 0.5])
def test_item_factors_whiten_user_profiles_at_power_minus_one(power: float) -> None:
    """``X V s**-1 = U``: the users' summed factors have orthogonal columns of equal norm
    (whitened); with ``sqrt(s)`` the norms follow ``s**1.5`` and the first column dominates."""
    rng = np.random.default_rng(1)
    users, items = rng.integers(0, 60, 900), rng.integers(0, 30, 900)
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    users, items = pairs[:, 0], pairs[:, 1]
    factors = item_factors(
        users, items, np.ones(len(users)), n_users=60, n_items=30, rank=4, seed=0, power=power
    ).double()
    norms = torch.linalg.norm(factors, dim=1)
    assert torch.isclose(norms[norms > 0].mean(), torch.tensor(1.0, dtype=torch.float64))
    counts = np.bincount(users, minlength=60)
    rows = torch.from_numpy(1.0 / np.sqrt(counts[users]))  # the rows are L2-normalised first
    summed = torch.zeros(60, 4, dtype=torch.float64).index_add_(
        0, torch.from_numpy(users), rows[:, None] * factors[torch.from_numpy(items)]
    )
    gram = summed.T @ summed
    off_diagonal = gram - torch.diag(torch.diag(gram))
    assert off_diagonal.abs().max() < 1e-6 * gram.diag().max()
    spread = gram.diag().max() / gram.diag().min()
    if power == -1.0:
        assert torch.isclose(spread, torch.tensor(1.0, dtype=torch.float64), rtol=1e-5)
    else:
        assert spread > 1.5


def _encoded_item_by_item(space: FeatureSpace, items: pd.DataFrame) -> torch.Tensor:
    """The encoding written out one item at a time: each field's tokens counted in the item's
    own row, the row scaled to unit length (what ``encode`` did before it tokenised each
    distinct value once)."""
    from metarec.features.items import _field_values, _numeric, _tokens

    rows = []
    for i in range(len(items)):
        parts = []
        for name, vocab in space.vocabs.items():
            raw = items["category"].iloc[i] if name == "category" else None
            tokens = (
                category_prefixes(raw)
                if name == "category"
                else _tokens(_field_values(items.iloc[[i]], name)[0])
            )
            row = np.zeros(vocab.size, dtype=np.float32)
            for token in tokens:
                row[vocab.slot(token)] += 1.0
            parts.append(row / np.maximum(np.linalg.norm(row), 1e-12))
        for name, (mean, std) in space.numeric.items():
            value = (_numeric(items.iloc[[i]], name) - mean) / std
            parts.append(np.nan_to_num(value, nan=0.0).astype(np.float32))
        rows.append(np.concatenate(parts))
    return torch.from_numpy(np.stack(rows))


def test_encoding_each_distinct_value_once_gives_every_item_its_own_row() -> None:
    base = _items()
    space = FeatureSpace.fit(base, FeatureConfig(oov_buckets=3))
    # repeats, every kind of missing value, lists, a number where text is usual (1 and 1.0
    # are equal keys that tokenise differently), an unseen value, a JSON object in `extra`
    items = pd.concat([base, base.iloc[::-1]], ignore_index=True).assign(
        authors=["Ann|Bob", "Ann", np.nan, pd.NA, "Cid", ["Ann", "Bob"], "Ann|Bob", None],
        publisher=[1, 1.0, "P1", "P2", "1", None, "Zed", 1],
        extra=[
            json.dumps({"genres": "x|y"}),
            json.dumps({"genres": {"nested": 1}}),
            None,
            json.dumps({"genres": ["x", "z"]}),
            json.dumps({"genres": "x|y"}),
            None,
            json.dumps({"genres": "y"}),
            None,
        ],
    )
    x = space.encode(items)
    assert torch.equal(x, _encoded_item_by_item(space, items))
    starts = np.cumsum([0, *(vocab.size for vocab in space.vocabs.values())])
    ends = zip(space.vocabs, starts[:-1], starts[1:], strict=True)
    block = {name: slice(int(a), int(b)) for name, a, b in ends}
    # missing values carry no token, however they are spelled (NaN, pd.NA, None)
    assert not x[[2, 3, 7], block["authors"]].any()
    # publisher 1 and 1.0: equal keys, different tokens ("1", "1.0"); "1" the text is 1's
    assert not torch.equal(x[0, block["publisher"]], x[1, block["publisher"]])
    assert torch.equal(x[0, block["publisher"]], x[4, block["publisher"]])
