"""Category-conditioned initialisation (FiLM): the fold is exact, and every algorithm trains it.

Parametrised over :data:`metarec.meta.ALGORITHMS` and both batching paths, as
``tests/meta/test_algorithms.py`` is for the unconditioned params: with a hypernetwork in the
params and one context per task, the meta-gradient equals a per-task loop over the unpadded
tasks (each starting from its own conditioned init), second order equals central finite
differences (the hypernetwork's weights included), and Reptile's direction equals a hand-written
pull-back of each task's displacement.
"""

from __future__ import annotations

import doctest
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tests.gradcheck import finite_differences, flat, rel_err
from torch import Tensor

from metarec.config import MetaConfig, ModelConfig, load_config
from metarec.errors import ConfigError
from metarec.meta import (
    ALGORITHMS,
    MAML,
    Batch,
    Params,
    Reptile,
    TaskBatch,
    build_learner,
    meta_train,
    scorer_params,
    stack_tasks,
    task_loss,
)
from metarec.models import conditioning, init_params, score
from metarec.models.conditioning import (
    FILM_PREFIX,
    condition,
    film_coefficients,
    initial_params,
    is_conditioned,
    with_conditioning,
)

D_IN, D_C = 4, 3
MODEL = ModelConfig(hidden=(5, 3), condition="film", film_hidden=4)
NAMES = sorted(ALGORITHMS)
GRADIENT_BASED = [name for name in NAMES if ALGORITHMS[name] is not Reptile]
SECOND_ORDER = [
    name
    for name in GRADIENT_BASED
    if not build_learner(MetaConfig(algorithm=name)).config.first_order  # type: ignore[arg-type]
]
BATCHING = ["bmm", "vmap"]


def _learner(name: str, **overrides: Any) -> MAML:
    fields = {"inner_steps": 2, "inner_lr": 0.5, **overrides}
    return build_learner(MetaConfig(algorithm=name, **fields))


def _params(learner: MAML | None = None, seed: int = 0, config: ModelConfig = MODEL) -> Params:
    """Conditioned float64 params whose hypernetwork is *not* at its zero start, so that the
    conditioning changes the init and every entry gets a gradient."""
    g = torch.Generator().manual_seed(seed)
    params = init_params(D_IN, config, generator=g, dtype=torch.float64)
    if learner is not None:
        params = learner.init_params(params)
    params = with_conditioning(params, config, D_C, generator=g)
    for name in ("film.1.weight", "film.1.bias"):
        params[name] = 0.5 * torch.randn(params[name].shape, generator=g, dtype=torch.float64)
    return params


def _rows(n: int, g: torch.Generator) -> Batch:
    x = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    w = torch.randn(D_IN, generator=g, dtype=torch.float64)
    return Batch(x, (x @ w > 0).double(), torch.ones(n, dtype=torch.float64))


def _tasks(sizes: list[tuple[int, int]], seed: int = 1) -> tuple[list[tuple[Batch, Batch]], Tensor]:
    g = torch.Generator().manual_seed(seed)
    tasks = [(_rows(n_s, g), _rows(n_q, g)) for n_s, n_q in sizes]
    return tasks, torch.randn(len(sizes), D_C, generator=g, dtype=torch.float64)


def _with_garbage_padding(batch: TaskBatch) -> TaskBatch:
    g = torch.Generator().manual_seed(7)
    for part in (batch.support, batch.query):
        pad = part.mask == 0
        assert pad.any()
        part.x[pad] = 100 * torch.randn(part.x[pad].shape, generator=g, dtype=torch.float64)
        part.y[pad] = 7.0
    return batch


# ---- the conditioning itself -----------------------------------------------------------------


