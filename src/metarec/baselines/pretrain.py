"""Pooled pretraining of metarec's own network, without meta-learning: the decisive ablation.

The same scorer (:mod:`metarec.models.scorer`), the same rows (tasks drawn by
:class:`~metarec.tasks.TaskSampler` from the training categories, support rows built
leave-one-out, query rows with the full support, sampled negatives) and about the same number of
Adam steps as meta-training; the only difference is the objective: the mean binary cross-entropy
over *all* rows of a batch of tasks, support and query pooled, with no inner loop. Whatever
metarec gains over this is what meta-learning buys.

- ``pretrain-zeroshot`` scores a launch with the pretrained params as they are.
- ``pretrain-finetune`` first adapts them on the launch's support through
  :class:`metarec.ranking.CategoryRanker`, i.e. :func:`metarec.meta.adapt` with exactly
  ``config.meta.inner_steps`` steps of ``config.meta.inner_lr`` on
  :func:`~metarec.tasks.support_batch` rows, per category or per user as ``config.tasks.kind``
  says: the same code path and budget metarec adapts with.

This is the "tuned standard model" comparison that Buffelli et al. find matches meta-learning
("Is Meta-Learning the Right Approach for the Cold-Start Problem in Recommender Systems?",
2023, https://arxiv.org/abs/2308.08354).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Self

import torch
from torch import Tensor

from metarec.baselines.base import Family, FitContext, Launch
from metarec.config import TrainConfig
from metarec.errors import NotAdaptedError
from metarec.meta import Batch, Params, TaskBatch, meta_train, task_loss
from metarec.meta.model import MetaModel
from metarec.ranking import category_scores
from metarec.seeds import derived_seed
from metarec.tasks import TaskSampler

QUICK_STEPS = 40
"""Training steps under ``FitContext.quick`` (smoke runs), as for metarec's own method."""


def training_steps(context: FitContext, step_scale: float) -> int:
    """``config.meta.meta_steps * step_scale`` steps, at most :data:`QUICK_STEPS` when quick."""
    steps = max(1, round(context.config.meta.meta_steps * step_scale))
    return min(steps, QUICK_STEPS) if context.quick else steps


