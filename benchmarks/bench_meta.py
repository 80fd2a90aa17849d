"""Meta-gradient speed on DESIGN.md's reference workload, every way it can be computed, one run.

Workload: MLP 96-64-32-1, 32 tasks of 20 support / 50 query rows, 5 inner steps of SGD at 0.1,
float32, second order (first order too, for context). In one process:

(a) a per-task loop the way the seed article sketches it (``deepcopy`` of the module and an
    optimiser per task), made correct: first order, the query gradient taken with respect to
    the *adapted copy* (the sketch took it w.r.t. the original, which the copy is not connected
    to); SGD instead of the sketch's Adam, so that it computes the same meta-gradient as the rest;
(b) per-task loops over ``torch.func.functional_call`` with ``torch.autograd.grad``, and over
    metarec's own ``inner.adapt`` (``torch.func``);
(c) ``higher`` and ``torchopt`` when installed (``pip install -e '.[bench]'``);
(d) metarec: the default training path (hand-batched ``bmm``), ``vmap`` over ``inner.adapt``,
    and the opt-in ``torch.compile`` path, timed last beside ``bmm`` (compiled kernels bring
    their own OpenMP threads, which slow whatever runs after them) and scaled to ``bmm``'s
    rate; its compile time is reported apart.

Every variant's meta-gradient is checked against metarec's before anything is timed. Timing is
interleaved (each round times every variant once) so that load from other processes spreads
evenly; the median round counts. The FLOP limit is the workload's matmul FLOPs (counted by hand,
cross-checked with ``torch.utils.flop_counter``) at the matmul peak measured in this run at the
same thread count. Also timed: adapting one category (5 steps, 1,000 support rows) as serving
does. The last output line is one JSON object (ratios of tasks/s, share in [0, 1], ms).

    .venv/bin/python benchmarks/bench_meta.py [--threads N] [--rounds R] [--no-compile]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from metarec.config import MetaConfig, ModelConfig
from metarec.meta import Batch, Params, TaskBatch, build_learner, stack_tasks, task_loss
from metarec.models import Scorer, init_params

SIZES = (96, 64, 32, 1)
N_TASKS, N_SUPPORT, N_QUERY, STEPS, LR = 32, 20, 50, 5, 0.1
ADAPT_ROWS = 1_000

MetaGradient = Callable[[], tuple[Tensor, Params]]
Key = tuple[str, str]  # (order, variant name)


def workload(g: torch.Generator) -> tuple[Params, TaskBatch]:
    def rows(n: int) -> Batch:
        x = torch.randn(n, SIZES[0], generator=g)
        return Batch(x, (torch.rand(n, generator=g) < 0.2).float(), torch.ones(n))

    params = init_params(SIZES[0], ModelConfig(hidden=SIZES[1:-1]), generator=g)
    return params, stack_tasks([(rows(N_SUPPORT), rows(N_QUERY)) for _ in range(N_TASKS)])


def module_with(params: Params) -> Scorer:
    """metarec's scorer as an ``nn.Module`` holding copies of ``params``."""
    module = Scorer(SIZES[0], ModelConfig(hidden=SIZES[1:-1]))
    module.load_state_dict({k: v.clone() for k, v in params.items()})
    return module


def bce(logits: Tensor, y: Tensor) -> Tensor:
    # Every row of the workload is real (mask 1), so the masked mean is the plain mean.
    return F.binary_cross_entropy_with_logits(logits, y)


# (a) ------------------------------------------------------------------------------------------


