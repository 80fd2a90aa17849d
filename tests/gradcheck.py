"""Shared gradient checks for the meta-learning tests: central finite differences of a loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from metarec.meta import Params


def flat(params: Params) -> Tensor:
    """Every parameter flattened and concatenated, in the dict's order."""
    return torch.cat([p.reshape(-1) for p in params.values()])


def rel_err(a: Tensor, b: Tensor) -> float:
    """``|a - b| / |b|``."""
    return ((a - b).norm() / b.norm()).item()


def finite_differences(
    loss: Callable[[Params], Tensor], params: Params, eps: float = 1e-6
) -> Tensor:
    """Central differences of ``loss`` with respect to every entry of ``params``, in the order of
    :func:`flat` (use float64 params: eps is 1e-6)."""
    out = []
    for name, p in params.items():
        for i in range(p.numel()):
            shifted = []
            for sign in (1.0, -1.0):
                q = {k: v.clone() for k, v in params.items()}
                q[name].view(-1)[i] += sign * eps
                shifted.append(loss(q))
            out.append((shifted[0] - shifted[1]) / (2 * eps))
    return torch.stack(out)
