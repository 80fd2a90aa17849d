"""A catalogue's categories as :class:`~metarec.tasks.CategoryData`, under one item encoder.

The single way a category is assembled for training, evaluation and serving alike: its items'
features from the encoder, its positives from the catalogue, and each user's profile from the
``visible`` categories only (so a sealed category never leaks into the profiles it is ranked by).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from metarec.data.catalog import Catalog
from metarec.features.encoder import ItemEncoder, profiles
from metarec.tasks.category import CategoryData, build_categories


def category_data(
    catalog: Catalog,
    names: Sequence[str],
    encoder: ItemEncoder,
    *,
    visible: Sequence[str],
    seed: int,
    extra_users: np.ndarray | None = None,
    item_x: torch.Tensor | None = None,
) -> dict[str, CategoryData]:
    """Build :class:`CategoryData` for ``names``, profiles drawn from ``visible`` categories.

    Args:
        catalog: the (possibly sealed) catalogue.
        names: the categories to build.
        encoder: the item encoder (a model's, or a fold's).
        visible: the categories whose positives make up the users' profiles.
        seed: seed of the tie-breaking order of positives without time.
        extra_users: global user indices to include even without a positive in the category.
        item_x: ``encoder.item_x(catalog)`` when the caller already has it.
    """
    item_x = encoded_items(encoder, catalog) if item_x is None else item_x
    profile_x = encoder.profile_x(catalog, item_x)
    return build_categories(
        catalog.items,
        catalog.positives,
        item_x,
        profile_x,
        profiles(catalog, profile_x, visible),
        names,
        profile_includes=visible,
        seed=seed,
        extra_users=extra_users,
        name_x=encoder.name_x(catalog, names),
    )


# The last items encoded, and how: (encoder, items table, text table, features). A fold builds
# each test category several times (unsealed, sealed per shot count, with the users to rank),
# every time from the same items table (sealing a catalogue keeps its items and drops
# positives); encoding every item of a 100k-item store took seconds per build. The entries are
# held, so their identities cannot be reused by other objects while cached.
_ENCODED: list[tuple[ItemEncoder, object, object, int, torch.Tensor]] = []


def encoded_items(encoder: ItemEncoder, catalog: Catalog) -> torch.Tensor:
    """``encoder.item_x(catalog)``, reused while the encoder and the items table are the same
    objects (and the table has not grown); a copy, so a caller may write into it."""
    text = None if catalog.text is None else catalog.text.items
    n_now = len(catalog.items)
    for cached_encoder, items, cached_text, n_items, x in _ENCODED:
        if (
            cached_encoder is encoder
            and items is catalog.items
            and cached_text is text
            and n_items == n_now
        ):
            return x.clone()
    x = encoder.item_x(catalog)
    _ENCODED[:] = [(encoder, catalog.items, text, len(catalog.items), x)]
    return x.clone()
