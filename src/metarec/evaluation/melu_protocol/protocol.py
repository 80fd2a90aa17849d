"""The protocol end to end: load, split, fit, predict, records and the table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from metarec.config import FeatureConfig, MetaConfig, ModelConfig, TaskConfig, TrainConfig
from metarec.errors import ConfigError, DataError
from metarec.evaluation.melu_protocol.constants import METHODS, RANKING, TEST_SPLITS, TRAIN_SPLIT
from metarec.evaluation.melu_protocol.features import RatingFeatures
from metarec.evaluation.melu_protocol.learners import PooledRatings, RatingMAML, predict_ratings
from metarec.evaluation.melu_protocol.metrics import user_metrics
from metarec.evaluation.melu_protocol.references import tune_reference
from metarec.evaluation.melu_protocol.tasks import (
    SplitRule,
    UserTask,
    hold_out_users,
    load_ratings,
    melu_tasks,
    split_checksum,
)
from metarec.evaluation.stats import bootstrap_ci, paired_test
from metarec.meta import Params, TaskBatch, meta_train, stack_tasks
from metarec.models.scorer import init_params
from metarec.seeds import derived_seed

# Learned methods: (which training run, adapted on the support at test).
_TRAINED = {
    "metarec-maml": ("maml", True),
    "meta-init": ("maml", False),
    "pretrain-finetune": ("pretrain", True),
    "pretrain-zeroshot": ("pretrain", False),
}


# ---- the protocol ----------------------------------------------------------------------------


def melu_config(*, seed: int = 0, quick: bool = False) -> TrainConfig:
    """The protocol's default training config (users as tasks; chosen on validation users only,
    see docs/MELU_PROTOCOL.md). ``quick`` shortens meta-training for smoke runs."""
    return TrainConfig(
        seed=seed,
        features=FeatureConfig(
            max_vocab_per_field=128,
            oov_buckets=16,
            categorical_fields=("authors", "publisher"),
            extra_fields=("year_id",),
            numeric_fields=(),
            cf_rank=0,
        ),
        tasks=TaskConfig(kind="user"),
        model=ModelConfig(hidden=(64, 32)),
        meta=MetaConfig(
            inner_steps=3,
            inner_lr=0.05,
            outer_lr=3e-3,
            meta_batch_size=32,
            meta_steps=100 if quick else 1000,
        ),
    )


def evaluate_melu(
    store_path: str | Path,
    *,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    quick: bool = False,
    config: TrainConfig | None = None,
    ks: Sequence[int] = (5,),
    n_resamples: int = 1000,
    progress: bool = False,
) -> list[dict[str, object]]:
    """Run the MeLU-line protocol on a DBook store (see the module docstring).

    Args:
        store_path: a store ingested with ``--format dbook``.
        methods: names from :data:`METHODS`; None runs them all.
        seed: the run seed (task splits, validation users, initialisation, sampling).
        quick: short meta-training (every method and split is still evaluated).
        config: overrides :func:`melu_config` (``tasks.kind`` must be ``"user"``; ``meta``,
            ``model`` and ``features`` are read).
        ks: nDCG cutoffs.
        n_resamples: bootstrap resamples per confidence interval.
        progress: show meta-training progress bars.

    Returns:
        PROTOCOL.md §4 records, one per (method, split, metric, k): ``protocol`` "melu",
        ``ranking`` (says it is within the query, not full ranking), ``method``, ``family``,
        ``shots`` None (supports hold 3 to 90 ratings), ``category`` = the test split, ``metric``
        (``mae``, ``rmse``, ``ndcg``), ``k`` (None for errors), ``mean``, ``ci_low``,
        ``ci_high``, ``n_users``, ``split_checksum``; metarec-family records add ``vs_baseline``
        (the best baseline on that split and metric), its ``baseline_mean`` and ``p_value``
        (paired Wilcoxon signed-rank over the same users).

    Raises:
        ConfigError: an unknown method, or ``tasks.kind`` other than ``"user"``.
        DataError: the store lacks the DBook splits, or a split has no eligible user.
    """
    chosen = _check_methods(methods)
    config = config if config is not None else melu_config(seed=seed, quick=quick)
    if config.tasks.kind != "user":
        raise ConfigError(
            f"the melu protocol treats users as tasks; got tasks.kind={config.tasks.kind!r}, "
            "set it to 'user'"
        )
    items, users, ratings = load_ratings(Path(store_path))
    tasks = {
        split: melu_tasks(ratings.loc[ratings["event"] == split], split=split, seed=seed)
        for split in (TRAIN_SPLIT, *TEST_SPLITS)
    }
    for split, found in tasks.items():
        if not found:
            raise DataError(
                f"split {split!r} has no user with {SplitRule.min_items} to "
                f"{SplitRule.max_items} ratings; is this the full DBook data?"
            )
    train_tasks, val_tasks = hold_out_users(tasks[TRAIN_SPLIT], seed)
    held_out = {t.user_idx for t in val_tasks}
    visible = ratings.loc[
        (ratings["event"] == TRAIN_SPLIT) & ~ratings["user_idx"].isin(list(held_out))
    ]
    features = RatingFeatures.fit(items, users, visible, config.features)
    predictions = _predict_all(chosen, features, train_tasks, val_tasks, tasks, config, progress)
    checksum = split_checksum(tasks)
    return _records(predictions, tasks, chosen, ks, seed, n_resamples, checksum)


def _check_methods(methods: Sequence[str] | None) -> list[str]:
    chosen = list(METHODS) if methods is None else list(dict.fromkeys(methods))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise ConfigError(
            f"unknown melu method(s) {unknown or '(none given)'}; choose from {', '.join(METHODS)}"
        )
    return chosen


def _predict_all(
    chosen: list[str],
    features: RatingFeatures,
    train_tasks: list[UserTask],
    val_tasks: list[UserTask],
    tasks: dict[str, list[UserTask]],
    config: TrainConfig,
    progress: bool,
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Predicted query ratings: method -> test split -> one array per user."""
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    learners = {"maml": RatingMAML(config.meta), "pretrain": PooledRatings(config.meta)}
    trained: dict[str, Params] = {}
    for method in chosen:
        if method in _TRAINED:
            kind, adapt = _TRAINED[method]
            if kind not in trained:
                trained[kind] = _fit(
                    learners[kind], features, train_tasks, val_tasks, config, kind, progress
                )
            params = trained[kind]
            out[method] = {
                # Both runs adapt through the same inner loop (PooledRatings inherits it).
                split: predict_ratings(learners[kind], params, features, tasks[split], adapt=adapt)
                for split in TEST_SPLITS
            }
        else:
            reference = tune_reference(method, features, val_tasks)
            out[method] = {
                split: [reference.predict(features, t) for t in tasks[split]]
                for split in TEST_SPLITS
            }
    return out


