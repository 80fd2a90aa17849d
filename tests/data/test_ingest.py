"""Ingestion of the generic table format: every bad input, atomicity, idempotency, file types."""

from __future__ import annotations

import csv
import gzip
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from metarec.data import LoadReport, Store, ingest, ingest_frames
from metarec.data import write as write_module
from metarec.errors import BadRowsError, DataError, StoreError

ingest_module = importlib.import_module("metarec.data.ingest")  # the package re-exports ingest()

TABLES = ("items", "users", "interactions", "categories", "loads", "meta")

ITEMS_HEADER = ["item_id", "category", "title", "year", "price", "genres"]
ITEMS_ROWS = [
    ["b1", "Books > Mystery", "The Hound", "1902", "9.5", "crime|classic"],
    ["b2", "Books > Mystery", "Gone", "2012", "", "thriller"],
    ["m1", "Music", "Blue", "1971", "20", ""],
]
INTERACTIONS_HEADER = ["user_id", "item_id", "timestamp", "rating", "event"]
INTERACTIONS_ROWS = [
    ["u1", "b1", "1600000000", "5", "rating"],
    ["u1", "m1", "2020-09-13T12:26:40Z", "", "order"],
    ["u2", "b2", "1600000100", "3", "rating"],
    ["u2", "b1", "1600000200", "4.5", "rating"],
]


def write_csv(path: Path, header: list[str], rows: list[list[Any]], delimiter: str = ",") -> Path:
    """Write a small delimited file (``None`` as an empty field)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]] | None:
    """Every table's rows (sorted), or None when there is no store file."""
    if not path.exists():
        return None
    with Store.open(path, read_only=True) as store:
        return {
            table: store.connection.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            for table in TABLES
        }


@pytest.fixture
def shop(tmp_path: Path) -> Callable[..., Path]:
    """Write a small generic-format folder; keyword arguments replace a table's rows."""

    def make(
        name: str = "shop",
        *,
        items: list[list[Any]] | None = None,
        interactions: list[list[Any]] | None = None,
        interactions_header: list[str] | None = None,
        categories: list[list[Any]] | None = None,
    ) -> Path:
        folder = tmp_path / name
        write_csv(folder / "items.csv", ITEMS_HEADER, ITEMS_ROWS if items is None else items)
        write_csv(
            folder / "interactions.csv",
            interactions_header or INTERACTIONS_HEADER,
            INTERACTIONS_ROWS if interactions is None else interactions,
        )
        write_csv(folder / "users.csv", ["user_id", "age"], [["u1", "31"], ["u2", "45"]])
        if categories is not None:
            write_csv(folder / "categories.csv", ["category", "description"], categories)
        return folder

    return make


@pytest.fixture
def loaded(tmp_path: Path, shop: Callable[..., Path]) -> Path:
    """A store holding the small shop, to check that failed loads leave it as it was."""
    store = tmp_path / "store.duckdb"
    ingest(shop("base"), store)
    return store


# ---- the happy path ----------------------------------------------------------------------------


def test_generic_folder_loads_every_table(tmp_path: Path, shop: Callable[..., Path]) -> None:
    folder = shop(categories=[["Music", "Records and CDs"], ["Books > Mystery", ""]])
    store = tmp_path / "store.duckdb"
    report = ingest(folder, store)

    assert report.format == "table"
    assert (report.interactions.read, report.interactions.inserted) == (4, 4)
    assert (report.items.inserted, report.users.inserted, report.categories.inserted) == (3, 2, 2)
    assert report.bad_rows == [] and report.report_path is None
    with Store.open(store, read_only=True) as s:
        items = s.items()
        assert items["item_idx"].tolist() == [0, 1, 2]  # dense, in insertion order
        hound = items.iloc[0]
        assert (hound["title"], hound["year"], hound["price"]) == ("The Hound", 1902.0, 9.5)
        assert json.loads(hound["extra"]) == {"genres": "crime|classic"}
        assert items.iloc[1]["price"] != items.iloc[1]["price"]  # NaN: no price given
        assert items.iloc[2]["extra"] is None  # the only extra value was empty
        assert json.loads(s.users().iloc[1]["extra"]) == {"age": "45"}
        x = s.interactions()
        assert x["timestamp"].tolist() == [1600000000, 1600000000, 1600000100, 1600000200]
        assert x["rating"].isna().tolist() == [False, True, False, False]
        assert x["event"].tolist() == ["rating", "order", "rating", "rating"]
        assert s.category_descriptions() == {"Music": "Records and CDs"}
        assert s.has_timestamps()


