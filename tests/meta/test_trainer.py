"""The outer loop: MAML learns to adapt on a toy task family, deterministically."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch

from metarec.config import MetaConfig, ModelConfig
from metarec.errors import ConfigError
from metarec.meta import MAML, Batch, Params, TaskBatch, meta_train, stack_tasks, task_loss
from metarec.meta.trainer import TrainingDivergedError, TrainState
from metarec.models import init_params

D_IN = 6
CONFIG = MetaConfig(inner_steps=3, inner_lr=1.0, outer_lr=1e-2, meta_batch_size=8, meta_steps=100)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny matmuls gain nothing from a second thread, and on a shared 2-core machine OpenMP's
    # spinning threads made this file 10x slower (measured: 1 s vs 10-15 s for 100 steps).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _task(g: torch.Generator) -> tuple[Batch, Batch]:
    """Labels by a random direction in the first two features: shared structure (which two
    features matter), a task-specific boundary. No single model fits the family; adapting does."""
    theta = torch.rand((), generator=g) * 2 * math.pi
    w = torch.zeros(D_IN)
    w[0], w[1] = torch.cos(theta), torch.sin(theta)

    def rows(n: int) -> Batch:
        x = torch.randn(n, D_IN, generator=g)
        return Batch(x, (x @ w > 0).float(), torch.ones(n))

    return rows(10), rows(20)


def sample(n_tasks: int, g: torch.Generator) -> TaskBatch:
    return stack_tasks([_task(g) for _ in range(n_tasks)])


def _init(seed: int = 0) -> Params:
    return init_params(
        D_IN, ModelConfig(hidden=(16, 8)), generator=torch.Generator().manual_seed(seed)
    )


def _train(
    seed: int,
    config: MetaConfig = CONFIG,
    validate: Callable[[Params], float] | None = None,
    validate_every: int = 50,
) -> tuple[Params, list[dict[str, float]]]:
    return meta_train(
        _init(),
        MAML(config),
        sample,
        config,
        generator=torch.Generator().manual_seed(seed),
        validate=validate,
        validate_every=validate_every,
        progress=False,
    )


def test_meta_training_learns_to_adapt() -> None:
    maml = MAML(CONFIG)
    held_out = sample(64, torch.Generator().manual_seed(123))
    init = _init()
    trained, history = _train(seed=1)

    post_init = maml.meta_loss(init, held_out).item()
    post_trained = maml.meta_loss(trained, held_out).item()
    pre_trained = torch.stack(
        [task_loss(trained, held_out.task(i)[1]) for i in range(held_out.n_tasks)]
    ).mean()
    # Meta-training lowers the post-adaptation query loss well below where it started ...
    assert post_trained < 0.6 * post_init
    # ... and what it learned is how to adapt: unadapted, the same params beat no coin flip.
    assert post_trained < 0.5 * pre_trained.item()
    assert [r["step"] for r in history] == list(range(1, CONFIG.meta_steps + 1))
    assert sum(r["loss"] for r in history[-20:]) < sum(r["loss"] for r in history[:20])


def test_same_generator_seed_same_run() -> None:
    config = CONFIG.model_copy(update={"meta_steps": 20})
    (a, hist_a), (b, hist_b), (c, _) = _train(3, config), _train(3, config), _train(4, config)
    assert hist_a == hist_b
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.weight"], c["layers.0.weight"])


def test_best_validated_params_are_returned() -> None:
    config = CONFIG.model_copy(update={"meta_steps": 9})
    scores = iter([1.0, 5.0, 2.0])  # validations after steps 3, 6, 9: the second is best
    best, history = _train(5, config, validate=lambda p: next(scores), validate_every=3)
    assert [r.get("val") for r in history] == [None, None, 1.0, None, None, 5.0, None, None, 2.0]
    at_step_6, _ = _train(5, config.model_copy(update={"meta_steps": 6}))
    assert all(torch.equal(best[k], at_step_6[k]) for k in best)


def test_meta_train_does_not_mutate_its_input_and_returns_detached_params() -> None:
    params = _init()
    frozen = {k: v.clone() for k, v in params.items()}
    trained, _ = meta_train(
        params,
        MAML(CONFIG),
        sample,
        CONFIG.model_copy(update={"meta_steps": 3}),
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert all(torch.equal(params[k], frozen[k]) for k in params)
    assert not any(p.requires_grad for p in trained.values())
    assert not torch.equal(trained["layers.0.weight"], params["layers.0.weight"])


def test_progress_bar_shows_the_running_loss_only_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = CONFIG.model_copy(update={"meta_steps": 2})
    meta_train(_init(), MAML(config), sample, config, generator=torch.Generator(), progress=False)
    assert capsys.readouterr().err == ""
    meta_train(_init(), MAML(config), sample, config, generator=torch.Generator(), progress=True)
    assert "loss=" in capsys.readouterr().err


def test_divergence_and_bad_options_are_refused() -> None:
    def poisoned(n_tasks: int, g: torch.Generator) -> TaskBatch:
        tasks = sample(n_tasks, g)
        tasks.query.x[0, 0, 0] = float("nan")
        return tasks

    with pytest.raises(TrainingDivergedError, match="step 1"):
        meta_train(
            _init(), MAML(CONFIG), poisoned, CONFIG, generator=torch.Generator(), progress=False
        )
    with pytest.raises(ConfigError, match="validate_every"):
        _train(0, validate=lambda p: 0.0, validate_every=0)


def test_train_state_copies_params_and_checkpoints_what_resuming_needs() -> None:
    params, g = _init(), torch.Generator().manual_seed(9)
    state = TrainState.start(params, CONFIG, g)
    assert all(state.params[k] is not params[k] and state.params[k].is_leaf for k in params)
    checkpoint = state.state_dict()
    assert {"params", "optimizer", "rng_state", "step"} <= checkpoint.keys()
    assert torch.equal(checkpoint["rng_state"], g.get_state()) and checkpoint["step"] == 0
