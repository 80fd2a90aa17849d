"""Distributed meta-training throughput: 1 rank against 2 ranks (gloo, CPU) on the bookstore.

Simulates the bookstore (seed 0) and ingests it into ``WORKDIR`` when missing, exports it as
Parquet partitioned by category (timed), then launches ``torchrun --standalone`` once per
setting and times meta-training from the export, the default training config (second-order
MAML, 5 inner steps, hidden 64-32) at each meta-batch size asked for:

- ``1 rank x 1 thread`` and ``2 ranks x 1 thread``: the comparison (``OMP_NUM_THREADS=1``, so
  with 2 ranks each rank has one of the 2 cores);
- ``1 rank x 2 threads``: the same 2 cores used by intra-op threads instead, for reference.

Each run takes ``--warmup`` untimed meta-steps, then ``--steps`` timed ones. Per step it splits
the time into sampling the global meta-batch (every rank samples all of it, see
docs/SCALING.md), the shard's meta-gradient, the all-reduce, and the rest (Adam, bookkeeping).
The all-reduce volume is ``(n_params + 1) x 4`` bytes per step. The machine's load (``uptime``)
is printed before and after: the cores are shared with other jobs.

    .venv/bin/python benchmarks/bench_scaling.py [--workdir DIR] [--steps 40] [--warmup 5]
        [--meta-batch 16,64] [--settings 1x1,2x1,1x2]

The last output line is one JSON object with every measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SETTINGS = "1x1,2x1,1x2"  # ranks x threads per rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/metarec-bench-scaling"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--meta-batch", default="16,64", help="comma-separated sizes")
    parser.add_argument("--settings", default=SETTINGS, help="comma-separated RANKSxTHREADS")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.export, args.result, args.steps, args.warmup, int(args.meta_batch))
        return
    export, export_s = prepare(args.workdir)
    load_before = uptime()
    print(f"load before: {load_before}")
    results: list[dict[str, Any]] = []
    for batch in (int(b) for b in args.meta_batch.split(",")):
        for setting in args.settings.split(","):
            ranks, threads = (int(n) for n in setting.split("x"))
            result = launch(args, export, batch, ranks, threads)
            results.append(result)
            print(row(result), flush=True)
    load_after = uptime()
    print(f"load after: {load_after}")
    print(
        json.dumps(
            {
                "export_s": export_s,
                "load_before": load_before,
                "load_after": load_after,
                "results": results,
            }
        )
    )


def prepare(workdir: Path) -> tuple[Path, float]:
    """The bookstore store and its export (built when missing); the export's wall time."""
    bin_dir = Path(sys.executable).parent
    store, export = workdir / "bookstore.duckdb", workdir / "bookstore-export"
    if not store.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        run([bin_dir / "metarec", "simulate", "--out", workdir / "data", "--seed", "0"])
        run(
            [bin_dir / "metarec", "ingest", workdir / "data", "--format", "table", "--store", store]
        )
    from metarec.data.export import export_store

    if export.exists():
        import shutil

        shutil.rmtree(export)
    summary = export_store(store, export)
    print(f"export: {summary}")
    return export, summary.seconds


