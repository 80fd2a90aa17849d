"""MeLU: users as tasks, a local update of the decision layers only.

Lee, Im, Jang, Cho and Chung, "MeLU: Meta-Learned User Preference Estimator for Cold-Start
Recommendation", KDD 2019 (https://arxiv.org/abs/1908.00413).

MeLU meta-learns one user preference estimator over *users*: each task is one user's support
and query items; the inner ("local") update adapts only the decision-making layers, the
embedding layers stay fixed; the outer ("global") update moves every parameter through the
adapted decision layers (second order). Here, on metarec's rows and network:

- tasks are one user in one training category (:class:`~metarec.tasks.TaskSampler` with
  ``kind="user"``), rows built exactly as metarec's;
- the scorer's first ``frozen_layers`` layers play MeLU's embedding layers (they turn the pair
  row into a hidden representation), the remaining layers are the decision layers that adapt;
- the local update is :func:`metarec.meta.adapt` on the decision layers alone, run on the
  frozen layers' output, with exactly ``config.meta.inner_steps`` steps of
  ``config.meta.inner_lr`` (the fairness rule), always second order;
- at launch every user adapts on their own support (all users at once under
  ``torch.func.vmap``); with no support the global params score as they are.

Differences from the paper: implicit positives with sampled negatives and binary cross-entropy
instead of explicit ratings with squared error; features are metarec's pair rows instead of
MeLU's per-field embeddings.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.baselines.base import Family, FitContext, Launch
from metarec.baselines.pretrain import prior_bias, training_steps, validate_every
from metarec.config import MetaConfig, TrainConfig
from metarec.errors import ConfigError, NotAdaptedError
from metarec.meta import MAML, Batch, Params, adapt, meta_train, stack_batches
from metarec.models.scorer import score
from metarec.pipeline import MetaModel, derived_seed
from metarec.tasks import (
    CategoryData,
    Split,
    SupportState,
    TaskSampler,
    candidate_rows,
    support_batch,
    support_state,
)

_SCORE_CHUNK_ROWS = 500_000  # (users x items) candidate rows per chunk: bounds peak memory


def _layer(name: str) -> int:
    return int(name.split(".")[1])


def _renumber(params: Params, shift: int) -> Params:
    """``layers.{i}.*`` renamed ``layers.{i + shift}.*``."""
    return {
        f"layers.{_layer(name) + shift}.{name.split('.', 2)[2]}": value
        for name, value in params.items()
    }


class LocalUpdate(MAML):
    """MAML whose inner loop adapts only the layers after the first ``frozen_layers``.

    The decision layers form a smaller MLP of the same form as the scorer, whose input is the
    frozen layers' ReLU output; so the local update is plain :func:`metarec.meta.adapt` on that
    MLP, and :meth:`MAML.meta_gradient` differentiates through it into every parameter (the
    frozen layers get their gradient through the adapted decision layers, as in MeLU's global
    update).

    Args:
        config: the inner budget (``inner_steps``, ``inner_lr``, ``first_order``).
        frozen_layers: leading layers kept fixed in the inner loop, >= 1.
    """

    def __init__(self, config: MetaConfig, frozen_layers: int) -> None:
        super().__init__(config)
        if frozen_layers < 1:
            raise ConfigError(f"frozen_layers must be >= 1, got {frozen_layers}")
        self.frozen_layers = frozen_layers

    def adapt(self, params: Params, support: Batch) -> Params:
        """Params with the decision layers adapted on ``support`` (``x: (n, d_in)``)."""
        n_layers = len(params) // 2
        if self.frozen_layers >= n_layers:
            raise ConfigError(
                f"frozen_layers={self.frozen_layers} leaves no decision layer in a "
                f"{n_layers}-layer scorer; use fewer frozen layers or add model.hidden layers"
            )
        head = _renumber(
            {k: v for k, v in params.items() if _layer(k) >= self.frozen_layers},
            -self.frozen_layers,
        )
        hidden = Batch(self.embed(params, support.x), support.y, support.mask)
        adapted = adapt(
            head,
            hidden,
            steps=self.config.inner_steps,
            lr=self.config.inner_lr,
            first_order=self.config.first_order,
        )
        return {**params, **_renumber(adapted, self.frozen_layers)}

    def embed(self, params: Params, x: Tensor) -> Tensor:
        """``(..., d_in)`` rows through the frozen layers: ``(..., hidden)`` ReLU activations."""
        h = x
        for i in range(self.frozen_layers):
            h = F.relu(F.linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
        return h


class MeLU:
    """MeLU on metarec's rows (see the module docstring).

    Args:
        lr_scale: global (outer) Adam learning rate as a multiple of ``config.meta.outer_lr``.
        step_scale: meta-steps as a multiple of ``config.meta.meta_steps``.
        frozen_layers: leading scorer layers that do not adapt locally (MeLU's embeddings).
    """

    name: ClassVar[str] = "melu"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [
        {"lr_scale": 1.0, "frozen_layers": 1},
        {"lr_scale": 3.0, "frozen_layers": 1},
        {"lr_scale": 0.3, "frozen_layers": 1},
        {"lr_scale": 1.0, "frozen_layers": 2},
    ]

    def __init__(
        self, *, lr_scale: float = 1.0, step_scale: float = 1.0, frozen_layers: int = 1
    ) -> None:
        self.lr_scale = lr_scale
        self.step_scale = step_scale
        self.frozen_layers = frozen_layers
        self.params: Params | None = None
        self.features: MetaModel | None = None

    def learner(self, config: TrainConfig) -> LocalUpdate:
        """The local-update learner with the run's inner budget, second order."""
        meta = config.meta.model_copy(update={"first_order": False})
        return LocalUpdate(meta, self.frozen_layers)

    def fit(self, context: FitContext) -> None:
        """Meta-train over users of the training categories (one user in one category a task).

        With validation categories (``FitContext.validate``) the checkpoint with the best
        validation NDCG@10 is kept, as for metarec's own method.
        """
        config = context.config
        steps = training_steps(context, self.step_scale)
        meta = config.meta.model_copy(
            update={"meta_steps": steps, "outer_lr": config.meta.outer_lr * self.lr_scale}
        )
        sampler = TaskSampler(
            list(context.train_data.values()), config.tasks.model_copy(update={"kind": "user"})
        )
        generator = torch.Generator().manual_seed(derived_seed(context.seed, self.name))
        check = context.validate
        validate = None
        if check is not None:

            def validate(candidate: Params) -> float:
                return check(self.with_params(candidate, context.features))

        self.params, _ = meta_train(
            prior_bias(context.features.params, config.tasks.negatives),
            self.learner(config),
            sampler,
            meta,
            generator=generator,
            validate=validate,
            validate_every=validate_every(steps),
            progress=False,
        )
        self.features = context.features

    def with_params(self, params: Params, features: MetaModel) -> Self:
        """A copy of this method that scores with ``params`` (checkpoint validation)."""
        other = copy.copy(self)
        other.params, other.features = params, features
        return other

    def scores(self, launch: Launch) -> Tensor:
        """(len(launch.users), n_items) scores, each user adapted on their own support.

        Raises:
            NotAdaptedError: called before :meth:`fit`.
        """
        if self.params is None or self.features is None:
            raise NotAdaptedError(f"{self.name} was asked to score before fit(); call fit first")
        category = launch.category_for(self.features)
        split = launch.split
        state = support_state(category, split)
        seed = self.features.config.seed
        generator = torch.Generator().manual_seed(derived_seed(seed, launch.name))
        users = launch.positions
        chunk = max(1, _SCORE_CHUNK_ROWS // max(1, category.n_items))
        parts = [
            self._chunk_scores(category, split, state, users[i : i + chunk], generator)
            for i in range(0, len(users), chunk)
        ]
        return torch.cat(parts) if parts else torch.zeros((0, category.n_items))

    def _chunk_scores(
        self,
        category: CategoryData,
        split: Split,
        state: SupportState,
        users: np.ndarray,
        generator: torch.Generator,
    ) -> Tensor:
        assert self.params is not None and self.features is not None
        config = self.features.config
        rows = candidate_rows(category, state, torch.as_tensor(users, dtype=torch.long))
        if not split.support[np.isin(category.pos_user, users)].any():
            with torch.no_grad():
                return score(self.params, rows)  # no support: nothing to adapt on
        supports = [
            support_batch(
                category,
                state,
                Split(
                    split.support & (category.pos_user == user), split.query, split.eligible, None
                ),
                n_negatives=config.tasks.negatives,
                generator=generator,
            )
            for user in users
        ]
        stacked = stack_batches(supports)
        learner = self.learner(config)
        params = self.params

        def adapt_one(x: Tensor, y: Tensor, mask: Tensor) -> Params:
            return learner.adapt(params, Batch(x, y, mask))

        adapted = torch.func.vmap(adapt_one)(stacked.x, stacked.y, stacked.mask)
        adapted = {k: v.detach() for k, v in adapted.items()}
        with torch.no_grad():
            return torch.func.vmap(score)(adapted, rows)
