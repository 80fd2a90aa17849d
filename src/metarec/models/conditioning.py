"""Category-conditioned initialisation: FiLM on the hidden units of the meta-initialisation.

Perez, Strub, de Vries, Dumoulin and Courville, "FiLM: Visual Reasoning with a General
Conditioning Layer", AAAI 2018 (https://arxiv.org/abs/1709.07871); modulating a MAML
initialisation with FiLM follows Vuorio, Sun, Hu and Lim, "Multimodal Model-Agnostic
Meta-Learning via Task-Aware Modulation", NeurIPS 2019 (https://arxiv.org/abs/1910.13616), which
computes the modulation from the support set. Here it comes from what is known about a new
category *before* any interaction (its *context*, :attr:`metarec.tasks.CategoryData.context`:
the mean attribute features of its items, whose category block is its path in the tree, and,
with text features, the embedding of its name and description).

A small hypernetwork reads the context ``c`` and gives every hidden unit ``j`` of every hidden
layer ``i`` a scale and a shift::

    h_ij = γ_ij(c) · (W_i x + b_i)_j + β_ij(c),  γ = 1 + Δγ,  [Δγ, β] = F2 relu(F1 c + f1) + f2

FiLM of a linear layer's output is again a linear layer, so it folds into the parameters:
``W'_i = γ_i ⊙ W_i`` (row by row) and ``b'_i = γ_i ⊙ b_i + β_i``. :func:`condition` returns those
folded params: ordinary scorer params ``θ_c``, one set per category. The inner loop, the
hand-batched training path, the folded-first-layer ranking path and serving read them unchanged;
only the point adaptation starts from differs per category, so at zero shots ``θ_c`` is already
a zero-shot model of its own. The hypernetwork's weights ride in the params dict as ``film.*``;
they are meta-parameters: the outer loop's gradient reaches them through ``θ_c`` and through
every inner update (second order when the algorithm is), like any weight of the initialisation.

The hypernetwork's output layer starts at zero: a fresh model starts exactly at the
unconditioned initialisation (``γ = 1``, ``β = 0``), and meta-training learns how far to move it.

Example:
    >>> import torch
    >>> from metarec.config import ModelConfig
    >>> from metarec.models import init_params
    >>> config = ModelConfig(hidden=(8, 4), condition="film", film_hidden=6)
    >>> g = torch.Generator().manual_seed(0)
    >>> params = with_conditioning(init_params(10, config, generator=g), config, 3, generator=g)
    >>> sorted(k for k in params if k.startswith(FILM_PREFIX))
    ['film.0.bias', 'film.0.weight', 'film.1.bias', 'film.1.weight']
    >>> start = condition(params, torch.ones(3))  # fresh: exactly the unconditioned init
    >>> torch.equal(start["layers.0.weight"], params["layers.0.weight"]), "film.0.bias" in start
    (True, False)
    >>> condition(params, torch.ones(5, 3))["layers.1.weight"].shape  # one init per task
    torch.Size([5, 4, 8])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from metarec.config import ModelConfig
from metarec.errors import ConfigError
from metarec.models.scorer import Params, layer_count

FILM_PREFIX = "film."
"""The hypernetwork's weights: ``film.0.weight (film_hidden, d_c)``, ``film.0.bias
(film_hidden,)``, ``film.1.weight (2U, film_hidden)``, ``film.1.bias (2U,)`` with ``U`` the
scorer's hidden units (``sum(model.hidden)``). Scoring and the inner loop never read them."""


