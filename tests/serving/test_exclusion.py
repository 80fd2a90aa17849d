"""Lists leave out every item the user interacted with in the category, liked or not
(``keep_disliked`` keeps the disliked ones), for both kinds of model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import known_answer_config, write_known_answer_tables

from metarec.data import Store, ingest
from metarec.meta.model import save_model
from metarec.selection import train_selected
from metarec.serving.recommender import Recommender

CATEGORY = "Shelf > C7"
USER = "u1"


@pytest.fixture(scope="module")
def store_with_a_dislike(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The known-answer store, plus one low rating of USER in CATEGORY."""
    folder = write_known_answer_tables(tmp_path_factory.mktemp("dislike") / "tables")
    interactions = pd.read_csv(folder / "interactions.csv")
    liked_here = interactions.query("user_id == @USER and item_id.str.startswith('c7-')")
    disliked = next(f"c7-i{i}" for i in range(40) if f"c7-i{i}" not in set(liked_here["item_id"]))
    extra = pd.DataFrame(
        {
            "user_id": [USER],
            "item_id": [disliked],
            "timestamp": [interactions["timestamp"].max() + 1],
            "event": ["rating"],
            "rating": [1.0],
        }
    )
    pd.concat([interactions, extra]).to_csv(folder / "interactions.csv", index=False)
    ingest(folder, folder.parent / "store.duckdb", fmt="table")
    return folder.parent / "store.duckdb", disliked


@pytest.mark.parametrize("choice", ["ridge", "mlp"])
def test_disliked_items_are_left_out_unless_kept(
    store_with_a_dislike: tuple[Path, str], tmp_path: Path, choice: str
) -> None:
    path, disliked = store_with_a_dislike
    config = known_answer_config(hold_out=[], meta={"meta_steps": 5, "first_order": True})
    with Store.open(path, read_only=True) as store:
        model = train_selected(store, config, choice=choice, progress=False).model  # type: ignore[arg-type]
        folder = save_model(model, tmp_path / "model")
        every = 40  # the category's items: a list of all that may be shown
        default = Recommender.open(folder, store).recommend(USER, CATEGORY, k=every)
        kept = Recommender.open(folder, store, keep_disliked=True).recommend(
            USER, CATEGORY, k=every
        )
    interactions = pd.read_csv(path.parent / "tables" / "interactions.csv")
    liked = set(
        interactions.query("user_id == @USER and item_id.str.startswith('c7-')")["item_id"]
    ) - {disliked}
    shown = {item.item_id for item in default.items}
    assert disliked not in shown and not liked & shown
    assert len(shown) == every - len(liked) - 1
    shown_kept = {item.item_id for item in kept.items}
    assert disliked in shown_kept and not liked & shown_kept


def test_a_category_without_dislikes_serves_while_another_has_them(
    store_with_a_dislike: tuple[Path, str], tmp_path: Path
) -> None:
    """The store's only dislike lies in CATEGORY: every other category's view has none and
    still serves (this crashed building the view's dislike index)."""
    path, _ = store_with_a_dislike
    config = known_answer_config(hold_out=[], meta={"meta_steps": 5, "first_order": True})
    with Store.open(path, read_only=True) as store:
        model = train_selected(store, config, choice="ridge", progress=False).model
        folder = save_model(model, tmp_path / "model")
        recommender = Recommender.open(folder, store)
        other = "Shelf > C3"  # no dislike there
        answer = recommender.recommend(USER, other, k=5)
    assert len(answer.items) == 5
