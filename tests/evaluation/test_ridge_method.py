"""metarec-ridge as the harness fits it: validated starts, every grid setting with validation,
and the launch's own bias where there is no validation category."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import KNOWN_HELD_OUT, fold_of

from metarec.baselines.content_knn import ContentKNN
from metarec.baselines.emcdr import linear_mapping, mapping_examples
from metarec.baselines.mf import positive_matrix
from metarec.data.catalog import Catalog
from metarec.errors import ConfigError
from metarec.evaluation.ridge import (
    BIAS_STARTS,
    GUARD_STANDARD_ERRORS,
    ZERO_SHOT_CONTENT,
    MetarecRidge,
)
from metarec.meta.model import load_model, save_model
from metarec.meta.ridge import (
    ZERO_SHOT_SET,
    RidgeSupport,
    fold_in,
    for_counts,
    init_ridge,
    ridge_scores,
)
from metarec.meta.ridge_model import RidgeModel
from metarec.ranking.ridge import RidgeRanker, category_support


@pytest.mark.parametrize("setting", MetarecRidge.grid)
def test_every_grid_setting_trains_with_validation(
    known_catalog: Catalog, setting: dict[str, object]
) -> None:
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    method = MetarecRidge(**setting, guard=GUARD_STANDARD_ERRORS)
    method.fit(fold.context)
    steps = [h["step"] for h in method.history]
    assert steps[0] == 0 and max(steps) > 0  # validated at the start, then trained
    learn = setting.get("learn", ("prior", "support_bias"))
    starts = [h for h in method.history if "support_bias" in h and not h.get("mapped")]
    mapped = [h["support_bias"] for h in method.history if h.get("mapped")]
    assert all("gain_se_vs_start" in h for h in method.history if h.get("mapped"))
    # every bias from fold-in's users, then EMCDR's map of them at bias 0 and at the best of
    # those (this store has examples: users with positives inside and outside a category)
    if "support_bias" in learn:
        assert [h["support_bias"] for h in starts] == list(BIAS_STARTS)
        best = max(starts, key=lambda h: h["validation_ndcg@10"])["support_bias"]
        assert mapped == sorted({0.0, best})
    else:
        assert starts == mapped == []
    # the kept parameters score what the best validation said among fold-in (the first) and
    # the candidates whose paired gain over it cleared the guard
    # (a start from EMCDR's map also has to beat the best start without it by the guard)
    eligible = [method.history[0]] + [
        h
        for h in method.history[1:]
        if h.get("gain_se", -math.inf) > GUARD_STANDARD_ERRORS
        and h.get("gain_se_vs_start", math.inf) > GUARD_STANDARD_ERRORS
    ]
    best = max(h["validation_ndcg@10"] for h in eligible)
    assert fold.context.validate is not None
    assert fold.context.validate(method) == pytest.approx(best)
    assert not method.model().bias_from_support
    assert all("gain_se" in h for h in method.history if h["step"] > 0)  # paired with fold-in


def test_without_the_mapped_start_only_fold_ins_users_start(known_catalog: Catalog) -> None:
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    method = MetarecRidge(mapped_start=False)
    method.fit(fold.context)
    starts = [h["support_bias"] for h in method.history if "support_bias" in h]
    assert starts == list(BIAS_STARTS)
    assert not any(h.get("mapped") for h in method.history)


@pytest.mark.parametrize(("lift", "taken"), [(0.05, True), (0.001, False)])
def test_emcdrs_map_is_taken_only_with_a_clear_gain_over_the_best_start_without_it(
    known_catalog: Catalog, lift: float, taken: bool
) -> None:
    """A validation stub: any support bias lifts every user clearly over fold-in, and a user
    map other than the identity lifts them by ``lift`` more (plus noise of 0.05 each). A clear
    lift makes the map the start and the kept model; one within the noise is recorded but not
    taken, although its mean is higher and it clears the guard against fold-in."""
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    noise = np.random.default_rng(0).normal(0.0, 0.05, size=(3, 400))
    identity = torch.eye(MetarecRidge().factors, dtype=torch.float64)

    def per_user(method: MetarecRidge) -> np.ndarray:  # type: ignore[type-arg]
        values = 0.5 + noise[0]
        if float(method.params["support_bias"]) > 0:
            values = values + 0.05 + noise[2]
        if not torch.equal(method.params["user_map"], identity):
            values = values + lift + noise[1]
        return values

    context = replace(
        fold.context,
        validate=lambda method: float(per_user(method).mean()),
        validate_users=per_user,
        validate_zero_users=None,
    )
    method = MetarecRidge()
    method.fit(context)
    mapped = [h for h in method.history if h.get("mapped") and h["support_bias"] > 0]
    assert len(mapped) == 1  # at the best bias without the map (and at bias 0, not this one)
    assert mapped[0]["gain_se"] > GUARD_STANDARD_ERRORS  # over fold-in: clear either way
    assert (mapped[0]["gain_se_vs_start"] > GUARD_STANDARD_ERRORS) == taken
    assert torch.equal(method.params["user_map"], identity) != taken


def test_the_mapped_start_is_emcdrs_map_with_a_ridge_strength_that_follows_its_scale(
    known_catalog: Catalog,
) -> None:
    """The map is EMCDR's linear one without intercept, and the ridge strength follows the
    map's gain: a map that only rescales the users scores exactly as fold-in does."""
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    method = MetarecRidge(steps=0)
    method.fit(fold.context)  # the ALS item factors; no training
    catalog = fold.context.catalog
    matrix = positive_matrix(catalog.positives, len(catalog.users), len(catalog.items))
    start = method._mapped_start(fold.context, matrix, ("test",))
    assert start is not None
    source, target = mapping_examples(
        matrix * method.alpha,
        method.item_factors,
        catalog.item_category,
        list(fold.context.train),
        method.regularization,
        fold.context.seed,
    )
    assert len(source) > 0
    expected = linear_mapping(source, target, intercept=False)["w"]
    torch.testing.assert_close(start["user_map"], expected)
    gain = (source @ expected).square().sum() / source.square().sum()
    torch.testing.assert_close(torch.exp(start["log_reg"]), method.regularization * gain)
    # the scaling rule: A = s I with lambda s^2 gives fold-in's scores
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    support = RidgeSupport(
        users=torch.tensor([0, 1, 2, 2, 5, 7]),
        items=torch.tensor([0, 0, 1, 3, 3, 4]),
        weights=torch.ones(6, dtype=torch.float64),
        n_items=6,
    )
    content = torch.zeros((6, 2), dtype=torch.float64)
    plain = init_ridge(4, 2, regularization=30.0, alpha=10.0)
    scaled = {
        **plain,
        "user_map": 3.0 * torch.eye(4, dtype=torch.float64),
        "log_reg": torch.tensor(math.log(30.0 * 9.0), dtype=torch.float64),
    }
    scores = [
        ridge_scores(p, factors, fold_in(p, factors, support, content), support.counts)
        for p in (plain, scaled)
    ]
    torch.testing.assert_close(scores[1], scores[0])


