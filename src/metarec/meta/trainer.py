"""The outer loop: Adam on the meta-parameters, gradients from a :class:`MetaLearner`.

The same loop runs in one process or on several ranks (:class:`~metarec.meta.distributed.World`:
each rank computes the meta-gradient of its shard of every meta-batch, one all-reduce makes the
mean), and checkpoints and resumes (:class:`~metarec.meta.checkpoint.Checkpointing`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from metarec.config import MetaConfig
from metarec.errors import CheckpointError, ConfigError, TrainingDivergedError
from metarec.meta.checkpoint import Checkpointing, checkpoint_bytes, restore, save_checkpoint
from metarec.meta.distributed import World, params_digest
from metarec.meta.maml import MetaLearner
from metarec.meta.state import TrainState
from metarec.models.scorer import Params
from metarec.progress import progress_bar
from metarec.tasks.batch import TaskBatch

Sampler = Callable[[int, torch.Generator], TaskBatch]
"""``sample(meta_batch_size, generator)``: fresh tasks, random only through ``generator``."""


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
    checkpoint: Checkpointing | None = None,
    world: World | None = None,
) -> tuple[Params, list[dict[str, float]]]:
    """Meta-train ``params`` for ``config.meta_steps`` steps of Adam on the learner's meta-loss.

    Deterministic given the generator's state: it is the only randomness (tasks are drawn with
    it, and the meta-gradient itself is deterministic on CPU). On several ranks every rank
    draws the same global meta-batch and the all-reduced gradient equals the single-process one
    up to float summation order; rank 0 alone validates (its score is broadcast, so every rank
    keeps the same best params), checkpoints and shows progress.

    Args:
        params: initial meta-parameters (not mutated).
        learner: supplies ``meta_gradient``, e.g. :class:`~metarec.meta.maml.MAML`.
        sample: draws ``config.meta_batch_size`` tasks per step from ``generator``.
        config: ``meta_steps``, ``meta_batch_size``, ``outer_lr`` and ``weight_decay``.
        generator: the run's RNG (restored from the checkpoint when resuming).
        validate: scores params on meta-validation tasks, higher is better; when given, it runs
            every ``validate_every`` steps and after the last step, and the best params win.
        validate_every: steps between validations.
        progress: show a progress bar with the running meta-loss (on stderr; rank 0 only).
        checkpoint: write a checkpoint every ``checkpoint.every`` steps and after the last;
            with ``checkpoint.resume``, continue the run saved in its folder.
        world: the ranks sharing the work; None for one process.

    Returns:
        ``(params, history)``: the best-validated params (the final ones without ``validate``),
        detached; and one record per step ``{"step", "loss"}`` plus ``"val"`` where validated.
        The same on every rank.

    Raises:
        ConfigError: ``validate_every < 1``; fewer tasks per meta-batch than ranks; a learner
            that cannot be sharded exactly; ranks that start from different params or RNG.
        CheckpointError: resuming without a checkpoint, a checkpoint of another run or a
            damaged one, or starting afresh over an existing checkpoint.
        TrainingDivergedError: the meta-loss became NaN or infinite.
    """
    if validate_every < 1:
        raise ConfigError(f"validate_every must be >= 1, got {validate_every}")
    world = world or World()
    world.check(learner, config.meta_batch_size)
    state = TrainState.start(params, config, generator)
    if checkpoint is not None:
        _restore(state, checkpoint, world, config)
    if world.size > 1:  # equal starts make equal runs: catch ranks on other data or seeds
        world.require_same(params_digest(state.params), "the initial params")
        world.require_same(params_digest({"rng": generator.get_state()}), "the sampler's RNG")
    running: float | None = None
    shown = progress and world.is_main
    bar = progress_bar(config.meta_steps, "meta-train", enabled=shown, initial=state.step)
    while state.step < config.meta_steps:
        record = _meta_step(state, learner, sample, config.meta_batch_size, world)
        last = state.step == config.meta_steps
        if validate is not None and (state.step % validate_every == 0 or last):
            record["val"] = _validate(state, validate, world)
        if checkpoint is not None and world.is_main:
            _save(state, checkpoint, world.size, last=last)
        # An exponential average: the raw per-step loss is too noisy to read on a bar.
        running = record["loss"] if running is None else 0.9 * running + 0.1 * record["loss"]
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}", refresh=False)  # drawn at tqdm's own pace
    bar.close()  # draws the final state, running loss included
    best = state.best_params if state.best_params is not None else state.snapshot()
    return best, state.history


def _restore(
    state: TrainState, checkpoint: Checkpointing, world: World, config: MetaConfig
) -> None:
    """Resume ``state`` from the checkpoint, or check that starting afresh overwrites none.

    Rank 0 reads the file and sends its bytes to the others, so only rank 0 needs the folder;
    every rank verifies and restores the same bytes, and every rank raises the same error.
    """
    path = checkpoint.path
    data = world.broadcast_bytes(path.read_bytes() if world.is_main and path.exists() else None)
    if not checkpoint.resume:
        if data:
            raise CheckpointError(
                f"{checkpoint.folder} already holds a checkpoint; pass --resume (resume=True) to "
                "continue that run, or choose another --checkpoint-dir (or delete it) to start "
                "afresh"
            )
        return
    if not data:
        raise CheckpointError(
            f"nothing to resume: no {path.name} in {checkpoint.folder}; check the path, or "
            "drop --resume to start a new run there"
        )
    restore(state, data, fingerprint=checkpoint.fingerprint, source=str(path))
    if state.step > config.meta_steps:
        raise CheckpointError(
            f"{path} is at step {state.step}, past meta.meta_steps={config.meta_steps}; "
            "resume with at least as many steps"
        )


def _save(state: TrainState, checkpoint: Checkpointing, world_size: int, *, last: bool) -> None:
    """Write a checkpoint every ``checkpoint.every`` steps and after the last one."""
    if state.step % checkpoint.every == 0 or last:
        data = checkpoint_bytes(state, fingerprint=checkpoint.fingerprint, world_size=world_size)
        save_checkpoint(checkpoint.path, data)


def _meta_step(
    state: TrainState, learner: MetaLearner, sample: Sampler, meta_batch_size: int, world: World
) -> dict[str, float]:
    # Every rank draws the whole batch: the generator's stream then stays the single-process one.
    tasks, weight = world.shard(sample(meta_batch_size, state.generator))
    # Detached views: the meta-gradient is taken by torch.func, not by the leaves' autograd.
    loss, grads = learner.meta_gradient(
        {name: p.detach() for name, p in state.params.items()}, tasks
    )
    loss, grads = world.mean_gradient(loss, grads, weight)
    if not torch.isfinite(loss):  # the global loss: every rank stops together
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


def _validate(state: TrainState, validate: Callable[[Params], float], world: World) -> float:
    candidate = state.snapshot()
    # Rank 0 scores, everyone keeps its decision: the ranks' best params cannot diverge.
    score = world.broadcast_score(float(validate(candidate)) if world.is_main else math.nan)
    if score > state.best_score:
        state.best_score, state.best_params = score, candidate
    return score
