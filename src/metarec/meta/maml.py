"""MAML and FOMAML, the meta-learner protocol, and the base the other algorithms extend.

Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML 2017 (https://arxiv.org/abs/1703.03400). The registry of every algorithm is
:data:`metarec.meta.registry.ALGORITHMS`.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from metarec.config import MetaConfig
from metarec.errors import ConfigError
from metarec.meta import batched
from metarec.meta.compiled import CompiledGradient
from metarec.meta.inner import task_loss
from metarec.meta.spec import InnerLoop, adapt_with, scorer_params
from metarec.models.conditioning import condition, is_conditioned
from metarec.models.scorer import Params
from metarec.tasks.batch import Batch, TaskBatch


class MetaLearner(Protocol):
    """What the outer loop, evaluation and serving need from a meta-learning algorithm."""

    def adapt(self, params: Params, support: Batch) -> Params:
        """Parameters adapted to one task's support rows (``x: (n, d_in)``)."""
        ...

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """``()`` mean query loss over the T tasks, each after adapting on its support."""
        ...

    def meta_gradient(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """``(meta_loss, d meta_loss / d params)``, both detached; grads keyed like params."""
        ...


class MAML:
    """Model-Agnostic Meta-Learning (Finn et al. 2017), second order, or first order by flag.

    The meta-objective is the mean over tasks of the query loss after ``inner_steps`` steps of
    gradient descent on the support loss. Second order differentiates through the inner updates
    (Hessian-vector products included); first order (FOMAML, ``config.first_order``) detaches
    the inner gradients, which is about twice as fast and often nearly as good.

    All T tasks of a :class:`TaskBatch` adapt at once: hand-batched matmuls by default
    (``config.batching == "bmm"``, :mod:`metarec.meta.batched`), or ``torch.func.vmap`` over
    the single inner loop (``"vmap"``); both give the same meta-gradient. ``config.compile``
    compiles the pure ``torch.func`` form instead (faster per step after a long compile).

    The other algorithms subclass this one and change only :meth:`inner_loop` (what adapts,
    at which rate), :meth:`init_params` (extra meta-parameters) or :meth:`meta_gradient`. A
    subclass that overrides :meth:`adapt` itself trains through ``vmap`` (the ``bmm`` path
    cannot see inside an arbitrary ``adapt``).

    Category-conditioned params (``model.condition = "film"``: a ``film.*`` hypernetwork in
    ``params``, :mod:`metarec.models.conditioning`) start each task from its own
    initialisation ``condition(params, tasks.context[t])``, in training (both paths) as at
    launch; the meta-gradient reaches the hypernetwork through every inner update. ``adapt``
    takes the start as given: callers condition once per category
    (:func:`metarec.models.conditioning.initial_params`).

    Args:
        config: ``inner_steps``, ``inner_lr``, ``first_order``, ``batching`` and ``compile``
            are read here; the outer-loop fields belong to :func:`metarec.meta.meta_train`.

    Example:
        >>> import torch
        >>> from metarec.config import MetaConfig, ModelConfig
        >>> from metarec.meta import MAML, Batch, stack_tasks
        >>> from metarec.models import init_params
        >>> g = torch.Generator().manual_seed(0)
        >>> params = init_params(8, ModelConfig(hidden=(16, 8)), generator=g)
        >>> def rows(n):
        ...     x = torch.randn(n, 8, generator=g)
        ...     return Batch(x, (x[:, 0] > 0).float(), torch.ones(n))
        >>> tasks = stack_tasks([(rows(5), rows(10)), (rows(3), rows(10))])  # padded to 5
        >>> maml = MAML(MetaConfig(inner_steps=2, inner_lr=0.5))
        >>> loss, grads = maml.meta_gradient(params, tasks)
        >>> loss.shape, grads["layers.0.weight"].shape
        (torch.Size([]), torch.Size([16, 8]))
        >>> adapted = maml.adapt(params, rows(5))  # what serving does for a new category
        >>> sorted(adapted) == sorted(params)
        True
    """

    def __init__(self, config: MetaConfig) -> None:
        self.config = config
        self._compiled: CompiledGradient | None = None

    def init_params(self, params: Params) -> Params:
        """The meta-parameters training starts from: ``params`` plus this algorithm's own.

        MAML has none (a shallow copy); Meta-SGD adds its learned inner rates. Call it once on
        freshly initialised scorer params, before :func:`~metarec.meta.meta_train`.
        """
        return dict(params)

    def inner_loop(self, params: Params) -> InnerLoop:
        """The inner loop to run from ``params``: here the configured steps, rate and order."""
        c = self.config
        return InnerLoop(steps=c.inner_steps, lr=c.inner_lr, first_order=c.first_order)

    def adapt(self, params: Params, support: Batch) -> Params:
        """Adapt to one task's support rows (``x: (n, d_in)``) with the configured inner loop.

        Returns:
            The keys of ``params``: adapted scorer entries, extra meta-parameters unchanged.
        """
        loop = self.inner_loop(params)
        return {**params, **adapt_with(loop, scorer_params(params), support)}

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """Mean over tasks of the query loss after adaptation; differentiable in ``params``.

        Args:
            params: meta-parameters, shared by every task.
            tasks: T padded tasks.

        Returns:
            ``()`` the mean of the T per-task query losses (each task weighs the same,
            whatever its number of rows).
        """
        # The bmm path reads inner_loop(); a subclass that overrides adapt() instead would be
        # silently ignored there, so it gets the vmap path, which calls its adapt().
        if self.config.batching == "bmm" and type(self).adapt is MAML.adapt:
            start = task_starts(params, tasks)  # shared, or (T, ...) per task when conditioned
            return batched.meta_loss(self.inner_loop(start), scorer_params(start), tasks)
        return self.vmap_meta_loss(params, tasks)

    def meta_gradient(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """The meta-loss and its gradient with respect to ``params``.

        Returns:
            ``(loss, grads)``: ``loss`` is ``()``, ``grads`` has the keys and shapes of
            ``params``. Neither carries an autograd graph.
        """
        if self.config.compile:
            if self._compiled is None:
                self._compiled = CompiledGradient(self.functional_gradient)
            return self._compiled(params, tasks)
        # Plain reverse-mode autograd around the inner loop: measured 15-25% faster than
        # torch.func.grad_and_value(self.meta_loss), which wraps every op in one more level.
        with torch.enable_grad():
            leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
            loss = self.meta_loss(leaves, tasks)
            grads = torch.autograd.grad(
                loss, list(leaves.values()), allow_unused=True, materialize_grads=True
            )
        return loss.detach(), dict(zip(leaves, grads, strict=True))

    def functional_gradient(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """:meth:`meta_gradient` in pure ``torch.func`` form (what ``config.compile`` compiles:
        ``torch.compile`` cannot trace ``autograd.grad(create_graph=True)``)."""
        grads, loss = torch.func.grad_and_value(self.vmap_meta_loss)(params, tasks)
        return loss, grads

    def vmap_meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """:meth:`meta_loss` by ``torch.func.vmap`` over :meth:`adapt` (the reference path)."""
        s, q = tasks.support, tasks.query
        context = task_contexts(params, tasks)
        # Batch's fields go in as separate tensors so that vmap maps each over its task dim.
        in_dims = (None, None if context is None else 0, 0, 0, 0, 0, 0, 0)
        per_task = torch.func.vmap(self._query_loss, in_dims=in_dims)(
            params, context, s.x, s.y, s.mask, q.x, q.y, q.mask
        )
        return per_task.mean()

    def _query_loss(
        self,
        params: Params,
        context: Tensor | None,
        support_x: Tensor,
        support_y: Tensor,
        support_mask: Tensor,
        query_x: Tensor,
        query_y: Tensor,
        query_mask: Tensor,
    ) -> Tensor:
        start = params if context is None else condition(params, context)
        adapted = self.adapt(start, Batch(support_x, support_y, support_mask))
        return task_loss(scorer_params(adapted), Batch(query_x, query_y, query_mask))


def task_contexts(params: Params, tasks: TaskBatch) -> Tensor | None:
    """``(T, d_c)`` the contexts to condition on: ``tasks.context`` for conditioned params,
    None for unconditioned ones (which ignore any context).

    Raises:
        ConfigError: conditioned params but tasks without contexts.
    """
    if not is_conditioned(params):
        return None
    if tasks.context is None:
        raise ConfigError(
            "the params condition their initialisation on the category (film.* entries) but "
            "the tasks carry no category context; sample them with TaskSampler, or pass "
            "contexts= to stack_tasks"
        )
    return tasks.context


def task_starts(params: Params, tasks: TaskBatch) -> Params:
    """Where each task's inner loop starts: ``params`` (shared), or for conditioned params
    ``condition(params, tasks.context)`` (hidden layers ``(T, ...)``, one init per task)."""
    context = task_contexts(params, tasks)
    return params if context is None else condition(params, context)


class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017, section 5.2): :class:`MAML` with ``first_order`` on.

    The registry's ``"fomaml"`` key; ``MAML`` with ``config.first_order=True`` is the same
    thing. The query gradient at the adapted params is the meta-gradient, as if each inner
    update were a constant shift.

    Example:
        >>> from metarec.config import MetaConfig
        >>> FOMAML(MetaConfig()).config.first_order
        True
    """

    def __init__(self, config: MetaConfig) -> None:
        super().__init__(config.model_copy(update={"first_order": True}))
