"""The scorer: the seed's three-layer MLP head, written as a pure function of a params dict.

``score(params, x)`` is what the meta-learning core differentiates (through ``torch.func``) and
what serving calls; :class:`Scorer` is the same network as an ``nn.Module``, so that
``torch.func.functional_call(Scorer(d_in, config), params, (x,))`` equals ``score(params, x)``.
Parameter names follow the module: ``layers.{i}.weight`` ``(d_out, d_in)`` and
``layers.{i}.bias`` ``(d_out,)`` for ``i`` in ``0 .. len(config.hidden)``.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarec.config import ModelConfig

Params = dict[str, Tensor]
"""Model parameters by name (``layers.0.weight`` ...), the currency of models and meta-learning."""


def layer_sizes(d_in: int, config: ModelConfig) -> list[int]:
    """Widths from input to the single output logit, e.g. ``[96, 64, 32, 1]``."""
    return [d_in, *config.hidden, 1]


def layer_count(params: Params) -> int:
    """Number of linear layers in ``params``.

    Counted from the ``layers.{i}.weight`` keys, not ``len(params)``: params may carry an
    algorithm's own meta-parameters beside the scorer's (Meta-SGD's ``lr.*`` rates).
    """
    return sum(1 for name in params if name.startswith("layers.") and name.endswith(".weight"))


def init_params(
    d_in: int,
    config: ModelConfig,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Fresh parameters, drawn as ``nn.Linear`` draws them but from an explicit generator.

    Each weight and bias is uniform in ``±1/sqrt(fan_in)`` (PyTorch's ``nn.Linear`` default), so
    the functional scorer starts where the module would.

    Args:
        d_in: width of the feature rows the scorer reads.
        config: hidden widths.
        generator: the only source of randomness (no global RNG).
        dtype: parameter dtype; tests use float64 for finite differences.

    Returns:
        ``{"layers.{i}.weight": (d_out, d_in), "layers.{i}.bias": (d_out,)}``.
    """
    params: Params = {}
    sizes = layer_sizes(d_in, config)
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        bound = 1.0 / math.sqrt(fan_in)
        for name, shape in (("weight", (fan_out, fan_in)), ("bias", (fan_out,))):
            u = torch.rand(shape, generator=generator, dtype=dtype)
            params[f"layers.{i}.{name}"] = (2.0 * u - 1.0) * bound
    return params


def score(params: Params, x: Tensor) -> Tensor:
    """Logits of the MLP: ReLU between layers, none after the last.

    One ``addmm`` chain over all rows, so scoring 1e5 items is a handful of matrix products.

    Args:
        params: as returned by :func:`init_params` (or adapted from it).
        x: ``(..., d_in)`` feature rows; any leading dims.

    Returns:
        ``(...)`` logits (apply a sigmoid for probabilities).
    """
    n_layers = layer_count(params)
    h = x
    for i in range(n_layers):
        h = F.linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
        if i < n_layers - 1:
            h = F.relu(h)
    return h.squeeze(-1)


class Scorer(nn.Module):
    """The same network as :func:`score`, as a module (for ``functional_call`` and inspection).

    Args:
        d_in: width of the feature rows.
        config: hidden widths.
    """

    def __init__(self, d_in: int, config: ModelConfig) -> None:
        super().__init__()
        sizes = layer_sizes(d_in, config)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., d_in)`` rows to ``(...)`` logits."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x.squeeze(-1)
