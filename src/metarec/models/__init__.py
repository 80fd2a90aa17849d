"""Scorers written as functions of a params dict."""

from metarec.models.scorer import Params, Scorer, init_params, layer_sizes, score

__all__ = ["Params", "Scorer", "init_params", "layer_sizes", "score"]
