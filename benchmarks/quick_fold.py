"""A fold of a store as ``metarec evaluate`` builds it, for the probes that score candidates
on its validation categories (``ridge_starts.py``, ``probe_refold.py``, ``probe_stacking.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from metarec.baselines.base import FitContext
from metarec.config import EvalConfig, TrainConfig, load_config
from metarec.data.catalog import Catalog
from metarec.data.store import Store
from metarec.evaluation.cases import Validation, validation_launches
from metarec.evaluation.folds import Fold
from metarec.evaluation.harness import plan_run
from metarec.evaluation.units import fold_context
from metarec.features.encoder import load_catalog


@dataclass(frozen=True)
class QuickFold:
    """A store's catalogue, its settings and one fold's fit context."""

    catalog: Catalog
    config: TrainConfig
    evaluation: EvalConfig
    fold: Fold
    context: FitContext

    def validation(self, shots: int) -> Validation:
        """The fold's validation launches at ``shots``, sampled as the harness samples them."""
        return validation_launches(
            self.catalog,
            self.config,
            self.fold,
            max_users=self.evaluation.validation_users,
            features=self.context.features,
            shots=shots,
        )


def quick_fold(store: Path, config: Path | None, *, fold: int = 0, quick: bool = True) -> QuickFold:
    """Fold ``fold`` (0-based) of ``evaluate [--quick]`` on ``store``, with one torch thread,
    as its units run."""
    torch.set_num_threads(1)
    settings = load_config(config)
    with Store.open(store, read_only=True) as opened:
        catalog = load_catalog(opened, settings)
    evaluation = EvalConfig(quick=quick)
    chosen = plan_run(catalog, evaluation, lambda message: None).folds[fold]
    context, _ = fold_context(catalog, settings, evaluation, chosen)
    return QuickFold(catalog, settings, evaluation, chosen, context)
