"""How a launch without validation categories should choose its support bias, judged on the
*validation* categories of a store's quick fold (test categories are never scored).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/support_bias_rule.py runs/ml-100k.duckdb \
        runs/ml-1m.duckdb --shots 1,3,5

metarec-ridge is fitted as on a store with no validation category (fold-in, no training
step), so every validation launch chooses its support bias from its own support
(:func:`metarec.ranking.launch_bias.support_bias`); each rule below replaces that choice and the
launches are scored with the harness's validation NDCG@10. ``bias=b`` rows fix the bias for
every launch (the headroom a rule could reach), ``popularity`` is the launch-popularity
baseline.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import metarec.ranking.launch_bias as launch_bias
import metarec.ranking.ridge as ridge  # RidgeRanker.launch calls ridge.support_bias
from metarec.evaluation.cases import pooled_score
from metarec.evaluation.methods import METHODS
from metarec.evaluation.ridge import MetarecRidge
from metarec.ranking.metrics import ranking_metrics
from quick_fold import quick_fold

Rule = Callable[..., torch.Tensor]


def fixed(bias: float) -> Rule:
    def rule(*args: object) -> torch.Tensor:
        return torch.tensor(bias, dtype=torch.float64)

    return rule


def cross_validated(parts: int, ks: tuple[int, ...]) -> Rule:
    """``support_bias`` with every user held out once over ``parts`` parts (1: the seeded
    quarter, as now), biases compared on NDCG at ``ks`` in order (a tie at the first cutoff
    is broken by the next), ties after the last keeping the smaller bias."""

    def rule(model, category, support, factors, gram):
        if category.n_items <= 10:
            return model.params["support_bias"].clone()
        cutoffs = tuple(dict.fromkeys(min(k, category.n_items - 1) for k in ks))
        users = torch.unique(support.users)
        rng = np.random.default_rng(
            launch_bias.derived_seed(model.config.seed, f"support-bias:{category.name}")
        )
        order = users[torch.from_numpy(rng.permutation(len(users)))]
        quarter = len(users) // 4
        groups = [order[:quarter]] if parts == 1 else list(torch.tensor_split(order, parts))
        if (quarter if parts == 1 else len(users)) < launch_bias.MIN_HELD_OUT:
            return model.params["support_bias"].clone()
        per_bias: dict[float, list[np.ndarray]] = {b: [] for b in launch_bias.BIAS_GRID}
        for held in groups:
            out = torch.isin(support.users, held)
            rest = launch_bias.RidgeSupport(
                support.users[~out], support.items[~out], support.weights[~out], support.n_items
            )
            with torch.no_grad():
                vectors = launch_bias.fold_in(
                    model.params, factors, rest, category.item_x, gram=gram
                )
                dots = launch_bias.ridge_scores(
                    {**model.params, "support_bias": torch.zeros((), dtype=torch.float64)},
                    factors[held],
                    vectors,
                    rest.counts,
                )
            row_of = torch.full((int(held.max()) + 1,), -1, dtype=torch.long)
            row_of[held] = torch.arange(len(held))
            relevant = torch.zeros(dots.shape, dtype=torch.bool)
            relevant[row_of[support.users[out]], support.items[out]] = True
            popularity = torch.log1p(rest.counts)
            for bias in launch_bias.BIAS_GRID:
                values = ranking_metrics(dots + bias * popularity, relevant, cutoffs)
                per_bias[bias].append(np.stack([values[("ndcg", k)] for k in cutoffs], axis=1))
        best: tuple[tuple[float, ...], float] | None = None
        for bias, parts_values in per_bias.items():
            score = tuple(np.nanmean(np.concatenate(parts_values), axis=0))
            if best is None or score > best[0]:
                best = (score, bias)
        assert best is not None
        return torch.tensor(best[1], dtype=torch.float64)

    return rule


def traced(name: str, rule: Rule, trace: bool) -> Rule:
    def wrapped(model, category, support, factors, gram):
        chosen = rule(model, category, support, factors, gram)
        users = len(torch.unique(support.users))
        if trace and not name.startswith("bias="):
            print(f"    {name}: {category.name} {users} users -> {float(chosen):g}")
        return chosen

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stores", nargs="+", type=Path)
    parser.add_argument("--shots", default="1,3,5")
    parser.add_argument(
        "--config", type=Path, action="append", default=[], help="one per store, in order"
    )
    parser.add_argument("--trace", action="store_true", help="print each launch's choice")
    args = parser.parse_args()
    configs = dict(zip(args.stores, args.config + [None] * len(args.stores), strict=False))
    rules: dict[str, Rule] = {"current": launch_bias.support_bias}
    rules |= {
        "quarter@10": cross_validated(1, (10,)),  # the rule before 6 December
        "quarter@10,100": cross_validated(1, (10, 100)),
        "4fold@10": cross_validated(4, (10,)),  # the product's now: same as "current"
        "4fold@10,100": cross_validated(4, (10, 100)),
        "4fold@100": cross_validated(4, (100,)),
    }
    rules |= {f"bias={b:g}": fixed(b) for b in launch_bias.BIAS_GRID}
    for store in args.stores:
        fold = quick_fold(store, configs[store])
        context = replace(fold.context, validate=None, validate_users=None)
        for shots in (int(s) for s in args.shots.split(",")):
            validation = fold.validation(shots)
            users = sum(len(launch.users) for launch, *_ in validation.launches)
            names = [launch.name for launch, *_ in validation.launches]
            popularity = METHODS["popularity"]()
            popularity.fit(context)
            row = {"popularity": pooled_score(validation.per_user(popularity))}
            for name, rule in rules.items():
                ridge.support_bias = traced(name, rule, args.trace)
                method = MetarecRidge()
                method.fit(context)
                row[name] = pooled_score(validation.per_user(method))
            ridge.support_bias = rules["current"]
            best = max((v, k) for k, v in row.items() if k.startswith("bias="))
            print(f"{store.name} {shots} shots, {names}, {users} users")
            for name, value in row.items():
                mark = " (best fixed)" if name == best[1] else ""
                print(f"  {name:12s} {value:.4f}{mark}")


if __name__ == "__main__":
    main()
