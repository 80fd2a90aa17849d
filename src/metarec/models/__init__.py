"""Scorers written as functions of a params dict."""

from metarec.models.conditioning import (
    FILM_PREFIX,
    condition,
    initial_params,
    is_conditioned,
    with_conditioning,
)
from metarec.models.scorer import Params, Scorer, init_params, layer_sizes, score

__all__ = [
    "FILM_PREFIX",
    "Params",
    "Scorer",
    "condition",
    "init_params",
    "initial_params",
    "is_conditioned",
    "layer_sizes",
    "score",
    "with_conditioning",
]
