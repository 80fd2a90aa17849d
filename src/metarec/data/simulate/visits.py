"""Stages 5 and 6: visits, the items each visit shows, and the funnel from view to order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metarec.data.simulate.config import EVENTS, SimulationConfig
from metarec.data.simulate.items import _Items
from metarec.data.simulate.tree import _Tree
from metarec.data.simulate.users import _Users
from metarec.data.simulate.vocabulary import LEAVES


@dataclass(frozen=True)
class _Visits:
    user: np.ndarray  # (n_visits,) user index
    time: np.ndarray  # (n_visits,) unix seconds
    category: np.ndarray  # (n_visits,) leaf index, launched by ``time``
    n_views: np.ndarray  # (n_visits,) items shown


def _draw_visits(
    rng: np.random.Generator, config: SimulationConfig, tree: _Tree, users: _Users
) -> _Visits:
    """Visit times after each user joins; each visit picks a launched leaf by interest."""
    user = np.repeat(np.arange(config.n_users), users.visits)
    end = config.start_time + config.span_days * 86_400
    start = users.joined[user]
    time = start + np.floor(rng.random(len(user)) * (end - start)).astype(np.int64)
    # inverse-CDF draw over the leaves launched by each visit's time, all visits at once
    weight = users.interest[user] * (tree.launch[None, :] <= time[:, None])
    cumulative = np.cumsum(weight, axis=1)
    target = rng.random(len(user)) * cumulative[:, -1]
    category = np.minimum((cumulative <= target[:, None]).sum(axis=1), len(LEAVES) - 1)
    n_views = 1 + rng.poisson(config.mean_views_per_visit - 1, size=len(user))
    n_views = np.minimum(n_views, config.max_views_per_visit)
    return _Visits(user, time, category, n_views)


@dataclass(frozen=True)
class _Views:
    visit: np.ndarray  # (n_views,) visit index
    item: np.ndarray  # (n_views,) item index
    position: np.ndarray  # (n_views,) 0-based position in the visit
    affinity: np.ndarray  # (n_views,) <taste, item vector> / sqrt(d)


def _draw_views(
    rng: np.random.Generator,
    config: SimulationConfig,
    items: _Items,
    users: _Users,
    visits: _Visits,
) -> _Views:
    """Items each visit shows: distinct items of the leaf, by popularity and mild affinity.

    Sampling without replacement in proportion to ``exp(log-weight)`` is the top-n of the
    log-weights plus Gumbel noise, so each leaf is one (visits, items) matrix, no per-visit loop.
    """
    scale = 1.0 / np.sqrt(config.latent_dim)
    parts: list[tuple[np.ndarray, ...]] = []
    for leaf in range(len(LEAVES)):
        vis = np.flatnonzero(visits.category == leaf)
        cand = np.flatnonzero(items.category == leaf)
        if len(vis) == 0:
            continue
        affinity = users.taste[visits.user[vis]] @ items.vectors[cand].T * scale  # (V, N)
        key = config.expose_quality * items.quality[cand] + config.expose_affinity * affinity
        key = key + rng.gumbel(size=key.shape)
        k = min(config.max_views_per_visit, len(cand))
        top = np.argpartition(-key, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(key, top, 1), 1), 1)
        shown = np.arange(k)[None, :] < np.minimum(visits.n_views[vis], k)[:, None]  # (V, k)
        rows, position = np.nonzero(shown)
        chosen = top[rows, position]
        parts.append((vis[rows], cand[chosen], position, affinity[rows, chosen]))
    visit, item, position, affinity = (np.concatenate(p) for p in zip(*parts, strict=True))
    return _Views(visit, item, position, affinity)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _run_funnel(
    rng: np.random.Generator,
    config: SimulationConfig,
    items: _Items,
    users: _Users,
    visits: _Visits,
    views: _Views,
) -> pd.DataFrame:
    """View, then click, cart and order, each step conditional on the previous one.

    Returns:
        interactions.csv's rows, sorted by time, with sequential event ids.
    """
    n = len(views.item)
    aff, quality = views.affinity, items.quality[views.item]
    price = items.log_price_ratio[views.item]
    t_view = visits.time[views.visit] + 45 * views.position + rng.integers(0, 30, size=n)
    click = rng.random(n) < _sigmoid(
        config.click_bias + config.click_affinity * aff + config.click_quality * quality
    )
    cart = click & (
        rng.random(n)
        < _sigmoid(config.cart_bias + config.cart_affinity * aff - config.price_sensitivity * price)
    )
    order = cart & (
        rng.random(n)
        < _sigmoid(
            config.order_bias + config.order_affinity * aff - config.price_sensitivity * price
        )
    )
    # each step follows the previous by seconds (click), minutes (cart) or up to an hour (order)
    t_click = t_view + rng.integers(3, 60, size=n)
    t_cart = t_click + rng.integers(20, 600, size=n)
    t_order = t_cart + rng.integers(60, 3600, size=n)
    rated = order & (rng.random(n) < config.rating_fraction)
    stars = np.clip(np.round(config.rating_bias + aff + 0.75 * rng.standard_normal(n)), 1, 5)

    masks = (np.ones(n, dtype=bool), click, cart, order)
    times = (t_view, t_click, t_cart, t_order)
    user = visits.user[views.visit]
    rows_user = np.concatenate([user[m] for m in masks])
    rows_item = np.concatenate([views.item[m] for m in masks])
    rows_time = np.concatenate([t[m] for t, m in zip(times, masks, strict=True)])
    rows_event = np.concatenate([np.full(int(m.sum()), e) for e, m in enumerate(masks)])
    rows_rating = np.concatenate(
        [np.full(int(m.sum()), np.nan) for m in masks[:3]] + [np.where(rated, stars, np.nan)[order]]
    )
    # a total order on (time, user, item, step) makes event ids reproducible
    sort = np.lexsort((rows_event, rows_item, rows_user, rows_time))
    user_ids = users.table["user_id"].to_numpy()
    item_ids = items.table["item_id"].to_numpy()
    return pd.DataFrame(
        {
            "event_id": [f"e{k:07d}" for k in range(len(sort))],
            "user_id": user_ids[rows_user[sort]],
            "item_id": item_ids[rows_item[sort]],
            "timestamp": rows_time[sort],
            "event": np.asarray(EVENTS)[rows_event[sort]],
            "rating": pd.array(rows_rating[sort], dtype="Float64").astype("Int64"),
        }
    )
