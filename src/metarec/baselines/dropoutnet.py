"""A cold-item generator in the DropoutNet / CVAR spirit: item vectors from content.

Volkovs, Yu and Poutanen, "DropoutNet: Addressing Cold Start in Recommender Systems",
NeurIPS 2017 (https://papers.nips.cc/paper/7081); Zhao et al., "Improving Item Cold-start
Recommendation via Model-agnostic Conditional Variational Autoencoder" (CVAR), SIGIR 2022
(https://arxiv.org/abs/2205.13795).

The warm model is metarec's collaborative space: a truncated SVD of the training categories'
positives gives each training item a vector ``v_i`` (``FitContext.features.encoder.factors``), and a
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

Choices: the user side is the fixed profile (no user tower; a user without history elsewhere
scores every item 0, so their list is the tie-break, launch popularity, as in
:mod:`metarec.baselines.mf`); items without positives in training keep their zero
factors as targets; the number of steps is this method's own (``steps``), not the meta budget,
since it fine-tunes nothing at launch.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.baselines.base import Family, FitContext, Launch
from metarec.baselines.mf import with_tie_break
from metarec.baselines.pretrain import validate_every
from metarec.errors import DataError, NotAdaptedError
from metarec.meta.model import MetaModel
from metarec.models.scorer import Params
from metarec.seeds import derived_seed
from metarec.tasks import CategoryData, SupportState, split_k_shot, support_state

QUICK_STEPS = 60
"""Adam steps under ``FitContext.quick`` (smoke runs; each is one small regression)."""

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
            params[f"layers.{i}.{name}"] = (
                2.0 * torch.rand(shape, generator=generator) - 1.0
            ) * bound
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


@dataclass(frozen=True)
class Example:
    """One training category seen as at a k-shot launch.

    Attributes:
        content: (n_items, d) item features.
        evidence: (n_items, r + 2) support evidence of the k-shot split (see :func:`item_inputs`).
        target: (n_items, r) the items' collaborative factors (the warm model).
        users: (n_users, r) the category's users' profiles from the other categories.
    """

    content: Tensor
    evidence: Tensor
    target: Tensor
    users: Tensor


def training_examples(context: FitContext) -> list[Example]:
    """Every training category at every shot count of ``config.tasks.train_shots``.

    Raises:
        DataError: no training item has collaborative factors (nothing to learn to generate).
    """
    examples = []
    for category in context.train_data.values():
        if category.n_users == 0:
            continue  # no user to weigh the loss (a category without positives)
        items = context.catalog.items.iloc[category.item_idx]
        target = context.features.encoder.factors_for(items)
        users = user_vectors(category, np.arange(category.n_users))
        for shots in context.config.tasks.train_shots:
            state = support_state(category, split_k_shot(category, shots))
            content, evidence = item_inputs(category, state)
            examples.append(Example(content, evidence, target, users))
    if not any(bool(e.target.abs().sum() > 0) for e in examples):
        raise DataError(
            "dropoutnet found no training item with collaborative factors; the training "
            "categories need positives and features.cf_rank > 0"
        )
    return examples


def matching_loss(made: Tensor, target: Tensor, users: Tensor) -> Tensor:
    """DropoutNet's objective: ``mean_{u, i} (u . made_i - u . target_i)^2``.

    Matching the warm model's *scores* rather than its vectors leaves free the directions no
    user's profile uses.

    Args:
        made: (n_items, r) generated item vectors.
        target: (n_items, r) the warm model's item vectors.
        users: (b, r) user profiles.

    Returns:
        ``()`` the mean squared score error.
    """
    return ((made - target) @ users.T).pow(2).mean()


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
        self.params: Params | None = None
        self.features: MetaModel | None = None

    def fit(self, context: FitContext) -> None:
        """Train the generator on the training categories' items.

        With validation categories (``FitContext.validate``) the checkpoint with the best
        validation NDCG@10 is kept.

        Raises:
            DataError: no training category has an item with a collaborative vector.
        """
        generator = torch.Generator().manual_seed(derived_seed(context.seed, self.name))
        examples = training_examples(context)
        r = context.features.encoder.factors.shape[1]
        d = examples[0].content.shape[1]
        sizes = [d + r + 2, self.hidden, r]
        params = {k: v.requires_grad_(True) for k, v in init_generator(sizes, generator).items()}
        optimizer = torch.optim.Adam(params.values(), lr=self.lr)
        steps = min(self.steps, QUICK_STEPS) if context.quick else self.steps
        every = validate_every(steps)
        best: tuple[float, Params] | None = None
        for step in range(1, steps + 1):
            example = examples[int(torch.randint(len(examples), (1,), generator=generator))]
            # DropoutNet's input dropout: hide the support evidence of some items entirely
            n_items = example.content.shape[0]
            keep = torch.rand((n_items, 1), generator=generator) >= self.dropout
            users = torch.randperm(example.users.shape[0], generator=generator)[:_USERS_PER_STEP]
            made = generate(params, example.content, example.evidence * keep)
            loss = matching_loss(made, example.target, example.users[users])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if context.validate is not None and (step % every == 0 or step == steps):
                snapshot = {k: v.detach().clone() for k, v in params.items()}
                score = context.validate(self.with_params(snapshot, context.features))
                if best is None or score > best[0]:
                    best = (score, snapshot)
        self.features = context.features
        self.params = best[1] if best else {k: v.detach() for k, v in params.items()}

    def with_params(self, params: Params, features: MetaModel) -> Self:
        """A copy of this method that scores with ``params`` (checkpoint validation)."""
        other = copy.copy(self)
        other.params, other.features = params, features
        return other

    def scores(self, launch: Launch) -> Tensor:
        """(len(launch.users), n_items) ``u . g(x_i, c_i)``, ties ordered by launch popularity.

        Raises:
            NotAdaptedError: called before :meth:`fit`.
        """
        if self.params is None or self.features is None:
            raise NotAdaptedError(f"{self.name} was asked to score before fit(); call fit first")
        category = launch.category_for(self.features)
        content, evidence = item_inputs(category, support_state(category, launch.split))
        with torch.no_grad():
            items = generate(self.params, content, evidence)
            scores = user_vectors(category, launch.positions) @ items.T
        return with_tie_break(scores, launch, self.features.config.seed)
