"""The inner loop of an :class:`~.spec.InnerLoop`, hand-batched over T tasks (training only).

Why it exists: on the reference workload (DESIGN.md) the meta-gradient is bound by per-op
overhead, not arithmetic. ``vmap`` over :func:`~.inner.adapt` wraps every op of the inner
``torch.func.grad`` in two functorch levels; here the scorer's inner gradient is written out by
hand (forward, then the backward pass as matrix products) for all T tasks at once, with batched
matmuls once the tasks' params differ, and the outer derivative is plain autograd over that:
one level. Differentiating the hand-written gradient gives the second-order terms exactly (the
ReLU masks are constants, as ReLU'' = 0 almost everywhere), as ``torch.func`` does.

It is a second implementation of the updates :func:`~.spec.adapt_with` makes, kept for speed
and for meta-training only (``MetaConfig.batching == "bmm"``, the default); evaluation and
serving adapt through :func:`~.inner.adapt` alone, so what a launch runs is what ``vmap`` would
train. ``tests/meta/test_batched.py`` holds the two equal in float64, padding included. It
reads the scorer's form (an MLP, ReLU between layers, masked mean BCE on the logit): a change
there must change both. The starting params may be shared by the tasks or differ per task (a
category-conditioned initialisation, :func:`metarec.models.conditioning.condition`, gives each
task its own: ``(T, d_out, d_in)`` weights); the matmuls take either.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.meta.spec import InnerLoop, check_first_layer, n_layers
from metarec.models.scorer import Params
from metarec.tasks.batch import Batch, TaskBatch


def meta_loss(loop: InnerLoop, params: Params, tasks: TaskBatch) -> Tensor:
    """Mean over tasks of the query loss after each task's inner loop; differentiable.

    Args:
        loop: the algorithm's inner loop.
        params: scorer params (``layers.*``), shared by the tasks (``(d_out, d_in)``) or one
            per task (``(T, d_out, d_in)``, entry by entry); tensors of ``loop.lr`` (Meta-SGD's
            learned rates) get gradients too.
        tasks: T padded tasks.

    Returns:
        ``()`` the mean of the T masked-mean query BCE losses.
    """
    weights, biases = _adapted_layers(loop, params, tasks.support)
    q = tasks.query
    logit = _forward(_embed(params, q.x, loop.first_layer), weights, biases)  # (T, n_query)
    per_row = F.binary_cross_entropy_with_logits(logit, q.y, reduction="none") * q.mask
    return (per_row.sum(-1) / q.mask.sum(-1).clamp_min(1.0)).mean()


def adapt_tasks(loop: InnerLoop, params: Params, support: Batch) -> Params:
    """Every task's adapted params, stacked: what ``vmap(adapt_with)`` returns.

    Args:
        loop: the algorithm's inner loop.
        params: scorer params (``layers.*``), shared or per task (see :func:`meta_loss`).
        support: stacked support rows, ``x: (T, n, d_in)``.

    Returns:
        The keys of ``params``, each with a leading task dim ``(T, ...)`` (fixed layers are
        expanded views of the shared tensors).
    """
    weights, biases = _adapted_layers(loop, params, support)
    t = support.x.shape[0]
    out = {
        name: value if is_per_task(name, value) else value.expand(t, *value.shape)
        for name, value in params.items()
    }
    for offset, (w, b) in enumerate(zip(weights, biases, strict=True)):
        i = loop.first_layer + offset
        out[f"layers.{i}.weight"] = w.expand(t, *w.shape[-2:])
        out[f"layers.{i}.bias"] = b.expand(t, *b.shape[-1:])
    return out


def _adapted_layers(
    loop: InnerLoop, params: Params, support: Batch
) -> tuple[list[Tensor], list[Tensor]]:
    """Weights and biases of the adapted layers after ``loop.steps`` steps on every task.

    Shared ``(d_out, d_in)`` tensors until the first update, ``(T, d_out, d_in)`` after.
    """
    check_first_layer(loop, params)
    layers = range(loop.first_layer, n_layers(params))
    weights = [params[f"layers.{i}.weight"] for i in layers]
    biases = [params[f"layers.{i}.bias"] for i in layers]
    rates = [(_rate(loop, f"layers.{i}.weight"), _rate(loop, f"layers.{i}.bias")) for i in layers]
    h = _embed(params, support.x, loop.first_layer)  # the fixed layers run once
    # d(masked mean)/d(row loss): padded rows weigh exactly 0, so their gradients are 0 too
    row_weight = support.mask / support.mask.sum(-1, keepdim=True).clamp_min(1.0)
    # First order: the update's gradient is a constant (no graph at all), fixed layers included.
    h_inner = h.detach() if loop.first_order else h
    for _ in range(loop.steps):
        with torch.no_grad() if loop.first_order else nullcontext():
            pieces = _backward(h_inner, support.y, row_weight, weights, biases)
        weights = [
            _step_weight(w, delta, inputs, lr)
            for w, (delta, inputs), (lr, _) in zip(weights, pieces, rates, strict=True)
        ]
        biases = [
            _step(b, delta.sum(1), lr)
            for b, (delta, _), (_, lr) in zip(biases, pieces, rates, strict=True)
        ]
    return weights, biases


def _backward(
    h: Tensor, y: Tensor, row_weight: Tensor, weights: list[Tensor], biases: list[Tensor]
) -> list[tuple[Tensor, Tensor]]:
    """The backward pass of every task's masked mean BCE, by hand, for each adapted layer.

    Args:
        h: ``(T, n, d)`` the first adapted layer's input.
        y: ``(T, n)`` targets; ``row_weight``: ``(T, n)`` mask / number of real rows.

    Returns:
        Per layer ``(delta, inputs)``: ``delta (T, n, d_out)`` is the loss's gradient w.r.t.
        the layer's output and ``inputs (T, n, d_in)`` its input, so that the weight gradient
        is ``delta^T inputs`` and the bias gradient ``delta`` summed over rows.
    """
    inputs = [h]
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        inputs.append(F.relu(_linear(inputs[-1], w, b)))
    logit = _linear(inputs[-1], weights[-1], biases[-1]).squeeze(-1)
    delta = ((torch.sigmoid(logit) - y) * row_weight).unsqueeze(-1)  # (T, n, 1) dL/dlogit
    deltas = [delta]
    for i in range(len(weights) - 1, 0, -1):
        # ReLU's backward: keep the gradient where ReLU's output is > 0. The aten op is what
        # autograd runs for ReLU: one fused op, and its derivative is itself.
        delta = torch.ops.aten.threshold_backward(torch.matmul(delta, weights[i]), inputs[i], 0.0)
        deltas.insert(0, delta)
    return list(zip(deltas, inputs, strict=True))


def _embed(params: Params, x: Tensor, first_layer: int) -> Tensor:
    """:func:`~.spec.embed` for shared or per-task fixed layers: ``(T, n, d_in)`` rows in."""
    h = x
    for i in range(first_layer):
        h = F.relu(_linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
    return h


def is_per_task(name: str, value: Tensor) -> bool:
    """Whether a scorer entry carries a leading task dim (without: weights 2-D, biases 1-D)."""
    return value.dim() > (2 if name.endswith(".weight") else 1)


def _forward(h: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """``(T, n, d)`` rows through the adapted layers: ``(T, n)`` logits."""
    for w, b in zip(weights[:-1], biases[:-1], strict=True):
        h = F.relu(_linear(h, w, b))
    return _linear(h, weights[-1], biases[-1]).squeeze(-1)


def _linear(h: Tensor, w: Tensor, b: Tensor) -> Tensor:
    if w.dim() == 2:  # shared by every task: one matmul over all T * n rows
        return F.linear(h, w, b)
    return torch.baddbmm(b.unsqueeze(1), h, w.mT)


def _step_weight(w: Tensor, delta: Tensor, inputs: Tensor, lr: float | Tensor) -> Tensor:
    """``w - lr * delta^T inputs``: ``(T, d_out, d_in)`` (``w`` shared or per task)."""
    if isinstance(lr, Tensor):
        return w - lr * torch.bmm(delta.mT, inputs)
    return torch.baddbmm(w, delta.mT, inputs, alpha=-lr)  # gradient and update in one op


def _step(value: Tensor, grad: Tensor, lr: float | Tensor) -> Tensor:
    if isinstance(lr, Tensor):
        return value - lr * grad
    return torch.add(value, grad, alpha=-lr)  # one fused op instead of mul + sub


def _rate(loop: InnerLoop, name: str) -> float | Tensor:
    return loop.lr[name] if isinstance(loop.lr, dict) else loop.lr
