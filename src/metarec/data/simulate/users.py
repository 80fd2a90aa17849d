"""Stage 4: users, with tastes, activity and interests over the leaf categories."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metarec.data.simulate.config import AGE_BAND_SHARES, AGE_BANDS, REGIONS, SimulationConfig
from metarec.data.simulate.tree import _Tree


@dataclass(frozen=True)
class _Users:
    table: pd.DataFrame  # users.csv
    taste: np.ndarray  # (n_users, d)
    interest: np.ndarray  # (n_users, n_leaves), rows sum to 1
    visits: np.ndarray  # (n_users,) number of visits
    joined: np.ndarray  # (n_users,) unix seconds


def _make_users(
    rng: np.random.Generator, config: SimulationConfig, tree: _Tree, leaf_sizes: np.ndarray
) -> _Users:
    """Tastes weakly tied to age band and region, long-tailed activity, focused interests."""
    n, d = config.n_users, config.latent_dim
    band = rng.choice(len(AGE_BANDS), size=n, p=AGE_BAND_SHARES)
    region = rng.integers(len(REGIONS), size=n)
    a, r = config.age_taste_weight, config.region_taste_weight
    band_vec = rng.standard_normal((len(AGE_BANDS), d))
    region_vec = rng.standard_normal((len(REGIONS), d))
    taste = (
        np.sqrt(1 - a * a - r * r) * rng.standard_normal((n, d))
        + a * band_vec[band]
        + r * region_vec[region]
    )

    # bigger leaves draw more traffic: their share of the catalogue enters the interest prior
    log_share = np.log(leaf_sizes / leaf_sizes.sum())
    logits = config.interest_taste_weight * taste @ tree.vectors.T / np.sqrt(d) + log_share
    base = np.exp(logits - logits.max(axis=1, keepdims=True))
    base /= base.sum(axis=1, keepdims=True)
    gamma = rng.gamma(config.interest_concentration * base)
    # tiny Dirichlet shapes underflow to exact zeros; a small share of the mean keeps every
    # launched leaf reachable
    interest = 0.97 * gamma / np.maximum(gamma.sum(axis=1, keepdims=True), 1e-300) + 0.03 * base

    mu = np.log(config.mean_visits_per_user) - config.activity_sigma**2 / 2
    visits = np.maximum(np.round(rng.lognormal(mu, config.activity_sigma, size=n)), 1)
    span = config.span_days * 86_400
    joined = config.start_time + np.floor(rng.uniform(0, 0.9 * span, size=n)).astype(np.int64)
    table = pd.DataFrame(
        {
            "user_id": [f"u{k:05d}" for k in range(n)],
            "age_band": np.asarray(AGE_BANDS)[band],
            "region": np.asarray(REGIONS)[region],
        }
    )
    return _Users(table, taste, interest, visits.astype(np.int64), joined)
