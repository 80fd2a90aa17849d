"""Evaluation: ranking metrics over full candidate sets, and their statistics (PROTOCOL.md §2)."""

from metarec.evaluation.metrics import (
    TOP_K_METRICS,
    MetricKey,
    coverage,
    rank_top_k,
    ranking_metrics,
)
from metarec.evaluation.stats import bootstrap_ci, paired_test

__all__ = [
    "TOP_K_METRICS",
    "MetricKey",
    "bootstrap_ci",
    "coverage",
    "paired_test",
    "rank_top_k",
    "ranking_metrics",
]
