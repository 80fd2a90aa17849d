"""Regression meta-learning: the meta core's MAML with an MSE task loss."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.config import MetaConfig
from metarec.evaluation.melu_protocol.features import RatingFeatures
from metarec.evaluation.melu_protocol.tasks import UserTask
from metarec.meta import Batch, Params, TaskBatch, adapt, stack_batches
from metarec.models.scorer import score

_CHUNK = 128  # users adapted at once at evaluation (bounds the padded (T, n, d) tensors)


# ---- regression meta-learning (the meta core's MAML with an MSE task loss) -------------------


def rating_loss(params: Params, batch: Batch) -> Tensor:
    """Masked mean squared error of the scorer's output against ``batch.y`` (rating - mu).

    Returns:
        ``()`` mean over real rows; 0 for an all-padding task.
    """
    per_row = F.mse_loss(score(params, batch.x), batch.y, reduction="none")
    return (per_row * batch.mask).sum() / batch.mask.sum().clamp_min(1.0)


class RatingMAML:
    """MAML (Finn et al., ICML 2017) on rating regression: a :class:`~metarec.meta.MetaLearner`.

    Identical to :class:`metarec.meta.MAML` except for the task loss (MSE on ``rating - mu``
    instead of BCE on positives and negatives): inner steps from ``config``, tasks adapted at
    once with ``vmap``, second order unless ``config.first_order``.
    """

    def __init__(self, config: MetaConfig) -> None:
        self.config = config

    def adapt(self, params: Params, support: Batch) -> Params:
        """Adapt to one user's support rows."""
        return adapt(
            params,
            support,
            steps=self.config.inner_steps,
            lr=self.config.inner_lr,
            first_order=self.config.first_order,
            loss=rating_loss,
        )

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """``()`` mean over tasks of the query MSE after adapting on the support."""

        def one(sx: Tensor, sy: Tensor, sm: Tensor, qx: Tensor, qy: Tensor, qm: Tensor) -> Tensor:
            return rating_loss(self.adapt(params, Batch(sx, sy, sm)), Batch(qx, qy, qm))

        s, q = tasks.support, tasks.query
        return torch.func.vmap(one)(s.x, s.y, s.mask, q.x, q.y, q.mask).mean()

    def meta_gradient(self, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
        """The meta-loss and its gradient, both detached."""
        return _loss_and_grad(self.meta_loss, params, tasks)


class PooledRatings(RatingMAML):
    """The decisive ablation: the same scorer fitted to every row of the training users at once
    (support and query pooled, no inner loop in training), adapted at test with the same inner
    loop and budget as :class:`RatingMAML`."""

    def meta_loss(self, params: Params, tasks: TaskBatch) -> Tensor:
        """``()`` mean over tasks of the MSE of all their rows, without adaptation."""
        s, q = tasks.support, tasks.query
        x, y, mask = (torch.cat(pair, dim=1) for pair in ((s.x, q.x), (s.y, q.y), (s.mask, q.mask)))
        per_row = F.mse_loss(score(params, x), y, reduction="none")  # (T, n_s + n_q)
        return ((per_row * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean()


def _loss_and_grad(
    loss_fn: Callable[[Params, TaskBatch], Tensor], params: Params, tasks: TaskBatch
) -> tuple[Tensor, Params]:
    with torch.enable_grad():
        leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
        loss = loss_fn(leaves, tasks)
        grads = torch.autograd.grad(
            loss, list(leaves.values()), allow_unused=True, materialize_grads=True
        )
    return loss.detach(), dict(zip(leaves, grads, strict=True))


def predict_ratings(
    learner: RatingMAML,
    params: Params,
    features: RatingFeatures,
    tasks: Sequence[UserTask],
    *,
    adapt: bool,
    own_in_stats: bool = False,
) -> list[np.ndarray]:
    """Predicted query ratings of each task, after adapting on its support (or not).

    Returns:
        One ``(n_q,)`` array per task, in order.
    """
    out: list[np.ndarray] = []
    for start in range(0, len(tasks), _CHUNK):
        chunk = tasks[start : start + _CHUNK]
        pairs = [features.rows(t, own_in_stats=own_in_stats) for t in chunk]
        support = stack_batches([s for s, _ in pairs])
        query = stack_batches([q for _, q in pairs])
        if adapt and learner.config.inner_steps > 0:
            adapted = torch.func.vmap(lambda x, y, m: learner.adapt(params, Batch(x, y, m)))(
                support.x, support.y, support.mask
            )
            with torch.no_grad():
                predicted = torch.func.vmap(score)(
                    {k: v.detach() for k, v in adapted.items()}, query.x
                )
        else:
            with torch.no_grad():
                predicted = score(params, query.x)
        for row, task in enumerate(chunk):
            out.append(predicted[row, : len(task.query_items)].double().numpy() + features.mu)
    return out
