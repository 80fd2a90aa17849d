"""A launch's records: intervals over the users with a value, in the metrics' order."""

from __future__ import annotations

import math

import numpy as np

from metarec.config import EvalConfig
from metarec.evaluation.records import launch_records
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
