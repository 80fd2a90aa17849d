"""Scale-out end to end, through the real command: two torchrun ranks train the model one process
trains; a run killed with SIGKILL resumes to the same model; an export trains the same model as
its store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from metarec.cli import app
from metarec.config import TrainConfig, load_config
from metarec.data import Store
from metarec.data.export import export_store, open_export
from metarec.errors import CheckpointError
from metarec.meta.checkpoint import CHECKPOINT_FILE, Checkpointing, checkpoint_step
from metarec.meta.model import MetaModel, load_model
from metarec.training import train

runner = CliRunner()

# known_answer_config() as a file, so that the command and the library read the same config.
KNOWN_TOML = """seed = 0
method = "mlp"
hold_out = ["Shelf > C7"]
[tasks]
shots = 3
train_shots = [1, 3]
min_users = 10
[model]
hidden = [16, 8]
[features]
cf_rank = 4
[meta]
first_order = true
meta_steps = 60
meta_batch_size = 8
inner_steps = 2
outer_lr = 0.01
"""


@pytest.fixture(scope="module")
def known_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "known.toml"
    path.write_text(KNOWN_TOML)
    return path


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _train_here(store: Path, config: Path, **overrides: object) -> MetaModel:
    """The single-process reference: the library, this process, the command's defaults."""
    with Store.open(store, read_only=True) as opened:
        return train(opened, load_config(config, **overrides), progress=False)


def _same(a: MetaModel, b: MetaModel) -> bool:
    return a.history == b.history and all(torch.equal(a.params[k], b.params[k]) for k in a.params)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "metarec.cli", *args]


def _env() -> dict[str, str]:
    # one thread, as in this process (conftest), so that floats round the same way
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_two_torchrun_ranks_train_the_model_one_process_trains(
    known_store: Path, known_toml: Path, tmp_path: Path
) -> None:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    args = ["-m", "metarec.cli", "train", "--store", str(known_store), "--config", str(known_toml)]
    args += ["--out", str(tmp_path / "model"), "--distributed", "--quiet", "--steps", "40"]
    run = subprocess.run(
        [*launch, *args, "--checkpoint-dir", str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote") == 1 and "2 ranks" in run.stdout  # rank 0 alone reports
    assert checkpoint_step(tmp_path / "ckpt" / CHECKPOINT_FILE) == 40
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [CHECKPOINT_FILE]

    meta = {**load_config(known_toml).meta.model_dump(), "meta_steps": 40}
    ranks, alone = load_model(tmp_path / "model"), _train_here(known_store, known_toml, meta=meta)
    for name, value in alone.params.items():
        # Float summation order only (the all-reduce adds two shard means): measured 9e-8.
        # Rounding differences can grow over many Adam steps (measured 1e-4 after 60 steps on
        # this store), so the run is kept short; a wrong reduction is off by about 1e-2.
        torch.testing.assert_close(ranks.params[name], value, atol=1e-5, rtol=1e-4)
    assert [h["step"] for h in ranks.history] == [h["step"] for h in alone.history]
    # validation ran on rank 0 and its decision was broadcast: the same steps, the same scores
    assert [h.get("val") for h in ranks.history] == pytest.approx(
        [h.get("val") for h in alone.history], abs=1e-6
    )


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_model(
    known_store: Path, known_toml: Path, tmp_path: Path
) -> None:
    folder, steps = tmp_path / "ckpt", "150"
    args = ["train", "--store", str(known_store), "--config", str(known_toml), "--quiet"]
    args += ["--steps", steps, "--checkpoint-dir", str(folder), "--checkpoint-every", "5"]
    child = subprocess.Popen(
        _command(*args, "--out", str(tmp_path / "never")),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while (checkpoint_step(folder / CHECKPOINT_FILE) or 0) < 10:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint after 90 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)  # mid-run: no handler, no cleanup, no final write
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    killed_at = checkpoint_step(folder / CHECKPOINT_FILE)
    assert killed_at is not None and 10 <= killed_at < 150
    assert not (tmp_path / "never").exists()

    out = _ok(*args, "--resume", "--out", str(tmp_path / "resumed"))
    assert "wrote" in out
    resumed = load_model(tmp_path / "resumed")
    expected = _train_here(
        known_store,
        known_toml,
        meta={**load_config(known_toml).meta.model_dump(), "meta_steps": 150},
    )
    assert _same(resumed, expected)  # bit for bit, history and validation scores included


def test_training_from_an_export_equals_training_from_the_store(
    known_store: Path, known_toml: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    assert "8 categories" in _ok("export", "--store", str(known_store), "--out", str(export))
    # the sealed category's interactions are never opened: damage them and train anyway
    sealed = next((export / "interactions").glob("category=Shelf%20%3E%20C7/*.parquet"))
    sealed.write_bytes(b"damaged")
    _ok("train", "--store", str(export), "--config", str(known_toml), "--out", str(tmp_path / "m"))
    assert _same(load_model(tmp_path / "m"), _train_here(known_store, known_toml))


def test_a_resume_must_match_the_config_and_data_but_not_where_they_are_read_from(
    known_store: Path, known_toml: Path, tmp_path: Path
) -> None:
    def config(**meta: object) -> TrainConfig:
        return load_config(known_toml, meta={**load_config(known_toml).meta.model_dump(), **meta})

    def resume(store: Store, config: TrainConfig) -> MetaModel:
        folder = Checkpointing(tmp_path / "ckpt", every=5, resume=True)
        return train(store, config, progress=False, checkpoint=folder)

    with Store.open(known_store, read_only=True) as store:
        train(
            store,
            config(meta_steps=10),
            progress=False,
            checkpoint=Checkpointing(tmp_path / "ckpt"),
        )
        with pytest.raises(CheckpointError, match="its settings differ"):
            resume(store, config(meta_steps=20, outer_lr=0.02))  # another config
    export_store(known_store, tmp_path / "export")
    fewer = open_export(tmp_path / "export", exclude=["Shelf > C7", "Shelf > C0"])
    with fewer, pytest.raises(CheckpointError, match="its data differ"):
        resume(fewer, config(meta_steps=20))  # other data: a training category missing
    # the same data from its export (sealed category unread) continues the store's run
    with open_export(tmp_path / "export", exclude=["Shelf > C7"]) as same:
        resumed = resume(same, config(meta_steps=20))
    expected = _train_here(known_store, known_toml, meta=config(meta_steps=20).meta)
    # the same trajectory; the 10-step run's final validation stays in the history (a longer
    # resumed run may pick it as the best), so compare the losses, step by step
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in expected.history]


def test_the_command_refuses_distributed_and_resume_misuse(
    known_store: Path, known_toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["train", "--store", str(known_store), "--out", str(tmp_path / "m"), "--quiet"]
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, [*base, "--distributed"])
    assert result.exit_code == 2 and "torchrun --nproc-per-node 2" in result.output
    result = runner.invoke(app, [*base, "--resume"])
    assert result.exit_code == 2 and "--resume needs --checkpoint-dir" in result.output
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, base)
    assert result.exit_code == 2 and "without --distributed" in result.output
    assert not (tmp_path / "m").exists()