def init_film(
    context_dim: int,
    config: ModelConfig,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Fresh hypernetwork weights: the first layer as ``nn.Linear`` draws it, the second zero.

    Args:
        context_dim: ``d_c``, the width of a category's context vector.
        config: ``hidden`` (the scorer's hidden widths) and ``film_hidden``.
        generator: the only source of randomness.
        dtype: parameter dtype (tests use float64).

    Returns:
        The four ``film.*`` tensors (see :data:`FILM_PREFIX`).
    """
    units, width = sum(config.hidden), config.film_hidden
    bound = 1.0 / math.sqrt(max(context_dim, 1))

    def uniform(*shape: int) -> Tensor:
        return (2.0 * torch.rand(shape, generator=generator, dtype=dtype) - 1.0) * bound

    return {
        f"{FILM_PREFIX}0.weight": uniform(width, context_dim),
        f"{FILM_PREFIX}0.bias": uniform(width),
        # zero: the conditioned init starts equal to the plain one (γ = 1, β = 0)
        f"{FILM_PREFIX}1.weight": torch.zeros(2 * units, width, dtype=dtype),
        f"{FILM_PREFIX}1.bias": torch.zeros(2 * units, dtype=dtype),
    }


def with_conditioning(
    params: Params, config: ModelConfig, context_dim: int, *, generator: torch.Generator
) -> Params:
    """``params`` plus the hypernetwork when ``config.condition == "film"``, else unchanged.

    Hypernetwork weights already present (a trained model's) are kept.
    """
    if config.condition == "none" or is_conditioned(params):
        return params
    dtype = params["layers.0.weight"].dtype
    return {**params, **init_film(context_dim, config, generator=generator, dtype=dtype)}


def is_conditioned(params: Params) -> bool:
    """Whether ``params`` carry a hypernetwork (a meta-initialisation to condition first)."""
    return any(name.startswith(FILM_PREFIX) for name in params)


def film_coefficients(params: Params, context: Tensor) -> tuple[Tensor, Tensor]:
    """The hypernetwork's scales and shifts for one or several contexts.

    Args:
        params: params with the ``film.*`` entries.
        context: ``(..., d_c)`` category contexts.

    Returns:
        ``(gamma, beta)``, each ``(..., U)``: hidden layer 0's units first, then layer 1's ...
    """
    hidden = F.relu(F.linear(context, params["film.0.weight"], params["film.0.bias"]))
    delta, beta = F.linear(hidden, params["film.1.weight"], params["film.1.bias"]).chunk(2, -1)
    return 1.0 + delta, beta


def condition(params: Params, context: Tensor) -> Params:
    """The meta-initialisation of one category (or of T tasks): FiLM folded into the weights.

    Differentiable in ``params`` (the scorer's weights and the hypernetwork's) and in
    ``context``; pure.

    Args:
        params: conditioned meta-parameters (``layers.*``, ``film.*``, and any other algorithm
            entries such as Meta-SGD's ``lr.*``).
        context: ``(d_c,)`` one category's context, or ``(T, d_c)`` one per task.

    Returns:
        ``params`` without the ``film.*`` entries, hidden layers modulated:
        ``layers.{i}.weight`` ``(..., d_out, d_in)`` and ``layers.{i}.bias`` ``(..., d_out)``
        where ``...`` is the context's leading shape; the output layer and other entries are
        the input tensors.

    Raises:
        ConfigError: ``params`` have no hypernetwork, or one sized for other hidden layers.
    """
    if not is_conditioned(params):
        raise ConfigError(
            "condition() needs params with a FiLM hypernetwork (film.*); these have none: "
            "they are unconditioned or already conditioned to one category. Train with "
            "model.condition = 'film', and condition a model's meta-params once per category"
        )
    gamma, beta = film_coefficients(params, context)
    widths = [params[f"layers.{i}.weight"].shape[0] for i in range(layer_count(params) - 1)]
    if sum(widths) != gamma.shape[-1]:
        raise ConfigError(
            f"the FiLM hypernetwork modulates {gamma.shape[-1]} hidden units but the scorer has "
            f"{sum(widths)} ({widths}); the params mix two models: retrain or reload the model"
        )
    out = {name: value for name, value in params.items() if not name.startswith(FILM_PREFIX)}
    start = 0
    for i, width in enumerate(widths):
        g, b = gamma[..., start : start + width], beta[..., start : start + width]
        out[f"layers.{i}.weight"] = g.unsqueeze(-1) * params[f"layers.{i}.weight"]
        out[f"layers.{i}.bias"] = g * params[f"layers.{i}.bias"] + b
        start += width
    return out


def initial_params(params: Params, context: Tensor | None) -> Params:
    """Where a category's adaptation starts: ``condition(params, context)`` for a conditioned
    model, ``params`` themselves otherwise.

    Raises:
        ConfigError: conditioned params but no context.
    """
    if not is_conditioned(params):
        return params
    if context is None:
        raise ConfigError(
            "the model conditions its initialisation on the category (model.condition = "
            "'film') but no category context was given; build the category with "
            "Catalog.category_data (CategoryData.context) or pass tasks from TaskSampler"
        )
    return condition(params, context)
