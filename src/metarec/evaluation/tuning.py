"""A method's tuning budget: fit every setting of its grid, keep the best on validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metarec.baselines.base import FitContext, Method
from metarec.config import EvalConfig
from metarec.evaluation.cases import Validation
from metarec.evaluation.folds import Fold
from metarec.evaluation.methods import remember_fit
from metarec.seeds import derived_seed


def tune(
    cls: type[Method],
    context: FitContext,
    validation: Validation,
    config: EvalConfig,
    fold: Fold,
    rows: list[dict[str, Any]],
) -> Method:
    """Fit every setting of the method's grid; keep the best on validation NDCG@10.

    Each setting tried is appended to ``rows`` with its validation score, and with what the fit
    itself chose on validation where the method reports it (a ``chosen`` dict attribute, e.g.
    metarec-ridge's zero-shot content weight). Every fit starts from the same seed, derived
    from the run's seed, the method and the fold alone.
    """
    # quick runs, and folds without a validation category, use every method's default setting
    grid = cls.grid[:1] if config.quick or not validation.launches else cls.grid
    grid = grid[: config.tuning_budget]  # the same budget for every method
    best: tuple[float, Method] | None = None
    for setting in grid:
        torch.manual_seed(derived_seed(config.seed, f"{cls.name}-{fold.index}"))
        method = cls(**setting)
        method.fit(context)
        remember_fit(cls, setting, method, context)
        score = validation.score(method) if validation.launches else float("nan")
        row = {
            "method": cls.name,
            "fold": fold.index,
            "setting": setting,
            "validation_ndcg@10": None if np.isnan(score) else round(score, 6),
        }
        chosen = getattr(method, "chosen", None)
        if chosen:
            row["chosen"] = chosen
        rows.append(row)
        if best is None or (not np.isnan(score) and (np.isnan(best[0]) or score > best[0])):
            best = (score, method)
    assert best is not None  # every grid has at least one setting
    return best[1]
