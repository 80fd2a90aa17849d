"""MeLU: users as tasks, a local update of the decision layers only.

Lee, Im, Jang, Cho and Chung, "MeLU: Meta-Learned User Preference Estimator for Cold-Start
Recommendation", KDD 2019 (https://arxiv.org/abs/1908.00413).

MeLU meta-learns one user preference estimator over *users*: each task is one user's support
and query items; the inner ("local") update adapts only the decision-making layers, the
embedding layers stay fixed; the outer ("global") update moves every parameter through the
adapted decision layers (second order). Here, on metarec's rows and network:

- tasks are one user in one training category (:class:`~metarec.tasks.TaskSampler` with
  ``tasks.kind = "user"``), rows built exactly as metarec's;
- the local update is metarec's :class:`~metarec.meta.MeLULocal` learner: the scorer's first
  ``frozen_layers`` layers play MeLU's embedding layers, the rest are the decision layers and
  adapt through the single inner loop with exactly ``config.meta.inner_steps`` steps of
  ``config.meta.inner_lr`` (the fairness rule), always second order;
- at launch every user adapts on their own support, all users at once under ``torch.func.vmap``
  (:class:`metarec.ranking.CategoryRanker` with users as tasks); without support the global
  params score as they are.

Differences from the paper: implicit positives with sampled negatives and binary cross-entropy
instead of explicit ratings with squared error; metarec's pair rows instead of per-field
embeddings; the output bias starts at the rows' prior log-odds
(:func:`~metarec.baselines.pretrain.prior_bias`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Self

import torch
from torch import Tensor

from metarec.baselines.base import Family, FitContext, Launch
from metarec.baselines.pretrain import prior_bias, training_steps, validate_every
from metarec.config import TrainConfig
from metarec.errors import NotAdaptedError
from metarec.meta import Params, build_learner, meta_train
from metarec.meta.model import MetaModel
from metarec.ranking import category_scores
from metarec.seeds import derived_seed
from metarec.tasks import TaskSampler


class MeLU:
    """MeLU on metarec's rows (see the module docstring).

    With validation categories (``FitContext.validate``) the checkpoint with the best
    validation NDCG@10 is kept, as for metarec's own method.

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
        self.model: MetaModel | None = None

    def config_for(self, context: FitContext) -> TrainConfig:
        """The fold's config turned into MeLU's: users as tasks, the local update, second
        order, the same inner budget; steps and outer rate scaled as asked."""
        config = context.config
        meta = config.meta.model_copy(
            update={
                "algorithm": "melu_local",
                "melu_frozen_layers": self.frozen_layers,
                "first_order": False,
                "meta_steps": training_steps(context, self.step_scale),
                "outer_lr": config.meta.outer_lr * self.lr_scale,
            }
        )
        tasks = config.tasks.model_copy(update={"kind": "user"})
        return config.model_copy(update={"meta": meta, "tasks": tasks})

    def fit(self, context: FitContext) -> None:
        """Meta-train over users of the training categories (one user in one category a task).

        Raises:
            ConfigError: ``frozen_layers`` leaves no layer of the scorer to adapt.
        """
        config = self.config_for(context)
        model = replace(context.features, config=config)
        sampler = TaskSampler(list(context.train_data.values()), config.tasks)
        generator = torch.Generator().manual_seed(derived_seed(context.seed, self.name))
        check = context.validate
        validate: Callable[[Params], float] | None = None
        if check is not None:

            def validate(candidate: Params) -> float:
                return check(self.with_model(replace(model, params=candidate)))

        learner = build_learner(config.meta)  # MeLULocal
        params, _ = meta_train(
            learner.init_params(prior_bias(model.params, config.tasks.negatives)),
            learner,
            sampler,
            config.meta,
            generator=generator,
            validate=validate,
            validate_every=validate_every(config.meta.meta_steps),
            progress=False,
        )
        self.model = replace(model, params=params)

    def with_model(self, model: MetaModel) -> Self:
        """A copy of this method that scores with ``model`` (checkpoint validation)."""
        other = copy.copy(self)
        other.model = model
        return other

    def scores(self, launch: Launch) -> Tensor:
        """(len(launch.users), n_items) scores, each user adapted on their own support.

        Raises:
            NotAdaptedError: called before :meth:`fit`.
        """
        if self.model is None:
            raise NotAdaptedError(f"{self.name} was asked to score before fit(); call fit first")
        category = launch.category_for(self.model)
        return category_scores(self.model, category, launch.split, launch.positions)