def test_the_guard_decides_whether_validation_may_leave_fold_in(
    known_catalog: Catalog, tmp_path: Path
) -> None:
    """With an unreachable guard, launches with support are exactly fold-in (ALS's settings, no
    prior, no bias) while zero shots keep the best-validated prior; without one, every launch
    uses the highest validation score and the model keeps no zero-shot copy."""
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    assert fold.context.validate is not None and fold.context.validate_zero_users is not None
    assert MetarecRidge().guard == GUARD_STANDARD_ERRORS  # the default
    # the prior alone is learned: on this store its best checkpoint is a trained one
    strict = MetarecRidge(guard=math.inf, learn=("prior",))
    strict.fit(fold.context)
    fold_in = init_ridge(strict.factors, strict.params["prior"].shape[0], 30.0, 10.0)
    zero_shot_term = ("zero_shot_content", "zero_shot_log_scale")  # chosen at 0 shots only
    for name, value in fold_in.items():
        if name not in zero_shot_term:
            torch.testing.assert_close(strict.params[name], value, msg=name)
    assert fold.context.validate(strict) == pytest.approx(strict.history[0]["validation_ndcg@10"])
    loose = MetarecRidge(guard=-math.inf, learn=("prior",))
    loose.fit(fold.context)
    best = max(h["validation_ndcg@10"] for h in loose.history)
    assert fold.context.validate(loose) == pytest.approx(best)
    assert not any(name.startswith("zero_shot.") for name in loose.params)
    # zero shots: the same prior either way, so the same zero-shot lists
    assert not torch.equal(strict.params["prior"], loose.params["prior"])  # it learned one
    for name in ZERO_SHOT_SET:
        torch.testing.assert_close(strict.params[f"zero_shot.{name}"], loose.params[name])
    np.testing.assert_array_equal(
        fold.context.validate_zero_users(strict), fold.context.validate_zero_users(loose)
    )
    # the zero-shot copy is part of the servable model: saved, checksummed and read back
    loaded = load_model(save_model(strict.model(), tmp_path / "model"))
    assert isinstance(loaded, RidgeModel)
    assert loaded.params.keys() == strict.params.keys()
    for name, value in strict.params.items():
        assert torch.equal(loaded.params[name], value), name


def test_a_category_without_support_reads_the_zero_shot_set() -> None:
    params = init_ridge(factors=3, content_dim=2, regularization=30.0, alpha=10.0)
    own = {f"zero_shot.{name}": params[name] + 1.0 for name in ZERO_SHOT_SET}
    both = {**params, **own}
    none, some = torch.zeros(4), torch.tensor([0.0, 2.0, 0.0, 0.0])
    assert for_counts(params, none) is params  # no copy kept: one set for every launch
    assert for_counts(both, some) is both
    chosen = for_counts(both, none)
    for name in ZERO_SHOT_SET:
        assert torch.equal(chosen[name], own[f"zero_shot.{name}"])
    # and the solve and the scores read it: with no support every item sits at its prior
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    content = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    empty = RidgeSupport.empty(4)
    torch.testing.assert_close(
        fold_in(both, factors, empty, content), fold_in(chosen, factors, empty, content)
    )
    assert not torch.allclose(
        fold_in(both, factors, empty, content), fold_in(params, factors, empty, content)
    )
    vectors = fold_in(both, factors, empty, content)
    torch.testing.assert_close(
        ridge_scores(both, factors, vectors, none), ridge_scores(chosen, factors, vectors, none)
    )


