"""The library API: adapt a launched category, recommend, and every documented refusal."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, write_known_answer_tables

import metarec.ranking.ranker as ranker_module
from metarec.data import Store, ingest
from metarec.data.catalog import Catalog
from metarec.errors import ArtifactError, DataError, UnknownCategoryError
from metarec.features.encoder import profiles
from metarec.meta.model import MetaModel
from metarec.ranking import CategoryRanker
from metarec.serving.recommender import Recommender
from metarec.tasks import Batch, split_launch


def test_adapt_then_recommend(known_store: Path, known_model_dir: Path) -> None:
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        first = recommender.adapt(KNOWN_HELD_OUT)
        assert first.version == 1 and first.support_size > 0 and first.n_users > 0
        result = recommender.recommend("u0", KNOWN_HELD_OUT, k=5)
        assert result.fallback is None
        assert len(result.items) == 5
        assert [i.score for i in result.items] == sorted(
            (i.score for i in result.items), reverse=True
        )
        assert all(i.item_id.startswith("c7-") for i in result.items)
        # user 0 is of type 0: publisher P0 items have even numbers; most of the top should be
        assert sum(int(i.item_id.split("-i")[1]) % 2 == 0 for i in result.items) >= 4
        # what the user already liked here is not recommended again
        liked = set(store.interactions().query("user_idx == 0")["item_idx"])
        items = store.items().set_index("item_id")["item_idx"]
        assert not {items[i.item_id] for i in result.items} & liked

        # a second adaptation is a new version, and a fresh process sees it
        assert recommender.adapt(KNOWN_HELD_OUT).version == 2
        reopened = Recommender.open(known_model_dir, store)
        assert reopened.recommend("u0", KNOWN_HELD_OUT, k=3).adaptation_version == 2


def test_unknown_user_falls_back_to_launch_popularity(
    known_store: Path, known_model_dir: Path
) -> None:
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        recommender.adapt(KNOWN_HELD_OUT)
        result = recommender.recommend("never-seen", KNOWN_HELD_OUT, k=3)
    assert result.fallback == "popularity"
    assert result.to_json()["fallback"] == "popularity"
    assert [i.score for i in result.items] == sorted((i.score for i in result.items), reverse=True)


def test_as_of_replays_a_launch(known_store: Path, known_model_dir: Path) -> None:
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        everything = recommender.adapt(KNOWN_HELD_OUT)
        times = store.interactions()["timestamp"]
        early = recommender.adapt(KNOWN_HELD_OUT, as_of=int(times.quantile(0.2)))
        when = datetime.fromtimestamp(int(times.quantile(0.2)), tz=UTC)
        same = recommender.adapt(KNOWN_HELD_OUT, as_of=when)
        with pytest.raises(DataError, match="as_of is a time"):
            recommender.adapt(KNOWN_HELD_OUT, as_of="yesterday")  # type: ignore[arg-type]
    assert 0 < early.support_size < everything.support_size
    assert same.support_size == early.support_size


def test_refusals(known_store: Path, known_model_dir: Path) -> None:
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        zero_shot = recommender.recommend("u0", KNOWN_HELD_OUT)
        assert zero_shot.fallback == "zero-shot" and "metarec adapt" in zero_shot.fallback_reason
        with pytest.raises(UnknownCategoryError, match="did you mean"):
            recommender.recommend("u0", "C7")
        with pytest.raises(UnknownCategoryError):
            recommender.adapt("Shelf > Nothing")
        with pytest.raises(UnknownCategoryError, match="named by text"):
            recommender.recommend("u0", None)  # type: ignore[arg-type]
        recommender.adapt(KNOWN_HELD_OUT)
        with pytest.raises(DataError, match="k must be"):
            recommender.recommend("u0", KNOWN_HELD_OUT, k=0)


def test_category_without_items_is_a_clear_error(tmp_path: Path, known_model_dir: Path) -> None:
    tables = write_known_answer_tables(tmp_path / "tables")
    pd.DataFrame(
        {"category": [KNOWN_HELD_OUT, "Shelf > Empty"], "description": ["seven", "nothing yet"]}
    ).to_csv(tables / "categories.csv", index=False)
    ingest(tables, tmp_path / "store.duckdb", fmt="table")
    with Store.open(tmp_path / "store.duckdb", read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        with pytest.raises(DataError, match="has no items"):
            recommender.adapt("Shelf > Empty")


@pytest.mark.parametrize("damage", ["truncate", "alter", "remove"])
def test_damaged_model_folder_is_refused(
    known_store: Path, known_model_dir: Path, damage: str
) -> None:
    params = known_model_dir / "params.safetensors"
    data = params.read_bytes()
    if damage == "truncate":
        params.write_bytes(data[: len(data) // 2])
    elif damage == "alter":
        params.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        params.unlink()
    with (
        Store.open(known_store, read_only=True) as store,
        pytest.raises(ArtifactError, match=r"params\.safetensors"),
    ):
        Recommender.open(known_model_dir, store)


def test_missing_model_folder_is_refused(known_store: Path, tmp_path: Path) -> None:
    with Store.open(known_store, read_only=True) as store, pytest.raises(ArtifactError):
        Recommender.open(tmp_path / "nope", store)


def test_an_adaptation_trains_on_at_most_max_adapt_positives(
    known_store: Path, known_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live category's support only grows, and an MLP learner's adaptation holds every row
    through its inner steps: the service adapts on a uniform sample of at most
    ``max_adapt_positives`` positives; a cap at or above the support changes nothing."""
    model_dir = known_model_dir  # a copy of its own (conftest)
    positives_seen: list[int] = []
    original = ranker_module.support_batch

    def counted(*args: Any, **kwargs: Any) -> Batch:
        batch = original(*args, **kwargs)
        positives_seen.append(int(batch.y.sum()))
        return batch

    monkeypatch.setattr(ranker_module, "support_batch", counted)
    with Store.open(known_store, read_only=True) as store:
        every = Recommender.open(model_dir, store, max_adapt_positives=None).adapt(KNOWN_HELD_OUT)
        at_the_support = Recommender.open(
            model_dir, store, max_adapt_positives=every.support_size
        ).adapt(KNOWN_HELD_OUT)
        capped = Recommender.open(model_dir, store, max_adapt_positives=5).adapt(KNOWN_HELD_OUT)
    assert positives_seen == [every.support_size, every.support_size, 5]
    assert every.support_size > 5 and capped.support_size == 5
    assert at_the_support.support_size == every.support_size
    assert all(torch.equal(at_the_support.params[k], v) for k, v in every.params.items())
    assert any(not torch.equal(capped.params[k], v) for k, v in every.params.items())


