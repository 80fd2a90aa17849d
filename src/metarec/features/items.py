"""Item features: category path, categorical and multi-valued attributes, numeric attributes.

An item becomes a fixed vector ``x_i`` of blocks, one per field:

- ``category``: every prefix of the category path (``Books``, ``Books > Literature``,
  ``Books > Literature > Poetry``), so a new leaf still shares its parents with known categories;
- categorical fields (``authors`` may hold several, ``|``-separated), and multi-valued extras
  (``genres``): multi-hot, L2-normalised per block so a ten-author book weighs as much as a
  one-author book;
- numeric fields: standardised (``price`` on a log scale), missing values at the mean.

With ``features.text`` on, a last block holds the item's text embedding projected to
``text_dim`` unit-norm components (:class:`~metarec.features.text.TextProjection`, fitted on the
meta-training items too); the raw embeddings come from the store's cache
(:func:`metarec.features.text.load_text`).

Each categorical field keeps its most frequent tokens (``max_vocab_per_field``) as their own
slots and hashes the rest into ``oov_buckets`` shared slots, so unseen authors or a brand-new leaf
category still land somewhere the model was trained on. Vocabularies are fitted on the
meta-training items only: held-out categories are sealed.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from metarec.config import FeatureConfig
from metarec.errors import ArtifactError, ConfigError
from metarec.features.text import TextProjection

PATH_SEPARATOR = " > "
_LOG_FIELDS = frozenset({"price"})


def category_prefixes(category: str) -> list[str]:
    """All prefixes of a path, root first: ``A > B > C`` gives ``A``, ``A > B``, ``A > B > C``."""
    levels = [level.strip() for level in category.split(">") if level.strip()]
    return [PATH_SEPARATOR.join(levels[: i + 1]) for i in range(len(levels))]


def _tokens(value: object) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return []  # None, NaN, pd.NA, NaT: missing, never a token
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
    text: TextProjection | None = None  # text features' projection (features.text), last block

    @property
    def dim(self) -> int:
        text = 0 if self.text is None else self.text.dim
        return sum(v.size for v in self.vocabs.values()) + len(self.numeric) + text

    @property
    def context_dim(self) -> int:
        """Width of a category's context (:attr:`metarec.tasks.CategoryData.context`): the
        mean item features, plus the projected name embedding with text features."""
        return self.dim + (0 if self.text is None else self.text.dim)

    def dense_columns(self) -> torch.Tensor:
        """(dim,) bool: the numeric and text columns (dense values, not presence indicators;
        an IDF weight means nothing for them)."""
        dense = torch.zeros(self.dim, dtype=torch.bool)
        dense[sum(v.size for v in self.vocabs.values()) :] = True
        return dense

    @classmethod
    def fit(
        cls, items: pd.DataFrame, config: FeatureConfig, text: torch.Tensor | None = None
    ) -> FeatureSpace:
        """Fit vocabularies and numeric statistics on ``items`` (the meta-training items).

        Args:
            items: the rows to fit on.
            config: the feature settings.
            text: (len(items), E) the items' raw text embeddings; required with
                ``config.text`` (see :func:`metarec.features.text.load_text`).

        Raises:
            ConfigError: ``config.text`` is on and no embeddings were given.
        """
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
        projection = None
        if config.text:
            projection = TextProjection.fit(_require_text(text, len(items)), config.text_dim)
        return cls(vocabs, numeric, projection)

    def encode(self, items: pd.DataFrame, text: torch.Tensor | None = None) -> torch.Tensor:
        """Encode items into features.

        Args:
            items: rows of the items table (any subset, any order).
            text: (len(items), E) their raw text embeddings, same rows; required when the
                space has text features.

        Returns:
            x: (len(items), dim) float32, one row per input row.

        Raises:
            ConfigError: the space has text features and ``text`` is missing or misaligned.
        """
        n = len(items)
        text = None if self.text is None else _require_text(text, n)
        out = np.empty((n, self.dim), dtype=np.float32)
        # by blocks of rows: each block's calls into numpy and pandas are short, so a service
        # encoding a million items in a background thread keeps answering between them (one
        # call over every row held the interpreter for seconds)
        for first in range(0, n, _ENCODE_ROWS):
            last = min(first + _ENCODE_ROWS, n)
            self._encode_fields(items.iloc[first:last], out[first:last])
        if self.text is not None:  # one product over every row (torch lets go meanwhile)
            assert text is not None
            out[:, self.dim - self.text.dim :] = self.text.project(text.float()).numpy()
        return torch.from_numpy(out)

    def _encode_fields(self, items: pd.DataFrame, out: np.ndarray) -> None:
        """The token and numeric blocks of ``items``, written into ``out`` (len(items), dim)."""
        start = 0
        for name, vocab in self.vocabs.items():
            if name == "category":
                rows, codes = _token_rows(list(items["category"]), vocab, category_prefixes)
            else:
                rows, codes = _token_rows(_field_values(items, name), vocab, _tokens)
            out[:, start : start + vocab.size] = rows[codes]
            start += vocab.size
        for name, (mean, std) in self.numeric.items():
            column = (_numeric(items, name) - mean) / std
            out[:, start] = np.nan_to_num(column, nan=0.0).astype(np.float32)
            start += 1

    def to_json(self) -> dict[str, object]:
        """JSON of everything but the text projection's values (see :meth:`tensors`), which
        are named by their checksum: equal JSON means an equal space."""
        out: dict[str, object] = {
            "vocabs": {
                k: {"tokens": list(v.tokens), "oov_buckets": v.oov_buckets}
                for k, v in self.vocabs.items()
            },
            "numeric": {k: list(v) for k, v in self.numeric.items()},
        }
        if self.text is not None:
            out["text"] = {"dim": self.text.dim, "sha256": self.text.checksum()}
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """The text projection's tensors (``mean``, ``components``); empty without text."""
        return {} if self.text is None else self.text.tensors()

    @classmethod
    def from_json(
        cls, data: dict[str, object], tensors: Mapping[str, torch.Tensor] | None = None
    ) -> FeatureSpace:
        """Rebuild a space from :meth:`to_json` and, with text features, :meth:`tensors`.

        Raises:
            ArtifactError: text features without their tensors, or tensors that do not match
                the checksum the JSON names.
        """
        vocabs = data["vocabs"]
        numeric = data["numeric"]
        assert isinstance(vocabs, dict) and isinstance(numeric, dict)
        text = None
        if "text" in data:
            text = _text_projection(data["text"], tensors)
        return cls(
            {k: Vocab(tuple(v["tokens"]), int(v["oov_buckets"])) for k, v in vocabs.items()},
            {k: (float(v[0]), float(v[1])) for k, v in numeric.items()},
            text,
        )