class SeedNet(nn.Module):
    """The seed article's three-layer network (``fc1``, ``fc2``, ``fc3``)."""

    def __init__(self, params: Params) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = (nn.Linear(a, b) for a, b in itertools.pairwise(SIZES))
        for i, layer in enumerate((self.fc1, self.fc2, self.fc3)):
            layer.weight.data.copy_(params[f"layers.{i}.weight"])
            layer.bias.data.copy_(params[f"layers.{i}.bias"])

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def seed_loop(net: SeedNet, tasks: TaskBatch) -> tuple[Tensor, Params]:
    total = [torch.zeros_like(p) for p in net.parameters()]
    losses = []
    for i in range(tasks.n_tasks):
        support, query = tasks.task(i)
        learner = copy.deepcopy(net)
        optimiser = torch.optim.SGD(learner.parameters(), lr=LR)
        for _ in range(STEPS):
            loss = bce(learner(support.x).squeeze(-1), support.y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        query_loss = bce(learner(query.x).squeeze(-1), query.y)
        # The correction: differentiate w.r.t. the adapted copy (first order), not the original.
        grads = torch.autograd.grad(query_loss, list(learner.parameters()))
        total = [t + g for t, g in zip(total, grads, strict=True)]
        losses.append(query_loss.detach())
    names = [f"layers.{i}.{kind}" for i in range(3) for kind in ("weight", "bias")]
    return torch.stack(losses).mean(), {
        n: t / tasks.n_tasks for n, t in zip(names, total, strict=True)
    }


# (b) ------------------------------------------------------------------------------------------


def functional_call_loop(
    module: Scorer, params: Params, tasks: TaskBatch, first_order: bool
) -> tuple[Tensor, Params]:
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    losses = []
    for i in range(tasks.n_tasks):
        support, query = tasks.task(i)
        fast = leaves
        for _ in range(STEPS):
            loss = bce(torch.func.functional_call(module, fast, (support.x,)), support.y)
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=not first_order)
            fast = {k: v - LR * g for (k, v), g in zip(fast.items(), grads, strict=True)}
        losses.append(bce(torch.func.functional_call(module, fast, (query.x,)), query.y))
    loss = torch.stack(losses).mean()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.detach(), dict(zip(leaves, grads, strict=True))


def inner_adapt_loop(learner: object, params: Params, tasks: TaskBatch) -> tuple[Tensor, Params]:
    def loss(p: Params) -> Tensor:
        per_task = []
        for i in range(tasks.n_tasks):
            support, query = tasks.task(i)
            per_task.append(task_loss(learner.adapt(p, support), query))  # type: ignore[attr-defined]
        return torch.stack(per_task).mean()

    grads, value = torch.func.grad_and_value(loss)(params)
    return value, grads


# (c) ------------------------------------------------------------------------------------------


def higher_loop(module: Scorer, tasks: TaskBatch, first_order: bool) -> tuple[Tensor, Params]:
    import higher

    module.zero_grad()
    inner = torch.optim.SGD(module.parameters(), lr=LR)
    losses = []
    for i in range(tasks.n_tasks):
        support, query = tasks.task(i)
        with higher.innerloop_ctx(
            module, inner, copy_initial_weights=False, track_higher_grads=not first_order
        ) as (fmodel, diffopt):
            for _ in range(STEPS):
                diffopt.step(bce(fmodel(support.x), support.y))
            query_loss = bce(fmodel(query.x), query.y) / tasks.n_tasks
            if first_order:  # untracked: the gradient w.r.t. the fast weights is FOMAML's
                grads = torch.autograd.grad(query_loss, list(fmodel.parameters()))
                for p, g in zip(module.parameters(), grads, strict=True):
                    p.grad = g if p.grad is None else p.grad + g
            else:
                query_loss.backward()
            losses.append(query_loss.detach() * tasks.n_tasks)
    grads = {k: p.grad.clone() for k, p in module.named_parameters()}  # type: ignore[union-attr]
    return torch.stack(losses).mean(), grads


def torchopt_loop(module: Scorer, tasks: TaskBatch) -> tuple[Tensor, Params]:
    import torchopt

    module.zero_grad()
    inner = torchopt.MetaSGD(module, lr=LR)
    module_state = torchopt.extract_state_dict(module, by="reference", detach_buffers=True)
    optimiser_state = torchopt.extract_state_dict(inner)
    losses = []
    for i in range(tasks.n_tasks):
        support, query = tasks.task(i)
        for _ in range(STEPS):
            inner.step(bce(module(support.x), support.y))
        losses.append(bce(module(query.x), query.y))
        torchopt.recover_state_dict(module, module_state)
        torchopt.recover_state_dict(inner, optimiser_state)
    loss = torch.stack(losses).mean()
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in module.named_parameters()}  # type: ignore[union-attr]