def test_every_view_reads_one_profile_table_and_profiles_users_from_the_other_categories(
    known_store: Path, known_model_dir: Path
) -> None:
    """Views of the data as it is now share one table over every category (each takes its own
    category's positives out) instead of a table per category served; the users' inputs are
    those of a table over the other categories, for users with and without history there."""
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        catalog, categories = recommender.catalog, recommender.catalog.categories
        views = [recommender.view(category) for category in categories]
        assert len({id(view.others) for view in views}) == 1
        assert not recommender._others  # no table per category
        for view in views:
            others = [c for c in categories if c != view.data.name]
            table = profiles(catalog, recommender._profile_x, others)
            users = torch.as_tensor(view.data.users)
            expected, n_other = table.without(
                users,
                torch.zeros_like(view.data.profile),
                torch.zeros(len(users)),
                torch.zeros(len(users)),
            )
            torch.testing.assert_close(view.data.profile, expected, rtol=1e-5, atol=1e-6)
            assert torch.equal(view.data.n_other, n_other)
            elsewhere = [u for u in range(len(catalog.users)) if u not in set(view.data.users)]
            if elsewhere:  # users new to the category: their profile is the table's, exactly
                new = recommender.user_inputs_many(view, elsewhere[:5])
                alone, _ = table.without(
                    torch.tensor(elsewhere[:5]),
                    torch.zeros(len(new), expected.shape[1]),
                    torch.zeros(len(new)),
                    torch.zeros(len(new)),
                )
                for inputs, row in zip(new, alone, strict=True):
                    torch.testing.assert_close(inputs.profile, row, rtol=1e-5, atol=1e-6)
        # a view as of a time must not see the category's later positives: its own table
        as_of = int(store.interactions()["timestamp"].quantile(0.5))
        early = recommender.view(KNOWN_HELD_OUT, as_of)
        assert early.others is not views[0].others and KNOWN_HELD_OUT in recommender._others


def test_user_ids_are_read_as_the_store_keeps_them(
    known_store: Path, known_model_dir: Path
) -> None:
    """Ingestion stores every id as text: an integer id is read as its digits (it found no one
    before, so a known user of an integer-keyed dataset got the popularity fallback), and a
    request that cannot be read is refused on its own, with a DataError."""
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        recommender.adapt(KNOWN_HELD_OUT)
        as_int, as_numpy = (recommender.recommend(u, KNOWN_HELD_OUT, k=3) for u in (7, np.int64(7)))
        assert as_int.user_id == as_numpy.user_id == "7"
        assert "unknown user '7'" in (as_int.fallback_reason or "")
        results = recommender.recommend_many(
            KNOWN_HELD_OUT, [("u0", 3), (None, 3), (1.5, 3), ("u0", 1.5), ("u0", True), ("u1", 2)]
        )
    assert [type(r).__name__ for r in results] == ["Recommendation"] + ["DataError"] * 4 + [
        "Recommendation"
    ]
    assert "a user id is a string" in str(results[1]) and "k must be a whole number" in str(
        results[3]
    )
    assert results[0].user_id == "u0" and len(results[5].items) == 2  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "inner_steps", "cap", "trained_on"),
    [
        ("category", None, None, "all"),  # no cap: every positive
        ("category", None, 5, 5),  # the inner loop's seeded sample
        ("category", 0, 5, "all"),  # no inner step: nothing sampled, the features read all
        ("user", None, 5, "all"),  # users adapt on their own positives, uncapped
    ],
)
def test_a_ranker_reports_the_support_its_launch_used(
    known_model: MetaModel,
    known_catalog: Catalog,
    kind: str,
    inner_steps: int | None,
    cap: int | None,
    trained_on: int | str,
) -> None:
    """``CategoryRanker.support_used``, which a served adaptation reports as its support size,
    is the launch's own count: the positive rows of the batch its inner loop trained on, or
    every support positive where no capped inner loop ran (the service used to restate the
    sampling rule beside it, and reported the cap for a model with no inner step)."""
    config = known_model.config
    meta = config.meta
    if inner_steps is not None:
        meta = meta.model_copy(update={"inner_steps": inner_steps})
    tasks = config.tasks.model_copy(update={"kind": kind})
    model = dataclasses.replace(
        known_model, config=config.model_copy(update={"tasks": tasks, "meta": meta})
    )
    visible = known_catalog.categories
    category = model.category_data(known_catalog, [KNOWN_HELD_OUT], visible=visible)[KNOWN_HELD_OUT]
    split = split_launch(category)
    n_support = int(split.support.sum())
    assert n_support > 5
    ranker = CategoryRanker.launch(model, category, split, max_positives=cap)
    assert ranker.support_used == (n_support if trained_on == "all" else trained_on)
