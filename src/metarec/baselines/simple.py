"""Reference points every method must clear: random, and popularity at launch."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from metarec.baselines.base import Family, FitContext, Launch
from metarec.pipeline import derived_seed
from metarec.tasks import split_launch, support_state


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

    Ties (most items at few shots) are broken by the lower item index, as the metrics do; at zero
    shots this is therefore an arbitrary but fixed order.
    """

    name: ClassVar[str] = "popularity"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [{}]

    def fit(self, context: FitContext) -> None:
        """Nothing to learn: popularity comes from the launch itself."""

    def scores(self, launch: Launch) -> torch.Tensor:
        category = launch.category
        pop = support_state(category, split_launch(category)).pop
        return pop.expand(len(launch.users), -1).clone()