def validate_every(steps: int) -> int:
    """Steps between checkpoint validations: about six per run, as for metarec's own method."""
    return max(10, steps // 6)


def prior_bias(params: Params, negatives: int) -> Params:
    """``params`` with the output bias at the rows' prior log-odds, ``log(1 / negatives)``.

    Every row set is one positive per ``negatives`` sampled negatives. Starting the output there
    removes the large shared gradient of the first steps (all logits pushed down together),
    which drove every unit of the test config's 8-wide layer dead (a constant score) within 60
    steps of pooled training.
    """
    last = f"layers.{len(params) // 2 - 1}.bias"
    return {**params, last: torch.full_like(params[last], math.log(1.0 / negatives))}


class PooledObjective:
    """The :class:`~metarec.meta.MetaLearner` of plain supervised learning: no inner loop.

    ``meta_loss`` is the mean BCE over every real row of every task, support and query alike
    (a pooled mean, so a task weighs by its number of rows), so :func:`metarec.meta.meta_train`
    runs ordinary mini-batch Adam on the same rows meta-training sees.
    """

    def adapt(self, params: Params, support: Batch) -> Params:
        """No adaptation: pooled training has no inner loop (a shallow copy of ``params``)."""
        return dict(params)

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """``()`` masked mean BCE over all ``T * (n_support + n_query)`` rows."""
        s, q = tasks.support, tasks.query
        x = torch.cat([s.x.flatten(0, 1), q.x.flatten(0, 1)])
        y = torch.cat([s.y.flatten(), q.y.flatten()])
        mask = torch.cat([s.mask.flatten(), q.mask.flatten()])
        return task_loss(params, Batch(x, y, mask))

    def meta_gradient(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """``(loss, d loss / d params)``, both detached."""
        with torch.enable_grad():
            leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
            loss = self.meta_loss(leaves, tasks)
            grads = torch.autograd.grad(loss, list(leaves.values()), materialize_grads=True)
        return loss.detach(), dict(zip(leaves, grads, strict=True))


def pretrain(
    context: FitContext,
    *,
    lr_scale: float,
    step_scale: float,
    validate: Callable[[Params], float] | None = None,
) -> Params:
    """Pooled supervised training of the scorer on the fold's training categories.

    Adam with metarec's outer-loop settings (``meta_batch_size`` tasks per step, ``outer_lr``,
    ``weight_decay``), the learning rate and the number of steps scaled as asked. The run is
    the same whatever ``validate`` says (validation draws no training randomness), so its
    checkpoints are kept in ``context.memo`` and the second variant only re-scores them.

    Args:
        context: the fold (its ``features.params`` are the initialisation metarec starts from).
        lr_scale: Adam learning rate as a multiple of ``config.meta.outer_lr``.
        step_scale: steps as a multiple of ``config.meta.meta_steps`` (each pooled step is
            cheaper than a meta-step, so a larger multiple is still a fair budget).
        validate: scores candidate params (higher is better); the best checkpoint wins, the
            earliest among equals, as :func:`metarec.meta.meta_train` selects.

    Returns:
        The trained params (detached).
    """
    checkpoints = _checkpoints(context, lr_scale, step_scale)
    if validate is None:
        return checkpoints[-1]
    best, best_score = checkpoints[-1], -math.inf
    for candidate in checkpoints:
        score = float(validate(candidate))
        if score > best_score:
            best, best_score = candidate, score
    return best


def _checkpoints(context: FitContext, lr_scale: float, step_scale: float) -> list[Params]:
    """The params at every validation step of one pretraining run, the last step's last."""
    key = ("pretrain", lr_scale, step_scale)
    if key in context.memo:
        return context.memo[key]
    config = context.config
    steps = training_steps(context, step_scale)
    meta = config.meta.model_copy(
        update={"meta_steps": steps, "outer_lr": config.meta.outer_lr * lr_scale}
    )
    sampler = TaskSampler(list(context.train_data.values()), config.tasks)
    generator = torch.Generator().manual_seed(derived_seed(context.seed, "pretrain"))
    checkpoints: list[Params] = []

    def keep(candidate: Params) -> float:
        checkpoints.append(candidate)
        return 0.0

    meta_train(
        prior_bias(context.features.params, config.tasks.negatives),
        PooledObjective(),
        sampler,
        meta,
        generator=generator,
        validate=keep,
        validate_every=validate_every(steps),
        progress=False,
    )
    context.memo[key] = checkpoints
    return checkpoints


class Pretrain:
    """Pooled pretraining of metarec's scorer, scored zero-shot (see the module docstring).

    When the fold has validation categories (``FitContext.validate``), the checkpoint with the
    best validation NDCG@10 is kept, scored as this method scores (fine-tuned or not), exactly
    as metarec's own method selects its checkpoint.

    Args:
        lr_scale: pretraining's Adam learning rate as a multiple of ``config.meta.outer_lr``.
        step_scale: pretraining steps as a multiple of ``config.meta.meta_steps``.
    """

    name: ClassVar[str] = "pretrain-zeroshot"
    family: ClassVar[Family] = "baseline"
    grid: ClassVar[list[dict[str, Any]]] = [
        {"lr_scale": 1.0, "step_scale": 1.0},
        {"lr_scale": 3.0, "step_scale": 1.0},
        {"lr_scale": 0.3, "step_scale": 1.0},
        {"lr_scale": 1.0, "step_scale": 3.0},
    ]
    finetune: ClassVar[bool] = False

    def __init__(self, *, lr_scale: float = 1.0, step_scale: float = 1.0) -> None:
        self.lr_scale = lr_scale
        self.step_scale = step_scale
        self.model: MetaModel | None = None

    def fit(self, context: FitContext) -> None:
        """Pretrain on the fold's training categories (the model keeps the fold's features)."""
        model = replace(context.features, config=self.config_for(context))
        check = context.validate
        validate: Callable[[Params], float] | None = None
        if check is not None:

            def validate(candidate: Params) -> float:
                return check(self.with_model(replace(model, params=candidate)))

        params = pretrain(
            context, lr_scale=self.lr_scale, step_scale=self.step_scale, validate=validate
        )
        self.model = replace(model, params=params)

    @staticmethod
    def config_for(context: FitContext) -> TrainConfig:
        """The fold's config with plain MAML's inner loop: whatever algorithm the run
        meta-trains, fine-tuning is :func:`metarec.meta.adapt` on every layer, at the run's
        ``inner_steps`` and ``inner_lr``."""
        meta = context.config.meta.model_copy(update={"algorithm": "maml"})
        return context.config.model_copy(update={"meta": meta})

    def with_model(self, model: MetaModel) -> Self:
        """A copy of this method that scores with ``model`` (checkpoint validation)."""
        other = copy.copy(self)
        other.model = model
        return other

    def scores(self, launch: Launch) -> Tensor:
        """(len(launch.users), n_items) scores; fine-tuned on the support when ``finetune``.

        Raises:
            NotAdaptedError: called before :meth:`fit`.
        """
        if self.model is None:
            raise NotAdaptedError(f"{self.name} was asked to score before fit(); call fit first")
        category = launch.category_for(self.model)
        return category_scores(
            self.model, category, launch.split, launch.positions, adapt=self.finetune
        )


class PretrainFinetune(Pretrain):
    """Pooled pretraining, then fine-tuning on the launch's support with MAML's inner budget."""

    name: ClassVar[str] = "pretrain-finetune"
    finetune: ClassVar[bool] = True
