"""How much can each of the scorer's signals rank a sealed category on its own?

Prints NDCG@10 of single input signals (launch popularity, profile cosines, collaborative dot
products) and of an *oracle* user-kNN that may see every interaction of the category (so an
upper bound for "users similar elsewhere like the same items here"), for the k-shot split of
PROTOCOL.md §2. Used to read the demo's results honestly (README, "What the demo measured").

    .venv/bin/metarec demo --workdir demo-run          # writes demo-run/store.duckdb
    .venv/bin/python benchmarks/signal_audit.py demo-run/store.duckdb \
        --config demo-run/data/metarec.toml --category "Books > Literature > Poetry"
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from metarec.config import load_config
from metarec.data import Store
from metarec.features import FeatureSpace, load_catalog
from metarec.meta.model import MetaModel
from metarec.ranking.metrics import ranking_metrics
from metarec.tasks import (
    candidate_rows,
    evaluation_masks,
    split_categories,
    split_k_shot,
    support_state,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--config", default=None)
    parser.add_argument("--category", required=True)
    parser.add_argument("--shots", default="1,3,5")
    args = parser.parse_args()

    config = load_config(args.config, hold_out=[args.category])
    with Store.open(args.store, read_only=True) as store:
        catalog = load_catalog(store, config)
    splits = split_categories(catalog, config)
    train_items = catalog.items[catalog.items["category"].isin(splits["train"])]
    space = FeatureSpace.fit(train_items, config.features)
    rank = config.features.cf_rank
    factors = catalog.fit_factors(splits["train"], rank, config.seed)
    known = catalog.items["category"].isin(splits["train"]).to_numpy(copy=True)
    model = MetaModel(
        config,
        space,
        {},
        splits,
        factors[torch.from_numpy(known)],
        catalog.items.loc[known, "item_id"].astype(str).tolist(),
    )
    category = model.category_data(catalog, [args.category], visible=catalog.categories)[
        args.category
    ]
    d, full = space.dim, space.dim + rank

    def ndcg(scores: torch.Tensor, relevant: torch.Tensor, exclude: torch.Tensor) -> float:
        return float(
            np.nanmean(ranking_metrics(scores, relevant, (10,), exclude=exclude)[("ndcg", 10)])
        )

    print(
        f"{'shots':>5} {'users':>5} {'popularity':>10} {'cos(p,z)':>8} {'cos(s,z)':>8} "
        f"{'p.m (cf)':>8} {'p.x (attr)':>10} {'random':>6} {'oracle kNN':>10}"
    )
    for shots in (int(s) for s in args.shots.split(",")):
        split = split_k_shot(category, shots)
        users = np.flatnonzero(split.eligible)
        rows = candidate_rows(category, support_state(category, split), torch.as_tensor(users))
        relevant, exclude = evaluation_masks(category, split, users)
        tie = 1e-4 * rows[..., -6]  # popularity breaks ties, so a flat signal is not rewarded
        liked = torch.zeros(category.n_users, category.n_items)
        liked[category.pos_user, category.pos_item] = 1
        profiles = torch.nn.functional.normalize(category.profile[:, d:], dim=1)
        oracle = (profiles[users] @ profiles.T) @ liked
        random = torch.rand(rows.shape[:2], generator=torch.Generator().manual_seed(0))
        print(
            f"{shots:>5} {len(users):>5} {ndcg(rows[..., -6], relevant, exclude):>10.3f} "
            f"{ndcg(rows[..., -4] + tie, relevant, exclude):>8.3f} "
            f"{ndcg(rows[..., -3] + tie, relevant, exclude):>8.3f} "
            f"{ndcg(rows[..., full + d : 2 * full].sum(-1) + tie, relevant, exclude):>8.3f} "
            f"{ndcg(rows[..., full : full + d].sum(-1) + tie, relevant, exclude):>10.3f} "
            f"{ndcg(random, relevant, exclude):>6.3f} {ndcg(oracle, relevant, exclude):>10.3f}"
        )


if __name__ == "__main__":
    main()
