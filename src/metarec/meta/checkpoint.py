"""Resumable meta-training: atomic, checksummed checkpoints without pickle.

One file, ``<folder>/checkpoint.safetensors``, rewritten every N steps: temporary file in the
same folder, ``fsync``, ``os.replace``, ``fsync`` of the folder, so a crash at any moment leaves
either the previous checkpoint or the new one, never a mix. Tensors are safetensors; the rest
(step, best score, history, the run's fingerprint) is JSON in the safetensors header, and a
sha256 over both is checked on load. Nothing is unpickled, so the Adam state and the
``torch.Generator`` state are written out explicitly:

| tensor name | what |
|---|---|
| ``params/<name>`` | the meta-parameters |
| ``best/<name>`` | the best-validated params (absent before the first validation) |
| ``optim/<name>/<key>`` | Adam's per-parameter state (``exp_avg``, ``exp_avg_sq``, ``step``) |
| ``rng`` | ``torch.Generator.get_state()``, uint8: the sampler's only randomness |

The task sampler holds no state of its own besides that generator (its cache is a pure function
of the data), so params, Adam, RNG and step are the whole run: a resumed run continues the
same sequence of meta-batches and ends with bit-identical parameters.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import safetensors.torch
import torch
from torch import Tensor

from metarec.atomic import write_atomic
from metarec.errors import CheckpointError, ConfigError
from metarec.meta.state import TrainState

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT = "metarec-checkpoint"
VERSION = 1


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a meta-training run checkpoints, and whether it resumes.

    Attributes:
        folder: the checkpoint folder (created when missing). Only rank 0 reads and writes
            it; when resuming, rank 0 sends the checkpoint to the other ranks.
        every: write a checkpoint every this many meta-steps (and after the last one).
        resume: continue from the folder's checkpoint (which must exist); without it, a folder
            that already holds a checkpoint is refused rather than overwritten.
        fingerprint: identity of the run, digests by part (``{"settings": ..., "data": ...}``);
            a checkpoint whose parts differ is refused, naming them.
            :func:`metarec.meta.model.train_on` fills it in.
    """

    folder: Path
    every: int = 50
    resume: bool = False
    fingerprint: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ConfigError(f"checkpoint every must be >= 1 meta-step, got {self.every}")

    @property
    def path(self) -> Path:
        return Path(self.folder) / CHECKPOINT_FILE