def launch(
    args: argparse.Namespace, export: Path, batch: int, ranks: int, threads: int
) -> dict[str, Any]:
    result = args.workdir / f"result-{batch}-{ranks}x{threads}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={ranks}", __file__, "--worker", "--export", str(export)]
    command += ["--result", str(result), "--steps", str(args.steps)]
    command += ["--warmup", str(args.warmup), "--meta-batch", str(batch)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    run(command, env=env)
    return {"ranks": ranks, "threads": threads, **json.loads(result.read_text())}


def worker(export: Path, result: Path, steps: int, warmup: int, batch: int) -> None:
    """One rank: set up as ``train_on`` does, then time ``meta_train`` piece by piece."""
    import torch

    from metarec.config import load_config
    from metarec.data.export import open_export
    from metarec.features import load_catalog
    from metarec.meta import build_learner, meta_train
    from metarec.meta.distributed import World
    from metarec.meta.model import prepare_model
    from metarec.tasks import TaskSampler, split_categories

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with World.from_torchrun() as world:
        config = load_config(export.parent / "data" / "metarec.toml")
        meta = config.meta.model_copy(update={"meta_batch_size": batch})
        config = config.model_copy(update={"meta": meta})
        started = time.perf_counter()
        with open_export(export) as store:
            catalog = load_catalog(store, config)
        splits = split_categories(catalog, config)
        model = prepare_model(catalog, config, splits)
        learner = build_learner(config.meta)
        params = learner.init_params(model.params)
        data = model.category_data(catalog, splits["train"], visible=splits["train"])
        sampler = TaskSampler(list(data.values()), config.tasks)
        setup_s = time.perf_counter() - started

        clock: dict[str, float] = {"sample": 0.0, "gradient": 0.0, "all_reduce": 0.0}
        learner.meta_gradient = timed(learner.meta_gradient, clock, "gradient")  # type: ignore[method-assign]
        world.mean_gradient = timed(world.mean_gradient, clock, "all_reduce")  # type: ignore[method-assign]
        sample = timed(sampler, clock, "sample")

        def run_steps(n: int) -> float:
            started = time.perf_counter()
            meta_train(
                params,
                learner,
                sample,
                config.meta.model_copy(update={"meta_steps": n}),
                generator=torch.Generator().manual_seed(0),
                progress=False,
                world=world,
            )
            return time.perf_counter() - started

        run_steps(warmup)
        clock.update(sample=0.0, gradient=0.0, all_reduce=0.0)
        seconds = run_steps(steps)
        n_params = sum(p.numel() for p in params.values())
        alone_ms = all_reduce_ms(world, n_params + 1)
        if world.is_main:
            per_step = {k: 1000 * v / steps for k, v in clock.items()}
            per_step["other"] = 1000 * seconds / steps - sum(per_step.values())
            report = {
                "meta_batch": batch,
                "steps": steps,
                "seconds": seconds,
                "steps_per_s": steps / seconds,
                "tasks_per_s": steps * batch / seconds,
                "ms_per_step": per_step,
                "n_params": n_params,
                "all_reduce_bytes": (n_params + 1) * 4,
                "all_reduce_alone_ms": alone_ms,
                "setup_s": setup_s,
            }
            result.write_text(json.dumps(report))


def all_reduce_ms(world: Any, n: int, repeat: int = 50) -> float:
    """Milliseconds of one all-reduce of ``n`` floats with the ranks already in step (the
    in-training figure also holds the wait for the slower rank)."""
    import torch
    import torch.distributed as dist

    if world.size == 1:
        return 0.0
    buffer = torch.zeros(n)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(repeat):
        dist.all_reduce(buffer)
    return 1000 * (time.perf_counter() - started) / repeat


def timed(fn: Callable[..., Any], clock: dict[str, float], key: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[key] += time.perf_counter() - started

    return call


def row(r: dict[str, Any]) -> str:
    ms = r["ms_per_step"]
    return (
        f"batch {r['meta_batch']:>3} | {r['ranks']} rank(s) x {r['threads']} thread(s) | "
        f"{r['steps_per_s']:6.2f} steps/s | {r['tasks_per_s']:7.1f} tasks/s | ms/step: sample "
        f"{ms['sample']:.1f}, gradient {ms['gradient']:.1f}, all-reduce + wait "
        f"{ms['all_reduce']:.1f} (alone {r['all_reduce_alone_ms']:.2f}), other {ms['other']:.1f}"
        f" | setup {r['setup_s']:.1f} s"
    )


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(command: list[Any], env: dict[str, str] | None = None) -> None:
    subprocess.run([str(c) for c in command], check=True, env=env, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
