"""Bootstrap confidence intervals and the paired test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from metarec.errors import ConfigError, DataError
from metarec.evaluation import stats
from metarec.evaluation.stats import bootstrap_ci, gain_in_standard_errors, paired_test


def test_bootstrap_of_two_values_by_hand():
    # resampled means of [0, 1] are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5% and
    # 97.5% quantiles of 1,000 resamples are 0 and 1
    assert bootstrap_ci(np.array([0.0, 1.0])) == (0.5, 0.0, 1.0)


def test_bootstrap_of_constant_values_has_zero_width():
    assert bootstrap_ci(np.full(50, 0.25)) == (0.25, 0.25, 0.25)


def test_bootstrap_is_deterministic_per_seed_and_leaves_the_global_rng_alone():
    values = np.random.default_rng(0).random(200)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = bootstrap_ci(values, seed=5)
    assert np.array_equal(np.random.get_state()[1], before)
    assert bootstrap_ci(values, seed=5) == first
    assert bootstrap_ci(values, seed=6) != first
    assert bootstrap_ci(values, seed=6)[0] == first[0]  # the point estimate is the sample mean


def test_bootstrap_does_not_depend_on_memory_chunking(monkeypatch):
    values = np.random.default_rng(1).random(300)
    whole = bootstrap_ci(values, n_resamples=500, seed=3)
    monkeypatch.setattr(stats, "_DRAWS_PER_CHUNK", 7 * 300 + 5)  # 7 resamples per chunk
    assert bootstrap_ci(values, n_resamples=500, seed=3) == whole


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 60), elements=st.floats(0.0, 1.0)))
def test_bootstrap_interval_contains_the_mean(values):
    mean, low, high = bootstrap_ci(values, n_resamples=200)
    assert mean == pytest.approx(values.mean())
    assert low - 1e-12 <= mean <= high + 1e-12
    assert 0.0 <= low <= high <= 1.0


def test_bootstrap_interval_shrinks_with_more_users():
    rng = np.random.default_rng(2)
    widths = {}
    for n_users in (100, 10_000):
        _, low, high = bootstrap_ci((rng.random(n_users) < 0.3).astype(float))
        widths[n_users] = high - low
    # the standard error falls as 1/sqrt(n): 100x the users, about a tenth of the width
    assert widths[10_000] < widths[100] / 5
    # and a 95% interval of a Bernoulli(0.3) mean is about +-1.96 * sqrt(0.21 / n)
    assert widths[10_000] == pytest.approx(2 * 1.96 * np.sqrt(0.21 / 10_000), rel=0.15)


def test_bootstrap_wider_at_higher_confidence():
    values = np.random.default_rng(4).random(100)
    _, low_95, high_95 = bootstrap_ci(values, alpha=0.05)
    _, low_80, high_80 = bootstrap_ci(values, alpha=0.2)
    assert low_95 < low_80 < high_80 < high_95


@pytest.mark.parametrize(
    ("values", "kwargs", "error"),
    [
        (np.array([0.1, np.nan]), {}, DataError),
        (np.array([]), {}, DataError),
        (np.ones((2, 2)), {}, DataError),
        (np.ones(3), {"alpha": 0.0}, ConfigError),
        (np.ones(3), {"n_resamples": 0}, ConfigError),
    ],
)
def test_bootstrap_rejects_bad_input(values, kwargs, error):
    with pytest.raises(error):
        bootstrap_ci(values, **kwargs)


def test_paired_test_by_hand():
    # 5 differences, all positive and distinct: exact null P(W+ = 15) = 1/2^5; two-sided 2/32
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert paired_test(a, np.zeros(5)) == pytest.approx(2 / 32)
    assert paired_test(np.zeros(5), a) == pytest.approx(2 / 32)  # two-sided: symmetric


def test_paired_test_identical_methods_give_one():
    values = np.random.default_rng(0).random(100)
    assert paired_test(values, values.copy()) == 1.0
    assert paired_test(np.zeros(10), np.zeros(10)) == 1.0


def test_paired_test_detects_a_clear_difference_but_not_noise():
    rng = np.random.default_rng(3)
    base = rng.random(300)
    better = base + 0.05 + rng.normal(0.0, 0.02, size=300)
    assert paired_test(better, base) < 1e-10
    noisy = base + rng.normal(0.0, 0.02, size=300)  # no shift
    assert paired_test(noisy, base) > 0.05


def test_paired_test_ignores_users_with_equal_values():
    # zero differences are dropped (Wilcoxon's treatment): padding with ties changes nothing
    a, b = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.zeros(5)
    padded = paired_test(np.concatenate([a, np.ones(20)]), np.concatenate([b, np.ones(20)]))
    assert padded == pytest.approx(paired_test(a, b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (np.ones(3), np.ones(4)),
        (np.array([1.0, np.nan]), np.ones(2)),
        (np.array([]), np.array([])),
    ],
)
def test_paired_test_rejects_bad_input(a, b):
    with pytest.raises(DataError):
        paired_test(a, b)


@pytest.mark.parametrize("chunk", [None, 7 * 300 + 5])
def test_intervals_computed_together_equal_each_computed_alone(monkeypatch, chunk):
    rng = np.random.default_rng(2)
    arrays_ = [
        rng.random(300),
        rng.random(120),
        (rng.random(300) < 0.2).astype(float),
        rng.random(1),
    ]
    if chunk is not None:  # a few resamples per batch instead of all of them
        monkeypatch.setattr(stats, "_DRAWS_PER_CHUNK", chunk)
    alone = [bootstrap_ci(values, n_resamples=400, seed=9) for values in arrays_]
    assert stats.bootstrap_cis(arrays_, n_resamples=400, seed=9) == alone
    assert alone[3] == (arrays_[3][0],) * 3  # one user: every resample is that user
    assert stats.bootstrap_cis([], seed=9) == []


def test_bootstrap_resamples_users_from_the_seeded_stream():
    # by hand: 500 resamples of the users drawn from default_rng(seed), their means' quantiles
    values = np.random.default_rng(3).random(250)
    draws = np.random.default_rng(21).integers(0, 250, size=(500, 250))
    low, high = np.quantile(values[draws].mean(axis=1), [0.05, 0.95])
    mean, ci_low, ci_high = bootstrap_ci(values, n_resamples=500, alpha=0.1, seed=21)
    assert mean == values.mean()
    assert (ci_low, ci_high) == (low, high)  # bit for bit: the same means, the same quantiles


def test_gain_in_standard_errors_by_hand() -> None:
    reference = np.array([0.0, 0.5, 1.0, np.nan])
    # differences 0.1, 0.3, 0.2 (the NaN user is left out): mean 0.2, sd 0.1, se 0.1 / sqrt(3)
    candidate = np.array([0.1, 0.8, 1.2, 0.4])
    assert gain_in_standard_errors(candidate, reference) == pytest.approx(0.2 / (0.1 / 3**0.5))
    assert gain_in_standard_errors(candidate, None) == math.inf  # nothing to pair with
    quarters = np.array([0.25, 0.5, 0.75])  # + 0.25 is exact: no spread at all, a gain
    assert gain_in_standard_errors(quarters + 0.25, quarters) == math.inf
    assert gain_in_standard_errors(reference, reference) == 0.0
    assert gain_in_standard_errors(candidate[:1], reference[:1]) == 0.0  # one user: no verdict