def test_condition_folds_film_of_the_hidden_units_into_the_weights() -> None:
    params = _params()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, D_IN, generator=g, dtype=torch.float64)
    context = torch.randn(D_C, generator=g, dtype=torch.float64)
    gamma, beta = film_coefficients(params, context)
    # FiLM as Perez et al. write it: modulate each hidden layer's output, then ReLU
    h, start = x, 0
    for i, width in enumerate(MODEL.hidden):
        pre = F.linear(h, params[f"layers.{i}.weight"], params[f"layers.{i}.bias"])
        g_i, b_i = gamma[start : start + width], beta[start : start + width]
        h, start = F.relu(g_i * pre + b_i), start + width
    expected = F.linear(h, params["layers.2.weight"], params["layers.2.bias"]).squeeze(-1)
    conditioned = condition(params, context)
    torch.testing.assert_close(score(conditioned, x), expected, rtol=1e-12, atol=1e-12)
    assert not is_conditioned(conditioned)  # film.* dropped: it cannot be conditioned twice
    assert torch.equal(conditioned["layers.2.weight"], params["layers.2.weight"])  # output layer


def test_a_fresh_hypernetwork_starts_exactly_at_the_unconditioned_init() -> None:
    g = torch.Generator().manual_seed(0)
    plain = init_params(D_IN, MODEL, generator=g)
    params = with_conditioning(plain, MODEL, D_C, generator=g)
    assert sorted(k for k in params if k.startswith(FILM_PREFIX)) == [
        "film.0.bias",
        "film.0.weight",
        "film.1.bias",
        "film.1.weight",
    ]
    assert params["film.1.weight"].shape == (2 * sum(MODEL.hidden), MODEL.film_hidden)
    assert params["film.0.weight"].shape == (MODEL.film_hidden, D_C)
    start = condition(params, torch.randn(D_C, generator=g))
    assert all(torch.equal(start[k], plain[k]) for k in plain)
    # "none" adds nothing; a model that already has its hypernetwork keeps it
    off = MODEL.model_copy(update={"condition": "none"})
    assert with_conditioning(plain, off, D_C, generator=g) is plain
    assert with_conditioning(params, MODEL, D_C, generator=g) is params