def _fit(
    learner: RatingMAML,
    features: RatingFeatures,
    train_tasks: list[UserTask],
    val_tasks: list[UserTask],
    config: TrainConfig,
    key: str,
    progress: bool,
) -> Params:
    """Meta-train (or pool-train) from the shared initialisation; select on validation MAE
    after adaptation with the inner loop."""
    init = init_params(
        features.dim,
        config.model,
        generator=torch.Generator().manual_seed(derived_seed(config.seed, "melu-init")),
    )
    scorer = RatingMAML(config.meta)

    def sample(n: int, generator: torch.Generator) -> TaskBatch:
        picked = torch.randperm(len(train_tasks), generator=generator)[:n].tolist()
        return stack_tasks([features.rows(train_tasks[i], own_in_stats=True) for i in picked])

    def validate(params: Params) -> float:
        predicted = predict_ratings(scorer, params, features, val_tasks, adapt=True)
        errors = [
            np.abs(p - t.query_ratings).mean() for p, t in zip(predicted, val_tasks, strict=True)
        ]
        return -float(np.mean(errors))  # higher is better

    best, _ = meta_train(
        init,
        learner,
        sample,
        config.meta,
        generator=torch.Generator().manual_seed(derived_seed(config.seed, f"melu-{key}")),
        validate=validate,
        validate_every=max(1, config.meta.meta_steps // 10),
        progress=progress,
    )
    return best


def _records(
    predictions: dict[str, dict[str, list[np.ndarray]]],
    tasks: dict[str, list[UserTask]],
    chosen: list[str],
    ks: Sequence[int],
    seed: int,
    n_resamples: int,
    checksum: str,
) -> list[dict[str, object]]:
    per_user: dict[tuple[str, str], dict[tuple[str, int | None], np.ndarray]] = {}
    for split in TEST_SPLITS:
        keys = [
            np.random.default_rng(derived_seed(seed, f"melu-ties:{split}:{t.user_idx}")).random(
                len(t.query_items)
            )
            for t in tasks[split]
        ]
        for method in chosen:
            rows = [
                user_metrics(p, t.query_ratings, ks, key)
                for p, t, key in zip(predictions[method][split], tasks[split], keys, strict=True)
            ]
            per_user[(method, split)] = {m: np.array([r[m] for r in rows]) for m in rows[0]}
    records: list[dict[str, object]] = []
    for method in chosen:
        for split in TEST_SPLITS:
            for (metric, k), values in per_user[(method, split)].items():
                mean, low, high = bootstrap_ci(
                    values, n_resamples=n_resamples, seed=derived_seed(seed, split)
                )
                record: dict[str, object] = {
                    "protocol": "melu",
                    "ranking": RANKING,
                    "method": method,
                    "family": METHODS[method],
                    "shots": None,
                    "category": split,
                    "metric": metric,
                    "k": k,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n_users": len(values),
                    "split_checksum": checksum,
                }
                if METHODS[method] == "metarec":
                    record.update(_versus_best(per_user, chosen, method, split, (metric, k)))
                records.append(record)
    return records


def _versus_best(
    per_user: dict[tuple[str, str], dict[tuple[str, int | None], np.ndarray]],
    chosen: list[str],
    method: str,
    split: str,
    key: tuple[str, int | None],
) -> dict[str, object]:
    """The best baseline on this split and metric, and the paired p-value against it."""
    baselines = [m for m in chosen if METHODS[m] == "baseline"]
    if not baselines:
        return {}
    sign = -1.0 if key[0] in ("mae", "rmse") else 1.0  # errors: lower is better
    best = max(baselines, key=lambda m: sign * float(per_user[(m, split)][key].mean()))
    theirs = per_user[(best, split)][key]
    p_value = paired_test(per_user[(method, split)][key], theirs)
    return {"vs_baseline": best, "baseline_mean": float(theirs.mean()), "p_value": p_value}


def melu_table(records: Sequence[dict[str, object]]) -> str:
    """A Markdown table of melu records: one row per (split, method), MAE / RMSE / nDCG@k
    with their 95% CIs."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    columns: list[str] = []
    for r in records:
        if r.get("protocol") != "melu":
            continue
        name = f"{str(r['metric']).upper()}" + (f"@{r['k']}" if r["k"] is not None else "")
        if name not in columns:
            columns.append(name)
        row = cells.setdefault((str(r["category"]), str(r["method"])), {"users": str(r["n_users"])})
        row[name] = f"{r['mean']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
    lines = [
        "| split | method | " + " | ".join(columns) + " | users |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for (split, method), row in cells.items():
        values = " | ".join(row.get(c, "") for c in columns)
        lines.append(f"| {split} | {method} | {values} | {row['users']} |")
    return "\n".join(lines)
