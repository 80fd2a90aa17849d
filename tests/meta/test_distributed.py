"""Data-parallel meta-training: shards add up to the global meta-batch, and two real gloo ranks
train every algorithm to the parameters one process reaches."""

from __future__ import annotations

import faulthandler
import math
import os
import socket
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.multiprocessing as mp

from metarec.config import MetaConfig, ModelConfig
from metarec.errors import ConfigError
from metarec.meta import ALGORITHMS, MAML, Batch, Params, TaskBatch, meta_train, stack_tasks
from metarec.meta.checkpoint import Checkpointing, checkpoint_step
from metarec.meta.distributed import World
from metarec.models import init_params

D_IN = 6
STEPS = 12
# Rank results differ from one process's only by float summation order (the all-reduce adds
# two shard means where one process takes one mean): measured at most 6e-8 after 12 steps.
TOLERANCE = {"atol": 2e-6, "rtol": 1e-5}


def _rows(n: int, g: torch.Generator, dtype: torch.dtype = torch.float32) -> Batch:
    x = torch.randn(n, D_IN, generator=g, dtype=dtype)
    w = torch.randn(D_IN, generator=g, dtype=dtype)
    return Batch(x, (x @ w > 0).to(dtype), torch.ones(n, dtype=dtype))


def sample(n_tasks: int, g: torch.Generator) -> TaskBatch:
    """Tasks of varied sizes, so that the global batch is padded."""
    sizes = torch.randint(3, 9, (n_tasks,), generator=g).tolist()
    return stack_tasks([(_rows(n, g), _rows(2 * n, g)) for n in sizes])


def _config(name: str) -> MetaConfig:
    return MetaConfig(
        algorithm=name, inner_steps=2, inner_lr=0.3, outer_lr=1e-2, meta_batch_size=5
    ).model_copy(update={"meta_steps": STEPS})


def _start(name: str, dtype: torch.dtype = torch.float32) -> Params:
    learner = ALGORITHMS[name](_config(name))
    params = init_params(
        D_IN, ModelConfig(hidden=(8, 4)), generator=torch.Generator().manual_seed(1)
    )
    return {k: v.to(dtype) for k, v in learner.init_params(params).items()}


def _score(params: Params) -> float:
    """A deterministic validation score (its value only decides which params are "best")."""
    return float(-sum(p.square().sum() for p in params.values()))


def _train(name: str, world: World | None = None, folder: Path | None = None) -> Params:
    checkpoint = None if folder is None else Checkpointing(folder / name, every=5)
    params, _ = meta_train(
        _start(name),
        ALGORITHMS[name](_config(name)),
        sample,
        _config(name),
        generator=torch.Generator().manual_seed(7),
        validate=_score,
        validate_every=4,
        progress=False,
        checkpoint=checkpoint,
        world=world,
    )
    return params


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_weighted_shards_add_up_to_the_global_meta_gradient(name: str, size: int) -> None:
    # float64: what is left is the algebra (sum_r n_r/T * shard mean == global mean), exactly.
    g = torch.Generator().manual_seed(3)
    sizes = [3, 7, 5, 4, 8, 6, 3]  # 7 tasks: shards of 4+3 or 3+2+2 tasks, uneven on purpose
    tasks = stack_tasks(
        [(_rows(n, g, torch.float64), _rows(2 * n, g, torch.float64)) for n in sizes]
    )
    learner = ALGORITHMS[name](_config(name))
    params = _start(name, torch.float64)
    loss, grads = learner.meta_gradient(params, tasks)

    total_loss = torch.zeros((), dtype=torch.float64)
    total = {k: torch.zeros_like(v) for k, v in grads.items()}
    for rank in range(size):
        shard, weight = World(rank=rank, size=size).shard(tasks)
        shard_loss, shard_grads = learner.meta_gradient(params, shard)
        total_loss += weight * shard_loss
        for k in total:
            total[k] += weight * shard_grads[k]
    torch.testing.assert_close(total_loss, loss, atol=1e-12, rtol=0)
    for k in grads:
        torch.testing.assert_close(total[k], grads[k], atol=1e-12, rtol=0)


