"""Data-parallel meta-training over tasks with ``torch.distributed`` (launched by ``torchrun``).

Every rank draws the *same* global meta-batch of T tasks from the same seeded generator, takes
its shard ``tasks[rank::size]`` (n_r tasks), and computes the meta-gradient of the mean loss over
its shard. The global meta-loss is a mean over tasks, so

    mean_t g_t = sum_r (n_r / T) * mean_{t in shard r} g_t,

and one all-reduce (a sum) of the shard gradients weighted by ``n_r / T`` gives every rank the
gradient the single-process run computes, up to float summation order. Adam then steps
identically everywhere. The loss travels in the same buffer as the gradients: one collective of
``(n_params + 1)`` floats per meta-step.

Exactness needs the meta-loss to be a mean of independent per-task terms. Every algorithm of
:data:`~metarec.meta.registry.ALGORITHMS` is one (Reptile's direction too: it is a mean of
per-task displacements); any other learner is refused, because a loss pooled over rows (as the
pretraining baseline's) would be weighted wrongly.

Run options, not config: the backend and ranks come from the ``torchrun`` environment.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from metarec.errors import ConfigError
from metarec.meta.registry import ALGORITHMS
from metarec.models.scorer import Params
from metarec.tasks.batch import Batch, TaskBatch

Backend = Literal["gloo", "nccl"]

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = "torchrun --nproc-per-node 2 -m metarec.cli train ... --distributed"


@dataclass
class World:
    """The ranks of one meta-training run; ``World()`` is the single-process run (no-ops).

    Attributes:
        rank: this process's rank, 0 is the main rank (checkpoints, artifacts, progress).
        size: number of ranks.
        device: where collectives run (CPU for gloo, this rank's GPU for NCCL).

    Example:
        >>> import torch
        >>> from metarec.meta import Batch, stack_tasks
        >>> rows = Batch(torch.zeros(2, 3), torch.zeros(2), torch.ones(2))
        >>> tasks = stack_tasks([(rows, rows)] * 5)
        >>> shard, weight = World(rank=1, size=2).shard(tasks)  # tasks 1 and 3 of 5
        >>> shard.n_tasks, weight
        (2, 0.4)
    """

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _owns_group: bool = field(default=False, repr=False)

    @classmethod
    def from_torchrun(cls, backend: Backend | None = None, *, timeout_s: float = 1800.0) -> World:
        """Join the process group described by the environment ``torchrun`` sets.

        Args:
            backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per rank); default NCCL when CUDA
                is available, else gloo.
            timeout_s: how long a collective may wait for the other ranks.

        Raises:
            ConfigError: the environment lacks ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` or
                ``MASTER_PORT`` (not launched by ``torchrun``), or NCCL without CUDA.
        """
        missing = [name for name in _TORCHRUN_ENV if name not in os.environ]
        if missing:
            raise ConfigError(
                f"distributed training needs the environment torchrun sets; {missing} are "
                f"missing. Launch it as `{LAUNCH_HINT}`, or drop --distributed"
            )
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        device = torch.device("cpu")
        if backend == "nccl":
            if not torch.cuda.is_available():
                raise ConfigError("the nccl backend needs CUDA; use gloo on CPU")
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(
                backend, rank=rank, world_size=size, timeout=timedelta(seconds=timeout_s)
            )
            return cls(rank=rank, size=size, device=device, _owns_group=True)
        return cls(rank=rank, size=size, device=device)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes and reports."""
        return self.rank == 0

    def check(self, learner: object, meta_batch_size: int) -> None:
        """Refuse a run whose sharded result would not equal the single-process one.

        Raises:
            ConfigError: fewer tasks per meta-batch than ranks, or a learner whose meta-loss
                is not known to be a mean over tasks.
        """
        if self.size == 1:
            return
        if meta_batch_size < self.size:
            raise ConfigError(
                f"meta.meta_batch_size={meta_batch_size} is smaller than the {self.size} ranks; "
                "every rank needs at least one task: raise meta_batch_size or launch fewer ranks"
            )
        if type(learner) not in ALGORITHMS.values():
            raise ConfigError(
                f"distributed training shards each meta-batch by task, which is exact only when "
                f"the meta-loss is a mean over tasks; {type(learner).__name__} is not one of the "
                f"registry's algorithms {sorted(ALGORITHMS)} (all such means). Train it in one "
                "process"
            )

    def shard(self, tasks: TaskBatch) -> tuple[TaskBatch, float]:
        """This rank's tasks ``tasks[rank::size]`` and their share ``n_r / T`` of the mean.

        Every field of the batch is sliced on its task dim (support, query and any per-task
        extra such as a category context). The padding stays that of the global batch, so each
        task's computation has the same shapes as in the single-process run.
        """
        if self.size == 1:
            return tasks, 1.0
        pick = slice(self.rank, None, self.size)
        parts: dict[str, Any] = {f.name: _take(getattr(tasks, f.name), pick) for f in fields(tasks)}
        shard = replace(tasks, **parts)
        return shard, shard.n_tasks / tasks.n_tasks

    def mean_gradient(self, loss: Tensor, grads: Params, weight: float) -> tuple[Tensor, Params]:
        """The global mean loss and gradient from this rank's shard mean (one all-reduce).

        Args:
            loss: ``()`` mean loss over this rank's shard.
            grads: its gradient, keyed like the params (the same key order on every rank).
            weight: ``n_r / T`` from :meth:`shard`.

        Returns:
            ``(loss, grads)`` of the whole meta-batch, identical on every rank.
        """
        if self.size == 1:
            return loss, grads
        flat = torch.cat([loss.reshape(1)] + [g.reshape(-1) for g in grads.values()])
        flat = (flat * weight).to(self.device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat.cpu()
        out, offset = {}, 1
        for name, g in grads.items():
            out[name] = flat[offset : offset + g.numel()].view_as(g)
            offset += g.numel()
        return flat[0], out

    def broadcast_score(self, score: float) -> float:
        """Rank 0's validation score on every rank (the others pass anything)."""
        if self.size == 1:
            return score
        value = torch.tensor([score], dtype=torch.float64, device=self.device)
        dist.broadcast(value, src=0)
        return float(value.item())

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's bytes on every rank (the others pass None): a checkpoint read once."""
        if self.size == 1:
            return data or b""
        length = torch.tensor([len(data or b"")], dtype=torch.int64, device=self.device)
        dist.broadcast(length, src=0)
        n = int(length.item())
        if n == 0:
            return b""
        if self.is_main:
            buffer = torch.frombuffer(bytearray(data or b""), dtype=torch.uint8).to(self.device)
        else:
            buffer = torch.empty(n, dtype=torch.uint8, device=self.device)
        dist.broadcast(buffer, src=0)
        return bytes(buffer.cpu().numpy())

    def require_same(self, value: str, what: str) -> None:
        """Raise on every rank unless every rank passed the same ``value``.

        Raises:
            ConfigError: the ranks disagree on ``what`` (different data, config or code).
        """
        if self.size == 1:
            return
        digest = int.from_bytes(hashlib.sha256(value.encode()).digest()[:7], "little")
        mine = torch.tensor([digest], dtype=torch.int64, device=self.device)
        lowest, highest = mine.clone(), mine.clone()
        dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
        dist.all_reduce(highest, op=dist.ReduceOp.MAX)
        if int(lowest.item()) != int(highest.item()):
            raise ConfigError(
                f"the {self.size} ranks disagree on {what}; launch every rank with the same "
                "config, data and code"
            )

    def close(self, *, wait_for_peers: bool = True) -> None:
        """Leave the process group if this object joined it (idempotent).

        Args:
            wait_for_peers: meet every rank at a barrier first, so no rank tears its
                connections down while a peer's last collective is still in flight (a gloo
                rank was seen to abort at exit without it, once in some hundred runs under
                load). False on the way out of an error, where a peer may never arrive.
        """
        if self._owns_group and dist.is_initialized():
            if wait_for_peers:
                dist.barrier()
            dist.destroy_process_group()
        self._owns_group = False

    def __enter__(self) -> World:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(wait_for_peers=exc_type is None)


def _take(value: object, pick: slice) -> object:
    """``value`` restricted to the tasks ``pick`` (a task-stacked field of a TaskBatch)."""
    if isinstance(value, Batch):
        return Batch(
            value.x[pick].contiguous(), value.y[pick].contiguous(), value.mask[pick].contiguous()
        )
    if isinstance(value, Tensor):
        return value[pick].contiguous()
    return value  # None: a field the batch does not carry


def params_digest(params: Params) -> str:
    """A sha256 of the params' names, shapes and bytes (to check ranks start equal)."""
    h = hashlib.sha256()
    for name, value in params.items():
        t = value.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