def run_fingerprint(settings: Mapping[str, Any], frames: Sequence[pd.DataFrame]) -> str:
    """A sha256 identifying a run by its settings and the data it trains on.

    Args:
        settings: JSON-able settings that change the result (config, validation cadence).
        frames: the tables read (their values and column names; not their index or order of
            storage, so a store and its Parquet export give the same fingerprint).

    Returns:
        64 hex characters.
    """
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for frame in frames:
        h.update(json.dumps([str(c) for c in frame.columns]).encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def checkpoint_bytes(
    state: TrainState, *, fingerprint: Mapping[str, str], world_size: int = 1
) -> bytes:
    """The checkpoint file's content for ``state`` (see the module docstring for the layout)."""
    names = list(state.params)
    tensors: dict[str, Tensor] = {f"params/{n}": p.detach() for n, p in state.params.items()}
    if state.best_params is not None:
        tensors.update({f"best/{n}": p for n, p in state.best_params.items()})
    optim = state.optimizer.state_dict()["state"]
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in optim.items():
        name = names[index]
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{name}/{key}"] = value
            else:
                scalars.setdefault(name, {})[key] = value
    tensors["rng"] = state.generator.get_state()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    info = {
        "step": state.step,
        "best_score": None if math.isinf(state.best_score) else state.best_score,
        "history": state.history,
        "fingerprint": dict(fingerprint),
        "param_shapes": {n: list(p.shape) for n, p in state.params.items()},
        "optim_scalars": scalars,
        "world_size": world_size,
    }
    text = json.dumps(info)
    metadata = {"format": FORMAT, "version": str(VERSION), "state": text}
    metadata["sha256"] = _digest(text, tensors)
    return safetensors.torch.save(tensors, metadata=metadata)


def save_checkpoint(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`metarec.atomic.write_atomic`)."""
    write_atomic(path, data)


def read_checkpoint(data: bytes, source: str = "checkpoint") -> tuple[dict[str, Any], dict]:
    """Parse and verify checkpoint bytes.

    Args:
        data: the file's content.
        source: what to call it in errors (the path).

    Returns:
        ``(info, tensors)``: the JSON state and the tensors by name.

    Raises:
        CheckpointError: not a metarec checkpoint, truncated, or failing its checksum.
    """
    try:
        tensors = safetensors.torch.load(data)
        metadata = _header_metadata(data)
        if metadata.get("format") != FORMAT:
            raise CheckpointError(f"{source} is not a metarec checkpoint")
        if metadata.get("version") != str(VERSION):
            raise CheckpointError(
                f"{source} has checkpoint version {metadata.get('version')}, this metarec reads "
                f"{VERSION}; start a new run in another --checkpoint-dir"
            )
        text = metadata["state"]
        if _digest(text, tensors) != metadata.get("sha256"):
            raise CheckpointError(
                f"{source} fails its checksum (damaged on disk); delete it to start over, or "
                "restore a good copy"
            )
        return json.loads(text), tensors
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors, JSON and key errors all mean "unreadable"
        raise CheckpointError(
            f"{source} is damaged or truncated ({type(exc).__name__}: {exc}); delete it to "
            "start over, or restore a good copy"
        ) from exc


def restore(state: TrainState, data: bytes, *, fingerprint: Mapping[str, str], source: str) -> None:
    """Load checkpoint bytes into a freshly started ``state`` (in place).

    Raises:
        CheckpointError: damaged, or written by another run (fingerprint or param shapes).
    """
    info, tensors = read_checkpoint(data, source)
    saved: dict[str, str] = info["fingerprint"]
    differ = sorted(k for k in {*saved, *fingerprint} if saved.get(k) != fingerprint.get(k))
    if differ:
        raise CheckpointError(
            f"{source} belongs to another run: its {' and '.join(differ)} differ from this "
            "run's; resume with the same config and store, or use a new --checkpoint-dir"
        )
    shapes = {n: list(p.shape) for n, p in state.params.items()}
    if info["param_shapes"] != shapes:
        raise CheckpointError(
            f"{source} holds params {info['param_shapes']} but this run has {shapes}; resume "
            "with the model config that wrote it"
        )
    with torch.no_grad():
        for name, p in state.params.items():
            p.copy_(tensors[f"params/{name}"])
    names = list(state.params)
    optim: dict[int, dict[str, Any]] = {}
    for index, name in enumerate(names):
        entry = {
            key.rsplit("/", 1)[1]: value
            for key, value in tensors.items()
            if key.startswith(f"optim/{name}/")
        }
        entry.update(info["optim_scalars"].get(name, {}))
        if entry:
            optim[index] = entry
    groups = state.optimizer.state_dict()["param_groups"]  # hyperparameters from the config
    state.optimizer.load_state_dict({"state": optim, "param_groups": groups})
    state.generator.set_state(tensors["rng"])
    state.step = int(info["step"])
    best = {n: tensors[f"best/{n}"] for n in names if f"best/{n}" in tensors}
    state.best_params = best or None
    state.best_score = -math.inf if info["best_score"] is None else float(info["best_score"])
    state.history = list(info["history"])


def checkpoint_step(path: str | Path) -> int | None:
    """The step of the checkpoint at ``path`` (verified), or None when there is none.

    Raises:
        CheckpointError: the file exists but is damaged.
    """
    path = Path(path)
    if not path.exists():
        return None
    info, _ = read_checkpoint(path.read_bytes(), str(path))
    return int(info["step"])


def _digest(text: str, tensors: Mapping[str, Tensor]) -> str:
    h = hashlib.sha256(text.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (8-byte little-endian length, JSON header)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return dict(header.get("__metadata__", {}))
