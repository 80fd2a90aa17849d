"""One unit of a benchmark run: one method on one fold, from fitting to per-user metrics.

Units are independent (each seeds its own randomness from the run's seed, the fold and the
method), so they can run in any order, in parallel processes, and be resumed: a finished unit is
written atomically into the run folder under a key that hashes everything it depends on (the
configs, the fold's categories, the method and the data), and a later run with the same key
reads it back instead of recomputing it.

What a fold needs before any method is fitted (its sealed training view, shared features,
validation launches and test cases) is built once per process and fold, and shared by every
method and setting and shot count run there.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec.atomic import write_atomic
from metarec.baselines.base import FitContext, fit_context
from metarec.config import EvalConfig, TrainConfig
from metarec.data.catalog import Catalog
from metarec.evaluation.cases import (
    Case,
    LazyValidation,
    Validation,
    make_case,
    score_case,
    validation_launches,
)
from metarec.evaluation.cases import (
    split_keys as case_split_keys,
)
from metarec.evaluation.folds import Fold
from metarec.evaluation.methods import METHODS
from metarec.evaluation.tuning import tune

UNIT_FORMAT = 2  # bump when a unit file's content changes meaning

Shots = int | None
MetricKey = tuple[str, int | None]


@dataclass(frozen=True)
class Plan:
    """What a run decided before fitting anything: shot counts, eligibility, folds."""

    shots_list: list[Shots]
    eligible_at: dict[Shots, list[str]]
    folds: list[Fold]


@dataclass
class UnitResult:
    """Per-user metrics of one method on one fold's test launches, and how it was tuned."""

    fold: int
    method: str
    per_user: dict[tuple[Shots, str], dict[MetricKey, np.ndarray]] = field(default_factory=dict)
    tops: dict[tuple[Shots, str, str, int], float] = field(default_factory=dict)
    n_users: dict[tuple[Shots, str], int] = field(default_factory=dict)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    split_keys: list[dict[str, Any]] = field(default_factory=list)  # the fold's first unit only

    def save(self, path: Path, key: str) -> None:
        """Two files, each written atomically: the arrays (``.npz``, no pickle), then the JSON
        that names them; a unit is finished when its JSON exists with the right key."""
        arrays: dict[str, Any] = {}  # np.savez's keyword arrays (Any: not its allow_pickle)
        entries = []
        for (shots, category), values in self.per_user.items():
            for (metric, k), array in values.items():
                name = f"a{len(arrays)}"
                arrays[name] = array
                entries.append([shots, category, metric, k, name])
        keys: list[list[Any]] = []
        for entry in self.split_keys:
            for part in ("support", "query"):
                arrays[f"k{len(keys)}{part}"] = entry[part]
            keys.append([entry["fold"], entry["category"], entry["shots"]])
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_atomic(path.with_suffix(".npz"), buffer.getvalue())
        document = {
            "format": UNIT_FORMAT,
            "key": key,
            "fold": self.fold,
            "method": self.method,
            "arrays": entries,
            "tops": [[s, c, m, k, v] for (s, c, m, k), v in self.tops.items()],
            "n_users": [[s, c, n] for (s, c), n in self.n_users.items()],
            "tuning": self.tuning,
            "seconds": self.seconds,
            "split_keys": keys,
        }
        write_atomic(path.with_suffix(".json"), json.dumps(document, indent=1))

    @classmethod
    def load(cls, path: Path, key: str) -> UnitResult | None:
        """The unit saved at ``path`` under ``key``; None when missing, stale or unreadable."""
        try:
            document = json.loads(path.with_suffix(".json").read_text())
            if document.get("format") != UNIT_FORMAT or document.get("key") != key:
                return None
            with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:
                per_user: dict[tuple[Shots, str], dict[MetricKey, np.ndarray]] = {}
                for shots, category, metric, k, name in document["arrays"]:
                    per_user.setdefault((shots, category), {})[(metric, k)] = arrays[name]
                split_keys = [
                    {
                        "fold": fold,
                        "category": category,
                        "shots": shots,
                        "support": arrays[f"k{i}support"],
                        "query": arrays[f"k{i}query"],
                    }
                    for i, (fold, category, shots) in enumerate(document["split_keys"])
                ]
        except (OSError, ValueError, KeyError):
            return None  # a unit cut off mid-write is simply run again
        return cls(
            fold=document["fold"],
            method=document["method"],
            per_user=per_user,
            tops={(s, c, m, k): v for s, c, m, k, v in document["tops"]},
            n_users={(s, c): n for s, c, n in document["n_users"]},
            tuning=document["tuning"],
            seconds=document["seconds"],
            split_keys=split_keys,
        )


