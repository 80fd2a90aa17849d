"""Everything a meta-training run changes: what the outer loop updates and a checkpoint saves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from metarec.config import MetaConfig
from metarec.models.scorer import Params


@dataclass
class TrainState:
    """Everything a meta-training run changes, so that it can be inspected or checkpointed.

    Attributes:
        params: the meta-parameters, leaf tensors the optimizer updates in place.
        optimizer: Adam over ``params.values()``.
        generator: the run's only source of randomness (task sampling).
        step: meta-steps taken so far.
        best_params: detached copy of the params with the best validation score so far.
        best_score: that score (higher is better); ``-inf`` before the first validation.
        history: one record per step: ``step``, ``loss`` and, on validation steps, ``val``.
    """

    params: Params
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    best_params: Params | None = None
    best_score: float = -math.inf
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def start(cls, params: Params, config: MetaConfig, generator: torch.Generator) -> TrainState:
        """A fresh state whose params are copies of ``params`` (the caller's stay untouched)."""
        leaves = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        optimizer = torch.optim.Adam(
            leaves.values(), lr=config.outer_lr, weight_decay=config.weight_decay
        )
        return cls(params=leaves, optimizer=optimizer, generator=generator)

    def snapshot(self) -> Params:
        """Detached copies of the current params (safe to keep while training goes on)."""
        return {name: p.detach().clone() for name, p in self.params.items()}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue this run exactly: params, Adam, step, RNG (in
        memory; :func:`metarec.meta.checkpoint.checkpoint_bytes` writes it without pickle)."""
        return {
            "params": self.snapshot(),
            "optimizer": self.optimizer.state_dict(),
            "rng_state": self.generator.get_state(),
            "step": self.step,
            "best_params": self.best_params,
            "best_score": self.best_score,
            "history": list(self.history),
        }