def test_iso_and_int_timestamps_agree(tmp_path: Path) -> None:
    rows = [
        ["u1", "a", "1600000000"],
        ["u1", "b", "2020-09-13T12:26:40Z"],
        ["u1", "c", "2020-09-13 12:26:40"],  # naive ISO: UTC
        ["u1", "d", "2020-09-13T14:26:40+02:00"],
        ["u1", "e", "1600000000.75"],  # fractional seconds: floored
        ["u1", "f", ""],  # unknown time
    ]
    folder = tmp_path / "t"
    write_csv(
        folder / "interactions.csv",
        ["user_id", "item_id", "timestamp", "category"],
        [[*r, "C"] for r in rows],
    )
    store = tmp_path / "s.duckdb"
    report = ingest(folder, store)
    with Store.open(store, read_only=True) as s:
        stamps = s.interactions()["timestamp"]
        assert stamps.dtype == "Int64"
        assert stamps.iloc[:5].tolist() == [1600000000] * 5
        assert stamps.isna().tolist() == [False] * 5 + [True]
        assert not s.has_timestamps()
    assert any("1 of 6 interactions have no timestamp" in f for f in report.findings)


def test_jsonl_and_parquet_inputs_give_the_same_store(
    tmp_path: Path, shop: Callable[..., Path]
) -> None:
    csv_store = tmp_path / "csv.duckdb"
    ingest(shop("csv"), csv_store)

    items = pd.DataFrame(ITEMS_ROWS, columns=ITEMS_HEADER)
    items["year"] = items["year"].astype(int)  # Parquet keeps real numbers
    items["price"] = pd.to_numeric(items["price"])
    other = tmp_path / "other"
    other.mkdir()
    items.to_parquet(other / "items.parquet")
    records = []
    for user, item, stamp, rating, event in INTERACTIONS_ROWS:
        record: dict[str, Any] = {"user_id": user, "item_id": item, "event": event}
        record["timestamp"] = int(stamp) if stamp.isdigit() else stamp  # JSON: mixed types
        record["rating"] = float(rating) if rating else None
        records.append(record)
    (other / "interactions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pd.DataFrame({"user_id": ["u1", "u2"], "age": ["31", "45"]}).to_json(
        other / "users.json", orient="records", lines=True
    )
    other_store = tmp_path / "other.duckdb"
    report = ingest(other, other_store)

    assert report.interactions.inserted == 4
    before, after = snapshot(csv_store), snapshot(other_store)
    assert before is not None and after is not None
    # Same rows, same event ids (md5 of normalised values), whatever the file type.
    for table in ("items", "users", "interactions"):
        assert before[table] == after[table], table


def test_explicit_file_paths(tmp_path: Path, shop: Callable[..., Path]) -> None:
    folder = shop()
    store = tmp_path / "s.duckdb"
    report = ingest([folder / "interactions.csv", folder / "items.csv"], store, fmt="table")
    assert (report.interactions.inserted, report.items.inserted, report.users.read) == (4, 3, 0)


