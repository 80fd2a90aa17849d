"""Reference points every method must clear: random, and popularity at launch."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from metarec.baselines.base import Family, FitContext, Launch, launch_popularity
from metarec.ranking import popularity_scores
from metarec.seeds import derived_seed


class Random:
    """Uniformly random scores (seeded per category): the floor."""

    name: ClassVar[str] = "random"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self) -> None:
        self.seed = 0

    def fit(self, context: FitContext) -> None:
        self.seed = context.seed

    def scores(self, launch: Launch) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, launch.name))
        return torch.rand((len(launch.users), launch.category.n_items), generator=generator)


class Popularity:
    """How often each item appears in the launch's support: the same list for everyone.

    Ties (most items at few shots, every item at zero shots) are broken at random (seeded per
    category): breaking them by item index would smuggle in whatever the ids encode (MovieLens
    numbers its best-known films first, which would make zero-shot "popularity" look informed).
    """

    name: ClassVar[str] = "popularity"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def __init__(self) -> None:
        self.seed = 0

    def fit(self, context: FitContext) -> None:
        """Nothing to learn: popularity comes from the launch itself."""
        self.seed = context.seed

    def scores(self, launch: Launch) -> torch.Tensor:
        ranked = popularity_scores(launch_popularity(launch), seed=self.seed, key=launch.name)
        return ranked.expand(len(launch.users), -1).clone()
