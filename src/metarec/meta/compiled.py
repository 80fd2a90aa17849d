"""The opt-in ``torch.compile`` path of the meta-gradient (``MetaConfig.compile``).

``torch.compile`` cannot trace ``torch.autograd.grad(create_graph=True)``, so what compiles is
a learner's pure ``torch.func`` form (:meth:`metarec.meta.MAML.functional_gradient`: ``vmap``
over the single inner loop, ``grad_and_value`` around it). Compiling costs tens of seconds
per process and per shape, so task batches are padded to power-of-two row counts (padded rows
have ``mask == 0`` and change nothing): the sampler's varying sizes then hit a handful of
compiled shapes instead of one compile per batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from metarec.models.scorer import Params
from metarec.tasks.batch import Batch, TaskBatch

PureGradient = Callable[[Params, TaskBatch], tuple[Tensor, Params]]
"""``(params, tasks) -> (loss, grads)`` written with ``torch.func`` only."""


class CompiledGradient:
    """A :data:`PureGradient` compiled once per padded shape.

    Args:
        fn: the pure meta-gradient to compile.

    Example:
        >>> import torch
        >>> from metarec.tasks.batch import Batch, TaskBatch
        >>> rows = Batch(torch.zeros(2, 5, 3), torch.zeros(2, 5), torch.ones(2, 5))
        >>> pad_rows(rows, 8).mask.sum().item()  # three padded rows per task, mask 0
        10.0
    """

    def __init__(self, fn: PureGradient) -> None:
        self._fn = fn
        self._compiled = torch.compile(self._call, dynamic=False)

    def __call__(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """``fn(params, tasks)`` with both row counts padded up to powers of two."""
        s, q = tasks.support, tasks.query
        s = pad_rows(s, _next_power_of_two(s.n_rows))
        q = pad_rows(q, _next_power_of_two(q.n_rows))
        detached = {name: p.detach() for name, p in params.items()}
        loss, grads = self._compiled(detached, s.x, s.y, s.mask, q.x, q.y, q.mask, tasks.context)
        return loss.detach(), {name: g.detach() for name, g in grads.items()}

    def _call(
        self,
        params: Params,
        sx: Tensor,
        sy: Tensor,
        sm: Tensor,
        qx: Tensor,
        qy: Tensor,
        qm: Tensor,
        context: Tensor | None,
    ) -> tuple[Tensor, Params]:
        return self._fn(params, TaskBatch(Batch(sx, sy, sm), Batch(qx, qy, qm), context))


def pad_rows(batch: Batch, n: int) -> Batch:
    """Stacked rows ``x: (T, m, d)`` padded with zero, mask-0 rows to ``(T, n, d)``, ``n >= m``."""
    extra = n - batch.n_rows
    if extra <= 0:
        return batch
    pad = torch.nn.functional.pad
    return Batch(
        pad(batch.x, (0, 0, 0, extra)), pad(batch.y, (0, extra)), pad(batch.mask, (0, extra))
    )


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
