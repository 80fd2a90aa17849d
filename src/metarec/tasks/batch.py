"""The data contract of the meta-learning core: rows of one task, and of T tasks stacked.

A *task* is one category's (or one user-in-category's) support and query rows. Tasks of
different sizes are padded to a common size with ``mask == 0`` rows so that the inner loop can
run over all of them at once under ``torch.func.vmap``; every loss in ``metarec.meta`` is a
masked mean, so padded rows change nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from metarec.errors import DataError

__all__ = ["Batch", "TaskBatch", "stack_batches", "stack_tasks"]


@dataclass(frozen=True)
class Batch:
    """Rows of one task, or of T tasks stacked on a leading dimension.

    Attributes:
        x: ``(n, d_in)`` or ``(T, n, d_in)`` float features of (user, item) rows.
        y: ``(n,)`` or ``(T, n)`` float targets in [0, 1] (1 positive, 0 sampled negative).
        mask: ``(n,)`` or ``(T, n)`` float, 1 for real rows and 0 for padding. Padded rows must
            hold finite values (``stack_tasks`` pads with zeros): they are multiplied by 0.
    """

    x: Tensor
    y: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        # Checked here, once per construction, so that a shape slip fails at the boundary
        # instead of broadcasting silently inside the loss.
        if self.x.dim() < 2 or self.x.shape[:-1] != self.y.shape or self.y.shape != self.mask.shape:
            raise DataError(
                f"Batch shapes disagree: x {tuple(self.x.shape)}, y {tuple(self.y.shape)}, "
                f"mask {tuple(self.mask.shape)}; expected x (..., n, d_in) with y and mask (..., n)"
            )

    @property
    def n_rows(self) -> int:
        """Rows per task, padding included."""
        return int(self.y.shape[-1])


@dataclass(frozen=True)
class TaskBatch:
    """T tasks padded to common support and query sizes.

    Attributes:
        support: stacked support rows, ``x: (T, n_support, d_in)``.
        query: stacked query rows, ``x: (T, n_query, d_in)``.
        context: ``(T, d_c)`` each task's category context (what is known about its category
            before any interaction, :attr:`metarec.tasks.CategoryData.context`), read by
            category-conditioned models (:mod:`metarec.models.conditioning`); None without.
    """

    support: Batch
    query: Batch
    context: Tensor | None = None

    def __post_init__(self) -> None:
        s, q = self.support, self.query
        if s.x.dim() != 3 or q.x.dim() != 3 or s.x.shape[0] != q.x.shape[0]:
            raise DataError(
                f"TaskBatch needs support and query stacked over the same T tasks, got support x "
                f"{tuple(s.x.shape)} and query x {tuple(q.x.shape)}; build it with stack_tasks"
            )
        c = self.context
        if c is not None and (c.dim() != 2 or c.shape[0] != s.x.shape[0]):
            raise DataError(
                f"TaskBatch context must be (T, d_c) with T = {s.x.shape[0]} tasks, got "
                f"{tuple(c.shape)}; pass one context vector per task to stack_tasks"
            )

    @property
    def n_tasks(self) -> int:
        """T, the number of stacked tasks."""
        return int(self.support.x.shape[0])

    def task(self, i: int) -> tuple[Batch, Batch]:
        """The padded support and query rows of task ``i`` (views, no copy)."""
        s, q = self.support, self.query
        return Batch(s.x[i], s.y[i], s.mask[i]), Batch(q.x[i], q.y[i], q.mask[i])


def stack_tasks(
    tasks: Sequence[tuple[Batch, Batch]], contexts: Sequence[Tensor] | None = None
) -> TaskBatch:
    """Pad tasks to the largest support and query sizes among them and stack them.

    Args:
        tasks: ``(support, query)`` pairs of single-task batches (``x: (n, d_in)``), all with
            the same ``d_in``, dtype and device.
        contexts: one ``(d_c,)`` category context per task (see :attr:`TaskBatch.context`).

    Returns:
        The stacked tasks; padded rows have ``x = 0``, ``y = 0`` and ``mask = 0``.

    Raises:
        DataError: no tasks, a batch that is already stacked, feature widths that disagree, or
            a number of contexts other than the number of tasks.
    """
    if not tasks:
        raise DataError("stack_tasks got no tasks; sample at least one (support, query) pair")
    if contexts is not None and len(contexts) != len(tasks):
        raise DataError(f"stack_tasks got {len(contexts)} contexts for {len(tasks)} tasks")
    return TaskBatch(
        support=_stack([support for support, _ in tasks], "support"),
        query=_stack([query for _, query in tasks], "query"),
        context=None if contexts is None else torch.stack(list(contexts)),
    )


def stack_batches(batches: Sequence[Batch]) -> Batch:
    """Pad single-task batches to the largest among them and stack them: ``x (T, n, d_in)``.

    Raises:
        DataError: no batches, or feature widths that disagree.
    """
    if not batches:
        raise DataError("stack_batches got no batches")
    return _stack(batches, "rows")


def _stack(batches: Sequence[Batch], role: str) -> Batch:
    widths = {tuple(b.x.shape[1:]) if b.x.dim() == 2 else None for b in batches}
    if None in widths or len(widths) != 1:
        raise DataError(
            f"stack_tasks needs single-task {role} batches with one feature width, got x shapes "
            f"{sorted({tuple(b.x.shape) for b in batches})}"
        )
    n = max(b.n_rows for b in batches)
    first = batches[0]
    d_in = first.x.shape[1]
    x = first.x.new_zeros((len(batches), n, d_in))
    y = first.y.new_zeros((len(batches), n))
    mask = first.mask.new_zeros((len(batches), n))
    for t, b in enumerate(batches):
        x[t, : b.n_rows] = b.x
        y[t, : b.n_rows] = b.y
        mask[t, : b.n_rows] = b.mask
    return Batch(x, y, mask)
