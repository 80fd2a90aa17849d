"""Model artifacts: round trips, every refusal, atomic updates and simulated crashes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from hypothesis import given
from hypothesis import strategies as st

from metarec.artifacts import (
    FORMAT_VERSION,
    manifest,
    read_artifact,
    slugify,
    update_artifact,
    write_artifact,
    write_tensors_atomic,
)
from metarec.errors import ArtifactError


def _tensors() -> dict[str, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(4, 3, generator=generator)
    weights[0, 0] = float("nan")  # bitwise comparison must survive NaN
    return {
        "params": {
            "w1": weights,
            "b1": torch.randn(3, generator=generator).to(torch.bfloat16),
            "scale": torch.tensor(0.5),  # 0-d
            "w_t": torch.randn(3, 5, generator=generator).t(),  # not contiguous
        },
        "features": {
            "item_idx": torch.arange(7, dtype=torch.int64),
            "mask": torch.tensor([True, False, True]),
            "empty": torch.zeros(0, 4),
        },
    }


METADATA: dict[str, Any] = {
    "config": {"hidden": [64, 32], "lr": 0.01, "first_order": False, "seed": None},
    "categories": ["Books > Poetry", "Books > Fiction"],
    "note": "päivää ✓",
}
FILES = {"vocab.json": b'{"a": 0, "b": 1}', "extra/readme.txt": b"hello\n"}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def _assert_bitwise_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, name
        assert got[name].shape == tensor.shape, name
        assert torch.equal(_bits(got[name]), _bits(tensor)), name


def _write(folder: Path) -> Path:
    return write_artifact(folder, _tensors(), METADATA, files=FILES)


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def _manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def _set_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _fail_on_manifest_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulate a crash at the moment manifest.json would be renamed into place."""
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == "manifest.json":
            raise OSError("simulated crash while writing the manifest")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


# --- round trips ------------------------------------------------------------------------------


def test_round_trip_is_bitwise_and_manifest_lists_every_file(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    artifact = read_artifact(folder)

    assert artifact.tensors.keys() == {"params", "features"}
    for group, tensors in _tensors().items():
        _assert_bitwise_equal(artifact.tensors[group], tensors)
    assert artifact.metadata == METADATA
    assert artifact.files == FILES

    manifest = artifact.manifest
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", manifest["created_at"])
    assert isinstance(manifest["metarec_version"], str)
    listed = {"params.safetensors", "features.safetensors", "vocab.json", "extra/readme.txt"}
    assert manifest["files"].keys() == listed
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert _siblings(folder) == []  # no staging folder or temporary file left behind
    assert not [p for p in folder.rglob(".*")]


def test_tensor_files_are_plain_safetensors(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    loaded = safetensors.torch.load_file(folder / "features.safetensors")
    _assert_bitwise_equal(loaded, _tensors()["features"])


def test_overwriting_an_artifact_replaces_it_whole(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    (folder / "stray.bin").write_bytes(b"not listed")
    write_artifact(folder, {"params": {"w": torch.ones(2)}}, {"run": 2})

    artifact = read_artifact(folder)
    assert artifact.tensors.keys() == {"params"}
    _assert_bitwise_equal(artifact.tensors["params"], {"w": torch.ones(2)})
    assert artifact.metadata == {"run": 2}
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "params.safetensors"]
    assert _siblings(folder) == []


def test_existing_empty_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    write_artifact(tmp_path / "model", {"params": {"w": torch.ones(2)}}, {})
    assert torch.equal(read_artifact(tmp_path / "model").tensors["params"]["w"], torch.ones(2))


def test_write_tensors_atomic_returns_sha_of_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "step-1.safetensors"
    sha = write_tensors_atomic(path, {"w": torch.arange(5.0)}, metadata={"step": "1"})
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    with safetensors.safe_open(path, framework="pt") as handle:
        assert handle.metadata() == {"step": "1"}
    assert os.listdir(path.parent) == ["step-1.safetensors"]


# --- refusals on read -------------------------------------------------------------------------


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    (folder / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"has no manifest\.json.*re-run `metarec train`"):
        read_artifact(folder)


def test_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"model folder .*nope does not exist"):
        read_artifact(tmp_path / "nope")


def test_missing_file_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    (folder / "features.safetensors").unlink()
    with pytest.raises(
        ArtifactError, match=r"features\.safetensors is listed in manifest\.json but missing"
    ):
        read_artifact(folder)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    path = folder / "params.safetensors"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(
        ArtifactError,
        match=rf"params\.safetensors is {size - 10} bytes but manifest\.json says {size}: "
        r"the file was truncated",
    ):
        read_artifact(folder)


@pytest.mark.parametrize("name", ["params.safetensors", "vocab.json"])
def test_altered_byte_is_refused(tmp_path: Path, name: str) -> None:
    folder = _write(tmp_path / "model")
    path = folder / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # same size, one bit changed
    path.write_bytes(bytes(data))
    with pytest.raises(
        ArtifactError,
        match=rf"{re.escape(name)} fails its sha256 check: the file was modified after it was "
        r"written; re-run `metarec train`",
    ):
        read_artifact(folder)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (2, r"format_version 2, newer than the 1 this metarec reads: upgrade metarec"),
        (0, r"unknown format_version 0 \(this metarec reads 1\)"),
        ("1", r"has no integer format_version"),
        (True, r"has no integer format_version"),
    ],
)
def test_unknown_format_version_is_refused(tmp_path: Path, version: object, message: str) -> None:
    folder = _write(tmp_path / "model")
    _set_manifest(folder, _manifest(folder) | {"format_version": version})
    with pytest.raises(ArtifactError, match=message):
        read_artifact(folder)


