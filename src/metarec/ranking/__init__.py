"""Ranking a category's items: the one ranker, retrieval, popularity, and ranking metrics."""

from metarec.ranking.inputs import UserInputs, item_side, user_side
from metarec.ranking.metrics import (
    TOP_K_METRICS,
    MetricKey,
    coverage,
    rank_top_k,
    ranked_metrics,
    ranking_metrics,
)
from metarec.ranking.popularity import popularity_scores
from metarec.ranking.ranker import CategoryRanker, category_scores
from metarec.ranking.retrieval import RetrievalSettings

__all__ = [
    "TOP_K_METRICS",
    "CategoryRanker",
    "MetricKey",
    "RetrievalSettings",
    "UserInputs",
    "category_scores",
    "coverage",
    "item_side",
    "popularity_scores",
    "rank_top_k",
    "ranked_metrics",
    "ranking_metrics",
    "user_side",
]
