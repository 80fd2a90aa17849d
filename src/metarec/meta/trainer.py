"""The outer loop: Adam on the meta-parameters, gradients from a :class:`MetaLearner`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from metarec.config import MetaConfig
from metarec.errors import ConfigError, TrainingDivergedError
from metarec.meta.batch import Params, TaskBatch
from metarec.meta.maml import MetaLearner

Sampler = Callable[[int, torch.Generator], TaskBatch]
"""``sample(meta_batch_size, generator)``: fresh tasks, random only through ``generator``."""


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
        """What a checkpoint needs to continue this run exactly: params, Adam, step, RNG."""
        return {
            "params": self.snapshot(),
            "optimizer": self.optimizer.state_dict(),
            "rng_state": self.generator.get_state(),
            "step": self.step,
            "best_params": self.best_params,
            "best_score": self.best_score,
            "history": list(self.history),
        }


def meta_train(
    params: Params,
    learner: MetaLearner,
    sample: Sampler,
    config: MetaConfig,
    *,
    generator: torch.Generator,
    validate: Callable[[Params], float] | None = None,
    validate_every: int = 50,
    progress: bool = True,
) -> tuple[Params, list[dict[str, float]]]:
    """Meta-train ``params`` for ``config.meta_steps`` steps of Adam on the learner's meta-loss.

    Deterministic given the generator's state: it is the only randomness (tasks are drawn with
    it, and the meta-gradient itself is deterministic on CPU).

    Args:
        params: initial meta-parameters (not mutated).
        learner: supplies ``meta_gradient``, e.g. :class:`~metarec.meta.maml.MAML`.
        sample: draws ``config.meta_batch_size`` tasks per step from ``generator``.
        config: ``meta_steps``, ``meta_batch_size``, ``outer_lr`` and ``weight_decay``.
        generator: the run's RNG.
        validate: scores params on meta-validation tasks, higher is better; when given, it runs
            every ``validate_every`` steps and after the last step, and the best params win.
        validate_every: steps between validations.
        progress: show a progress bar with the running meta-loss (on stderr).

    Returns:
        ``(params, history)``: the best-validated params (the final ones without ``validate``),
        detached; and one record per step ``{"step", "loss"}`` plus ``"val"`` where validated.

    Raises:
        ConfigError: ``validate_every < 1``.
        TrainingDivergedError: the meta-loss became NaN or infinite.
    """
    if validate_every < 1:
        raise ConfigError(f"validate_every must be >= 1, got {validate_every}")
    state = TrainState.start(params, config, generator)
    running: float | None = None
    bar = tqdm(range(config.meta_steps), desc="meta-train", disable=not progress)
    for _ in bar:
        record = _meta_step(state, learner, sample, config.meta_batch_size)
        last = state.step == config.meta_steps
        if validate is not None and (state.step % validate_every == 0 or last):
            record["val"] = _validate(state, validate)
        # An exponential average: the raw per-step loss is too noisy to read on a bar.
        running = record["loss"] if running is None else 0.9 * running + 0.1 * record["loss"]
        bar.set_postfix(loss=f"{running:.4f}", refresh=False)  # drawn at tqdm's own pace
    bar.close()  # draws the final state, running loss included
    best = state.best_params if state.best_params is not None else state.snapshot()
    return best, state.history


def _meta_step(
    state: TrainState, learner: MetaLearner, sample: Sampler, meta_batch_size: int
) -> dict[str, float]:
    tasks = sample(meta_batch_size, state.generator)
    # Detached views: the meta-gradient is taken by torch.func, not by the leaves' autograd.
    loss, grads = learner.meta_gradient(
        {name: p.detach() for name, p in state.params.items()}, tasks
    )
    if not torch.isfinite(loss):
        raise TrainingDivergedError(
            f"meta-loss is {loss.item()} at step {state.step + 1}; lower meta.outer_lr or "
            "meta.inner_lr, or check the features for NaN or huge values"
        )
    for name, p in state.params.items():
        p.grad = grads[name]
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    record: dict[str, float] = {"step": state.step, "loss": loss.item()}
    state.history.append(record)
    return record


def _validate(state: TrainState, validate: Callable[[Params], float]) -> float:
    candidate = state.snapshot()
    score = float(validate(candidate))
    if score > state.best_score:
        state.best_score, state.best_params = score, candidate
    return score