def test_without_validation_each_launch_chooses_its_bias(known_catalog: Catalog) -> None:
    fold = fold_of(known_catalog)  # no validation category
    method = MetarecRidge()
    method.fit(fold.context)
    assert method.history == []  # nothing trained: no step could be checked
    assert method.model().bias_from_support
    launch, _ = fold.launch(3)
    assert launch.name == KNOWN_HELD_OUT
    assert method.scores(launch).shape == (len(launch.users), launch.category.n_items)


def test_the_zero_shot_term_is_the_best_on_zero_shot_validation(known_catalog: Catalog) -> None:
    """Chosen after training, on the validation categories launched with no support: every
    weight tried in order (the first, the trained prior alone, kept on ties), then the
    per-feature scale learned from the chosen weight's cosine, a checkpoint kept only if it
    scores higher there; the shot counts with support score exactly as before."""
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    assert fold.context.validate is not None and fold.context.validate_zero_users is not None
    method = MetarecRidge()
    method.fit(fold.context)
    n = len(ZERO_SHOT_CONTENT)
    assert [z["zero_shot_content"] for z in method.zero_shot[:n]] == list(ZERO_SHOT_CONTENT)
    weights = [z["validation_ndcg@10"] for z in method.zero_shot[:n]]
    chosen = int(np.argmax(weights))  # the first of equal maxima
    assert float(method.params["zero_shot_content"]) == ZERO_SHOT_CONTENT[chosen] > 0
    learned = [z["validation_ndcg@10"] for z in method.zero_shot[n:]]
    assert [z["step"] for z in method.zero_shot[n:]] == [25, 50, 60]  # quick: 60 steps
    kept = max([weights[chosen], *learned])
    assert np.nanmean(fold.context.validate_zero_users(method)) == pytest.approx(kept)
    scale = method.params["zero_shot_log_scale"]
    assert bool(scale.any()) == method.chosen["zero_shot_scale_learned"] == (kept > weights[chosen])
    with_support = fold.context.validate(method)
    reset = {"zero_shot_content": 0.0, "zero_shot_log_scale": torch.zeros_like(scale)}
    method.params = {**method.params, **{k: torch.as_tensor(v) for k, v in reset.items()}}
    assert fold.context.validate(method) == pytest.approx(with_support, abs=0.0)
    assert method.model().zero_shot == method.zero_shot  # into the model folder's metadata


def test_a_large_zero_shot_weight_ranks_by_content_knns_profile_cosine(
    known_catalog: Catalog,
) -> None:
    """At zero shots, ``c_0`` times the content affinity is added to the prior's scores; the
    affinity is content-kNN's profile cosine (the same IDF weights), the users' profiles from
    the launch's visible history point where the category's profiles point."""
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    method = MetarecRidge(steps=0)
    method.fit(fold.context)
    launch, _ = fold.launch(0)
    prior = method.scores(launch)
    method.params = {**method.params, "zero_shot_content": torch.tensor(2.0, dtype=torch.float64)}
    blended = method.scores(launch)
    knn = ContentKNN(support_weight=0.0)
    knn.fit(fold.context)
    cosine = knn.scores(launch) - knn.scores(replace(launch, category=_no_profiles(launch)))
    torch.testing.assert_close(blended - prior, 2.0 * cosine, atol=2e-5, rtol=0)
    assert (cosine.abs().sum(1) > 0).all()  # every launch user has history elsewhere


def test_a_zero_shot_launch_without_the_users_profiles_is_a_typed_error(
    known_catalog: Catalog,
) -> None:
    fold = fold_of(known_catalog, validation=["Shelf > C6"], quick=True)
    method = MetarecRidge(steps=0)
    method.fit(fold.context)
    launch, _ = fold.launch(0)
    method.params = {**method.params, "zero_shot_content": torch.tensor(2.0, dtype=torch.float64)}
    model = method.model()
    factors, gram = model.user_factors(launch.catalog, launch.catalog.positives)
    support = category_support(launch.catalog, launch.category, launch.split)
    with pytest.raises(ConfigError, match="user_profiles"):  # zero-shot: the content term applies
        RidgeRanker.launch(model, launch.category, support, factors, gram, adapt=False)


def _no_profiles(launch):  # type: ignore[no-untyped-def]
    """The launch's category with every user's profile zeroed (content-kNN then scores the
    tie-break alone)."""
    category = launch.category
    return replace(category, profile=torch.zeros_like(category.profile))