def test_shards_partition_the_tasks_and_slice_every_field() -> None:
    g = torch.Generator().manual_seed(0)
    tasks = stack_tasks([(_rows(2 + t, g), _rows(3, g)) for t in range(7)])
    seen: list[float] = []
    for rank in range(3):
        shard, weight = World(rank=rank, size=3).shard(tasks)
        assert weight == shard.n_tasks / 7
        for f in fields(tasks):  # every per-task field, whatever the batch carries
            full, part = getattr(tasks, f.name), getattr(shard, f.name)
            if isinstance(full, Batch):
                assert torch.equal(part.x, full.x[rank::3])
                assert torch.equal(part.mask, full.mask[rank::3])
                assert part.n_rows == full.n_rows  # the global padding is kept
            elif isinstance(full, torch.Tensor):
                assert torch.equal(part, full[rank::3])
        seen += shard.support.mask.sum(1).tolist()  # task t has 2 + t support rows
    assert sorted(seen) == [2.0 + t for t in range(7)]  # each task on exactly one rank
    alone, weight = World().shard(tasks)
    assert alone is tasks and weight == 1.0


def test_runs_that_cannot_be_sharded_exactly_are_refused() -> None:
    class PooledRows(MAML):
        """Not a registry algorithm: its loss may not be a mean over tasks."""

    with pytest.raises(ConfigError, match="meta_batch_size=2 is smaller than the 4 ranks"):
        World(rank=0, size=4).check(MAML(MetaConfig()), meta_batch_size=2)
    with pytest.raises(ConfigError, match="PooledRows is not one of the registry"):
        World(rank=0, size=2).check(PooledRows(MetaConfig()), meta_batch_size=8)
    World().check(PooledRows(MetaConfig()), meta_batch_size=1)  # one process: anything goes


def test_joining_without_the_torchrun_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"torchrun --nproc-per-node 2 -m metarec\.cli train"):
        World.from_torchrun()


def _rank_main(rank: int, size: int, port: int, out: str) -> None:
    """One rank of the spawned run: every algorithm, then the params to a file per rank."""
    faulthandler.enable(all_threads=True)  # a rank that aborts shows where, in the test's log
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    with World.from_torchrun("gloo") as world:
        assert (world.rank, world.size) == (rank, size)
        calls = {"n": 0}

        def counted(params: Params) -> float:
            calls["n"] += 1
            return _score(params)

        result: dict[str, torch.Tensor] = {}
        for name in sorted(ALGORITHMS):
            checkpoint = Checkpointing(Path(out) / name, every=5)
            params, history = meta_train(
                _start(name),
                ALGORITHMS[name](_config(name)),
                sample,
                _config(name),
                generator=torch.Generator().manual_seed(7),
                validate=counted,
                validate_every=4,
                progress=False,
                checkpoint=checkpoint,
                world=world,
            )
            result.update({f"{name}/{k}": v for k, v in params.items()})
            result[f"{name}/losses"] = torch.tensor([r["loss"] for r in history])
        result["validate_calls"] = torch.tensor(calls["n"])
    safetensors.torch.save_file(result, str(Path(out) / f"rank{rank}.safetensors"))
    # The result is on disk: leave without the interpreter's finalization, where PyTorch's own
    # threads can race the teardown and abort a process whose work is done (pytorch issue
    # 190489; CI saw "terminate called without an active exception" once). A rank that fails
    # before this line still fails the test, and faulthandler shows where.
    sys.stderr.flush()
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_ranks_train_every_algorithm_to_the_single_process_params(
    tmp_path: Path,
) -> None:
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [safetensors.torch.load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    validations = math.ceil(STEPS / 4)
    assert ranks[0]["validate_calls"].item() == validations * len(ALGORITHMS)
    assert ranks[1]["validate_calls"].item() == 0  # rank 0 validates, the decision is broadcast
    for name in sorted(ALGORITHMS):
        alone = _train(name)
        for k, v in alone.items():
            # identical on both ranks (same all-reduced gradients, same broadcast decisions) ...
            assert torch.equal(ranks[0][f"{name}/{k}"], ranks[1][f"{name}/{k}"])
            # ... and the single-process run's, up to float summation order
            torch.testing.assert_close(ranks[0][f"{name}/{k}"], v, **TOLERANCE)
        assert not torch.equal(alone["layers.0.weight"], _start(name)["layers.0.weight"])
        # rank 0 alone checkpointed, and its last checkpoint is the last step
        assert checkpoint_step(tmp_path / name / "checkpoint.safetensors") == STEPS
