"""Score configurations on a fold's *validation* categories only (test categories never scored).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_validation.py runs/ml-1m.duckdb \
        runs/tuning-ml-1m.jsonl 'whitened={"features": {"cf_power": -1.0}}' \
        'sqrt={"features": {"cf_power": 0.5}}' 'als={"method": "als"}'

Each ``NAME=JSON`` is one configuration: nested :class:`~metarec.config.TrainConfig` overrides,
plus optional ``"method"`` (a harness registry key, default ``metarec-maml``) and ``"setting"``
(keyword arguments of that method). The fold is the harness's first rotating fold for the
seed (the same split `metarec evaluate` uses), the method is fitted exactly as the harness
fits it (:func:`~metarec.evaluation.units.fold_context`: the sealed context, validation on a
seeded sample of at most ``validation_users`` users per category, per user and at zero shots,
so checkpoint selection and metarec-ridge's guards act as in a run) and scored with the
harness's validation NDCG@10. One JSON line per configuration is appended to the output file
and printed, so a long sweep can be stopped and resumed by hand. This is how metarec's defaults
are chosen (docs/BENCHMARKS.md, "Tuning log"): a number from a test category never feeds back.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from metarec.config import EvalConfig, load_config
from metarec.data.store import Store
from metarec.evaluation.folds import eligible_categories, make_folds
from metarec.evaluation.methods import METHODS
from metarec.evaluation.units import fold_context
from metarec.features import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("out", type=Path, help="JSON lines, appended")
    parser.add_argument("configs", nargs="+", help="NAME=JSON overrides")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # comparable timings on a shared 2-core machine

    evaluation = EvalConfig(seed=args.seed)
    base = load_config(None, seed=args.seed)
    with Store.open(args.store, read_only=True) as store:
        catalog = load_catalog(store, base)
    eligible = eligible_categories(catalog, evaluation.min_users, 2, min_items=max(evaluation.ks))
    fold = make_folds(eligible, catalog.categories, evaluation)[0]
    for name, spec in (item.split("=", 1) for item in args.configs):
        overrides = json.loads(spec)
        method_name = overrides.pop("method", "metarec-maml")
        setting = overrides.pop("setting", {})
        config = load_config(None, seed=args.seed, **overrides)
        started = time.perf_counter()
        # the harness's own fit context: per-user and zero-shot validation included, so the
        # guards and choices that read them act here as they do in `metarec evaluate`
        context, validation = fold_context(catalog, config, evaluation, fold)
        method = METHODS[method_name](**setting)
        method.fit(context)
        record = {
            "name": name,
            "method": method_name,
            "overrides": overrides,
            "setting": setting,
            "validation": fold.validation,
            "validation_ndcg@10": round(validation.score(method), 5),
            "seconds": round(time.perf_counter() - started, 1),
            "history": getattr(method, "history", None),  # trajectory of metarec-ridge
        }
        print(json.dumps(record), flush=True)
        with args.out.open("a") as out:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
