"""Item features: category path, categorical and multi-valued attributes, numeric attributes.

An item becomes a fixed vector ``x_i`` of blocks, one per field:

- ``category``: every prefix of the category path (``Books``, ``Books > Literature``,
  ``Books > Literature > Poetry``), so a new leaf still shares its parents with known categories;
- categorical fields (``authors`` may hold several, ``|``-separated), and multi-valued extras
  (``genres``): multi-hot, L2-normalised per block so a ten-author book weighs as much as a
  one-author book;
- numeric fields: standardised (``price`` on a log scale), missing values at the mean.

Each categorical field keeps its most frequent tokens (``max_vocab_per_field``) as their own
slots and hashes the rest into ``oov_buckets`` shared slots, so unseen authors or a brand-new leaf
category still land somewhere the model was trained on. Vocabularies are fitted on the
meta-training items only: held-out categories are sealed.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from metarec.config import FeatureConfig

PATH_SEPARATOR = " > "
_LOG_FIELDS = frozenset({"price"})


def category_prefixes(category: str) -> list[str]:
    """All prefixes of a path, root first: ``A > B > C`` gives ``A``, ``A > B``, ``A > B > C``."""
    levels = [level.strip() for level in category.split(">") if level.strip()]
    return [PATH_SEPARATOR.join(levels[: i + 1]) for i in range(len(levels))]


def _tokens(value: object) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [t.strip() for t in str(value).split("|") if t.strip()]


@dataclass(frozen=True)
class Vocab:
    """Token slots of one field: known tokens first, then ``oov_buckets`` hashed slots."""

    tokens: tuple[str, ...]
    oov_buckets: int
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @property
    def size(self) -> int:
        return len(self.tokens) + self.oov_buckets

    def slot(self, token: str) -> int:
        found = self._index.get(token)
        if found is not None:
            return found
        # crc32 is stable across processes (Python's hash() is salted per process).
        return len(self.tokens) + zlib.crc32(token.encode()) % self.oov_buckets

    @classmethod
    def fit(cls, values: Iterable[list[str]], max_size: int, oov_buckets: int) -> Vocab:
        counts = Counter(token for tokens in values for token in tokens)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(tuple(t for t, _ in ranked[:max_size]), oov_buckets)


@dataclass(frozen=True)
class FeatureSpace:
    """Fitted encoders that turn the items table into a dense matrix ``(n_items, dim)``."""

    vocabs: dict[str, Vocab]  # field name -> vocabulary, "category" first
    numeric: dict[str, tuple[float, float]]  # field name -> (mean, std) after the log transform

    @property
    def dim(self) -> int:
        return sum(v.size for v in self.vocabs.values()) + len(self.numeric)

    @classmethod
    def fit(cls, items: pd.DataFrame, config: FeatureConfig) -> FeatureSpace:
        """Fit vocabularies and numeric statistics on ``items`` (the meta-training items)."""
        vocabs: dict[str, Vocab] = {
            "category": Vocab.fit(
                (category_prefixes(c) for c in items["category"]), 10_000, config.oov_buckets
            )
        }
        for name in (*config.categorical_fields, *config.extra_fields):
            values = [_tokens(v) for v in _field_values(items, name)]
            if any(values):  # a field no item has would only add dead slots
                vocabs[name] = Vocab.fit(values, config.max_vocab_per_field, config.oov_buckets)
        numeric: dict[str, tuple[float, float]] = {}
        for name in config.numeric_fields:
            column = _numeric(items, name)
            if np.isfinite(column).any():
                mean, std = float(np.nanmean(column)), float(np.nanstd(column))
                numeric[name] = (mean, std if std > 0 else 1.0)
        return cls(vocabs, numeric)

    def encode(self, items: pd.DataFrame) -> torch.Tensor:
        """Encode items into features.

        Args:
            items: rows of the items table (any subset, any order).

        Returns:
            x: (len(items), dim) float32, one row per input row.
        """
        n = len(items)
        blocks: list[np.ndarray] = []
        for name, vocab in self.vocabs.items():
            if name == "category":
                values = [category_prefixes(c) for c in items["category"]]
            else:
                values = [_tokens(v) for v in _field_values(items, name)]
            block = np.zeros((n, vocab.size), dtype=np.float32)
            rows = [r for r, tokens in enumerate(values) for _ in tokens]
            cols = [vocab.slot(t) for tokens in values for t in tokens]
            np.add.at(block, (rows, cols), 1.0)
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            blocks.append(block / np.maximum(norms, 1e-12))
        for name, (mean, std) in self.numeric.items():
            column = (_numeric(items, name) - mean) / std
            blocks.append(np.nan_to_num(column, nan=0.0).astype(np.float32)[:, None])
        if not blocks:
            return torch.zeros((n, 0))
        return torch.from_numpy(np.concatenate(blocks, axis=1))

    def to_json(self) -> dict[str, object]:
        return {
            "vocabs": {
                k: {"tokens": list(v.tokens), "oov_buckets": v.oov_buckets}
                for k, v in self.vocabs.items()
            },
            "numeric": {k: list(v) for k, v in self.numeric.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> FeatureSpace:
        vocabs = data["vocabs"]
        numeric = data["numeric"]
        assert isinstance(vocabs, dict) and isinstance(numeric, dict)
        return cls(
            {k: Vocab(tuple(v["tokens"]), int(v["oov_buckets"])) for k, v in vocabs.items()},
            {k: (float(v[0]), float(v[1])) for k, v in numeric.items()},
        )


def _field_values(items: pd.DataFrame, name: str) -> list[object]:
    """A field's values from its own column, or from the JSON ``extra`` column."""
    if name in items.columns:
        return list(items[name])
    if "extra" not in items.columns:
        return [None] * len(items)
    out: list[object] = []
    for raw in items["extra"]:
        extra = json.loads(raw) if isinstance(raw, str) and raw else {}
        out.append(extra.get(name) if isinstance(extra, dict) else None)
    return out


def _numeric(items: pd.DataFrame, name: str) -> np.ndarray:
    values = pd.to_numeric(pd.Series(_field_values(items, name)), errors="coerce")
    column = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if name in _LOG_FIELDS:
        column = np.log1p(np.clip(column, 0, None))
    return column
