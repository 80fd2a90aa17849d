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
from metarec.meta.inner import task_loss
from metarec.meta.maml import MAML, task_contexts
from metarec.meta.spec import InnerLoop, adapt_with, scorer_params
from metarec.models.conditioning import FILM_PREFIX, condition
from metarec.models.scorer import Params
from metarec.tasks.batch import Batch, TaskBatch


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
        loop = self.inner_loop(params)
        context = task_contexts(params, tasks)
        # each task's own start: the shared params, or the category-conditioned ones
        start = scorer_params(params if context is None else condition(params, context))
        adapted = (
            batched.adapt_tasks(loop, start, tasks.support)
            if bmm
            else _vmap_adapt(loop, start, tasks.support)
        )
        q = tasks.query
        losses = torch.func.vmap(lambda p, x, y, m: task_loss(p, Batch(x, y, m)))(
            adapted, q.x, q.y, q.mask
        )
        scale = 1.0 / (loop.steps * self.config.inner_lr)
        # mean over tasks of each task's displacement (start - adapted), in gradient units
        shift = {
            name: (w - adapted[name]).mean(0) * scale
            if not batched.is_per_task(name, w)
            else (w - adapted[name]) * (scale / tasks.n_tasks)
            for name, w in start.items()
        }
        if context is not None:
            # A conditioned start is a function of the meta-params: the displacement of each
            # task's start is pulled back through it (chain rule), so every entry, the
            # hypernetwork's included, moves the way that moves the starts towards the adapted.
            shift = _pull_back(params, context, shift)
        # Keyed like params: an entry the inner loop does not touch has no displacement.
        return losses.mean(), {
            name: shift.get(name, torch.zeros_like(p)) for name, p in params.items()
        }


def _pull_back(params: Params, context: Tensor, shift: Params) -> Params:
    """``J^T shift`` for ``J`` the Jacobian of the conditioned starts w.r.t. the meta-params."""
    inputs = {n: p for n, p in params.items() if n in shift or n.startswith(FILM_PREFIX)}

    def starts(inputs: Params) -> Params:
        conditioned = condition({**params, **inputs}, context)
        return {name: conditioned[name] for name in shift}

    vjp = torch.func.vjp(starts, inputs)[1]
    (grads,) = vjp(shift)
    return grads


def _vmap_adapt(loop: InnerLoop, weights: Params, support: Batch) -> Params:
    """Every task's adapted params through the single inner loop: ``(T, ...)`` each.

    ``weights`` entries are shared, or per task with a leading ``T`` (a conditioned start).
    """

    def one(weights: Params, x: Tensor, y: Tensor, mask: Tensor) -> Params:
        return adapt_with(loop, weights, Batch(x, y, mask))

    in_dims = {name: 0 if batched.is_per_task(name, w) else None for name, w in weights.items()}
    return torch.func.vmap(one, in_dims=(in_dims, 0, 0, 0))(
        weights, support.x, support.y, support.mask
    )
