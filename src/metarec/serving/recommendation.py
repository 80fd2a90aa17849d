"""What a recommendation is: its items, the versions that produced it, and any fallback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from metarec.serving.adaptations import Damaged


@dataclass(frozen=True)
class RecommendedItem:
    item_id: str
    score: float
    title: str | None


@dataclass(frozen=True)
class Recommendation:
    """Top-K items for one user in one category, and how they were produced."""

    user_id: str
    category: str
    items: list[RecommendedItem]
    model_version: str
    adaptation_version: int | None
    fallback: str | None  # None, "popularity" or "zero-shot"
    fallback_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The recommendation as a JSON-ready dict (the HTTP API's response body)."""
        return {
            "user_id": self.user_id,
            "category": self.category,
            "model_version": self.model_version,
            "adaptation_version": self.adaptation_version,
            "fallback": self.fallback,
            "fallback_reason": self.fallback_reason,
            "items": [vars(item) for item in self.items],
        }


def damaged_reason(category: str, damaged: Damaged) -> str:
    return (
        f"the adapted parameters of {category!r} are damaged ({damaged.reason}): ranked by the "
        "meta-initialisation until the category is adapted again"
    )


def zero_shot_reason(category: str) -> str:
    return (
        f"category {category!r} is not adapted yet: ranked by the meta-initialisation; adapt it "
        f"with `metarec adapt --category {category!r}` or "
        f"POST /categories/{quote(category, safe='')}/adapt"
    )


def text_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)
