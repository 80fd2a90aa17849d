"""Serving: the library's :class:`Recommender`, and the HTTP service built on it."""

from metarec.serving.recommender import Adaptation, Recommendation, RecommendedItem, Recommender

__all__ = ["Adaptation", "Recommendation", "RecommendedItem", "Recommender"]
