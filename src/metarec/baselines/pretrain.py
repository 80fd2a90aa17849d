"""Pooled pretraining of metarec's own network, without meta-learning: the decisive ablation.

The same scorer (:mod:`metarec.models.scorer`), the same rows (tasks drawn by
:class:`~metarec.tasks.TaskSampler` from the training categories, support rows built
leave-one-out, query rows with the full support, sampled negatives) and about the same number of
Adam steps as meta-training; the only difference is the objective: the mean binary cross-entropy
over *all* rows of a batch of tasks, support and query pooled, with no inner loop. Whatever
metarec gains over this is what meta-learning buys.

- ``pretrain-zeroshot`` scores a launch with the pretrained params as they are.
- ``pretrain-finetune`` first adapts them on the launch's support through
  :func:`metarec.pipeline.category_scores`, i.e. :func:`metarec.meta.adapt` with exactly
  ``config.meta.inner_steps`` steps of ``config.meta.inner_lr`` on
  :func:`~metarec.tasks.support_batch` rows, per category or per user as ``config.tasks.kind``
  says: the same code path and budget metarec adapts with.

This is the "tuned standard model" comparison that Buffelli et al. find matches meta-learning
("Is Meta-Learning the Right Approach for the Cold-Start Problem in Recommender Systems?",
2023, https://arxiv.org/abs/2308.08354).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar

import torch
from torch import Tensor

from metarec.baselines.base import Family, FitContext, Launch
from metarec.errors import NotAdaptedError
from metarec.meta import Batch, Params, TaskBatch, meta_train, task_loss
from metarec.pipeline import MetaModel, category_scores, derived_seed
from metarec.tasks import TaskSampler, split_launch

QUICK_STEPS = 50
"""Adam steps under ``FitContext.quick`` (smoke runs), whatever the config says."""


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


def pretrain(context: FitContext, *, lr_scale: float, step_scale: float) -> Params:
    """Pooled supervised training of the scorer on the fold's training categories.

    Adam with metarec's outer-loop settings (``meta_batch_size`` tasks per step, ``outer_lr``,
    ``weight_decay``), each scaled as asked.

    Args:
        context: the fold (its ``features.params`` are the initialisation metarec starts from).
        lr_scale: Adam learning rate as a multiple of ``config.meta.outer_lr``.
        step_scale: steps as a multiple of ``config.meta.meta_steps`` (each pooled step is
            cheaper than a meta-step, so a larger multiple is still a fair budget).

    Returns:
        The trained params (detached).
    """
    config = context.config
    steps = max(1, round(config.meta.meta_steps * step_scale))
    if context.quick:
        steps = min(steps, QUICK_STEPS)
    lr = config.meta.outer_lr * lr_scale
    meta = config.meta.model_copy(update={"meta_steps": steps, "outer_lr": lr})
    sampler = TaskSampler(list(context.train_data.values()), config.tasks)
    generator = torch.Generator().manual_seed(derived_seed(context.seed, "pretrain"))
    start = prior_bias(context.features.params, config.tasks.negatives)
    params, _ = meta_train(
        start, PooledObjective(), sampler, meta, generator=generator, progress=False
    )
    return params


def prior_bias(params: Params, negatives: int) -> Params:
    """``params`` with the output bias at the rows' prior log-odds, ``log(1 / negatives)``.

    Every row set is one positive per ``negatives`` sampled negatives. Starting the output there
    removes the large shared gradient of the first steps (all logits pushed down together),
    which can drive a small network's ReLUs dead.
    """
    last = f"layers.{len(params) // 2 - 1}.bias"
    return {**params, last: torch.full_like(params[last], math.log(1.0 / negatives))}


class Pretrain:
    """Pooled pretraining of metarec's scorer, scored zero-shot (see the module docstring).

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
        self._model: MetaModel | None = None

    def fit(self, context: FitContext) -> None:
        params = pretrain(context, lr_scale=self.lr_scale, step_scale=self.step_scale)
        self._model = replace(context.features, params=params)

    def scores(self, launch: Launch) -> Tensor:
        """(len(launch.users), n_items) scores; fine-tuned on the support when ``finetune``."""
        if self._model is None:
            raise NotAdaptedError(f"{self.name} was asked to score before fit(); call fit first")
        category = launch.category
        return category_scores(
            self._model, category, split_launch(category), launch.positions, adapt=self.finetune
        )


class PretrainFinetune(Pretrain):
    """Pooled pretraining, then fine-tuning on the launch's support with MAML's inner budget."""

    name: ClassVar[str] = "pretrain-finetune"
    finetune: ClassVar[bool] = True