def test_per_task_contexts_give_each_task_the_init_of_its_own_context() -> None:
    params = _params()
    contexts = torch.randn(4, D_C, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batched = condition(params, contexts)
    assert batched["layers.0.weight"].shape == (4, 5, D_IN)
    assert batched["layers.2.weight"].shape == (1, 3)  # the output layer stays shared
    for t in range(4):
        one = condition(params, contexts[t])
        for name in ("layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"):
            torch.testing.assert_close(batched[name][t], one[name], rtol=1e-14, atol=1e-15)
    assert not torch.allclose(batched["layers.0.weight"][0], batched["layers.0.weight"][1])


def test_unconditioned_mismatched_or_contextless_params_are_refused() -> None:
    plain = init_params(D_IN, MODEL, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match=r"film\.\*"):
        condition(plain, torch.zeros(D_C))
    assert initial_params(plain, None) is plain  # unconditioned: the params themselves
    params = _params()
    with pytest.raises(ConfigError, match="no category context"):
        initial_params(params, None)
    other = init_params(
        D_IN, ModelConfig(hidden=(6, 3)), generator=torch.Generator(), dtype=torch.float64
    )
    film = {k: v for k, v in params.items() if k.startswith(FILM_PREFIX)}
    with pytest.raises(ConfigError, match="mix two models"):
        condition({**other, **film}, torch.zeros(D_C, dtype=torch.float64))
    tasks, _ = _tasks([(4, 4)])
    with pytest.raises(ConfigError, match="no category context"):
        _learner("maml").meta_gradient(params, stack_tasks(tasks))


def test_film_needs_a_hidden_layer_at_config_load(tmp_path: Any) -> None:
    toml = tmp_path / "metarec.toml"
    toml.write_text('[model]\nhidden = []\ncondition = "film"\n')
    with pytest.raises(ConfigError, match="modulates hidden units"):
        load_config(toml)
    toml.write_text('[model]\ncondition = "films"\n')
    with pytest.raises(ConfigError, match="'none' or 'film'"):
        load_config(toml)


# ---- meta-gradients through the conditioning, for every algorithm ----------------------------


@pytest.mark.parametrize("batching", BATCHING)
@pytest.mark.parametrize("name", GRADIENT_BASED)
def test_conditioned_meta_gradient_equals_a_loop_over_unpadded_tasks(
    name: str, batching: str
) -> None:
    learner = _learner(name, batching=batching)
    params = _params(learner)
    tasks, contexts = _tasks([(6, 8), (3, 5), (4, 8)])
    batch = _with_garbage_padding(stack_tasks(tasks, contexts=list(contexts)))
    loss, grads = learner.meta_gradient(params, batch)

    def loop_loss(p: Params) -> Tensor:
        losses = [
            task_loss(scorer_params(learner.adapt(condition(p, c), s)), q)
            for (s, q), c in zip(tasks, contexts, strict=True)
        ]
        return torch.stack(losses).mean()

    loop_grads, loop_value = torch.func.grad_and_value(loop_loss)(params)
    torch.testing.assert_close(loss, loop_value, rtol=1e-12, atol=0)
    assert set(grads) == set(params)
    for k in params:
        torch.testing.assert_close(grads[k], loop_grads[k], rtol=1e-10, atol=1e-13)
    assert all(grads[k].abs().sum() > 0 for k in params if k.startswith(FILM_PREFIX))


@pytest.mark.parametrize("batching", BATCHING)
@pytest.mark.parametrize("name", SECOND_ORDER)
def test_conditioned_second_order_meta_gradient_equals_finite_differences(
    name: str, batching: str
) -> None:
    learner = _learner(name, batching=batching)
    params = _params(learner)
    tasks, contexts = _tasks([(6, 8), (4, 8)])
    batch = stack_tasks(tasks, contexts=list(contexts))
    _, grads = learner.meta_gradient(params, batch)
    # of the vmap reference loss
    fd = finite_differences(lambda q: learner.vmap_meta_loss(q, batch), params)
    assert rel_err(flat(grads), fd) < 1e-6
    first = _learner(name, batching=batching, first_order=True)
    assert rel_err(flat(first.meta_gradient(params, batch)[1]), fd) > 1e-3


@pytest.mark.parametrize("batching", BATCHING)
def test_conditioned_reptile_pulls_each_tasks_displacement_back_through_its_init(
    batching: str,
) -> None:
    steps, lr = 3, 0.5
    learner = _learner("reptile", batching=batching, inner_steps=steps, inner_lr=lr)
    params = _params(learner)
    tasks, contexts = _tasks([(6, 8), (3, 5), (4, 8)])
    batch = _with_garbage_padding(stack_tasks(tasks, contexts=list(contexts)))
    loss, direction = learner.meta_gradient(params, batch)
    # by hand: each task adapts from its own init θ_t = condition(θ, c_t) with plain autograd
    # steps; the update is the mean over tasks of J_t^T (θ_t - φ_t) / (steps · lr)
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    pulled, losses = torch.zeros((), dtype=torch.float64), []
    for (support, query), context in zip(tasks, contexts, strict=True):
        start = scorer_params(condition(leaves, context))
        phi = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
        for _ in range(steps):
            g = torch.autograd.grad(task_loss(phi, support), list(phi.values()))
            phi = {
                k: (v - lr * d).detach().requires_grad_(True)
                for (k, v), d in zip(phi.items(), g, strict=True)
            }
        losses.append(task_loss(phi, query).detach())
        shift = {k: (start[k] - phi[k]).detach() / (steps * lr) for k in start}
        pulled = pulled + sum((start[k] * shift[k]).sum() for k in start) / len(tasks)
    expected = dict(zip(leaves, torch.autograd.grad(pulled, list(leaves.values())), strict=True))
    torch.testing.assert_close(loss, torch.stack(losses).mean(), rtol=1e-12, atol=0)
    for k in params:
        torch.testing.assert_close(direction[k], expected[k], rtol=1e-10, atol=1e-13)
    assert all(direction[k].abs().sum() > 0 for k in params if k.startswith(FILM_PREFIX))


# ---- what the conditioning buys: a zero-shot model per category ------------------------------


def _family_tasks(
    n_tasks: int, g: torch.Generator, *, support: int = 4, query: int = 32
) -> TaskBatch:
    """Two task families with opposite answers (``y = [x_0 > 0]`` or ``[x_0 < 0]``); the
    context (one-hot family plus noise) says which, the support rows are few."""
    tasks, contexts = [], []
    for _ in range(n_tasks):
        family = int(torch.randint(2, (1,), generator=g))
        sign = 1.0 if family == 0 else -1.0
        rows = []
        for n in (support, query):
            x = torch.randn(n, D_IN, generator=g)
            rows.append(Batch(x, (sign * x[:, 0] > 0).float(), torch.ones(n)))
        tasks.append((rows[0], rows[1]))
        noise = 0.1 * torch.randn(D_C, generator=g)
        contexts.append(F.one_hot(torch.tensor(family), D_C).float() + noise)
    return stack_tasks(tasks, contexts=contexts)


def _query_loss(learner: MAML, params: Params, tasks: TaskBatch) -> float:
    with torch.no_grad():
        return learner.meta_loss(params, tasks).item()


def test_meta_training_conditions_the_start_on_the_category() -> None:
    """Two families that disagree: one unconditioned init must sit between them (chance at
    zero shots), a conditioned one learns to start at each family's answer before any support."""
    config = MetaConfig(
        inner_steps=1,
        inner_lr=0.1,
        first_order=True,
        meta_steps=150,
        outer_lr=0.02,
        meta_batch_size=16,
    )
    learner = build_learner(config)
    zero_shot = build_learner(config.model_copy(update={"inner_steps": 0}))
    model = ModelConfig(hidden=(16, 8), condition="film", film_hidden=8)
    held_out = _family_tasks(64, torch.Generator().manual_seed(99))
    losses: dict[str, tuple[float, float]] = {}
    for condition_on in ("none", "film"):
        g = torch.Generator().manual_seed(0)
        cfg = model.model_copy(update={"condition": condition_on})
        params = with_conditioning(init_params(D_IN, cfg, generator=g), cfg, D_C, generator=g)
        trained, _ = meta_train(
            params,
            learner,
            lambda n, gen: _family_tasks(n, gen),
            config,
            generator=torch.Generator().manual_seed(1),
            progress=False,
        )
        losses[condition_on] = (
            _query_loss(zero_shot, trained, held_out),
            _query_loss(learner, trained, held_out),
        )
    assert losses["none"][0] > 0.6, losses  # about chance: the families cancel out
    assert losses["film"][0] < 0.3, losses  # a zero-shot model per family
    assert losses["film"][1] < losses["none"][1], losses  # and a better start for few shots


@pytest.mark.slow
@pytest.mark.parametrize("name", ["maml", "reptile"])
def test_compiled_conditioned_meta_gradient_equals_eager(name: str) -> None:
    """``compile = true`` passes the contexts to the compiled form (40-60 s of compile each)."""
    params = {k: v.float() for k, v in _params().items()}
    tasks, contexts = _tasks([(5, 9), (3, 7)])
    batch = stack_tasks(
        [
            (
                Batch(s.x.float(), s.y.float(), s.mask.float()),
                Batch(q.x.float(), q.y.float(), q.mask.float()),
            )
            for s, q in tasks
        ],
        contexts=list(contexts.float()),
    )
    loss, grads = _learner(name).meta_gradient(params, batch)
    compiled_loss, compiled = _learner(name, compile=True).meta_gradient(params, batch)
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-5, atol=1e-6)
    for k in params:
        torch.testing.assert_close(compiled[k], grads[k], rtol=1e-4, atol=1e-6)


def test_docstring_example_runs() -> None:
    assert doctest.testmod(conditioning, raise_on_error=True).attempted > 0
