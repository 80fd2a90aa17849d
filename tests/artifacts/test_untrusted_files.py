"""Reading a folder that may not be ours (issue 13): only regular files, sizes checked before
anything is read, never a blocking open; files of another model refused; a version that changes
with any file; damaged ``adapted/`` groups reported, not raised, when asked to tolerate them."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
import torch

from metarec.artifacts import read_artifact, update_artifact, write_artifact
from metarec.errors import ArtifactError


def _model(folder: Path, seed: int) -> Path:
    generator = torch.Generator().manual_seed(seed)
    tensors = {
        "params": {"w": torch.randn(4, 3, generator=generator)},
        "factors": {"f": torch.randn(5, 2, generator=generator)},
    }
    return write_artifact(folder, tensors, {"seed": seed}, files={"ids.json": b"[1, 2]"})


def _relist(folder: Path, name: str) -> None:
    """Recompute one manifest entry, as someone hiding a changed file would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    data = (folder / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _read_within(folder: Path, seconds: float = 10.0) -> BaseException | None:
    """read_artifact in a thread: what it raised, failing the test if it blocks."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            read_artifact(folder)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, "read_artifact blocked"
    return outcome[0]


@pytest.mark.parametrize("name", ["params.safetensors", "manifest.json"])
def test_a_fifo_is_refused_without_blocking(tmp_path: Path, name: str) -> None:
    folder = _model(tmp_path / "m", 0)
    (folder / name).unlink()
    os.mkfifo(folder / name)  # opening it for reading would wait for a writer forever
    error = _read_within(folder)
    assert isinstance(error, ArtifactError) and "not a regular file" in str(error)


def test_a_symlink_to_a_device_is_refused_before_reading(tmp_path: Path) -> None:
    folder = _model(tmp_path / "m", 0)
    (folder / "params.safetensors").unlink()
    (folder / "params.safetensors").symlink_to("/dev/zero")  # endless: read whole, never ends
    error = _read_within(folder)
    assert isinstance(error, ArtifactError) and "not a regular file" in str(error)


def test_a_file_larger_than_listed_is_refused_before_reading(tmp_path: Path) -> None:
    folder = _model(tmp_path / "m", 0)
    with (folder / "ids.json").open("ab") as handle:
        handle.truncate(1 << 30)  # sparse 1 GiB: refused by its size, never read
    error = _read_within(folder)
    assert isinstance(error, ArtifactError) and "more than the" in str(error)


def test_files_of_another_model_are_refused_even_when_relisted(tmp_path: Path) -> None:
    a, b = _model(tmp_path / "a", 0), _model(tmp_path / "b", 1)
    (b / "factors.safetensors").write_bytes((a / "factors.safetensors").read_bytes())
    _relist(b, "factors.safetensors")
    with pytest.raises(ArtifactError, match="mixes files of different models"):
        read_artifact(b)


def test_the_version_changes_with_any_file(tmp_path: Path) -> None:
    folder = _model(tmp_path / "m", 0)
    before = read_artifact(folder).version
    assert read_artifact(folder).version == before  # stable
    (folder / "ids.json").write_bytes(b"[1, 3]")
    _relist(folder, "ids.json")
    changed = read_artifact(folder).version
    assert changed != before
    update_artifact(folder, "adapted/x", {"w": torch.ones(2)}, metadata={"category": "x"})
    assert read_artifact(folder).version == changed  # adapted groups have their own versions


def test_damaged_adapted_groups_are_reported_when_tolerated(tmp_path: Path) -> None:
    folder = _model(tmp_path / "m", 0)
    update_artifact(folder, "adapted/x", {"w": torch.ones(2)}, metadata={"category": "x"})
    update_artifact(folder, "adapted/y", {"w": torch.ones(2)}, metadata={"category": "y"})
    (folder / "adapted/x.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="adapted/x"):
        read_artifact(folder)
    artifact = read_artifact(folder, tolerate="adapted/")
    assert list(artifact.damaged) == ["adapted/x.safetensors"]
    assert "adapted/x" not in artifact.tensors and "adapted/y" in artifact.tensors
    (folder / "params.safetensors").write_bytes(b"garbage")  # the model itself: always refused
    with pytest.raises(ArtifactError, match="params"):
        read_artifact(folder, tolerate="adapted/")
