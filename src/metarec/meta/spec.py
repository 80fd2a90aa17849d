"""An algorithm's inner loop as data, run through the single inner loop :func:`~.inner.adapt`.

MAML, FOMAML, Meta-SGD, ANIL and MeLU-style local layers differ only in *what* their inner loop
does: how many steps, which learning rates (one float, or one learned tensor per parameter),
which order, and which scorer layers adapt. :class:`InnerLoop` says that, and two places read
it: :func:`adapt_with` runs it through :func:`metarec.meta.inner.adapt` (serving, evaluation,
the ``vmap`` training path), and :mod:`metarec.meta.batched` evaluates the same updates
hand-batched over tasks for training. Tests hold the two equal to float64 precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from metarec.errors import ConfigError
from metarec.meta.inner import adapt
from metarec.models.scorer import Params
from metarec.tasks.batch import Batch

SCORER_PREFIX = "layers."
"""The scorer's own parameters are ``layers.{i}.weight`` / ``layers.{i}.bias``; any other key
is an algorithm's meta-parameter (Meta-SGD's ``lr.layers.{i}.weight``) that scoring ignores."""


@dataclass(frozen=True)
class InnerLoop:
    """``steps`` steps of ``θ ← θ - lr ⊙ ∇θ L_support(θ)`` on the layers from ``first_layer`` on.

    Attributes:
        steps: inner gradient steps, >= 0.
        lr: one rate, or one tensor per scorer parameter (broadcastable to it; the fixed
            layers' entries are not read).
        first_order: detach the inner gradients (FOMAML).
        first_layer: scorer layers before it stay fixed in the inner loop; their output is the
            adapted layers' input (ANIL's body, MeLU's embedding layers). 0 adapts all.
    """

    steps: int
    lr: float | Params
    first_order: bool
    first_layer: int = 0


def scorer_params(params: Params) -> Params:
    """The entries the scorer reads (``layers.*``), without an algorithm's extra meta-params."""
    return {name: value for name, value in params.items() if name.startswith(SCORER_PREFIX)}


def n_layers(params: Params) -> int:
    """Number of linear layers of the scorer the params describe."""
    return sum(1 for name in params if name.startswith(SCORER_PREFIX) and name.endswith(".weight"))


def check_first_layer(loop: InnerLoop, params: Params) -> None:
    """Raise unless ``loop`` leaves at least one layer of ``params`` to adapt.

    Raises:
        ConfigError: ``first_layer`` is at or past the last layer.
    """
    depth = n_layers(params)
    if not 0 <= loop.first_layer < depth:
        raise ConfigError(
            f"the inner loop would adapt layers {loop.first_layer}.. of a {depth}-layer scorer, "
            "i.e. none; lower meta.melu_frozen_layers or raise meta.anil_head_layers "
            "(at most the number of layers), or add model.hidden layers"
        )


def embed(params: Params, x: Tensor, first_layer: int) -> Tensor:
    """``(..., d_in)`` rows through the fixed layers ``0 .. first_layer - 1`` (ReLU after each).

    Returns:
        ``(..., width)`` the input of layer ``first_layer``; ``x`` itself when it is 0.
    """
    h = x
    for i in range(first_layer):
        h = F.relu(F.linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"]))
    return h


def adapt_with(loop: InnerLoop, params: Params, support: Batch) -> Params:
    """Run ``loop`` on one task's support rows through :func:`metarec.meta.inner.adapt`.

    With ``first_layer > 0`` the fixed layers run once, and the adapted layers are renumbered
    from 0 and adapted as a scorer of their own on the fixed layers' output: the scorer is an
    MLP, so its tail is one too, and the single inner loop needs no layer mask.

    Args:
        loop: what to run.
        params: scorer params (``layers.*`` only; see :func:`scorer_params`).
        support: one task's rows, ``x: (n, d_in)``.

    Returns:
        Params with the same keys as ``params``; the fixed layers are the input tensors.

    Raises:
        ConfigError: no layer left to adapt (see :func:`check_first_layer`).
    """
    check_first_layer(loop, params)
    if loop.first_layer == 0:
        return adapt(params, support, steps=loop.steps, lr=loop.lr, first_order=loop.first_order)
    head = {
        _shift(name, -loop.first_layer): value
        for name, value in params.items()
        if _layer(name) >= loop.first_layer
    }
    lr = loop.lr
    if isinstance(lr, dict):
        lr = {
            _shift(name, -loop.first_layer): value
            for name, value in lr.items()
            if _layer(name) >= loop.first_layer
        }
    hidden = Batch(embed(params, support.x, loop.first_layer), support.y, support.mask)
    adapted = adapt(head, hidden, steps=loop.steps, lr=lr, first_order=loop.first_order)
    return {**params, **{_shift(name, loop.first_layer): value for name, value in adapted.items()}}


def _layer(name: str) -> int:
    return int(name.split(".")[1])


def _shift(name: str, by: int) -> str:
    """``layers.{i}.weight`` renamed ``layers.{i + by}.weight``."""
    prefix, index, rest = name.split(".", 2)
    return f"{prefix}.{int(index) + by}.{rest}"