def _text_projection(info: object, tensors: Mapping[str, torch.Tensor] | None) -> TextProjection:
    if not tensors or not isinstance(info, dict):
        raise ArtifactError(
            "the feature space uses text features but the model has no text projection "
            "tensors (features.safetensors); the folder is incomplete: retrain or re-save it"
        )
    projection = TextProjection.from_tensors(tensors)
    if projection.checksum() != info.get("sha256"):
        raise ArtifactError(
            "the text projection's tensors do not match the checksum the model's features "
            "name; the folder mixes files of different models: retrain or re-save it"
        )
    return projection


def _require_text(text: torch.Tensor | None, n: int) -> torch.Tensor:
    if text is None or text.shape[0] != n:
        got = "none" if text is None else f"{text.shape[0]} rows"
        raise ConfigError(
            f"features.text is on: pass the {n} items' raw text embeddings (got {got}); "
            "Catalog.load computes them (metarec.features.text.load_text)"
        )
    return text


_ENCODE_ROWS = 32_768  # rows encoded per block (see FeatureSpace.encode)


def _token_rows(
    values: list[object], vocab: Vocab, tokenize: Callable[[Any], list[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, codes)``: ``rows[codes]`` is the (len(values), vocab.size) float32 block of
    each value's token counts, rows at unit length.

    A catalogue repeats its values (a category, an author, a publisher on many items), so each
    distinct value is tokenised and normalised once and its row copied to every item that has
    it: the same rows as building every item's own (the encoding of 1e5 items took 1.0 s item by
    item, 0.12 s so). Values are told apart by type as well (``1`` and ``1.0`` are equal keys
    but tokenise differently), and lists by their contents.
    """
    found = _distinct_strings(values)
    if found is not None:
        codes, distinct = found
    else:
        codes, distinct = _distinct_values(values)
    tokens = [tokenize(value) for value in distinct]
    block = np.zeros((len(distinct), vocab.size), dtype=np.float32)
    rows = [r for r, found_tokens in enumerate(tokens) for _ in found_tokens]
    cols = [vocab.slot(t) for found_tokens in tokens for t in found_tokens]
    np.add.at(block, (rows, cols), 1.0)
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    return block / np.maximum(norms, 1e-12), codes


def _distinct_strings(values: list[object]) -> tuple[np.ndarray, list[object]] | None:
    """``(codes, distinct)`` of a field whose values are text or missing, the usual case,
    factorised in pandas; None for any other field."""
    series = pd.Series(values, dtype=object)
    if pd.api.types.infer_dtype(series, skipna=True) not in ("string", "empty"):
        return None
    missing = series.isna().to_numpy()  # as _tokens reads them: no token
    codes, uniques = pd.factorize(series)
    if not missing.any():
        return codes, list(uniques)
    return np.where(codes < 0, len(uniques), codes), [*uniques, None]  # missing: no token


def _distinct_values(values: list[object]) -> tuple[np.ndarray, list[object]]:
    """``(codes, distinct)`` of any field, value by value."""
    code_of: dict[tuple[type, object], int] = {}
    distinct: list[object] = []
    codes = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        hashable = tuple(value) if isinstance(value, list) else value
        if isinstance(hashable, float) and math.isnan(hashable):
            hashable = None  # NaN != NaN: every missing value is one key
        try:
            hash(hashable)
        except TypeError:  # e.g. a JSON object in `extra`: tokenised through its str()
            hashable = repr(value)
        key = (type(value), hashable)
        code = code_of.get(key)
        if code is None:
            code = code_of[key] = len(distinct)
            distinct.append(value)
        codes[row] = code
    return codes, distinct


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
