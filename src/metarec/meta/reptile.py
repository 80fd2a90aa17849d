"""Reptile: move the initialisation towards the parameters each task adapts to.

Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", arXiv 2018
(https://arxiv.org/abs/1803.02999).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarec.config import MetaConfig
from metarec.errors import ConfigError
from metarec.meta import batched
from metarec.meta.batch import Batch, Params, TaskBatch
from metarec.meta.inner import task_loss
from metarec.meta.maml import MAML
from metarec.meta.spec import InnerLoop, adapt_with, scorer_params


class Reptile(MAML):
    """Reptile (Nichol et al. 2018): ``θ ← θ + ε · mean_t(φ_t - θ)``, ``φ_t`` = θ adapted to task t.

    No derivative of the adaptation is taken: each task runs the same inner loop as at launch
    (``inner_steps`` steps of ``inner_lr`` on its support rows) and the update is the mean
    displacement. To fit the :class:`MetaLearner` protocol, whose outer loop applies Adam to a
    gradient, :meth:`meta_gradient` returns the *Reptile direction*
    ``(θ - mean_t φ_t) / (inner_steps · inner_lr)``: descending it moves θ towards the adapted
    params, at Adam's step ``meta.outer_lr`` (Reptile's ε). The scale puts it in gradient
    units: with one inner step it is exactly the mean support-loss gradient at θ (the paper's
    observation that Reptile with k = 1 is joint training); with more steps it picks up the
    paper's gradient-alignment terms. The returned loss is the mean query loss after
    adaptation, as MAML's, so runs of either read the same.

    The query rows are not used for the update: adaptation at launch sees support rows only,
    and training adapts exactly as launch will. Reptile needs no graph through the inner loop,
    so ``first_order`` is forced on.

    Args:
        config: ``inner_steps`` (>= 1), ``inner_lr``, ``batching``, ``compile``.

    Raises:
        ConfigError: ``inner_steps`` is 0 (there would be no displacement to follow).

    Example:
        >>> import torch
        >>> from metarec.config import MetaConfig, ModelConfig
        >>> from metarec.meta import Batch, Reptile, stack_tasks, task_loss
        >>> from metarec.models import init_params
        >>> g = torch.Generator().manual_seed(0)
        >>> params = init_params(8, ModelConfig(hidden=(16, 8)), generator=g)
        >>> def rows(n):
        ...     x = torch.randn(n, 8, generator=g)
        ...     return Batch(x, (x[:, 0] > 0).float(), torch.ones(n))
        >>> support = rows(5)
        >>> reptile = Reptile(MetaConfig(inner_steps=1, inner_lr=0.1))
        >>> loss, direction = reptile.meta_gradient(params, stack_tasks([(support, rows(10))]))
        >>> grad = torch.func.grad(task_loss)(params, support)  # one step: the support gradient
        >>> torch.allclose(direction["layers.0.weight"], grad["layers.0.weight"], atol=1e-6)
        True
    """

    def __init__(self, config: MetaConfig) -> None:
        if config.inner_steps < 1:
            raise ConfigError(
                "Reptile needs meta.inner_steps >= 1: its update is the displacement the inner "
                "loop makes, and 0 steps make none"
            )
        super().__init__(config.model_copy(update={"first_order": True}))

    def meta_gradient(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """``(mean query loss after adaptation, Reptile direction)``, keyed like ``params``."""
        if self.config.compile:
            return super().meta_gradient(params, tasks)  # compiles functional_gradient
        with torch.no_grad():
            return self._direction(params, tasks, bmm=self.config.batching == "bmm")

    def functional_gradient(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """:meth:`meta_gradient` through ``vmap`` only (the form ``config.compile`` compiles)."""
        return self._direction(params, tasks, bmm=False)

    def _direction(self, params: Params, tasks: TaskBatch, *, bmm: bool) -> tuple[Tensor, Params]:
        weights = scorer_params(params)
        loop = self.inner_loop(params)
        adapted = (
            batched.adapt_tasks(loop, weights, tasks.support)
            if bmm
            else _vmap_adapt(loop, weights, tasks.support)
        )
        q = tasks.query
        losses = torch.func.vmap(lambda p, x, y, m: task_loss(p, Batch(x, y, m)))(
            adapted, q.x, q.y, q.mask
        )
        scale = 1.0 / (loop.steps * self.config.inner_lr)
        direction = {name: (w - adapted[name].mean(0)) * scale for name, w in weights.items()}
        # Keyed like params: an entry the inner loop does not touch has no displacement.
        return losses.mean(), {
            name: direction.get(name, torch.zeros_like(p)) for name, p in params.items()
        }


def _vmap_adapt(loop: InnerLoop, weights: Params, support: Batch) -> Params:
    """Every task's adapted params through the single inner loop: ``(T, ...)`` each."""

    def one(x: Tensor, y: Tensor, mask: Tensor) -> Params:
        return adapt_with(loop, weights, Batch(x, y, mask))

    return torch.func.vmap(one)(support.x, support.y, support.mask)
