"""The store: opening rules, locking, and the read API's exact columns, dtypes and values."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from metarec.data import Store, ingest_frames
from metarec.data.catalog import Catalog
from metarec.data.schema import INTERACTIONS_DTYPES, ITEMS_DTYPES, USERS_DTYPES
from metarec.errors import StoreError


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A store with two categories, three users (one without interactions) and known counts."""
    path = tmp_path / "s.duckdb"
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "category": ["Toys", "Toys", "Games", "Games"],
            "title": ["Ball", None, "Chess", "Go"],
            "price": [3.5, None, 20, 30],
            "colour": ["red", None, None, None],
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u2"],
            "item_id": ["a", "b", "a", "c", "c"],
            "timestamp": [10, 20, 30, None, 50],
            "rating": [5, None, 4, 2, 3],
            "event": ["rating", "view", "rating", "rating", "rating"],
        }
    )
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "age": [30, None, 41]})
    categories = pd.DataFrame({"category": ["Toys", "Games"], "description": ["For kids", None]})
    ingest_frames(interactions, path, items=items, users=users, categories=categories)
    return path


def test_open_missing_store_says_to_ingest(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="metarec ingest"):
        Store.open(tmp_path / "nope.duckdb")
    with pytest.raises(StoreError, match="read-only"):
        Store.open(tmp_path / "nope.duckdb", read_only=True, create=True)
    assert not (tmp_path / "nope.duckdb").exists()


def test_create_makes_an_empty_store_with_typed_empty_tables(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "new.duckdb"
    with Store.open(path, create=True) as store:
        assert store.path == path
        assert store.stats() == {"n_users": 0, "n_items": 0, "n_interactions": 0, "n_categories": 0}
        assert store.items().dtypes.astype(str).to_dict() == ITEMS_DTYPES
        assert store.users().dtypes.astype(str).to_dict() == USERS_DTYPES
        assert store.interactions().dtypes.astype(str).to_dict() == INTERACTIONS_DTYPES
        assert store.categories().empty
        assert not store.has_timestamps()
    with Store.open(path, create=True) as again:  # create on an existing store just opens it
        version = again.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchall() == [("1",)]


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"hello" * 1000)
    with pytest.raises(StoreError, match="not a metarec store"):
        Store.open(junk)
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not a metarec store"):
        Store.open(other)


def test_a_store_locked_by_another_process_is_refused(tmp_path: Path, store_path: Path) -> None:
    holder = textwrap.dedent(
        f"""
        import sys, duckdb
        con = duckdb.connect({str(store_path)!r})
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "locked"
        for read_only in (False, True):
            with pytest.raises(StoreError, match=r"only one\s+process"):
                Store.open(store_path, read_only=read_only)
    finally:
        process.communicate(input="", timeout=30)
    with Store.open(store_path, read_only=True) as store:  # free again once the holder exits
        assert store.stats()["n_items"] == 4


def test_read_api_columns_dtypes_and_values(store_path: Path) -> None:
    with Store.open(store_path, read_only=True) as store:
        items = store.items()
        assert list(items.columns) == list(ITEMS_DTYPES)
        assert items.dtypes.astype(str).to_dict() == ITEMS_DTYPES
        assert items["item_idx"].tolist() == [0, 1, 2, 3]
        assert items["title"].tolist() == ["Ball", None, "Chess", "Go"]  # None, not NaN
        assert items.loc[0, "extra"] == '{"colour": "red"}'
        assert items["extra"].tolist()[1:] == [None, None, None]

        users = store.users()
        assert users.dtypes.astype(str).to_dict() == USERS_DTYPES
        assert users["user_id"].tolist() == ["u1", "u2", "u3"]
        assert users["extra"].tolist() == ['{"age": 30.0}', None, '{"age": 41.0}']

        x = store.interactions()
        assert list(x.columns) == list(INTERACTIONS_DTYPES)
        assert x.dtypes.astype(str).to_dict() == INTERACTIONS_DTYPES
        assert x["user_idx"].tolist() == [0, 0, 1, 1, 1]
        assert x["item_idx"].tolist() == [0, 1, 0, 2, 2]
        assert x["timestamp"].tolist()[:3] == [10, 20, 30] and pd.isna(x["timestamp"][3])
        assert x["event"].tolist() == ["rating", "view", "rating", "rating", "rating"]


def test_categories_counts_are_computed_by_hand(store_path: Path) -> None:
    with Store.open(store_path, read_only=True) as store:
        cats = store.categories()
        assert cats.to_dict("list") == {
            "category": ["Games", "Toys"],
            "n_items": [2, 2],  # d has no interactions but is an item of Games
            "n_users": [1, 2],
            "n_interactions": [2, 3],
        }
        assert cats.dtypes.astype(str).tolist() == ["object", "int64", "int64", "int64"]
        assert store.category_descriptions() == {"Toys": "For kids"}
        assert store.stats() == {"n_users": 3, "n_items": 4, "n_interactions": 5, "n_categories": 2}
        assert not store.has_timestamps()  # one interaction has no time
        assert (store.user_index("u2"), store.user_index("u3"), store.user_index("zz")) == (
            1,
            2,
            None,
        )


def test_closed_store_says_so(store_path: Path) -> None:
    store = Store.open(store_path, read_only=True)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.items()
    assert "closed" in repr(store)


def test_category_masks_compare_items_then_gather_positives(known_catalog: Catalog) -> None:
    """``in_categories`` (per positive) is ``items_in`` (per item) gathered by each positive's
    item, and the same as comparing every positive's category name."""
    names = known_catalog.categories[:2]
    per_positive = known_catalog.item_category[known_catalog.positives["item_idx"].to_numpy()]
    expected = np.isin(per_positive, names)
    assert 0 < expected.sum() < len(expected)  # the check can fail either way
    np.testing.assert_array_equal(known_catalog.in_categories(names), expected)
    items = known_catalog.items_in(names)
    assert items.shape == (len(known_catalog.items),)
    np.testing.assert_array_equal(items, np.isin(known_catalog.item_category, names))