def test_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    text = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(
        ArtifactError, match=r"manifest\.json is not valid JSON .*modified after it was written"
    ):
        read_artifact(folder)


def test_unparsable_safetensors_with_matching_checksum_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    garbage = b"\xff" * 32
    (folder / "params.safetensors").write_bytes(garbage)
    manifest = _manifest(folder)
    manifest["files"]["params.safetensors"] = {
        "sha256": hashlib.sha256(garbage).hexdigest(),
        "bytes": len(garbage),
    }
    _set_manifest(folder, manifest)
    with pytest.raises(
        ArtifactError, match=r"params\.safetensors matches its checksum but is not a readable"
    ):
        read_artifact(folder)


@pytest.mark.parametrize("name", ["../outside.json", "/etc/passwd", ".hidden", "a//b", "a\\b"])
def test_manifest_names_escaping_the_folder_are_refused(tmp_path: Path, name: str) -> None:
    folder = _write(tmp_path / "model")
    manifest = _manifest(folder)
    manifest["files"][name] = {"sha256": "0" * 64, "bytes": 0}
    _set_manifest(folder, manifest)
    with pytest.raises(ArtifactError, match="is not a safe file name"):
        read_artifact(folder)


def test_malformed_entry_is_refused(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    manifest = _manifest(folder)
    manifest["files"]["vocab.json"]["sha256"] = "not-a-digest"
    _set_manifest(folder, manifest)
    with pytest.raises(ArtifactError, match=r"lists 'vocab\.json' without a valid sha256"):
        read_artifact(folder)


def test_unlisted_files_are_ignored(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    (folder / "junk.safetensors").write_bytes(b"garbage")
    assert read_artifact(folder).tensors.keys() == {"params", "features"}


# --- refusals on write ------------------------------------------------------------------------


def test_refuses_to_overwrite_a_folder_that_is_not_an_artifact(tmp_path: Path) -> None:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("precious")
    with pytest.raises(ArtifactError, match=r"refusing to overwrite .*thesis: .*not a metarec"):
        write_artifact(folder, _tensors(), METADATA)
    assert os.listdir(folder) == ["chapter1.tex"]
    assert (folder / "chapter1.tex").read_text() == "precious"
    assert _siblings(folder) == []


def test_refuses_a_foreign_manifest_and_a_file(tmp_path: Path) -> None:
    foreign = tmp_path / "webapp"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"name": "my web app"}')
    with pytest.raises(ArtifactError, match="not a metarec artifact"):
        write_artifact(foreign, _tensors(), METADATA)
    assert (foreign / "manifest.json").read_text() == '{"name": "my web app"}'

    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(ArtifactError, match="exists and is not a folder"):
        write_artifact(a_file, _tensors(), METADATA)
    assert a_file.read_text() == "x"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"bad": {1, 2}}, "not plain JSON"),
        ({"bad": float("nan")}, "not plain JSON"),
        ({"shape": (2, 3)}, "would change when stored as JSON"),
        ({"vocab": {1: "a"}}, "would change when stored as JSON"),
    ],
)
def test_metadata_that_json_cannot_hold_is_refused(
    tmp_path: Path, metadata: dict[str, Any], message: str
) -> None:
    with pytest.raises(ArtifactError, match=message):
        write_artifact(tmp_path / "model", _tensors(), metadata)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("tensors", "files", "message"),
    [
        ({"../x": {}}, None, "tensor group '../x' is not a safe file name"),
        ({}, {"manifest.json": b"{}"}, "raw file 'manifest.json' is not a safe file name"),
        ({}, {"w.safetensors": b""}, "marks tensor files"),
        ({"a": {}, "a.safetensors": {}}, None, "would both be named"),
        ({"Params": {}, "params": {}}, None, "would both be named"),
        ({"adapted/x": {}}, {"adapted": b""}, "needs a folder that another file is named after"),
        ({}, {"x.json": "text"}, "must be bytes"),
        ({"p": {"w": [1.0]}}, None, "must map a str to a torch.Tensor"),
    ],
)
def test_bad_names_and_values_are_refused_before_writing(
    tmp_path: Path, tensors: Any, files: Any, message: str
) -> None:
    with pytest.raises(ArtifactError, match=re.escape(message)):
        write_artifact(tmp_path / "model", tensors, {}, files=files)
    assert list(tmp_path.iterdir()) == []


