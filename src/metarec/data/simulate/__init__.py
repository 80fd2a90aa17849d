"""A simulated bookstore: the product's offline default data and its known-answer fixture.

It is a fixture, not evidence: quality claims come from the real datasets. The generative process
is meant to be neutral (nothing in it is designed to favour one recommender method) and realistic
where that is cheap. It writes the generic table format of PROTOCOL.md §1 (see
:func:`simulate`). Every knob is a field of :class:`SimulationConfig`; docs/SIMULATOR.md explains
each one in plain language.

Generative process (``d = latent_dim``; ``N(0, s²)`` is an isotropic Gaussian in ``R^d``):

1. **Category tree.** A fixed tree of 18 book leaves (``Books > Fiction > Mystery``, ...) and four
   non-book domains (``Music > Vinyl``, ``Electronics > E-readers``, ``Toys > Board Games``,
   ``Stationery > Notebooks``). Each node's latent vector is its parent's plus ``N(0, s²)`` with
   ``s = category_std[depth]`` (top-level domains start from the origin), so sibling categories
   share tastes. Leaves shallower than three levels get the missing levels' variance too, so all
   leaves are equally spread. Items live in leaves only.
2. **Launches.** ``initial_categories`` leaves, chosen at random, launch on day 0; the others at
   uniform random times in ``(0, last_launch_fraction * span_days]``. No event in a category
   happens before its launch.
3. **Items.** Leaf sizes are proportional to lognormal weights (``non_book_size_weight`` times
   smaller outside books; at least ``min_items_per_category`` each); item ids are shuffled.
   A book has an author and a publisher; a non-book good has a brand. Authors have a home leaf
   and, with probability ``author_second_category_prob``, a sibling leaf too; their
   productivity is lognormal. Publishers each span ``publisher_span`` book subdomains; an author
   has a main publisher used for ``author_publisher_loyalty`` of their books. An item's latent
   vector is ``leaf + author (or brand) offset + publisher offset + noise`` with the stds of
   ``author_std``, ``publisher_std`` and ``item_noise_std``. Item quality is ``N(0,
   quality_std²)``: as a log-weight it makes popularity long-tailed. Titles mix words of a
   per-leaf vocabulary with generic words; descriptions are one sentence naming the leaf's kind
   of product; years are ``end_year - Exponential(leaf age scale)``; prices are lognormal
   around a per-leaf median.
4. **Users.** Taste ``u = sqrt(1 - a² - r²) z + a * age[band] + r * region[region]`` with
   ``z``, ``age[.]``, ``region[.]`` standard normal, ``a = age_taste_weight`` and
   ``r = region_taste_weight`` (weak). Activity (number of visits) is lognormal with mean
   ``mean_visits_per_user`` and log-std ``activity_sigma``. Interest over leaves is a Dirichlet
   draw with total concentration ``interest_concentration`` around
   ``softmax(interest_taste_weight * <u, leaf>/sqrt(d) + log(leaf size share))``, so users
   concentrate on a few leaves, those they tend to like.
5. **Visits.** A user joins at a uniform time in the first ``0.9 * span_days``; each visit has a
   uniform time between joining and the end, and picks one *already launched* leaf in proportion
   to the user's interest.
6. **Funnel.** A visit shows ``1 + Poisson(mean_views_per_visit - 1)`` distinct items of its leaf
   (at most ``max_views_per_visit``), sampled without replacement with log-weights
   ``expose_quality * quality + expose_affinity * affinity`` (exposure: popularity plus mild
   personalisation). With ``affinity = <u, item>/sqrt(d)``, each view is clicked with
   probability ``sigmoid(click_bias + click_affinity * affinity + click_quality * quality)``;
   a click is carted with ``sigmoid(cart_bias + cart_affinity * affinity - price_sensitivity *
   log(price / leaf median))``; a cart is ordered with the same form (``order_*`` knobs). One row
   per funnel event; each step follows the previous one by a few seconds to an hour. A fraction
   ``rating_fraction`` of orders carry a 1-5 rating: ``round(rating_bias + affinity + N(0,
   0.75²))``.

The parts live in this package: :mod:`.config` (the config and summary models),
:mod:`.vocabulary` (the leaves and name pools), one module per stage (:mod:`.tree`,
:mod:`.items`, :mod:`.users`, :mod:`.visits`) and :mod:`.output` (the files and the summary).

Example:
    >>> summary = simulate("data/bookstore", seed=0)  # doctest: +SKIP
    >>> summary.n_events  # doctest: +SKIP
    255340
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data.simulate.config import (
    AGE_BAND_SHARES,
    AGE_BANDS,
    EVENTS,
    FILES,
    POSITIVE_EVENTS,
    REGIONS,
    CategoryLaunch,
    SimulationConfig,
    SimulationSummary,
)
from metarec.data.simulate.items import _make_items
from metarec.data.simulate.output import _feedback_toml, _summarise, _write_csv, _write_text
from metarec.data.simulate.tree import _build_tree
from metarec.data.simulate.users import _make_users
from metarec.data.simulate.visits import _draw_views, _draw_visits, _run_funnel
from metarec.data.simulate.vocabulary import LEAVES
from metarec.errors import ConfigError, DataError

__all__ = [
    "AGE_BANDS",
    "AGE_BAND_SHARES",
    "EVENTS",
    "FILES",
    "LEAVES",
    "POSITIVE_EVENTS",
    "REGIONS",
    "CategoryLaunch",
    "SimulationConfig",
    "SimulationSummary",
    "simulate",
]

# Stable sub-stream keys: each stage draws from its own generator derived from (seed, key), so a
# change in one stage's draws does not reshuffle every later stage.
_TREE, _ITEMS, _USERS, _VISITS, _VIEWS, _FUNNEL = range(6)


def simulate(
    out: str | Path, *, seed: int = 0, config: SimulationConfig | None = None
) -> SimulationSummary:
    """Simulate the bookstore and write it, in the generic table format, into folder ``out``.

    Files: ``items.csv``, ``interactions.csv``, ``users.csv``, ``categories.csv`` and
    ``metarec.toml`` (the recommended feedback setting: clicks, carts and orders are positives,
    views are exposure). Each file is written atomically; other files in ``out`` are left alone.
    The same seed and config give byte-identical files.

    Args:
        out: output folder, created when missing.
        seed: seed of every random draw.
        config: sizes and knobs; defaults to :class:`SimulationConfig`'s defaults.

    Returns:
        Counts, the categories with their launch times, and the paths written.

    Raises:
        ConfigError: ``seed`` is negative.
        DataError: ``out`` exists and is not a folder.
    """
    config = config or SimulationConfig()
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"simulation output {out} is a file; pass a folder path (created if new)")
    out.mkdir(parents=True, exist_ok=True)

    tree = _build_tree(_rng(seed, _TREE), config)
    items = _make_items(_rng(seed, _ITEMS), config, tree)
    leaf_sizes = np.bincount(items.category, minlength=len(LEAVES))
    users = _make_users(_rng(seed, _USERS), config, tree, leaf_sizes)
    visits = _draw_visits(_rng(seed, _VISITS), config, tree, users)
    views = _draw_views(_rng(seed, _VIEWS), config, items, users, visits)
    events = _run_funnel(_rng(seed, _FUNNEL), config, items, users, visits, views)

    frames = {
        "items.csv": items.table,
        "interactions.csv": events,
        "users.csv": users.table,
        "categories.csv": pd.DataFrame(
            {"category": [leaf.path for leaf in LEAVES], "description": tree.descriptions}
        ),
    }
    files = [_write_csv(out / name, frame) for name, frame in frames.items()]
    files.append(_write_text(out / "metarec.toml", _feedback_toml()))
    return _summarise(seed, tree, items, users, events, files)


def _rng(seed: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage])
