"""Batch scoring: every list equals the single-user path's, in the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from tests.conftest import KNOWN_HELD_OUT
from typer.testing import CliRunner

from metarec import Recommender, Store, recommend_batch, write_recommendations
from metarec.cli import app
from metarec.errors import DataError
from metarec.ranking import RetrievalSettings

runner = CliRunner()


def _single(recommender: Recommender, user_id: str, k: int) -> list[tuple[str, float, str | None]]:
    result = recommender.recommend(user_id, KNOWN_HELD_OUT, k)
    return [(item.item_id, item.score, result.fallback) for item in result.items]


def _rows(table: pd.DataFrame, user_id: str) -> list[tuple[str, float, str | None]]:
    mine = table[table["user_id"] == user_id]
    assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
    fallback = [None if pd.isna(f) else f for f in mine["fallback"]]
    return list(zip(mine["item_id"], mine["score"], fallback, strict=True))


@pytest.mark.parametrize("short_list", [300, 12])  # exact scoring, and retrieval + re-rank
def test_batch_lists_equal_single_calls(
    known_store: Path, known_model_dir: Path, short_list: int
) -> None:
    with Store.open(known_store, read_only=True) as store:
        retrieval = RetrievalSettings(short_list=short_list, rank=8)
        recommender = Recommender.open(known_model_dir, store, retrieval=retrieval)
        recommender.adapt(KNOWN_HELD_OUT)
        users = recommender.catalog.users["user_id"].astype(str).tolist()
        chosen = [*users[:40], "nobody-knows-me"]
        table = recommend_batch(recommender, KNOWN_HELD_OUT, chosen, k=5, batch_size=16)
        assert table["user_id"].drop_duplicates().tolist() == chosen  # order kept
        for user_id in chosen:
            batch, single = _rows(table, user_id), _single(recommender, user_id, 5)
            assert [b[0] for b in batch] == [s[0] for s in single]
            assert [b[1] for b in batch] == pytest.approx([s[1] for s in single], abs=1e-5)
            assert {b[2] for b in batch} == {s[2] for s in single}
        assert set(table.loc[table["user_id"] == "nobody-knows-me", "fallback"]) == {"popularity"}
        assert table.attrs["adaptation_version"] == 1


def test_batch_never_lists_an_item_the_user_already_liked(
    known_store: Path, known_model_dir: Path
) -> None:
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        catalog = recommender.catalog
        # k = every item: a list is the whole category minus what the user already liked
        table = recommend_batch(recommender, KNOWN_HELD_OUT, None, k=40)
    assert table["user_id"].nunique() == len(catalog.users)
    items = catalog.items.set_index("item_idx")
    here = catalog.positives_in([KNOWN_HELD_OUT])
    liked = here.assign(
        user_id=catalog.users.set_index("user_idx").loc[here["user_idx"], "user_id"].to_numpy(),
        item_id=items.loc[here["item_idx"], "item_id"].to_numpy(),
    )
    assert len(liked) > 0
    overlap = table.merge(liked[["user_id", "item_id"]], on=["user_id", "item_id"])
    assert overlap.empty
    per_user = table.groupby("user_id").size()
    seen = liked.groupby("user_id").size().reindex(per_user.index, fill_value=0)
    assert (per_user + seen == 40).all()


def test_batch_refuses_bad_arguments(known_store: Path, known_model_dir: Path) -> None:
    with Store.open(known_store, read_only=True) as store:
        recommender = Recommender.open(known_model_dir, store)
        with pytest.raises(DataError, match="k must be at least 1"):
            recommend_batch(recommender, KNOWN_HELD_OUT, ["u1"], k=0)
        with pytest.raises(DataError, match="batch_size"):
            recommend_batch(recommender, KNOWN_HELD_OUT, ["u1"], batch_size=0)
        with pytest.raises(DataError, match="a list of ids, got the string 'u1'"):
            recommend_batch(recommender, KNOWN_HELD_OUT, "u1")  # ids "u" and "1" before


def test_cli_writes_parquet_for_a_users_file_and_for_all_users(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    with Store.open(known_store, read_only=True) as store:
        users = Store.users(store)["user_id"].astype(str).tolist()
    # a blank line is skipped and a repeated id listed once (it gave each rank twice)
    listed = [users[3], "", users[7], "stranger", users[3]]
    (tmp_path / "users.txt").write_text("\n".join(listed) + "\n")
    base = ["recommend", "--model", str(known_model_dir), "--store", str(known_store)]
    base += ["--category", KNOWN_HELD_OUT, "-k", "4"]
    done = runner.invoke(
        app, [*base, "--users", str(tmp_path / "users.txt"), "--out", str(tmp_path / "a.parquet")]
    )
    assert done.exit_code == 0, done.output
    table = pq.read_table(tmp_path / "a.parquet")
    frame = table.to_pandas()
    assert frame["user_id"].drop_duplicates().tolist() == [users[3], users[7], "stranger"]
    assert not frame.duplicated(["user_id", "rank"]).any()
    assert len(frame) == 12 and frame.columns.tolist() == [
        "user_id",
        "rank",
        "item_id",
        "score",
        "fallback",
    ]
    assert table.schema.metadata[b"metarec.category"] == KNOWN_HELD_OUT.encode()
    assert set(frame.loc[frame["user_id"] == "stranger", "fallback"]) == {"popularity"}

    done = runner.invoke(
        app, [*base, "--all-users", "--out", str(tmp_path / "all.parquet"), "--json", "-q"]
    )
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["users"] == len(users) and summary["rows"] == 4 * len(users)
    assert summary["fallbacks"] == {"zero-shot": len(users)}  # never adapted here
    assert len(pd.read_parquet(tmp_path / "all.parquet")) == 4 * len(users)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_cli_needs_exactly_one_audience_and_an_out_file(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    base = ["recommend", "--model", str(known_model_dir), "--store", str(known_store)]
    base += ["--category", KNOWN_HELD_OUT]
    both = runner.invoke(app, [*base, "--user", "u1", "--all-users", "--out", "x.parquet"])
    assert both.exit_code == 2 and "exactly one of" in both.output
    no_out = runner.invoke(app, [*base, "--all-users"])
    assert no_out.exit_code == 2 and "--out" in no_out.output
    missing = runner.invoke(
        app, [*base, "--users", str(tmp_path / "none.txt"), "--out", str(tmp_path / "x.parquet")]
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_write_recommendations_replaces_a_file_whole(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {"user_id": ["a"], "rank": [1], "item_id": ["i"], "score": [0.5], "fallback": [None]}
    )
    table.attrs["category"] = "C"
    path = write_recommendations(table, tmp_path / "recs.parquet")
    write_recommendations(table.assign(score=0.25), path)
    assert pd.read_parquet(path)["score"].tolist() == [0.25]


def test_lists_do_not_depend_on_passes_or_threads(
    known_store: Path, known_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Users ranked in many small passes, two at once on two threads, get the lists of one pass."""
    import torch

    from metarec.serving import batched

    with Store.open(known_store, read_only=True) as store:
        retrieval = RetrievalSettings(short_list=12, rank=8)  # retrieval, not exact scoring
        recommender = Recommender.open(known_model_dir, store, retrieval=retrieval)
        recommender.adapt(KNOWN_HELD_OUT)
        whole = recommend_batch(recommender, KNOWN_HELD_OUT, None, k=5)
        monkeypatch.setattr(batched, "_PASS_USERS", 3)
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            passes = recommend_batch(recommender, KNOWN_HELD_OUT, None, k=5)
        finally:
            torch.set_num_threads(threads)
    assert whole["user_id"].nunique() > 2 * 3  # more than two passes
    pd.testing.assert_frame_equal(passes, whole)
