"""A catalogue's categories as :class:`~metarec.tasks.CategoryData`, under one item encoder.

The single way a category is assembled for training, evaluation and serving alike: its items'
features from the encoder, its positives from the catalogue, and each user's profile from the
``visible`` categories only (so a sealed category never leaks into the profiles it is ranked by).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from metarec.data.catalog import Catalog
from metarec.features.encoder import ItemEncoder, profiles
from metarec.features.users import ProfileTable
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
    if item_x is None:
        item_x, profile_x = encoded_items(encoder, catalog), encoded_profile_x(encoder, catalog)
        table = _visible_profiles(catalog, profile_x, visible)
    else:  # features the caller made: nothing to key a cached table on
        profile_x = encoder.profile_x(catalog, item_x)
        table = profiles(catalog, profile_x, visible)
    return build_categories(
        catalog.items,
        catalog.positives,
        item_x,
        profile_x,
        table,
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
# The last entry also holds ``encoder.profile_x`` of those features once asked for (its
# factors come from a pandas lookup over every item: 0.08 s a build on the 100k-item store).
_ENCODED: list[tuple[ItemEncoder, object, object, int, torch.Tensor, list[torch.Tensor]]] = []


def _encoded(encoder: ItemEncoder, catalog: Catalog) -> tuple[torch.Tensor, list[torch.Tensor]]:
    text = None if catalog.text is None else catalog.text.items
    n_now = len(catalog.items)
    for cached_encoder, items, cached_text, n_items, x, profile_x in _ENCODED:
        if (
            cached_encoder is encoder
            and items is catalog.items
            and cached_text is text
            and n_items == n_now
        ):
            return x, profile_x
    x = encoder.item_x(catalog)
    _ENCODED[:] = [(encoder, catalog.items, text, len(catalog.items), x, [])]
    _PROFILES.clear()  # keyed by the profile features of the entry just replaced
    return x, _ENCODED[0][5]


def encoded_items(encoder: ItemEncoder, catalog: Catalog) -> torch.Tensor:
    """``encoder.item_x(catalog)``, reused while the encoder and the items table are the same
    objects (and the table has not grown); a copy, so a caller may write into it."""
    return _encoded(encoder, catalog)[0].clone()


def encoded_profile_x(encoder: ItemEncoder, catalog: Catalog) -> torch.Tensor:
    """``encoder.profile_x(catalog)``, reused like :func:`encoded_items`; shared, not copied:
    every caller only reads it (it is summed into profiles and gathered per liked item)."""
    x, profile_x = _encoded(encoder, catalog)
    if not profile_x:
        profile_x.append(encoder.profile_x(catalog, x))
    return profile_x[0]


# Profile tables by content. Every launch of a fold sums the same users' liked items over the
# same visible categories (a sealed launch adds only the new category's support, which is not
# visible), each sum a pass over their positives with a row of profile features per positive:
# 74 builds, 20% of metarec-ridge's quick unit on the 100k-item store. The key is what the sum
# reads: the profile features (the cached tensor, by identity: held by _ENCODED while keyed)
# and a digest of the visible positives themselves, so two catalogues share a table only where
# its inputs are equal, and no launch can read a positive its own catalogue does not hold.
_PROFILES: dict[tuple[int, str], ProfileTable] = {}
_PROFILES_KEPT = 8


def _visible_profiles(
    catalog: Catalog, profile_x: torch.Tensor, visible: Sequence[str]
) -> ProfileTable:
    """:func:`~metarec.features.encoder.profiles` of ``catalog``'s positives in ``visible``,
    reused for equal inputs; ``profile_x`` must come from :func:`encoded_profile_x`."""
    positives = catalog.positives_in(visible)
    digest = hashlib.blake2b(str(len(catalog.users)).encode(), digest_size=20)
    for column, dtype in (("user_idx", np.int64), ("item_idx", np.int64), ("weight", np.float64)):
        digest.update(np.ascontiguousarray(positives[column].to_numpy(dtype=dtype)).data)
    key = (id(profile_x), digest.hexdigest())
    table = _PROFILES.get(key)
    if table is None:
        table = ProfileTable.build(
            positives["user_idx"].to_numpy(),
            positives["item_idx"].to_numpy(),
            positives["weight"].to_numpy(),
            profile_x,
            len(catalog.users),
        )
        if len(_PROFILES) >= _PROFILES_KEPT:
            oldest = next(iter(_PROFILES), None)
            if oldest is not None:  # another thread may have evicted it
                _PROFILES.pop(oldest, None)
        _PROFILES[key] = table
    return table