def test_tensors_sharing_memory_are_refused_with_a_hint(tmp_path: Path) -> None:
    shared = torch.zeros(4)
    with pytest.raises(ArtifactError, match=r"share memory.*\.clone\(\)"):
        write_tensors_atomic(tmp_path / "x.safetensors", {"a": shared, "b": shared})
    assert list(tmp_path.iterdir()) == []


# --- crashes ----------------------------------------------------------------------------------


def test_crash_while_overwriting_leaves_previous_artifact_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path / "model")
    _fail_on_manifest_replace(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        write_artifact(folder, {"params": {"w": torch.ones(2)}}, {"run": 2})
    monkeypatch.undo()

    artifact = read_artifact(folder)
    assert artifact.metadata == METADATA
    _assert_bitwise_equal(artifact.tensors["params"], _tensors()["params"])
    assert _siblings(folder) == []


def test_interrupted_swap_points_to_the_previous_model(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    # What a crash between "rename old aside" and "rename new in" leaves on disk.
    folder.rename(tmp_path / "model.old-1a2b3c4d")
    with pytest.raises(ArtifactError, match=r"previous model at .*model\.old-1a2b3c4d: rename"):
        read_artifact(folder)


# --- update_artifact --------------------------------------------------------------------------


def test_update_adds_a_file_and_keeps_the_manifest_consistent(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    before = _manifest(folder)
    slug = slugify("Books > Poetry")
    adapted = {"w1": torch.full((4, 3), 2.0)}
    update_artifact(folder, f"adapted/{slug}", adapted)

    after = _manifest(folder)
    name = f"adapted/{slug}.safetensors"
    assert after["files"].keys() == before["files"].keys() | {name}
    data = (folder / name).read_bytes()
    assert after["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert {k: v for k, v in after.items() if k != "files"} == {
        k: v for k, v in before.items() if k != "files"
    }
    artifact = read_artifact(folder)
    _assert_bitwise_equal(artifact.tensors[f"adapted/{slug}"], adapted)
    _assert_bitwise_equal(artifact.tensors["params"], _tensors()["params"])


def test_update_replaces_a_listed_file(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    update_artifact(folder, "adapted/poetry", {"w": torch.zeros(2)})
    update_artifact(folder, "adapted/poetry.safetensors", {"w": torch.ones(2)})  # same file

    artifact = read_artifact(folder)
    assert torch.equal(artifact.tensors["adapted/poetry"]["w"], torch.ones(2))
    _assert_bitwise_equal(artifact.tensors["features"], _tensors()["features"])
    assert artifact.files == FILES
    assert len(artifact.manifest["files"]) == 5
    assert _siblings(folder) == []


def test_update_keeps_per_group_metadata_in_its_manifest_entry(tmp_path: Path) -> None:
    folder = _write(tmp_path / "model")
    info = {"category": "Books > Poetry", "version": 1, "seconds": 0.25, "as_of": None}
    update_artifact(folder, "adapted/poetry", {"w": torch.zeros(2)}, metadata=info)
    entry = read_artifact(folder).manifest["files"]["adapted/poetry.safetensors"]
    assert entry["metadata"] == info

    update_artifact(folder, "adapted/poetry", {"w": torch.ones(2)}, metadata=info | {"version": 2})
    entry = read_artifact(folder).manifest["files"]["adapted/poetry.safetensors"]
    assert entry["metadata"]["version"] == 2
    update_artifact(folder, "adapted/poetry", {"w": torch.ones(2)})  # no metadata: dropped
    assert "metadata" not in _manifest(folder)["files"]["adapted/poetry.safetensors"]

    with pytest.raises(ArtifactError, match="would change when stored as JSON"):
        update_artifact(folder, "adapted/x", {"w": torch.ones(2)}, metadata={"shape": (2,)})
    assert "adapted/x.safetensors" not in _manifest(folder)["files"]


def test_crash_while_adding_leaves_previous_artifact_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path / "model")
    _fail_on_manifest_replace(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        update_artifact(folder, "adapted/poetry", {"w": torch.ones(2)})
    monkeypatch.undo()

    artifact = read_artifact(folder)  # the new file is on disk but unlisted, hence ignored
    assert "adapted/poetry" not in artifact.tensors
    assert artifact.metadata == METADATA


def test_crash_while_replacing_leaves_previous_version_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path / "model")
    update_artifact(folder, "adapted/poetry", {"w": torch.zeros(2)})
    _fail_on_manifest_replace(monkeypatch)
    with pytest.raises(OSError, match="simulated crash"):
        update_artifact(folder, "adapted/poetry", {"w": torch.ones(2)})
    monkeypatch.undo()

    assert torch.equal(read_artifact(folder).tensors["adapted/poetry"]["w"], torch.zeros(2))
    assert _siblings(folder) == []


def test_replace_falls_back_to_copies_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path / "model")
    update_artifact(folder, "adapted/poetry", {"w": torch.zeros(2)})

    def no_links(src: Any, dst: Any) -> None:
        raise OSError("hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    update_artifact(folder, "adapted/poetry", {"w": torch.ones(2)})
    artifact = read_artifact(folder)
    assert torch.equal(artifact.tensors["adapted/poetry"]["w"], torch.ones(2))
    assert artifact.files == FILES


def test_update_refuses_a_folder_without_manifest_and_a_clashing_name(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        update_artifact(tmp_path / "model", "adapted/poetry", {"w": torch.ones(2)})
    folder = _write(tmp_path / "model")
    with pytest.raises(ArtifactError, match="needs a folder that another file is named after"):
        update_artifact(folder, "vocab.json/x", {"w": torch.ones(2)})
    assert _manifest(folder)["files"].keys() == {
        "params.safetensors",
        "features.safetensors",
        "vocab.json",
        "extra/readme.txt",
    }


# --- slugify ----------------------------------------------------------------------------------


def test_slugify_is_stable_readable_and_distinct() -> None:
    # Pinned: stored per-category files are named by it, so it must never change.
    assert slugify("Books > Poetry") == "books-poetry-558e2ef05422"
    assert slugify("Books>Poetry") == "books-poetry-f9162d726d2e"
    assert slugify("Électronique > Télé & Vidéo").startswith("electronique-tele-video-")
    assert slugify("日本語") == "category-77710aedc74e"


@given(st.text(max_size=200))
def test_slugify_is_a_safe_file_name_for_any_text(category: str) -> None:
    slug = slugify(category)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug)
    assert len(slug) <= 48 + 1 + 12
    assert slug == slugify(category)
    assert manifest.tensors_file(f"adapted/{slug}") == f"adapted/{slug}.safetensors"
