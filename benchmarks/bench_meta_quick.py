"""Quick throughput check of the meta-gradient: vmap over tasks vs a per-task Python loop.

The reference workload of DESIGN.md: MLP 96-64-32-1, 32 tasks of 20 support / 50 query rows,
5 inner steps, second and first order. Both variants run the same functional code
(``metarec.meta.inner``); only the batching over tasks differs. A classic per-task loop with
``torch.autograd.grad`` is timed too, for context. Prints one line per case.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_meta_quick.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from metarec.config import MetaConfig, ModelConfig
from metarec.meta import MAML, Batch, Params, TaskBatch, stack_tasks, task_loss
from metarec.models import init_params

D_IN, N_TASKS, N_SUPPORT, N_QUERY, INNER_STEPS = 96, 32, 20, 50, 5


def _tasks(g: torch.Generator) -> TaskBatch:
    def rows(n: int) -> Batch:
        x = torch.randn(n, D_IN, generator=g)
        return Batch(x, (torch.rand(n, generator=g) < 0.2).float(), torch.ones(n))

    return stack_tasks([(rows(N_SUPPORT), rows(N_QUERY)) for _ in range(N_TASKS)])


def _loop_meta_gradient(maml: MAML, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
    """The same functional inner loop, one task at a time (what vmap replaces)."""

    def loss(p: Params) -> Tensor:
        per_task = []
        for i in range(tasks.n_tasks):
            support, query = tasks.task(i)
            per_task.append(task_loss(maml.adapt(p, support), query))
        return torch.stack(per_task).mean()

    grads, value = torch.func.grad_and_value(loss)(params)
    return value, grads


def _autograd_loop_meta_gradient(
    maml: MAML, params: Params, tasks: TaskBatch
) -> tuple[Tensor, Params]:
    """Context only: the classic per-task loop with ``torch.autograd.grad`` (learn2learn style)."""
    leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    per_task = []
    for i in range(tasks.n_tasks):
        support, query = tasks.task(i)
        adapted = leaves
        for _ in range(maml.config.inner_steps):
            grads = torch.autograd.grad(
                task_loss(adapted, support),
                list(adapted.values()),
                create_graph=not maml.config.first_order,
            )
            lr = maml.config.inner_lr
            adapted = {k: v - lr * g for (k, v), g in zip(adapted.items(), grads, strict=True)}
        per_task.append(task_loss(adapted, query))
    loss = torch.stack(per_task).mean()
    meta_grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.detach(), dict(zip(leaves, meta_grads, strict=True))


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first calls pay for allocator and dispatcher caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    params = init_params(D_IN, ModelConfig(hidden=(64, 32)), generator=g)
    tasks = _tasks(g)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for first_order in (False, True):
        maml = MAML(MetaConfig(inner_steps=INNER_STEPS, first_order=first_order))
        variants: dict[str, Callable[[], tuple[Tensor, Params]]] = {
            "vmap (MAML.meta_gradient)": partial(maml.meta_gradient, params, tasks),
            "loop, same functional code": partial(_loop_meta_gradient, maml, params, tasks),
            "loop, plain torch.autograd": partial(
                _autograd_loop_meta_gradient, maml, params, tasks
            ),
        }
        # Same numbers from every path, else the comparison means nothing.
        loss_v, grads_v = maml.meta_gradient(params, tasks)
        for fn in variants.values():
            loss, grads = fn()
            torch.testing.assert_close(loss, loss_v)
            for name in params:
                torch.testing.assert_close(grads[name], grads_v[name], rtol=1e-4, atol=1e-6)
        order = "first" if first_order else "second"
        for variant, fn in variants.items():
            seconds = _median_seconds(fn, args.repeats)
            print(f"{order:>6} order, {variant:<27} {N_TASKS / seconds:6.0f} tasks/s")


if __name__ == "__main__":
    main()
