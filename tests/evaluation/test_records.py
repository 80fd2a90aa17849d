"""A launch's records: intervals over the users with a value, in the metrics' order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metarec.config import EvalConfig
from metarec.evaluation.records import comparisons, launch_records
from metarec.evaluation.stats import bootstrap_ci
from metarec.seeds import derived_seed


def test_launch_records_drop_nan_users_and_keep_the_order():
    config = EvalConfig(n_resamples=300, seed=4)
    ndcg = np.array([np.nan, 0.5, 1.0, 0.0, 0.25])
    metrics = {
        ("ndcg", 10): ndcg,
        ("recall", 10): np.full(5, np.nan),  # no user with a relevant candidate
        ("hit", 5): np.array([1.0, 0.0, 1.0, 1.0, 0.0]),
    }
    records = launch_records("m", "baseline", 3, "Poetry", metrics, config)
    assert [(r["metric"], r["k"]) for r in records] == list(metrics)
    seed = derived_seed(4, "Poetry")
    first, empty, last = records
    assert (first["mean"], first["ci_low"], first["ci_high"]) == bootstrap_ci(
        ndcg[1:], n_resamples=300, seed=seed
    )
    assert first["n_users"] == 4 and first["mean"] == 0.4375
    assert empty["n_users"] == 0 and all(
        math.isnan(empty[f]) for f in ("mean", "ci_low", "ci_high")
    )
    assert (last["mean"], last["ci_low"], last["ci_high"]) == bootstrap_ci(
        metrics[("hit", 5)], n_resamples=300, seed=seed
    )
    assert all(r["shots"] == 3 and r["category"] == "Poetry" for r in records)


def test_comparisons_test_over_users_and_over_categories() -> None:
    """Hand-made per-user NDCG@10 in three categories: the method is ahead in two of them.

    The user test pools the users (a method 0.1 ahead on 40 of 50 users: tiny p); the category
    test ranks the three categories' mean differences, and with three the exact two-sided
    Wilcoxon p-value cannot go below 0.25."""
    rng = np.random.default_rng(0)
    key = ("ndcg", 10)
    per_user = {}
    for category, ahead in (("A", 0.1), ("B", 0.1), ("C", -0.02)):
        baseline = rng.uniform(0.2, 0.6, 20 if category != "C" else 10)
        per_user[("popularity", 1, category)] = {key: baseline}
        per_user[("metarec", 1, category)] = {key: baseline + ahead}
    per_user[("metarec", 1, "A")][key][0] = np.nan  # an undefined user is left out of both

    [row] = comparisons(per_user, {"metarec": "metarec", "popularity": "baseline"}, [1])

    assert row["baseline"] == "popularity" and row["n_users"] == 49
    assert row["p_value"] < 1e-6
    assert row["n_categories"] == 3 and row["categories_ahead"] == 2
    # differences +0.1, +0.1, -0.02: ranks 2 and 3 (or 2.5 each) positive, 1 negative, so
    # W+ = 5; of the 8 equally likely sign patterns, W+ >= 5 in 2 and W+ <= 1 in 2: p = 4/8
    assert row["p_value_categories"] == pytest.approx(0.5)
    a = np.concatenate([per_user[("metarec", 1, c)][key] for c in "ABC"])
    b = np.concatenate([per_user[("popularity", 1, c)][key] for c in "ABC"])
    both = ~np.isnan(a)
    assert row["mean"] == pytest.approx(a[both].mean())
    assert row["baseline_mean"] == pytest.approx(b[both].mean())