# FLOPs, peak, timing ---------------------------------------------------------------------------


def workload_flops(first_order: bool) -> int:
    """Matmul FLOPs of one task's meta-gradient, counted by hand (2 per multiply-add).

    Inner step, per support row: forward (every layer), weight gradients (every layer), and
    input gradients of the layers after the first. Query: forward, then its backward (weight
    gradients, input gradients after the first layer). Second order also reverses every
    matmul of the inner steps: twice its cost, except where one operand is data (the first
    layer's forward and its weight gradient), which costs one.
    """
    mac = [a * b for a, b in itertools.pairwise(SIZES)]  # multiply-adds per row, per layer
    forward, weight_grad, input_grad = sum(mac), sum(mac), sum(mac[1:])
    inner = N_SUPPORT * STEPS * (forward + weight_grad + input_grad)
    query = N_QUERY * (forward + weight_grad + input_grad)
    reverse = (
        0
        if first_order
        else N_SUPPORT * STEPS * (mac[0] + 2 * sum(mac[1:])) * 2
        + (N_SUPPORT * STEPS * 2 * input_grad)
    )
    return 2 * (inner + query + reverse)


def counted_flops(fn: MetaGradient) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // N_TASKS


def matmul_peak(seconds: float = 1.5) -> float:
    """Best GFLOP/s of a 1024 x 1024 float32 matmul over ``seconds`` (the machine's limit)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best, deadline = 0.0, time.perf_counter() + seconds
    a @ b
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9)
    return best


def check_same(name: str, got: tuple[Tensor, Params], want: tuple[Tensor, Params]) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-6, msg=f"{name}: loss")
    for k, v in want[1].items():
        torch.testing.assert_close(got[1][k], v, rtol=1e-3, atol=2e-6, msg=f"{name}: {k}")


def adapt_ms(learner: object, params: Params, repeats: int = 15) -> float:
    """Median ms of ``learner.adapt`` on one category's 1,000 support rows, as serving runs it."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(ADAPT_ROWS, SIZES[0], generator=g)
    support = Batch(x, (torch.rand(ADAPT_ROWS, generator=g) < 0.2).float(), torch.ones(ADAPT_ROWS))
    times = []
    with torch.no_grad():  # as serving adapts
        for _ in range(repeats + 1):
            start = time.perf_counter()
            learner.adapt(params, support)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:])


def candidates(first_order: bool, params: Params, tasks: TaskBatch) -> dict[str, MetaGradient]:
    """Every eager way to compute this order's meta-gradient."""
    config = MetaConfig(inner_steps=STEPS, inner_lr=LR, first_order=first_order)
    bmm = build_learner(config.model_copy(update={"batching": "bmm"}))
    vmap = build_learner(config.model_copy(update={"batching": "vmap"}))
    module, net = module_with(params), SeedNet(params)
    out: dict[str, MetaGradient] = {
        "metarec bmm": lambda: bmm.meta_gradient(params, tasks),
        "metarec vmap": lambda: vmap.meta_gradient(params, tasks),
        "loop functional_call": lambda: functional_call_loop(module, params, tasks, first_order),
        "loop metarec inner.adapt": lambda: inner_adapt_loop(vmap, params, tasks),
    }
    if first_order:  # the seed's loop cannot be second order (its optimiser steps in place)
        out["loop seed article (deepcopy)"] = lambda: seed_loop(net, tasks)
    if importlib.util.find_spec("higher"):
        out["loop higher"] = lambda: higher_loop(module, tasks, first_order)
    if importlib.util.find_spec("torchopt") and not first_order:
        out["loop torchopt"] = lambda: torchopt_loop(module, tasks)
    return out


def compiled(first_order: bool, params: Params, tasks: TaskBatch) -> tuple[MetaGradient, float]:
    """The opt-in ``torch.compile`` path, compiled now, and the seconds that took."""
    config = MetaConfig(inner_steps=STEPS, inner_lr=LR, first_order=first_order, compile=True)
    learner = build_learner(config)
    start = time.perf_counter()
    learner.meta_gradient(params, tasks)
    return lambda: learner.meta_gradient(params, tasks), time.perf_counter() - start


