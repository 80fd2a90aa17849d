"""A category's data: the users' profile tables are shared between builds only for equal inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, KnownFold

from metarec.data.catalog import Catalog
from metarec.features.users import ProfileTable
from metarec.tasks.build import category_data, encoded_items


@pytest.fixture()
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts profile tables summed (each entry: the number of positives summed)."""
    counted: list[int] = []
    build = ProfileTable.build

    def counting(*args: object, **kwargs: object) -> ProfileTable:
        counted.append(len(args[0]))  # type: ignore[arg-type]
        return build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ProfileTable, "build", staticmethod(counting))
    return counted


def _profile(catalog: Catalog, fold: KnownFold, *, cached: bool) -> torch.Tensor:
    """Profiles from the training categories of every user of the held-out category."""
    encoder = fold.context.features.encoder
    item_x = None if cached else encoded_items(encoder, catalog)  # given: no cache
    users = fold.catalog.positives_in([KNOWN_HELD_OUT])["user_idx"].unique()
    data = category_data(
        catalog,
        [KNOWN_HELD_OUT],
        encoder,
        visible=fold.train,
        seed=0,
        extra_users=users,
        item_x=item_x,
    )
    return data[KNOWN_HELD_OUT].profile


def test_profile_tables_are_shared_only_between_equal_visible_positives(
    known_catalog: Catalog, known_fold: KnownFold, builds: list[int]
) -> None:
    in_visible = known_catalog.in_categories(known_fold.train)
    reference = _profile(known_catalog, known_fold, cached=False)
    assert builds == [int(in_visible.sum())]  # the uncached path sums every time

    first = _profile(known_catalog, known_fold, cached=True)
    again = _profile(known_catalog, known_fold, cached=True)
    # a sealed launch's catalogue: the held-out category's positives gone, the visible ones kept
    sealed = _profile(known_catalog.restricted(in_visible), known_fold, cached=True)
    assert len(builds) <= 2  # at most one more sum, shared by all three
    for profile in (first, again, sealed):
        assert torch.equal(profile, reference)

    # one visible positive fewer, of a user of the held-out category: a new sum, and that
    # user's profile changes, as the uncached build says
    held_out_users = known_catalog.positives_in([KNOWN_HELD_OUT])["user_idx"].unique()
    drop = np.flatnonzero(
        in_visible & known_catalog.positives["user_idx"].isin(held_out_users).to_numpy()
    )[0]
    keep = np.ones(len(known_catalog.positives), dtype=bool)
    keep[drop] = False
    fewer = known_catalog.restricted(keep)
    n_before = len(builds)
    changed = _profile(fewer, known_fold, cached=True)
    assert builds[n_before:] == [int(in_visible.sum()) - 1]
    assert torch.equal(changed, _profile(fewer, known_fold, cached=False))
    assert not torch.equal(changed, reference)
