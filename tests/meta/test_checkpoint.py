"""Resumable meta-training: a run stopped after checkpoint k and resumed ends exactly where an
uninterrupted run ends; damaged or foreign checkpoints are refused with a clear error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from metarec.config import MetaConfig, ModelConfig
from metarec.errors import CheckpointError, ConfigError
from metarec.meta import ALGORITHMS, Batch, Params, TaskBatch, TrainState, meta_train, stack_tasks
from metarec.meta.checkpoint import (
    CHECKPOINT_FILE,
    Checkpointing,
    checkpoint_bytes,
    checkpoint_step,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from metarec.models import init_params

D_IN = 5


class Interrupted(Exception):
    """Stands in for a crash between two checkpoints."""


def sample(n_tasks: int, g: torch.Generator) -> TaskBatch:
    def rows(n: int) -> Batch:
        x = torch.randn(n, D_IN, generator=g)
        return Batch(x, (x[:, 0] + x[:, 1] > 0).float(), torch.ones(n))

    sizes = torch.randint(3, 8, (n_tasks,), generator=g).tolist()
    return stack_tasks([(rows(n), rows(2 * n)) for n in sizes])


def crashing_after(step: int) -> Callable[[int, torch.Generator], TaskBatch]:
    """A sampler that fails when asked for meta-batch ``step + 1``."""
    calls = {"n": 0}

    def draw(n_tasks: int, g: torch.Generator) -> TaskBatch:
        calls["n"] += 1
        if calls["n"] > step:
            raise Interrupted
        return sample(n_tasks, g)

    return draw


def _config(name: str = "maml", steps: int = 20) -> MetaConfig:
    return MetaConfig(
        algorithm=name, inner_steps=2, inner_lr=0.3, outer_lr=1e-2, meta_batch_size=4
    ).model_copy(update={"meta_steps": steps})


def _run(
    folder: Path | None,
    *,
    name: str = "maml",
    steps: int = 20,
    resume: bool = False,
    sampler: Callable[[int, torch.Generator], TaskBatch] = sample,
    fingerprint: str = "a",
) -> tuple[Params, list[dict[str, float]]]:
    config = _config(name, steps)
    learner = ALGORITHMS[name](config)
    start = init_params(
        D_IN, ModelConfig(hidden=(8, 4)), generator=torch.Generator().manual_seed(0)
    )
    scores = {"n": 0}

    def validate(params: Params) -> float:  # deterministic, and not monotone in the step
        scores["n"] += 1
        return float(torch.cos(params["layers.0.weight"].sum() * 10))

    checkpoint = (
        None
        if folder is None
        else Checkpointing(folder, every=5, resume=resume, fingerprint={"run": fingerprint})
    )
    return meta_train(
        learner.init_params(start),
        learner,
        sampler,
        config,
        generator=torch.Generator().manual_seed(11),
        validate=validate,
        validate_every=3,
        progress=False,
        checkpoint=checkpoint,
    )


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_a_run_resumed_after_a_crash_ends_exactly_like_an_uninterrupted_one(
    name: str, tmp_path: Path
) -> None:
    expected, expected_history = _run(None, name=name)
    with pytest.raises(Interrupted):
        _run(tmp_path, name=name, sampler=crashing_after(13))  # crash during step 14
    assert checkpoint_step(tmp_path / CHECKPOINT_FILE) == 10  # steps 11 to 13 are lost
    resumed, history = _run(tmp_path, name=name, resume=True)
    # bit for bit: params, Adam's moments, the sampler's RNG and the best-so-far all resumed
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    assert history == expected_history
    assert [r["step"] for r in history] == list(range(1, 21))


def test_a_longer_resumed_run_continues_the_same_trajectory(tmp_path: Path) -> None:
    _run(tmp_path, steps=10)
    _, history = _run(tmp_path, steps=20, resume=True)
    _, expected = _run(None, steps=20)
    assert [r["loss"] for r in history] == [r["loss"] for r in expected]
    # the 10-step run validated at its last step, which the 20-step run does not: that score
    # stays in the history (and may be the best one), the rest is the same
    assert {r["step"] for r in history if "val" in r} == {3, 6, 9, 10, 12, 15, 18, 20}
    assert {r["step"] for r in expected if "val" in r} == {3, 6, 9, 12, 15, 18, 20}


def test_the_checkpoint_is_safetensors_with_json_state_and_everything_a_resume_needs(
    tmp_path: Path,
) -> None:
    _run(tmp_path, steps=5)
    path = tmp_path / CHECKPOINT_FILE
    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file: no pickle
        names, metadata = set(f.keys()), f.metadata()
    assert metadata["format"] == "metarec-checkpoint" and len(metadata["sha256"]) == 64
    state = json.loads(metadata["state"])
    assert (
        state["step"] == 5 and len(state["history"]) == 5 and state["fingerprint"] == {"run": "a"}
    )
    assert {"rng", "params/layers.0.weight", "best/layers.0.weight"} <= names
    assert {f"optim/layers.0.weight/{k}" for k in ("exp_avg", "exp_avg_sq", "step")} <= names
    assert not [p for p in tmp_path.iterdir() if p.name != CHECKPOINT_FILE]  # no temp files


def test_restore_round_trips_the_whole_train_state() -> None:
    config = _config()
    params = init_params(D_IN, ModelConfig(hidden=(8, 4)), generator=torch.Generator())
    state = TrainState.start(params, config, torch.Generator().manual_seed(4))
    for _ in range(3):  # give Adam some state and move the RNG
        for p in state.params.values():
            p.grad = torch.randn(p.shape, generator=state.generator)
        state.optimizer.step()
    state.step, state.best_score, state.best_params = 3, 0.25, state.snapshot()
    state.history = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25, "val": float("nan")}]
    data = checkpoint_bytes(state, fingerprint={"run": "f"})

    fresh = TrainState.start(params, config, torch.Generator().manual_seed(99))
    restore(fresh, data, fingerprint={"run": "f"}, source="test")
    assert fresh.step == 3 and fresh.best_score == 0.25 and fresh.history[0] == state.history[0]
    assert all(torch.equal(fresh.params[k], state.params[k]) for k in params)
    assert all(torch.equal(fresh.best_params[k], state.best_params[k]) for k in params)  # type: ignore[index]
    assert torch.equal(fresh.generator.get_state(), state.generator.get_state())
    mine, theirs = fresh.optimizer.state_dict()["state"], state.optimizer.state_dict()["state"]
    assert all(torch.equal(mine[i][k], theirs[i][k]) for i in theirs for k in theirs[i])


def test_damaged_and_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    _run(tmp_path, steps=5)
    path = tmp_path / CHECKPOINT_FILE
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match="belongs to another run: its run differ"):
        _run(tmp_path, resume=True, fingerprint="b")

    flipped = bytearray(good)
    flipped[-3] ^= 0xFF  # inside the last tensor's bytes
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        _run(tmp_path, resume=True)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        _run(tmp_path, resume=True)
    with pytest.raises(CheckpointError, match=r"not a metarec checkpoint|damaged"):
        read_checkpoint(b"\x00" * 16)


def test_resume_and_fresh_start_refuse_the_wrong_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        _run(tmp_path / "empty", resume=True)
    _run(tmp_path, steps=5)
    with pytest.raises(CheckpointError, match="already holds a checkpoint; pass --resume"):
        _run(tmp_path, steps=5)  # a fresh run would silently overwrite it
    with pytest.raises(CheckpointError, match=r"past meta\.meta_steps=3"):
        _run(tmp_path, steps=3, resume=True)
    with pytest.raises(ConfigError, match="every must be >= 1"):
        Checkpointing(tmp_path, every=0)


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / CHECKPOINT_FILE
    save_checkpoint(path, b"old")

    def power_cut(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="disk gone"):
        save_checkpoint(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]