def unit_key(
    catalog: Catalog, train_config: TrainConfig, config: EvalConfig, fold: Fold, method: str
) -> str:
    """sha256 over everything a unit's result depends on: configs, fold, method, data, code."""
    positives = catalog.positives
    digest = hashlib.sha256()
    for part in (
        train_config.model_dump_json(),
        config.model_dump_json(exclude={"methods", "folds"}),
        json.dumps([fold.index, fold.train, fold.validation, fold.test]),
        method,
    ):
        digest.update(part.encode())
    digest.update(_code_digest().encode())
    for column in ("user_idx", "item_idx", "weight"):
        digest.update(np.ascontiguousarray(positives[column].to_numpy()).tobytes())
    digest.update(np.asarray(catalog.item_category).astype(str).tobytes())
    return digest.hexdigest()


@functools.cache
def _code_digest() -> str:
    """sha256 of metarec's own source files: a unit computed by other code is not reused."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class FoldWork:
    """A fold's shared inputs: the sealed training view and features, validation, test cases."""

    fold: Fold
    context: FitContext
    validation: Validation
    cases: list[Case]


_FOLDS: dict[str, tuple[Catalog, FoldWork]] = {}  # per process: the fold being worked on


def fold_work(
    catalog: Catalog, train_config: TrainConfig, config: EvalConfig, plan: Plan, fold: Fold
) -> FoldWork:
    """The fold's shared inputs, built once per process (the last fold only is kept).

    Keyed by the settings and the fold, and held with the catalogue object it was built from,
    so another run in the same process never gets this one's cases.
    """
    key = json.dumps(
        [
            train_config.model_dump_json(),
            config.model_dump_json(exclude={"methods"}),
            [fold.index, fold.train, fold.validation, fold.test],
            [plan.shots_list, sorted((str(s), c) for s, c in plan.eligible_at.items())],
        ]
    )
    cached = _FOLDS.get(key)
    if cached is None or cached[0] is not catalog:
        _FOLDS.clear()
        context, validation = fold_context(catalog, train_config, config, fold)
        visible = sorted(fold.train + fold.validation)
        cases = []
        for name in fold.test:
            shots_here = [shots for shots in plan.shots_list if name in plan.eligible_at[shots]]
            if not shots_here:
                continue
            # the unsealed category is the same at every shot count: built once
            full = context.features.category_data(catalog, [name], visible=visible)[name]
            cases += [
                make_case(catalog, config, name, shots, visible, context.features, full=full)
                for shots in shots_here
            ]
        _FOLDS[key] = (catalog, FoldWork(fold, context, validation, cases))
    return _FOLDS[key][1]


def fold_context(
    catalog: Catalog, train_config: TrainConfig, config: EvalConfig, fold: Fold
) -> tuple[FitContext, Validation]:
    """The context every method of the fold is fitted in (the sealed training view, the
    features, the validation at ``tasks.shots`` and, built on first use, at zero shots), and
    the validation launches; :func:`fold_work` adds the test cases."""
    context = fit_context(catalog, train_config, fold.train, quick=config.quick)
    # the validation launches use the same features (fitted on the training categories)
    validation = validation_launches(
        catalog,
        train_config,
        fold,
        max_users=config.validation_users,
        features=context.features,
    )
    if not validation.launches:
        return context, validation
    features = context.features
    zero = LazyValidation(
        lambda: validation_launches(
            catalog,
            train_config,
            fold,
            max_users=config.validation_users,
            features=features,
            shots=0,
        )
    )
    context = replace(
        context,
        validate=validation.score,
        validate_users=validation.per_user,
        validate_zero_users=zero.per_user,
    )
    return context, validation


def run_unit(
    catalog: Catalog,
    train_config: TrainConfig,
    config: EvalConfig,
    plan: Plan,
    fold: Fold,
    method: str,
    *,
    split_keys: bool = False,
) -> UnitResult:
    """Tune, fit and score one method on one fold, on one torch thread (so that results do not
    depend on how many units run side by side)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        started = time.perf_counter()
        work = fold_work(catalog, train_config, config, plan, fold)
        result = UnitResult(fold=fold.index, method=method)
        if split_keys:
            result.split_keys = [case_split_keys(fold.index, case) for case in work.cases]
        chosen = tune(METHODS[method], work.context, work.validation, config, fold, result.tuning)
        for case in work.cases:
            key = (case.launch.shots, case.launch.name)
            values, tops = score_case(chosen, case, config)
            result.per_user[key] = values
            result.n_users[key] = len(case.users)
            for (metric, k), share in tops.items():
                result.tops[(*key, metric, k)] = share
        result.seconds = time.perf_counter() - started
        return result
    finally:
        torch.set_num_threads(threads)
