"""``metarec train``'s default: of its candidate methods, the one that ranks the store's own
validation categories best, beyond the noise where it would leave fold-in.

Data flow::

    Store ──load_catalog──▶ Catalog ──split_categories──▶ train / validation / hold-out
                                                  │
      "mlp":   training.train (config.meta.algorithm: the MLP meta-learner) ─┐
      "ridge": MetarecRidge.fit (ALS fold-in, meta-learned prior and bias)  ─┼─▶ the best
                                                                             │   (+ the table,
      both scored by the benchmark's own validation: NDCG@10 over the        │    in the model
      validation categories launched at ``tasks.shots``, users pooled  ──────┘    manifest)

The candidates are scored exactly as ``metarec evaluate`` tunes every method
(:func:`metarec.evaluation.cases.validation_launches`), on validation categories only: the
hold-out stays sealed, and nothing is tuned on a test category. The budget is bounded: one fit
per candidate, at its default settings. metarec-ridge contains ALS fold-in, so it is kept unless
the MLP learner scores higher by more than the guard (2 paired standard errors over the same
validation users; :func:`metarec.evaluation.methods.choose_default`, the rule the benchmark's
``metarec`` method measures). A store without validation categories cannot compare them; it
gets metarec-ridge at its fold-in start (ALS fold-in: it trains nothing without a validation
score, and fold-in led the MLP learners on every dataset of docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from threadpoolctl import threadpool_limits

from metarec.baselines.base import fit_context
from metarec.config import TrainConfig
from metarec.data.store import Store
from metarec.evaluation.cases import (
    LazyValidation,
    Validation,
    pooled_score,
    validation_launches,
)
from metarec.evaluation.folds import Fold
from metarec.evaluation.methods import DEFAULT_MEASURE, ModelAsMethod, choose_default
from metarec.evaluation.ridge import MetarecRidge
from metarec.features.encoder import load_catalog
from metarec.meta.checkpoint import Checkpointing
from metarec.meta.distributed import World
from metarec.meta.model import AnyModel
from metarec.tasks import split_categories
from metarec.training import train

Choice = Literal["auto", "mlp", "ridge"]
"""``auto``: fit both and keep the better on validation; ``mlp`` or ``ridge``: only that one."""

CHOICES: tuple[Choice, ...] = ("auto", "mlp", "ridge")
MEASURE = DEFAULT_MEASURE


@dataclass(frozen=True)
class Candidate:
    """One fitted candidate and its validation score."""

    name: str  # "metarec-ridge", or "metarec-<algorithm>" for the MLP learner
    model: AnyModel
    validation: float  # NaN: no validation categories
    seconds: float
    per_user: np.ndarray | None = None  # the validation per user (what the guard pairs)


@dataclass(frozen=True)
class Selection:
    """The chosen model, every candidate, and why."""

    model: AnyModel
    chosen: str
    candidates: list[Candidate]
    reason: str

    def table(self) -> dict[str, object]:
        """What the model manifest records (``metadata["selection"]``)."""
        return {
            "chosen": self.chosen,
            "reason": self.reason,
            "measure": MEASURE,
            "candidates": [
                {
                    "method": c.name,
                    "validation_ndcg@10": None if math.isnan(c.validation) else c.validation,
                    "seconds": round(c.seconds, 1),
                }
                for c in self.candidates
            ],
        }


def train_selected(
    store: Store,
    config: TrainConfig,
    *,
    choice: Choice | None = None,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Selection:
    """Fit the candidates ``choice`` names on the store and keep the best on validation.

    Args:
        store: an open store (or export: see :func:`metarec.training.train`).
        config: the training config; ``hold_out`` stays sealed from every candidate.
        choice: ``auto`` (both), ``mlp`` or ``ridge``; None: ``config.method``.
        progress: progress bars while meta-training.
        checkpoint, world: for the MLP learner (see :func:`metarec.training.train`); with
            several ranks only rank 0 fits and scores metarec-ridge.
        log: receives one line per step (the CLI prints them).

    Returns:
        The selection; its model carries :meth:`Selection.table` in ``selection``.

    Raises:
        DataError: not enough data to build any meta-training task.
    """
    choice = config.method if choice is None else choice
    catalog = load_catalog(store, config)
    splits = split_categories(catalog, config)
    fold = Fold(0, splits["train"], splits["validation"], [])
    validation: Validation | None = None
    if splits["validation"]:
        validation = validation_launches(catalog, config, fold)
        if not validation.launches:
            validation = None
    candidates: list[Candidate] = []
    fitted = choice
    if choice == "auto" and validation is None:
        # nothing to compare on, and the rule then keeps metarec-ridge at its start
        # (choose_default): the MLP learner is not fitted for nothing (44 s on Douban's two
        # categories, every meta-step)
        log("no validation categories: fitting metarec-ridge only (nothing to compare on)")
        fitted = "ridge"
    if fitted in ("auto", "mlp"):
        name = f"metarec-{config.meta.algorithm}"
        log(f"fitting {name} ({config.meta.meta_steps} meta-steps)")
        started = time.perf_counter()
        model = train(
            store, config, progress=progress, checkpoint=checkpoint, world=world, catalog=catalog
        )
        if world is not None and not world.is_main:  # rank 0 selects and writes
            return Selection(model, name, [], "not the main rank")
        per_user = None if validation is None else validation.per_user(ModelAsMethod(model))
        score = math.nan if per_user is None else pooled_score(per_user)
        candidates.append(Candidate(name, model, score, time.perf_counter() - started, per_user))
        log(f"{name}: validation NDCG@10 {score:.4f}")
    if fitted in ("auto", "ridge"):
        log(f"fitting {MetarecRidge.name} (ALS, then the ridge meta-parameters)")
        started = time.perf_counter()
        method = MetarecRidge()
        context = fit_context(
            catalog,
            config,
            splits["train"],
            validate=None if validation is None else validation.score,
            validate_users=None if validation is None else validation.per_user,
            validate_zero_users=None
            if validation is None
            else LazyValidation(
                lambda: validation_launches(catalog, config, fold, shots=0)
            ).per_user,
        )
        with threadpool_limits(1, "blas"):  # implicit's ALS runs its own threads
            method.fit(context)
        ridge = method.model()
        ridge.splits = splits
        per_user = None if validation is None else validation.per_user(method)
        score = math.nan if per_user is None else pooled_score(per_user)
        seconds = time.perf_counter() - started
        candidates.append(Candidate(method.name, ridge, score, seconds, per_user))
        log(f"{method.name}: validation NDCG@10 {score:.4f}")
        if method.chosen:  # the zero-shot term, chosen on the validation categories at 0 shots
            chosen = method.chosen
            scale = " and a learned feature scale" if chosen.get("zero_shot_scale_learned") else ""
            log(
                f"{method.name}: zero-shot content weight {chosen['zero_shot_content']:g}{scale}"
                f", zero-shot validation NDCG@10 {chosen['zero_shot_validation_without']:.4f}"
                f" -> {chosen['zero_shot_validation_ndcg@10']:.4f}"
            )
    best, reason = _choose(candidates, choice)
    selection = Selection(best.model, best.name, candidates, reason)
    best.model.selection = selection.table()
    return selection


def _choose(candidates: list[Candidate], choice: Choice = "auto") -> tuple[Candidate, str]:
    """The rule ``metarec evaluate`` measures as the method ``metarec`` (choose_default)."""
    if choice != "auto":
        return candidates[0], "the only candidate asked for"
    arrays = {c.name: c.per_user for c in candidates if c.per_user is not None}
    name, reason = choose_default(
        {c.name: c.validation for c in candidates},
        arrays if len(arrays) == len(candidates) else None,
    )
    return next(c for c in candidates if c.name == name), reason