def test_several_files_of_one_table_are_concatenated(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    write_csv(
        folder / "interactions_2024-01.csv", ["user_id", "item_id", "category"], [["u1", "a", "C"]]
    )
    write_csv(
        folder / "interactions_2024-02.csv",
        ["user_id", "item_id", "category"],
        [["u2", "b", "C"], ["u2", "bad", ""]],
    )
    with pytest.raises(BadRowsError) as caught:
        ingest(folder, tmp_path / "s.duckdb")
    (bad,) = caught.value.report.bad_rows
    # The line is counted in the file the row came from.
    assert bad.file.endswith("interactions_2024-02.csv") and bad.line == 3


def test_items_from_interaction_category_without_items_table(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    write_csv(
        folder / "interactions.csv",
        ["user_id", "item_id", "category"],
        [["u1", "a", "Toys"], ["u2", "a", "Toys"], ["u2", "b", "Games"]],
    )
    store = tmp_path / "s.duckdb"
    report = ingest(folder, store)
    assert report.items.inserted == 2
    with Store.open(store, read_only=True) as s:
        assert s.items()[["item_id", "category"]].values.tolist() == [["a", "Toys"], ["b", "Games"]]

    # Later loads may refer to stored items with no items table and no category.
    later = tmp_path / "later"
    write_csv(later / "interactions.csv", ["user_id", "item_id"], [["u3", "b"]])
    assert ingest(later, store).interactions.inserted == 1


def test_ingest_frames_loads_in_memory_tables(tmp_path: Path) -> None:
    store = tmp_path / "s.duckdb"
    interactions = pd.DataFrame(
        {"user_id": ["u1", "u2"], "item_id": [10, 11], "timestamp": [5, 6], "weight": [0.5, 1]}
    )
    items = pd.DataFrame({"item_id": [10, 11], "category": ["A", "B"], "brand": ["x", None]})
    report = ingest_frames(interactions, store, items=items)
    assert (report.format, report.interactions.inserted) == ("frames", 2)
    with Store.open(store, read_only=True) as s:
        assert s.items()["item_id"].tolist() == ["10", "11"]  # ids are text
        assert s.interactions()["weight"].tolist() == [0.5, 1.0]


# ---- bad inputs: typed error, store unchanged ---------------------------------------------------


def test_missing_required_column(tmp_path: Path, loaded: Path, shop: Callable[..., Path]) -> None:
    before = snapshot(loaded)
    folder = shop("bad", interactions=[["u1", "1600000000"]], interactions_header=["user_id", "ts"])
    with pytest.raises(DataError, match=r"lacks required column\(s\) \['item_id'\]"):
        ingest(folder, loaded)
    assert snapshot(loaded) == before


def test_unparsable_number(tmp_path: Path, loaded: Path, shop: Callable[..., Path]) -> None:
    before = snapshot(loaded)
    rows = [*INTERACTIONS_ROWS, ["u1", "b2", "1600000300", "five", "rating"]]
    with pytest.raises(BadRowsError) as caught:
        ingest(shop("bad", interactions=rows), loaded)
    (bad,) = caught.value.report.bad_rows
    assert (bad.line, bad.column, bad.value) == (6, "rating", "five")
    assert bad.file.endswith("interactions.csv")
    assert "not a number" in bad.reason
    assert "1 bad row(s)" in str(caught.value) and "interactions.csv:6" in str(caught.value)
    assert snapshot(loaded) == before


def test_unparsable_item_number(tmp_path: Path, loaded: Path, shop: Callable[..., Path]) -> None:
    before = snapshot(loaded)
    items = [*ITEMS_ROWS, ["b9", "Books", "Cheap", "1999", "free", ""]]
    with pytest.raises(BadRowsError) as caught:
        ingest(shop("bad", items=items), loaded)
    assert [(b.line, b.column) for b in caught.value.report.bad_rows] == [(5, "price")]
    assert snapshot(loaded) == before


def test_unparsable_time(tmp_path: Path, loaded: Path, shop: Callable[..., Path]) -> None:
    before = snapshot(loaded)
    rows = [["u1", "b2", "yesterday", "4", "rating"], *INTERACTIONS_ROWS]
    with pytest.raises(BadRowsError) as caught:
        ingest(shop("bad", interactions=rows), loaded)
    (bad,) = caught.value.report.bad_rows
    assert (bad.line, bad.column, bad.value) == (2, "timestamp", "yesterday")
    assert snapshot(loaded) == before


def test_unknown_item(tmp_path: Path, loaded: Path, shop: Callable[..., Path]) -> None:
    before = snapshot(loaded)
    # b1 is only in the store (not in this load's items): known. zz is nowhere.
    items = [ITEMS_ROWS[2]]
    rows = [["u1", "b1", "1", "4", ""], ["u1", "zz", "2", "4", ""]]
    with pytest.raises(BadRowsError) as caught:
        ingest(shop("bad", items=items, interactions=rows), loaded)
    (bad,) = caught.value.report.bad_rows
    assert (bad.line, bad.column, bad.value) == (3, "item_id", "zz")
    assert snapshot(loaded) == before


def test_unknown_item_without_items_or_category(tmp_path: Path, loaded: Path) -> None:
    before = snapshot(loaded)
    folder = tmp_path / "bad"
    write_csv(folder / "interactions.csv", ["user_id", "item_id"], [["u1", "b1"], ["u1", "new"]])
    with pytest.raises(BadRowsError, match="no items table or category") as caught:
        ingest(folder, loaded)
    assert [b.line for b in caught.value.report.bad_rows] == [3]
    assert snapshot(loaded) == before


@pytest.mark.parametrize("content", ["", "user_id,item_id\n"], ids=["zero-bytes", "header-only"])
def test_empty_file(tmp_path: Path, loaded: Path, content: str) -> None:
    before = snapshot(loaded)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "interactions.csv").write_text(content)
    with pytest.raises(DataError, match="is empty"):
        ingest(folder, loaded)
    assert snapshot(loaded) == before


def test_duplicate_keys_within_a_load(
    tmp_path: Path, loaded: Path, shop: Callable[..., Path]
) -> None:
    before = snapshot(loaded)
    items = [*ITEMS_ROWS, ["b1", "Books", "Again", "", "", ""]]
    rows = [*INTERACTIONS_ROWS, INTERACTIONS_ROWS[0]]
    with pytest.raises(BadRowsError) as caught:
        ingest(shop("bad", items=items, interactions=rows), loaded)
    found = {
        (Path(b.file).name, b.line, b.reason.split(":")[0]) for b in caught.value.report.bad_rows
    }
    assert found == {
        ("items.csv", 5, "duplicate item_id within this load"),
        (
            "interactions.csv",
            6,
            "duplicate row",
        ),
    }
    assert snapshot(loaded) == before


def test_duplicate_event_ids(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    write_csv(
        folder / "interactions.csv",
        ["event_id", "user_id", "item_id", "category"],
        [["e1", "u1", "a", "C"], ["e2", "u1", "b", "C"], ["e1", "u2", "a", "C"]],
    )
    with pytest.raises(BadRowsError) as caught:
        ingest(folder, tmp_path / "s.duckdb")
    (bad,) = caught.value.report.bad_rows
    assert (bad.line, bad.column, bad.value) == (4, "event_id", "e1")
    assert not (tmp_path / "s.duckdb").exists()  # a refused load into a new store leaves no file


def test_duplicate_users_and_missing_ids(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    write_csv(
        folder / "interactions.csv",
        ["user_id", "item_id", "category"],
        [["u1", "a", "C"], ["", "a", "C"], ["u1", "", "C"]],
    )
    write_csv(folder / "users.csv", ["user_id", "city"], [["u1", "Lyon"], ["u1", "Paris"]])
    with pytest.raises(BadRowsError) as caught:
        ingest(folder, tmp_path / "s.duckdb")
    found = [(Path(b.file).name, b.line, b.column, b.reason) for b in caught.value.report.bad_rows]
    assert found == [
        ("interactions.csv", 3, "user_id", "missing user_id"),
        ("interactions.csv", 4, "item_id", "missing item_id"),
        ("users.csv", 3, "user_id", "duplicate user_id within this load"),
    ]


def test_category_without_items_is_a_finding(tmp_path: Path, shop: Callable[..., Path]) -> None:
    folder = shop(categories=[["Music", "Records"], ["Poetry", "Verse, coming soon"]])
    report = ingest(folder, tmp_path / "s.duckdb")
    assert report.categories.inserted == 2
    assert any("'Poetry'" in f and "without any item" in f for f in report.findings)
    assert not any("'Music'" in f for f in report.findings)


def test_skip_bad_rows_writes_the_report_and_loads_the_rest(
    tmp_path: Path, shop: Callable[..., Path]
) -> None:
    rows = [*INTERACTIONS_ROWS, ["u3", "b1", "soon", "4", ""], ["u3", "nope", "1", "4", ""]]
    store = tmp_path / "s.duckdb"
    report = ingest(shop(interactions=rows), store, skip_bad_rows=True)

    assert report.interactions == ingest_module.TableCounts(read=6, inserted=4, bad=2)
    assert report.report_path == tmp_path / "s.duckdb.bad-rows.csv"
    written = pd.read_csv(report.report_path)
    assert written.columns.tolist() == ["line", "file", "column", "reason", "value"]
    assert written[["line", "column", "value"]].values.tolist() == [
        [6, "timestamp", "soon"],
        [7, "item_id", "nope"],
    ]
    with Store.open(store, read_only=True) as s:
        assert s.stats()["n_interactions"] == 4
        assert s.user_index("u3") is None  # its only rows were bad


def test_millisecond_timestamps_are_flagged(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    write_csv(
        folder / "interactions.csv",
        ["user_id", "item_id", "timestamp", "category"],
        [["u1", "a", "1600000000000", "C"]],
    )
    report = ingest(folder, tmp_path / "s.duckdb")
    assert any("milliseconds" in f for f in report.findings)


def test_quoted_newlines_keep_line_numbers_right(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    write_csv(
        folder / "items.csv",
        ["item_id", "category", "description", "year"],
        [["a", "C", "two\nlines", "1990"], ["b", "C", "fine", "19x0"]],
    )
    write_csv(folder / "interactions.csv", ["user_id", "item_id"], [["u1", "a"]])
    with pytest.raises(BadRowsError) as caught:
        ingest(folder, tmp_path / "s.duckdb")
    (bad,) = caught.value.report.bad_rows
    assert (bad.line, bad.column) == (4, "year")  # header 1, record "a" on lines 2-3


def test_unknown_format_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "events.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"cannot tell the format.*table, recbole, movielens"):
        ingest(folder, tmp_path / "s.duckdb")
    with pytest.raises(DataError, match="does not exist"):
        ingest(tmp_path / "missing", tmp_path / "s.duckdb")
    assert not (tmp_path / "s.duckdb").exists()


def test_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "interactions.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read interactions file .*interactions\.parquet"):
        ingest(folder, tmp_path / "s.duckdb")


# ---- idempotency and updates --------------------------------------------------------------------


def test_rerunning_a_load_changes_nothing(tmp_path: Path, shop: Callable[..., Path]) -> None:
    folder = shop(categories=[["Music", "Records"]])
    store = tmp_path / "s.duckdb"
    first = ingest(folder, store)
    before = snapshot(store)
    again = ingest(folder, store)

    assert again.interactions == ingest_module.TableCounts(read=4, unchanged=4)
    assert again.items == ingest_module.TableCounts(read=3, unchanged=3)
    assert again.users == ingest_module.TableCounts(read=2, unchanged=2)
    assert again.categories == ingest_module.TableCounts(read=1, unchanged=1)
    assert (first.load_id, again.load_id) == (0, 1)
    after = snapshot(store)
    assert before is not None and after is not None
    for table in ("items", "users", "interactions", "categories", "meta"):
        assert after[table] == before[table], table
    assert len(after["loads"]) == 2  # the log records both runs


def test_changed_items_are_updated_and_new_ones_appended(
    tmp_path: Path, loaded: Path, shop: Callable[..., Path]
) -> None:
    items = [
        ["b1", "Books > Mystery", "The Hound", "1902", "9.5", "crime|classic"],  # unchanged
        ["b2", "Books > Thriller", "Gone", "2012", "7", "thriller"],  # moved and priced
        ["n1", "Games", "Go", "", "30", ""],  # new
    ]
    report = ingest(shop("more", items=items, interactions=[["u9", "n1", "5", "", "view"]]), loaded)
    assert report.items == ingest_module.TableCounts(read=3, inserted=1, unchanged=1, updated=1)
    with Store.open(loaded, read_only=True) as s:
        frame = s.items().set_index("item_id")
        assert frame.loc["b2", ["category", "price"]].tolist() == ["Books > Thriller", 7.0]
        assert frame.loc["n1", "item_idx"] == 3  # max + 1
        assert frame.loc["m1", "title"] == "Blue"  # not in this load: untouched
        assert s.user_index("u9") == 2


# ---- atomicity ----------------------------------------------------------------------------------


def test_bad_row_at_the_end_of_a_large_load_leaves_the_store_untouched(
    tmp_path: Path, loaded: Path
) -> None:
    before = snapshot(loaded)
    n = 50_000
    frame = pd.DataFrame(
        {
            "user_id": [f"big{i % 997}" for i in range(n)],
            "item_id": [f"x{i % 101}" for i in range(n)],
            "timestamp": [str(1_600_000_000 + i) for i in range(n)],
            "category": "Bulk",
        }
    )
    frame.loc[n - 1, "timestamp"] = "not a time"
    folder = tmp_path / "big"
    folder.mkdir()
    frame.to_csv(folder / "interactions.csv", index=False)
    with pytest.raises(BadRowsError) as caught:
        ingest(folder, loaded)
    assert [b.line for b in caught.value.report.bad_rows] == [n + 1]
    assert snapshot(loaded) == before


def test_failure_inside_the_transaction_rolls_everything_back(
    tmp_path: Path, loaded: Path, shop: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(loaded)
    items = [*ITEMS_ROWS, ["n1", "Games", "Go", "", "30", ""]]
    folder = shop("more", items=items, interactions=[["u9", "n1", "5", "", "view"]])

    def crash(*args: object) -> int:
        raise RuntimeError("disk on fire")  # after items and users were written

    monkeypatch.setattr(write_module, "_insert_interactions", crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        ingest(folder, loaded)
    assert snapshot(loaded) == before
    monkeypatch.undo()
    report: LoadReport = ingest(folder, loaded)  # the store is still usable
    assert report.items.inserted == 1 and report.interactions.inserted == 1


def test_gzipped_text_tables(tmp_path: Path) -> None:
    folder = tmp_path / "gz"
    folder.mkdir()
    with gzip.open(folder / "interactions.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write("user_id,item_id,rating\nu1,a,4\nu2,a,oops\n")
    with gzip.open(folder / "items.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"item_id": "a", "category": "C", "tags": ["x", "y"]}) + "\n")
    with pytest.raises(BadRowsError) as caught:
        ingest(folder, tmp_path / "s.duckdb")
    (bad,) = caught.value.report.bad_rows
    assert (Path(bad.file).name, bad.line, bad.value) == ("interactions.csv.gz", 3, "oops")
    report = ingest(folder, tmp_path / "s.duckdb", skip_bad_rows=True)
    assert report.interactions.inserted == 1
    with Store.open(tmp_path / "s.duckdb", read_only=True) as s:
        assert json.loads(s.items()["extra"][0]) == {"tags": ["x", "y"]}  # lists stay lists


def test_loading_into_an_open_store_leaves_it_open(tmp_path: Path) -> None:
    path = tmp_path / "live.duckdb"
    events = pd.DataFrame({"user_id": ["u1"], "item_id": ["a"], "category": ["C"]})
    with Store.open(path, create=True) as live:
        report = ingest_frames(events, live)
        assert report.interactions.inserted == 1
        assert live.stats()["n_interactions"] == 1  # still open, sees the new rows
    with (
        Store.open(path, read_only=True) as reader,
        pytest.raises(StoreError, match="read-only"),
    ):
        ingest_frames(events, reader)
