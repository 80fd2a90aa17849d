"""Evaluation: the benchmark harness, its statistics and reports (PROTOCOL.md §2); the ranking
metrics themselves live in :mod:`metarec.ranking.metrics`."""

from metarec.evaluation.stats import bootstrap_ci, paired_test
from metarec.ranking.metrics import (
    TOP_K_METRICS,
    MetricKey,
    coverage,
    rank_top_k,
    ranking_metrics,
)

__all__ = [
    "TOP_K_METRICS",
    "MetricKey",
    "bootstrap_ci",
    "coverage",
    "paired_test",
    "rank_top_k",
    "ranking_metrics",
]
