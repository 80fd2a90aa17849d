"""The quick fold of a store as ``metarec evaluate --quick`` builds it, for the probes that
score candidates on its validation categories (``ridge_starts.py``, ``probe_refold.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from metarec.baselines.base import FitContext
from metarec.config import EvalConfig, TrainConfig, load_config
from metarec.data.catalog import Catalog
from metarec.data.store import Store
from metarec.evaluation.folds import Fold
from metarec.evaluation.harness import plan_run
from metarec.evaluation.units import fold_context
from metarec.features.encoder import load_catalog


@dataclass(frozen=True)
class QuickFold:
    """A store's catalogue, its settings and its first quick fold's fit context."""

    catalog: Catalog
    config: TrainConfig
    evaluation: EvalConfig
    fold: Fold
    context: FitContext


def quick_fold(store: Path, config: Path | None) -> QuickFold:
    """The first fold of ``evaluate --quick`` on ``store`` (one torch thread, as its units)."""
    torch.set_num_threads(1)
    settings = load_config(config)
    with Store.open(store, read_only=True) as opened:
        catalog = load_catalog(opened, settings)
    evaluation = EvalConfig(quick=True)
    fold = plan_run(catalog, evaluation, lambda message: None).folds[0]
    context, _ = fold_context(catalog, settings, evaluation, fold)
    return QuickFold(catalog, settings, evaluation, fold, context)
