"""EMCDR: the mapping, the launch scores, the fallback and the known answer.

Shapes, determinism, blindness to the query and sealing: tests/evaluation/test_method_contract.py.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, KnownFold

from metarec.baselines.base import launch_popularity
from metarec.baselines.emcdr import EMCDR, apply_mapping, fit_mapping, linear_mapping
from metarec.baselines.mf import TIE_BREAK
from metarec.baselines.simple import Popularity
from metarec.errors import NotAdaptedError


def test_linear_mapping_recovers_a_linear_map() -> None:
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(2000, 4, generator=generator, dtype=torch.float64)
    w = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    params = fit_mapping(source, source @ w + b, "linear", 0, generator)
    # ridge 1.0 against 2000 examples: a shrinkage of about 1 / 2000
    torch.testing.assert_close(params["w"], w, atol=5e-3, rtol=0)
    torch.testing.assert_close(params["b"], b, atol=5e-3, rtol=0)


def test_linear_mapping_without_intercept_goes_through_the_origin() -> None:
    """metarec-ridge's mapped start: a user with no history must stay at zero."""
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(2000, 4, generator=generator, dtype=torch.float64)
    w = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    params = linear_mapping(source, source @ w + 3.0, intercept=False)
    assert not params["b"].any()
    with_intercept = linear_mapping(source, source @ w + 3.0, intercept=True)
    torch.testing.assert_close(with_intercept["w"], w, atol=5e-3, rtol=0)

    # the offset cannot be absorbed without the intercept: the map's fit is worse, not equal
    def error(params: dict[str, torch.Tensor]) -> float:
        return float(((apply_mapping(params, source) - source @ w - 3.0) ** 2).mean())

    assert error(params) > 100 * error(with_intercept)
    exact = linear_mapping(source, source @ w, intercept=False)
    torch.testing.assert_close(exact["w"], w, atol=5e-3, rtol=0)


def test_mlp_mapping_learns_a_nonlinear_map() -> None:
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(3000, 3, generator=generator, dtype=torch.float64)
    target = torch.tanh(2 * source) + 0.3
    linear = fit_mapping(source, target, "linear", 0, generator)
    mlp = fit_mapping(source, target, "mlp", 500, torch.Generator().manual_seed(1))

    def error(params: dict[str, torch.Tensor]) -> float:
        return float(((apply_mapping(params, source) - target) ** 2).sum(dim=1).mean())

    assert error(mlp) < 0.5 * error(linear)  # tanh(2x) is far from linear at |x| > 0.5


def test_without_examples_the_mapping_is_the_identity() -> None:
    empty = torch.zeros((0, 3), dtype=torch.float64)
    params = fit_mapping(empty, empty, "mlp", 10, torch.Generator().manual_seed(0))
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(apply_mapping(params, x), x)


def test_mapping_is_learned_from_training_categories_only(known_fold: KnownFold) -> None:
    method = EMCDR()
    method.fit(known_fold.context)
    assert method.item_factors is not None
    held_out = known_fold.catalog.item_category == KNOWN_HELD_OUT
    assert not method.item_factors[held_out].any()  # the sealed category has no factors
    assert method.item_factors[~held_out].any(axis=1).mean() > 0.9


@pytest.mark.parametrize("mapping", ["linear", "mlp"])
def test_taste_from_other_categories_beats_popularity(known_fold: KnownFold, mapping: str) -> None:
    method, popularity = EMCDR(mapping=mapping), Popularity()  # type: ignore[arg-type]
    method.fit(known_fold.context)
    popularity.fit(known_fold.context)
    # measured: 0.72 at 3 shots, 0.70 at 1 shot (both mappings); popularity 0.52
    assert known_fold.auc(method, 3) > known_fold.auc(popularity, 3) + 0.12
    assert known_fold.auc(method, 1) > known_fold.auc(popularity, 1) + 0.12


def test_scores_before_fit_are_refused(known_fold: KnownFold) -> None:
    launch, _ = known_fold.launch(1)
    with pytest.raises(NotAdaptedError, match="fit"):
        EMCDR().scores(launch)


def test_user_without_visible_history_falls_back_to_popularity(known_fold: KnownFold) -> None:
    """Such a user gets zero factors, not the mapping's image of zero (its bias)."""
    launch, _ = known_fold.launch(3)
    user = int(launch.users[0])
    positives = launch.catalog.positives
    visible = np.isin(
        launch.catalog.item_category[positives["item_idx"].to_numpy()], known_fold.train
    )
    blank = replace(
        launch, catalog=launch.catalog.restricted(~(visible & (positives["user_idx"] == user)))
    )
    method = EMCDR()
    method.fit(known_fold.context)
    assert method.map_params["b"].abs().max() > 0  # the bias alone would personalise nothing
    scores = method.scores(blank)[0].double()
    pop = launch_popularity(blank)
    assert scores.max() <= TIE_BREAK
    order = torch.argsort(scores, descending=True)
    assert (pop[order][:-1] >= pop[order][1:]).all()
    assert not torch.equal(method.scores(launch)[0], method.scores(blank)[0])
