"""metarec-ridge as the harness fits it: validated starts, every grid setting with validation,
and the launch's own bias where there is no validation category."""

from __future__ import annotations

import pytest
from tests.conftest import KNOWN_HELD_OUT, fold_of

from metarec.data.catalog import Catalog
from metarec.evaluation.ridge import BIAS_STARTS, MetarecRidge


@pytest.mark.parametrize("setting", MetarecRidge.grid)
def test_every_grid_setting_trains_with_validation(
    known_catalog: Catalog, setting: dict[str, object]
) -> None:
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    method = MetarecRidge(**setting)
    method.fit(fold.context)
    steps = [h["step"] for h in method.history]
    assert steps[0] == 0 and max(steps) > 0  # validated at the start, then trained
    learn = setting.get("learn", ("prior", "support_bias"))
    starts = [h["support_bias"] for h in method.history if "support_bias" in h]
    assert starts == (list(BIAS_STARTS) if "support_bias" in learn else [])
    # the kept parameters score what the best validation said
    best = max(h["validation_ndcg@10"] for h in method.history)
    assert fold.context.validate is not None
    assert fold.context.validate(method) == pytest.approx(best)
    assert not method.model().bias_from_support


def test_without_validation_each_launch_chooses_its_bias(known_catalog: Catalog) -> None:
    fold = fold_of(known_catalog)  # no validation category
    method = MetarecRidge()
    method.fit(fold.context)
    assert method.history == []  # nothing trained: no step could be checked
    assert method.model().bias_from_support
    launch, _ = fold.launch(3)
    assert launch.name == KNOWN_HELD_OUT
    assert method.scores(launch).shape == (len(launch.users), launch.category.n_items)
