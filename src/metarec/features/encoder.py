"""The item encoder of a fold or a model: attribute encoders plus collaborative factors.

Fitted on the training categories only (:meth:`ItemEncoder.fit`), it turns any catalogue's items
into the rows the scorer reads: ``item_x`` (attributes, category path, text) and ``profile_x``
(``item_x`` followed by the item's collaborative factors, zeros for items the training
categories never saw). A user's profile is a weighted mean of ``profile_x`` over what they liked
in the visible categories (:class:`~metarec.features.users.ProfileTable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from metarec.config import FeatureConfig, TrainConfig
from metarec.data.catalog import Catalog
from metarec.data.store import Store
from metarec.errors import DataError
from metarec.features.cf import item_factors
from metarec.features.items import FeatureSpace
from metarec.features.text import TextEncoder, load_text
from metarec.features.users import ProfileTable


def load_catalog(
    store: Store,
    config: TrainConfig,
    *,
    text_encoder: TextEncoder | None = None,
    progress: bool | None = None,
) -> Catalog:
    """The store's catalogue under ``config.feedback``; with ``features.text``, its texts too.

    Args:
        store: the store.
        config: ``feedback`` (what is positive) and ``features.text``.
        text_encoder: an encoder instead of ``features.text_model`` (tests).
        progress: progress bar while embedding texts (None: only on a terminal).

    Raises:
        MissingExtraError: text features are on and the encoder is not installed.
    """
    catalog = Catalog.load(store, config.feedback)
    if not config.features.text:
        return catalog
    text = load_text(store, catalog.items, config.features, encoder=text_encoder, progress=progress)
    return replace(catalog, text=text)


@dataclass(frozen=True)
class ItemEncoder:
    """Fitted item encoders and collaborative factors.

    Attributes:
        space: the attribute (and text) encoders, fitted on the training items.
        factors: (n_known_items, r) collaborative factors of the training items.
        factor_item_ids: external ids of those rows.
    """

    space: FeatureSpace
    factors: torch.Tensor = field(repr=False)
    factor_item_ids: list[str] = field(repr=False)

    @classmethod
    def fit(
        cls, catalog: Catalog, train: Sequence[str], config: FeatureConfig, seed: int
    ) -> ItemEncoder:
        """Fit on the items and positives of the ``train`` categories only.

        Raises:
            DataError: no training category has items.
        """
        is_train = catalog.items["category"].isin(list(train)).to_numpy(copy=True)
        train_items = catalog.items.loc[is_train]
        if train_items.empty:
            raise DataError("no meta-training categories left after hold-out; hold out fewer")
        text = None if catalog.text is None else catalog.text.items[torch.from_numpy(is_train)]
        space = FeatureSpace.fit(train_items, config, text)
        pos = catalog.positives_in(train)
        factors = item_factors(
            pos["user_idx"].to_numpy(),
            pos["item_idx"].to_numpy(),
            pos["weight"].to_numpy(),
            n_users=len(catalog.users),
            n_items=len(catalog.items),
            rank=config.cf_rank,
            seed=seed,
            power=config.cf_power,
        )
        return cls(
            space=space,
            factors=factors[torch.from_numpy(is_train)],
            factor_item_ids=catalog.items.loc[is_train, "item_id"].astype(str).tolist(),
        )

    @property
    def dim(self) -> int:
        """Width of ``profile_x``: attribute features plus collaborative factors."""
        return self.space.dim + self.factors.shape[1]

    def item_x(self, catalog: Catalog) -> torch.Tensor:
        """(n_items, d) attribute (and, with text features, text) features of every item."""
        text = None if catalog.text is None else catalog.text.items
        return self.space.encode(catalog.items, text)

    def factors_for(self, items: pd.DataFrame) -> torch.Tensor:
        """(len(items), r) factors of ``items`` by external id; zeros for unseen items."""
        out = torch.zeros((len(items), self.factors.shape[1]))
        row_of = pd.Series(np.arange(len(self.factor_item_ids)), index=self.factor_item_ids)
        found = row_of.reindex(items["item_id"].astype(str).to_numpy())
        known = found.notna().to_numpy(copy=True)
        out[torch.from_numpy(known)] = self.factors[
            torch.from_numpy(found[known].to_numpy(dtype=np.int64, copy=True))
        ]
        return out

    def profile_x(self, catalog: Catalog, item_x: torch.Tensor | None = None) -> torch.Tensor:
        """(n_items, d + r) ``item_x`` followed by each item's collaborative factors."""
        item_x = self.item_x(catalog) if item_x is None else item_x
        return torch.cat([item_x, self.factors_for(catalog.items)], dim=1)

    def name_x(self, catalog: Catalog, names: Sequence[str]) -> dict[str, torch.Tensor] | None:
        """Category -> (t,) projected text embedding of its name; None without text features."""
        if self.space.text is None or catalog.text is None:
            return None
        return {name: self.space.text.project(catalog.text.categories[name]) for name in names}

    def same_as(self, other: ItemEncoder) -> bool:
        """Whether both encode items and profiles exactly alike."""
        return (
            self.space.to_json() == other.space.to_json()
            and self.factor_item_ids == other.factor_item_ids
            and torch.equal(self.factors, other.factors)
        )


def profiles(catalog: Catalog, profile_x: torch.Tensor, categories: Sequence[str]) -> ProfileTable:
    """Per-user sums of ``profile_x`` over the positives of ``categories``."""
    pos = catalog.positives_in(categories)
    return ProfileTable.build(
        pos["user_idx"].to_numpy(),
        pos["item_idx"].to_numpy(),
        pos["weight"].to_numpy(),
        profile_x,
        len(catalog.users),
    )
