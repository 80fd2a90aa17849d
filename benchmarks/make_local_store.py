"""A synthetic store shaped like a public local-business review dataset: ~90 categories, stars.

    .venv/bin/python benchmarks/make_local_store.py runs/local      # writes runs/local.duckdb

Issue 12 names such a dataset (about 90 categories, never seen by the project) as one the
maintainers check the default on. This is not that data, only its shape, for checking that the
whole pipeline runs and where it stands on such a shape, never for tuning: 90 categories in 9
groups with heavy-tailed sizes (4,000 items down to 3), 15,000 users with log-normal review
counts (median 7, many with one or two), 1 to 5 stars from a latent taste plus noise, items
chosen by popularity times taste, almost no item content (a city and a price level). Written in
the generic table format (interactions with ``rating``, items) and ingested with its defaults,
so positives are the ratings of 4 and 5.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from metarec.data import ingest

GROUPS = (
    "Restaurants",
    "Shopping",
    "Nightlife",
    "Beauty & Spas",
    "Automotive",
    "Health",
    "Home Services",
    "Arts",
    "Active Life",
)
CITIES = ("Phoenix", "Las Vegas", "Toronto", "Charlotte", "Pittsburgh", "Madison")
LATENT = 8  # dimensions of the users' and items' hidden taste
N_USERS = 15_000


def tables(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions, items) of the synthetic store."""
    rng = np.random.default_rng(seed)
    categories = [f"{group} > Sub {i}" for group in GROUPS for i in range(10)]
    sizes = np.maximum(3, (4000 / np.arange(1, len(categories) + 1) ** 1.1).astype(int))
    rng.shuffle(sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    n_items = int(starts[-1])
    items = pd.DataFrame(
        {
            "item_id": [f"b{i:06d}" for i in range(n_items)],
            "category": np.repeat(categories, sizes),
            "title": [f"Place {i}" for i in range(n_items)],
            "brand": rng.choice(CITIES, n_items),
            "price": rng.integers(1, 5, n_items).astype(float),
        }
    )
    item_taste = rng.normal(size=(n_items, LATENT))
    item_pop = rng.pareto(1.2, n_items) + 1.0
    user_taste = rng.normal(size=(N_USERS, LATENT))
    group_of = np.repeat(np.arange(len(GROUPS)), 10)
    group_share = rng.dirichlet(np.full(len(GROUPS), 0.5), N_USERS)
    n_reviews = np.minimum(200, np.maximum(1, rng.lognormal(2.0, 1.0, N_USERS).astype(int)))
    rows = []
    for user in range(N_USERS):
        chance = group_share[user][group_of] * sizes**0.7
        time_now = 1_400_000_000 + int(rng.integers(0, 100_000_000))
        for category in rng.choice(len(categories), n_reviews[user], p=chance / chance.sum()):
            members = np.arange(starts[category], starts[category + 1])
            affinity = item_taste[members] @ user_taste[user] / np.sqrt(LATENT)
            weight = item_pop[members] * np.exp(0.8 * affinity)
            pick = int(rng.choice(len(members), p=weight / weight.sum()))
            stars = int(np.clip(np.round(3.6 + 1.1 * affinity[pick] + rng.normal(0, 0.8)), 1, 5))
            time_now += int(rng.integers(3_600, 3_000_000))
            rows.append((f"u{user:06d}", int(members[pick]), time_now, stars))
    interactions = pd.DataFrame(rows, columns=["user_id", "item", "timestamp", "rating"])
    interactions = interactions.drop_duplicates(["user_id", "item"])  # one review per place
    interactions.insert(1, "item_id", items["item_id"].to_numpy()[interactions.pop("item")])
    interactions.insert(0, "event_id", [f"r{i:08d}" for i in range(len(interactions))])
    return interactions, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder prefix: OUT-data/ and OUT.duckdb")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    interactions, items = tables(args.seed)
    folder = args.out.with_name(args.out.name + "-data")
    folder.mkdir(parents=True, exist_ok=True)
    interactions.to_csv(folder / "interactions.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    report = ingest(folder, args.out.with_suffix(".duckdb"), fmt="table")
    print(
        f"{len(interactions):,} interactions, {len(items):,} items, "
        f"{interactions['user_id'].nunique():,} users, {items['category'].nunique()} categories"
    )
    print(f"ingested in {report.seconds:.1f} s: interactions {report.interactions}")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
