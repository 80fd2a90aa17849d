"""Parquet exports partitioned by category: layout, manifest, exact read-back, per-category
reads, and atomic writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from metarec.data import Store, ingest_frames
from metarec.data import export as export_module
from metarec.data.export import MANIFEST, ExportedStore, export_store, open_export, open_store
from metarec.errors import StoreError, UnknownCategoryError

# Names that break naive folder names: a slash, '=', '%', a quote, a number-like value.
CATEGORIES = ["Books > Sci-Fi/Fantasy", "a=b%c", "Children's", "1990"]


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "shop.duckdb"
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(8)],
            "category": [CATEGORIES[i % 4] for i in range(8)],
            "title": [f"t{i}" if i % 3 else None for i in range(8)],
            "price": [float(i) if i % 2 else None for i in range(8)],
            "colour": ["red", None] * 4,  # an extra attribute (JSON)
        }
    )
    # "1990" has items but no interactions; rows are out of category order on purpose.
    users, picks = ["u0", "u1", "u2"], [5, 0, 2, 1, 6, 4, 0, 5, 1, 2]
    interactions = pd.DataFrame(
        {
            "user_id": [users[j % 3] for j in range(len(picks))],
            "item_id": [f"i{p}" for p in picks],
            "timestamp": [100 + j if j != 3 else None for j in range(len(picks))],
            "rating": [5, None, 4, 2, None, 3, 5, 1, None, 4],
            "event": ["rating", "view", "rating", "rating", "click"] * 2,
        }
    )
    descriptions = pd.DataFrame({"category": ["a=b%c"], "description": ["odd name"]})
    ingest_frames(
        interactions,
        path,
        items=items,
        users=pd.DataFrame({"user_id": [*users, "u3"]}),
        categories=descriptions,
    )
    return path


def _read_all(store: Store) -> dict[str, pd.DataFrame]:
    return {
        "items": store.items(),
        "users": store.users(),
        "interactions": store.interactions(),
        "categories": store.categories(),
    }


def test_export_writes_hive_partitions_and_a_manifest_that_describes_them(
    store_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    summary = export_store(store_path, out)
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["categories"]) == sorted(CATEGORIES)
    assert manifest["rows"] == {
        "items": 8,
        "interactions": 10,
        "users": 4,
        "categories": 1,
    }
    assert summary.rows == manifest["rows"] and summary.n_categories == 4
    # hive style, the value percent-encoded: one folder per category, none for "1990"'s
    # interactions since it has none
    assert (out / "items" / "category=Books%20%3E%20Sci-Fi%2FFantasy").is_dir()
    assert (out / "interactions" / "category=a%3Db%25c").is_dir()
    assert not (out / "interactions" / "category=1990").exists()
    entries = [e for c in manifest["categories"].values() for t in c.values() for e in t]
    entries += [e for t in manifest["tables"].values() for e in t]
    for entry in entries:
        data = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    # DuckDB alone reads it back by partition, names intact
    counts = duckdb.sql(
        f"SELECT category, count(*) FROM read_parquet('{out}/interactions/*/*.parquet', "
        "hive_partitioning = true, hive_types = {'category': VARCHAR}) GROUP BY 1"
    ).fetchall()
    assert dict(counts) == {"Books > Sci-Fi/Fantasy": 3, "a=b%c": 4, "Children's": 3}
    assert not (tmp_path / "export.tmp").exists()


def test_an_export_reads_back_exactly_as_the_store(store_path: Path, tmp_path: Path) -> None:
    export_store(store_path, tmp_path / "export")
    with (
        Store.open(store_path, read_only=True) as store,
        open_store(tmp_path / "export", read_only=True) as exported,
    ):
        assert isinstance(exported, ExportedStore)
        expected, got = _read_all(store), _read_all(exported)
        for name in expected:  # same columns, dtypes, values, and the interactions' row order
            pd.testing.assert_frame_equal(got[name], expected[name], check_exact=True)
        assert exported.stats() == store.stats()
        assert exported.category_descriptions() == {"a=b%c": "odd name"}
        assert exported.has_timestamps() == store.has_timestamps()
        assert exported.user_index("u2") == store.user_index("u2")


def test_only_the_selected_categories_interactions_are_read(
    store_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    export_store(store_path, out)
    with Store.open(store_path, read_only=True) as store:
        full = store.interactions()
        item_category = store.items().set_index("item_idx")["category"]
    sealed = "Books > Sci-Fi/Fantasy"
    manifest = json.loads((out / MANIFEST).read_text())
    damaged = out / manifest["categories"][sealed]["interactions"][0]["path"]
    damaged.write_bytes(b"not parquet")  # reading or even hashing it would fail

    with open_export(out, exclude=[sealed, "No Such Shelf"]) as exported:
        got = exported.interactions()
        assert exported.interaction_categories == ("1990", "Children's", "a=b%c")
        assert len(exported.items()) == 8  # items are read whole: item_idx stays dense
    keep = full["item_idx"].map(item_category) != sealed
    expected = full.loc[keep].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)

    with open_export(out, categories=["1990"]) as exported:
        assert exported.interactions().empty  # a category without interactions: typed, empty
        assert list(exported.interactions().columns) == list(full.columns)
    with pytest.raises(StoreError, match="fails its checksum"):
        open_export(out, categories=[sealed])
    with pytest.raises(StoreError, match="fails its checksum"):
        open_store(out, read_only=True)  # every category: the damaged file is among them
    with pytest.raises(UnknownCategoryError, match="No Such Shelf"):
        open_export(out, categories=["No Such Shelf"])


def test_export_is_atomic_and_never_overwrites(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    (tmp_path / "export.tmp").mkdir()  # left by an export that crashed: removed, not reused
    (tmp_path / "export.tmp" / "stale.parquet").write_bytes(b"x")
    export_store(store_path, out)
    assert not (out / "stale.parquet").exists()
    with pytest.raises(StoreError, match="already exists"):
        export_store(store_path, out)

    real = export_module._describe

    def crash(root: Path, path: Path) -> dict:
        if "interactions" in str(path):
            raise OSError("disk full")
        return real(root, path)

    monkeypatch.setattr(export_module, "_describe", crash)
    with pytest.raises(OSError, match="disk full"):
        export_store(store_path, tmp_path / "second")
    assert not (tmp_path / "second").exists() and not (tmp_path / "second.tmp").exists()


def test_folders_that_are_not_exports_or_opened_for_writing_are_refused(
    store_path: Path, tmp_path: Path
) -> None:
    export_store(store_path, tmp_path / "export")
    with pytest.raises(StoreError, match="read-only"):
        open_store(tmp_path / "export")
    with pytest.raises(StoreError, match="is a folder"):
        Store.open(tmp_path / "export", read_only=True)  # the store file API opens files only
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a metarec export"):
        open_store(tmp_path / "plain", read_only=True)
    (tmp_path / "export" / "users" / "data_0.parquet").unlink()
    with pytest.raises(StoreError, match=r"lacks users/data_0\.parquet"):
        open_export(tmp_path / "export")


def test_other_tables_travel_whole_and_bookkeeping_stays_behind(
    store_path: Path, tmp_path: Path
) -> None:
    with Store.open(store_path) as store:  # e.g. a cache of text embeddings
        store.connection.execute("CREATE TABLE cache (key VARCHAR, vector FLOAT[])")
        store.connection.execute("INSERT INTO cache VALUES ('i1', [1.0, 2.0]), ('i2', [3.0])")
    export_store(store_path, tmp_path / "export")
    assert not (tmp_path / "export" / "loads").exists()
    assert not (tmp_path / "export" / "meta").exists()
    with open_store(tmp_path / "export", read_only=True) as exported:
        rows = exported.connection.execute("SELECT * FROM cache ORDER BY key").fetchall()
    assert rows == [("i1", [1.0, 2.0]), ("i2", [3.0])]
