"""The ``dbook`` adapter: MetaHIN's DBook splits and attribute files.

Tiny fixtures written here check the mapping row by row; the shared real data (skipped when
``../shared/data/dbook`` is absent) checks the counts MetaHIN's files hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarec.data import Store, ingest
from metarec.data.adapters import ADAPTERS, DBOOK_SPLITS, read_dbook
from metarec.errors import BadRowsError, DataError

SHARED_DBOOK = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dbook"


def write_dbook(
    folder: Path,
    splits: dict[str, tuple[dict[str, list[object]], dict[str, list[object]]]],
    *,
    attributes: bool = True,
) -> Path:
    """A DBook-shaped folder: ``<split>.json`` / ``<split>_y.json`` and ``original/*.dat``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, (books, ratings) in splits.items():
        (folder / f"{split}.json").write_text(json.dumps(books))
        (folder / f"{split}_y.json").write_text(json.dumps(ratings))
    if attributes:
        original = folder / "original"
        original.mkdir(exist_ok=True)
        # book 10 has two authors; book 99 has attributes but no rating; book 12 has none.
        (original / "book_author.dat").write_text("10\t7\n11\t8\n10\t9\n99\t7\n")
        (original / "book_publisher.dat").write_text("10\t3\n11\t3\n99\t4\n")
        (original / "book_year.dat").write_text("10\t16\n11\t15\n")
        (original / "user_location.dat").write_text("1\t33\n2\t179\n5\t2\n")
        (original / "user_user.dat").write_text("1\t2\n2\t1\n")
    return folder


TINY = {
    "meta_training": ({"1": [10, 11], "2": [11]}, {"1": [4, 2], "2": [5]}),
    "user_cold_testing": ({"5": [10, 12]}, {"5": [3, 1]}),
}


def load(folder: Path, store: Path) -> dict[str, object]:
    report = ingest(folder, store, fmt="dbook")
    with Store.open(store, read_only=True) as s:
        items = s.items().set_index("item_id")
        users = s.users().set_index("user_idx")
        inter = s.interactions()
    inter = inter.assign(
        user_id=users["user_id"].reindex(inter["user_idx"]).to_numpy(),
        item_id=items.reset_index()
        .set_index("item_idx")["item_id"]
        .reindex(inter["item_idx"])
        .to_numpy(),
    )
    return {"report": report, "items": items, "users": users.set_index("user_id"), "inter": inter}


def test_dbook_maps_splits_ratings_and_attributes(tmp_path: Path) -> None:
    out = load(write_dbook(tmp_path / "dbook", TINY), tmp_path / "s.duckdb")
    inter = out["inter"].set_index(["user_id", "item_id"])
    assert len(inter) == 5
    # Ratings stay aligned with the books they rate, and the split is the event.
    assert inter.loc[("1", "10"), "rating"] == 4.0
    assert inter.loc[("1", "11"), "rating"] == 2.0
    assert inter.loc[("5", "12"), "rating"] == 1.0
    assert inter.loc[("2", "11"), "event"] == "meta_training"
    assert inter.loc[("5", "10"), "event"] == "user_cold_testing"
    assert inter["timestamp"].isna().all()

    items = out["items"]
    assert set(items.index) == {"10", "11", "12", "99"}  # rated or described
    assert set(items["category"]) == {"Book"}
    assert items.loc["10", "authors"] == "7|9"
    assert items.loc["10", "publisher"] == "3"
    assert json.loads(items.loc["10", "extra"]) == {"year_id": "16"}
    assert items.loc["12", "authors"] is None  # rated but never described
    assert items["year"].isna().all()  # a year *id* is not a calendar year

    users = out["users"]
    assert json.loads(users.loc["2", "extra"]) == {"location": "179"}
    findings = " ".join(out["report"].findings)
    assert "meta_training, user_cold_testing" in findings
    assert "user_user.dat" in findings


def test_dbook_reload_inserts_nothing(tmp_path: Path) -> None:
    folder = write_dbook(tmp_path / "dbook", TINY)
    ingest(folder, tmp_path / "s.duckdb", fmt="dbook")
    again = ingest(folder, tmp_path / "s.duckdb", fmt="dbook")
    assert again.interactions.inserted == 0
    assert again.interactions.unchanged == 5
    assert again.items.inserted == 0 and again.users.inserted == 0


def test_dbook_same_pair_in_two_splits_is_two_events(tmp_path: Path) -> None:
    splits = {
        "meta_training": ({"1": [10]}, {"1": [4]}),
        "warm_up": ({"1": [10]}, {"1": [4]}),
    }
    out = load(write_dbook(tmp_path / "dbook", splits), tmp_path / "s.duckdb")
    assert sorted(out["inter"]["event"]) == ["meta_training", "warm_up"]


def test_dbook_loads_without_attribute_files(tmp_path: Path) -> None:
    out = load(write_dbook(tmp_path / "dbook", TINY, attributes=False), tmp_path / "s.duckdb")
    assert set(out["items"].index) == {"10", "11", "12"}
    assert "attribute files not found" in " ".join(out["report"].findings)


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"warm_up": ({"1": [10, 11]}, {"1": [4]})}, "same length"),
        ({"warm_up": ({"1": [10]}, {"2": [4]})}, "different users"),
        ({"warm_up": ({"1": 10}, {"1": 4})}, "same length"),
    ],
)
def test_dbook_refuses_misaligned_ratings(
    tmp_path: Path,
    splits: dict[str, tuple[dict[str, list[object]], dict[str, list[object]]]],
    message: str,
) -> None:
    store = tmp_path / "s.duckdb"
    with pytest.raises(DataError, match=message):
        ingest(write_dbook(tmp_path / "dbook", splits), store, fmt="dbook")
    assert not store.exists()


def test_dbook_refuses_missing_files(tmp_path: Path) -> None:
    folder = write_dbook(tmp_path / "dbook", TINY)
    (folder / "user_cold_testing_y.json").unlink()
    with pytest.raises(DataError, match=r"user_cold_testing_y\.json"):
        read_dbook([folder])
    with pytest.raises(DataError, match="no DBook split file"):
        read_dbook([folder / "original"])


def test_dbook_bad_rating_is_reported_with_its_position(tmp_path: Path) -> None:
    splits = {"meta_training": ({"1": [10, 11], "2": [11]}, {"1": [4, "four"], "2": [5]})}
    folder = write_dbook(tmp_path / "dbook", splits)
    ingest(folder, tmp_path / "s.duckdb", fmt="dbook", skip_bad_rows=True)  # the store exists
    with pytest.raises(BadRowsError) as caught:
        ingest(write_dbook(tmp_path / "other", splits), tmp_path / "t.duckdb", fmt="dbook")
    (bad,) = caught.value.report.bad_rows
    assert bad.file.endswith("meta_training.json")
    assert (bad.line, bad.column, bad.value) == (2, "rating", "four")  # 2nd rating of the file
    with Store.open(tmp_path / "s.duckdb", read_only=True) as s:
        assert len(s.interactions()) == 2  # skipped, not dropped silently: reported


def test_dbook_is_registered() -> None:
    assert ADAPTERS["dbook"] is read_dbook
    assert DBOOK_SPLITS[0] == "meta_training"


# ---- the shared real data --------------------------------------------------------------------


def shared_dbook() -> Path:
    if not SHARED_DBOOK.is_dir():
        pytest.skip(f"shared dataset {SHARED_DBOOK} is absent (real-data check skipped)")
    return SHARED_DBOOK


def test_real_dbook_tables() -> None:
    tables = read_dbook([shared_dbook()])
    counts = tables.interactions["event"].value_counts().to_dict()
    assert counts == {
        "meta_training": 378_450,
        "item_cold_testing": 104_278,
        "user_cold_testing": 99_341,
        "warm_up": 42_050,
        "user_and_item_cold_testing": 25_262,
    }
    assert set(tables.interactions["rating"].unique()) == {1, 2, 3, 4, 5}
    assert len(tables.items) == 22_046  # 20,934 rated books + 1,112 described only
    assert tables.users is not None and len(tables.users) == 10_592


@pytest.mark.slow
def test_real_dbook_ingests(tmp_path: Path) -> None:
    report = ingest(shared_dbook(), tmp_path / "dbook.duckdb", fmt="dbook")
    assert report.interactions.inserted == 649_381
    assert report.interactions.bad == 0
    with Store.open(tmp_path / "dbook.duckdb", read_only=True) as store:
        assert store.stats() == {
            "n_users": 10_592,
            "n_items": 22_046,
            "n_interactions": 649_381,
            "n_categories": 1,
        }
