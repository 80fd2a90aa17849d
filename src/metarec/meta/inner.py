"""The single inner loop: training, evaluation and serving all adapt through :func:`adapt`.

Written with ``torch.func`` so that it composes: ``torch.func.grad`` inside for the inner
gradients, ``vmap`` over tasks and ``grad`` of the whole thing outside for the meta-gradient.
Because ``torch.func.grad`` keeps the graph of the gradient it returns (the ``create_graph=True``
of ``torch.autograd``), an outer derivative flows through every inner update: that is
second-order MAML with no special code. First order is the one place that differs: there the
inner gradients are detached.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.errors import ConfigError
from metarec.models.scorer import Params, score
from metarec.tasks.batch import Batch


def task_loss(params: Params, batch: Batch) -> Tensor:
    """Masked mean binary cross-entropy of the scorer's logits on one task's rows.

    Args:
        params: scorer parameters.
        batch: one task's rows, ``x: (n, d_in)``, ``y`` and ``mask: (n,)``.

    Returns:
        ``()`` the mean BCE over real rows; 0 when the task has no real row (an all-padding
        task contributes nothing instead of a NaN from 0 / 0).
    """
    per_row = F.binary_cross_entropy_with_logits(score(params, batch.x), batch.y, reduction="none")
    # Multiplying by the mask (not indexing) keeps shapes static under vmap; padded rows hold
    # finite values, so 0 * loss is exactly 0 and so is their gradient.
    return (per_row * batch.mask).sum() / batch.mask.sum().clamp_min(1.0)


Loss = Callable[[Params, Batch], Tensor]
"""``loss(params, rows) -> ()``: what the inner loop descends (BCE on ranking rows by default)."""


@cache
def _gradient(loss: Loss) -> Callable[[Params, Batch], Params]:
    return torch.func.grad(loss)


def adapt(
    params: Params,
    support: Batch,
    *,
    steps: int,
    lr: float | Params,
    first_order: bool = False,
    loss: Loss = task_loss,
) -> Params:
    """Adapt params to one task by ``steps`` steps of gradient descent on its support loss.

    ``θ ← θ - lr ⊙ ∇θ loss(θ, support)``, repeated. Pure: ``params`` is never mutated, a
    new dict is returned (for ``steps == 0`` a shallow copy holding the same tensors).

    Args:
        params: initial (meta-learned) parameters.
        support: one task's support rows, ``x: (n, d_in)`` (under ``vmap`` this is one task of a
            :class:`~metarec.meta.batch.TaskBatch`).
        steps: number of inner gradient steps, >= 0.
        lr: inner learning rate, one float, or one tensor per parameter (same keys as ``params``,
            each broadcastable to its parameter) as Meta-SGD learns them.
        first_order: detach the inner gradients, so that an outer derivative treats each
            update as a constant shift (FOMAML) instead of differentiating through it.
        loss: the support loss, :func:`task_loss` (ranking rows, BCE) unless given (the DBook
            protocol's rating regression passes its MSE).

    Returns:
        The adapted parameters, same keys and shapes as ``params``.

    Raises:
        ConfigError: negative ``steps``, or a per-parameter ``lr`` whose keys differ from
            ``params``.
    """
    if steps < 0:
        raise ConfigError(f"inner steps must be >= 0, got {steps}; set meta.inner_steps >= 0")
    if isinstance(lr, dict) and lr.keys() != params.keys():
        raise ConfigError(
            f"per-parameter inner lr must have the params' keys {sorted(params)}, got {sorted(lr)}"
        )
    adapted = dict(params)
    gradient = _gradient(loss)
    for _ in range(steps):
        grads = gradient(adapted, support)
        adapted = {
            name: value - _lr_of(lr, name) * (grads[name].detach() if first_order else grads[name])
            for name, value in adapted.items()
        }
    return adapted


def _lr_of(lr: float | Params, name: str) -> float | Tensor:
    return lr[name] if isinstance(lr, dict) else lr
