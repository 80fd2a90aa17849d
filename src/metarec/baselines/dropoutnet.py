"""A cold-item generator in the DropoutNet / CVAR spirit: item vectors from content.

Volkovs, Yu and Poutanen, "DropoutNet: Addressing Cold Start in Recommender Systems",
NeurIPS 2017 (https://papers.nips.cc/paper/7081); Zhao et al., "Improving Item Cold-start
Recommendation via Model-agnostic Conditional Variational Autoencoder" (CVAR), SIGIR 2022
(https://arxiv.org/abs/2205.13795).

The warm model is metarec's collaborative space: a truncated SVD of the training categories'
positives gives each training item a vector ``v_i`` (``FitContext.features.factors``), and a
user's profile ``u`` averages the vectors of what they liked in the other categories. A new
category's items have no ``v_i``. A generator ``g`` learns, on the training categories, to
produce it from what a launch does know about an item:

- its content ``x_i`` (the category's ``item_x``: category path, attributes);
- its *support evidence*: the mean profile ``c_i`` of the support users who liked it, and its
  support count (log and relative to the category's largest), all zero without support.

Training mimics launches: each step takes a training category at a shot count of
``config.tasks.train_shots``, computes the support evidence of that k-shot split, and, as
DropoutNet does, drops the evidence of each item (sets it to zero) with probability
``dropout`` so that the generator also works from content alone. The loss is DropoutNet's: the
squared error between the scores the generator implies and the warm model's,
``mean_u,i (u . g(x_i, c_i) - u . v_i)^2`` over a sample of the category's users, so directions
that users' profiles do not use cost nothing. At launch, ``score(u, i) = u . g(x_i, c_i)``.

Choices: the user side is the fixed profile (no user tower; users without history elsewhere
get zero scores, i.e. the index order); items without positives in training keep their zero
factors as targets; the number of steps is this method's own (``steps``), not the meta budget,
since it fine-tunes nothing at launch.
"""

from __future__ import annotations

import itertools
import math
from functools import cache
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.baselines.base import Family, FitContext, Launch
from metarec.errors import DataError, NotAdaptedError
from metarec.meta import Params
from metarec.pipeline import derived_seed
from metarec.tasks import CategoryData, SupportState, split_k_shot, split_launch, support_state

QUICK_STEPS = 60
"""Adam steps under ``FitContext.quick`` (smoke runs)."""

_USERS_PER_STEP = 256  # users whose profiles weigh the score-matching loss in one step


def item_inputs(category: CategoryData, state: SupportState) -> tuple[Tensor, Tensor]:
    """Content and support evidence of every item of a category.

    Returns:
        ``(content, evidence)``: ``(n_items, d)`` item features, and ``(n_items, r + 2)`` the
        mean collaborative profile of each item's supporters followed by ``log1p(count)`` and
        ``count / max count`` (zeros for items without support).
    """
    pop = state.pop
    mean_cf = state.item_cf_sum / pop.clamp_min(1.0)[:, None]
    scalars = torch.stack([torch.log1p(pop), pop / state.pop_max.clamp_min(1.0)], dim=-1)
    return category.item_x, torch.cat([mean_cf, scalars], dim=-1)


def user_vectors(category: CategoryData, users: np.ndarray | Tensor) -> Tensor:
    """``(b, r)`` collaborative profiles (mean factors of what they liked elsewhere)."""
    return category.profile[torch.as_tensor(users, dtype=torch.long), category.item_x.shape[1] :]


def init_generator(sizes: list[int], generator: torch.Generator) -> Params:
    """An MLP ``sizes[0] -> ... -> sizes[-1]``, ``nn.Linear``'s default init from ``generator``."""
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        bound = 1.0 / math.sqrt(fan_in)
        for name, shape in (("weight", (fan_out, fan_in)), ("bias", (fan_out,))):
            params[f"layers.{i}.{name}"] = (2.0 * torch.rand(shape, generator=generator) - 1.0) * bound
    return params


def generate(params: Params, content: Tensor, evidence: Tensor) -> Tensor:
    """Generated item vectors: ``(n, d)`` content and ``(n, r + 2)`` evidence to ``(n, r)``."""
    h = torch.cat([content, evidence], dim=-1)
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = F.linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
        if i < n_layers - 1:
            h = F.relu(h)
    return h


class DropoutNet:
    """Cold-item vectors generated from content and support (see the module docstring).

    Args:
        dropout: probability of hiding an item's support evidence in training.
        hidden: width of the generator's hidden layer.
        lr: Adam learning rate.
        steps: Adam steps (each on one training category at one shot count).
    """

    name: ClassVar[str] = "dropoutnet"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [
        {"dropout": 0.5},
        {"dropout": 0.25},
        {"dropout": 0.75},
        {"dropout": 0.5, "hidden": 256},
    ]

    def __init__(
        self, *, dropout: float = 0.5, hidden: int = 128, lr: float = 3e-3, steps: int = 600
    ) -> None:
        self.dropout = dropout
        self.hidden = hidden
        self.lr = lr
        self.steps = steps
        self._params: Params | None = None

    def fit(self, context: FitContext) -> None:
        """Train the generator on the training categories' items.

        Raises:
            DataError: no training category has an item with a collaborative vector.
        """
        config = context.config
        generator = torch.Generator().manual_seed(derived_seed(context.seed, self.name))
        options = [
            (category, shots)
            for category in context.train_data.values()
            for shots in config.tasks.train_shots
            if category.n_users > 0 and category.n_items > 0
        ]
        targets = {
            c.name: context.features.factors_for(
                context.catalog.items.iloc[c.item_idx]
            )
            for c, _ in options
        }
        if not options or not any(bool(t.abs().sum() > 0) for t in targets.values()):
            raise DataError(
                "dropoutnet found no training item with collaborative factors; the training "
                "categories need positives (and features.cf_rank > 0)"
            )
        r = context.features.factors.shape[1]
        d = options[0][0].item_x.shape[1]
        params = {
            k: v.requires_grad_(True)
            for k, v in init_generator([d + r + 2, self.hidden, r], generator).items()
        }
        optimizer = torch.optim.Adam(params.values(), lr=self.lr)

        @cache
        def inputs(option: int) -> tuple[Tensor, Tensor]:
            category, shots = options[option]
            return item_inputs(category, support_state(category, split_k_shot(category, shots)))

        steps = min(self.steps, QUICK_STEPS) if context.quick else self.steps
        for _ in range(steps):
            option = int(torch.randint(len(options), (1,), generator=generator))
            category = options[option][0]
            content, evidence = inputs(option)
            keep = torch.rand((category.n_items, 1), generator=generator) >= self.dropout
            users = torch.randperm(category.n_users, generator=generator)[:_USERS_PER_STEP]
            u = user_vectors(category, users)
            made = generate(params, content, evidence * keep)
            # DropoutNet's objective: match the warm model's scores u . v_i, not v_i itself
            loss = ((made - targets[category.name]) @ u.T).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        self._params = {k: v.detach() for k, v in params.items()}

    def scores(self, launch: Launch) -> Tensor:
        """(len(launch.users), n_items) ``u . g(x_i, c_i)``."""
        if self._params is None:
            raise NotAdaptedError(f"{self.name} was asked to score before fit(); call fit first")
        category = launch.category
        content, evidence = item_inputs(category, support_state(category, split_launch(category)))
        with torch.no_grad():
            items = generate(self._params, content, evidence)
            return user_vectors(category, launch.positions) @ items.T