def rates(variants: dict[Key, MetaGradient], rounds: int) -> dict[Key, float]:
    """Tasks/s of each variant, median over rounds that each time every variant once
    (interleaved, so that load from other processes hits every variant alike)."""
    seconds: dict[Key, list[float]] = {key: [] for key in variants}
    for _ in range(rounds):
        for key, fn in variants.items():
            start = time.perf_counter()
            fn()
            seconds[key].append(time.perf_counter() - start)
    return {key: N_TASKS / statistics.median(s) for key, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    params, tasks = workload(torch.Generator().manual_seed(0))
    peak = matmul_peak()
    orders = ("second", "first")

    variants: dict[Key, MetaGradient] = {}
    for order in orders:
        fns = candidates(order == "first", params, tasks)
        want = fns["metarec vmap"]()
        for name, fn in fns.items():  # the same numbers from every path, else timing is moot
            check_same(f"{order} order, {name}", fn(), want)
            variants[(order, name)] = fn
    rate = rates(variants, args.rounds)
    adapt = adapt_ms(build_learner(MetaConfig(inner_steps=STEPS, inner_lr=LR)), params)
    compile_note: dict[str, str] = {}
    if not args.no_compile:
        # Timed last and apart: compiled kernels bring their own OpenMP threads, which slowed
        # every eager path timed after them (measured: loops 10x slower on 2 loaded cores).
        # Its rate is reported relative to bmm timed beside it, scaled to bmm's rate above.
        for order in orders:
            fn, took = compiled(order == "first", params, tasks)
            check_same(f"{order} order, compile", fn(), variants[(order, "metarec vmap")]())
            pair = rates(
                {("c", "compile"): fn, ("c", "bmm"): variants[(order, "metarec bmm")]}, args.rounds
            )
            rate[(order, "metarec compile")] = (
                rate[(order, "metarec bmm")] * pair[("c", "compile")] / pair[("c", "bmm")]
            )
            compile_note[order] = (
                f"  metarec compile: {took:.0f} s to compile; {pair[('c', 'compile')]:,.0f} "
                f"tasks/s beside bmm at {pair[('c', 'bmm')]:,.0f} (scaled below)"
            )
    peak = max(peak, matmul_peak())

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} rounds")
    print(f"load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"matmul peak {peak:.0f} GFLOP/s (1024 x 1024 float32, best of the run)")
    default = f"metarec {MetaConfig().batching}"
    flops = {order: workload_flops(order == "first") for order in orders}
    for order in orders:
        limit = peak * 1e9 / flops[order]
        counted = counted_flops(variants[(order, "metarec bmm")])
        print(
            f"\n{order} order: {flops[order] / 1e6:.2f} MFLOP per task by hand, "
            f"{counted / 1e6:.2f} counted on the bmm path; limit {limit:,.0f} tasks/s"
        )
        if order in compile_note:
            print(compile_note[order])
        ours = rate[(order, default)]
        for (o, name), r in sorted(rate.items(), key=lambda item: -item[1]):
            if o == order:
                ratio, share = f"{ours / r:.2f}x", f"{r / limit:.1%}"
                print(f"  {name:<29} {r:7,.0f} tasks/s  default = {ratio:>6}  {share:>6} of limit")
    print(f"\nadapt one category ({ADAPT_ROWS} support rows, {STEPS} steps): {adapt:.2f} ms")

    fastest_loop = max(r for (o, n), r in rate.items() if o == "second" and n.startswith("loop"))
    best = max(r for (o, n), r in rate.items() if o == "second" and n.startswith("metarec"))
    result = {
        "default_vs_fastest_loop": round(rate[("second", default)] / fastest_loop, 2),
        "best_vs_fastest_loop": round(best / fastest_loop, 2),
        "flop_share_best": round(best * flops["second"] / (peak * 1e9), 3),
        "adapt_ms_1k": round(adapt, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
