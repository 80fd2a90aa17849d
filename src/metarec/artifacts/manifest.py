"""The manifest of a model folder: names, checks, and the verified reading of listed files.

Every rule about what a folder may contain lives here; :mod:`metarec.artifacts.folder` writes
and reads folders through these checks.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
from safetensors import SafetensorError
from torch import Tensor

from metarec.atomic import write_atomic
from metarec.errors import ArtifactError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TENSORS_SUFFIX = ".safetensors"

# A stored name is '/'-separated parts; each starts with a letter or digit, so no part can be
# '.', '..' or one of our dot-prefixed temporary files.
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
RETRAIN = "re-run `metarec train` to write a fresh artifact"
_READ_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 64 << 20  # a manifest lists files; far larger is not one of ours
# What safetensors raises on bytes it cannot turn into tensors: header problems are
# SafetensorError, dtypes this torch lacks (F4, F8_E8M0, ...) are KeyError.
_PARSE_ERRORS = (SafetensorError, KeyError, ValueError, RuntimeError)


# --- names and validation -------------------------------------------------------------------


def check_name(name: object, *, what: str) -> str:
    """Refuse a stored name that could escape the folder or clash with the manifest."""
    if (
        not isinstance(name, str)
        or name == MANIFEST_NAME
        or not all(_NAME_PART.fullmatch(part) for part in name.split("/"))
    ):
        raise ArtifactError(
            f"{what} {name!r} is not a safe file name: use '/'-separated parts of letters, "
            f"digits, '.', '_' and '-', each starting with a letter or digit (not "
            f"{MANIFEST_NAME!r})"
        )
    return name


def model_folder(folder: str | Path) -> Path:
    """The folder as an absolute path, so that ``<folder>.tmp-XXXX`` is a true sibling."""
    target = Path(os.path.abspath(folder))  # lexical: "model/." and "x/../model" become "model"
    if not target.name:
        raise ArtifactError(f"{folder!r} cannot be a model folder: choose a named subfolder")
    return target


def tensors_file(group: str) -> str:
    """The file name of a tensor group: ``"params"`` -> ``"params.safetensors"``."""
    check_name(group, what="tensor group")
    return f"{group.removesuffix(TENSORS_SUFFIX)}{TENSORS_SUFFIX}"


def check_raw_file(name: str, data: object) -> None:
    """Refuse a raw file the reader would misread as tensors, or that is not bytes."""
    check_name(name, what="raw file")
    if name.endswith(TENSORS_SUFFIX):
        raise ArtifactError(
            f"raw file {name!r} ends in {TENSORS_SUFFIX!r}, which marks tensor files; pass "
            f"tensors in `tensors` or rename the file"
        )
    if not isinstance(data, bytes):
        raise ArtifactError(f"raw file {name!r} must be bytes, got {type(data).__name__}")


def check_no_clash(names: Iterable[str]) -> None:
    """Refuse names that would land on the same path, also on case-insensitive filesystems."""
    seen: set[str] = set()
    for name in names:
        key = name.lower()
        if key in seen:
            raise ArtifactError(f"two stored files would both be named {name!r}; rename one")
        seen.add(key)
    for key in seen:
        parents = key.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in seen:
                raise ArtifactError(
                    f"stored file {key!r} needs a folder that another file is named after; "
                    f"rename one of them"
                )


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Return metadata as stored, refusing anything JSON would change or cannot hold."""
    original = dict(metadata)
    try:
        text = json.dumps(original, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ArtifactError(
            f"artifact metadata is not plain JSON ({err}); store dicts, lists, str, finite "
            f"numbers, bool and None (for a pydantic config use model_dump(mode='json'))"
        ) from err
    stored: dict[str, Any] = json.loads(text)
    if stored != original:
        raise ArtifactError(
            "artifact metadata would change when stored as JSON (tuples become lists, "
            "non-str keys become str); convert it first, e.g. with model_dump(mode='json')"
        )
    return stored


def is_replaceable(folder: Path) -> bool:
    """Whether ``folder`` exists and may be replaced (an artifact, or empty); refuse the rest.

    Returns:
        False when ``folder`` does not exist, True when it is empty or a metarec artifact.

    Raises:
        ArtifactError: ``folder`` is a file, or a non-empty folder without a metarec manifest.
    """
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise ArtifactError(
            f"refusing to write a model to {folder}: it exists and is not a folder; "
            f"choose another path"
        )
    if not any(folder.iterdir()):
        return True
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError):
        manifest = None
    if not (isinstance(manifest, dict) and "format_version" in manifest and "files" in manifest):
        raise ArtifactError(
            f"refusing to overwrite {folder}: it is not empty and has no readable metarec "
            f"{MANIFEST_NAME}, so it is not a metarec artifact; choose another folder, or "
            f"delete it yourself if you are sure it holds nothing you need"
        )
    return True


# --- reading --------------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and validate ``folder/manifest.json``."""
    path = folder / MANIFEST_NAME
    try:
        raw = read_regular(path, max_bytes=MAX_MANIFEST_BYTES, what="manifest")
    except (FileNotFoundError, NotADirectoryError):
        raise ArtifactError(_missing_manifest_message(folder)) from None
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise ArtifactError(
            f"{path} is not valid JSON ({err}): the file was modified after it was written; "
            f"{RETRAIN}"
        ) from err
    _check_manifest(path, manifest)
    return manifest


def _missing_manifest_message(folder: Path) -> str:
    """Say why there is no manifest and, after an interrupted swap, where the old model is."""
    if not folder.exists():
        problem = f"model folder {folder} does not exist"
    elif not folder.is_dir():
        problem = f"{folder} is not a folder"
    else:
        problem = (
            f"{folder} has no {MANIFEST_NAME}: it is not a metarec artifact, or the write "
            f"that created it was interrupted"
        )
    aside = sorted(folder.parent.glob(f"{glob.escape(folder.name)}.old-*"))
    if aside:
        return (
            f"{problem}; an interrupted write left the previous model at {aside[-1]}: rename "
            f"it back to {folder}, or {RETRAIN}"
        )
    return f"{problem}; check the path, or {RETRAIN}"


def _check_manifest(path: Path, manifest: object) -> None:
    """Refuse a manifest of another format version or with malformed entries."""
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} is not a metarec manifest (not a JSON object); {RETRAIN}")
    version = manifest.get("format_version")
    if type(version) is not int:
        raise ArtifactError(
            f"{path} has no integer format_version, so it is not a metarec manifest; {RETRAIN}"
        )
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {version}, newer than the {FORMAT_VERSION} this metarec "
            f"reads: upgrade metarec, or re-run `metarec train` with this version"
        )
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has unknown format_version {version} (this metarec reads "
            f"{FORMAT_VERSION}); {RETRAIN}"
        )
    if not isinstance(manifest.get("metadata"), dict) or not isinstance(
        manifest.get("files"), dict
    ):
        raise ArtifactError(f"{path} lacks a 'metadata' or 'files' object; {RETRAIN}")
    for name, entry in manifest["files"].items():
        check_name(name, what=f"file listed in {path}:")
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and _SHA256.fullmatch(entry["sha256"])
            and type(entry.get("bytes")) is int
            and entry["bytes"] >= 0
            and isinstance(entry.get("metadata", {}), dict)
        ):
            raise ArtifactError(
                f"{path} lists {name!r} without a valid sha256 and byte count: the manifest "
                f"was modified after it was written; {RETRAIN}"
            )


def read_regular(path: Path, *, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, read without ever blocking.

    The path is checked with ``os.stat`` before it is opened (a FIFO would block ``open`` and a
    device such as ``/dev/zero`` never ends), opened with ``O_NONBLOCK``, checked again through
    the open descriptor (the path may have been replaced in between), and read up to one byte
    beyond the limit, so a file that grows is caught too.

    Raises:
        FileNotFoundError, NotADirectoryError: the path does not exist (callers say what that
            means for them).
        ArtifactError: not a regular file, larger than ``max_bytes``, or unreadable.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise ArtifactError(f"{what} {path} is not a regular file; {RETRAIN}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as err:
        raise ArtifactError(f"cannot read {path} ({err.strerror}); {RETRAIN}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{what} {path} is not a regular file; {RETRAIN}")
        if info.st_size > max_bytes:
            raise ArtifactError(
                f"{what} {path} is {info.st_size} bytes, more than the {max_bytes} expected: "
                f"the file was modified after it was written; {RETRAIN}"
            )
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as err:
        raise ArtifactError(f"cannot read {path} ({err.strerror}); {RETRAIN}") from err
    finally:
        os.close(fd)
    if total > max_bytes:
        raise ArtifactError(
            f"{what} {path} grew beyond the {max_bytes} bytes expected while it was read; {RETRAIN}"
        )
    return b"".join(chunks)


def read_verified(path: Path, entry: Mapping[str, Any]) -> bytes:
    """Return a listed file's bytes after checking its size and sha256.

    The size is checked before anything is read (:func:`read_regular`): only a regular file of
    at most the listed size is ever read.
    """
    try:
        data = read_regular(path, max_bytes=entry["bytes"], what="listed file")
    except (FileNotFoundError, NotADirectoryError):
        raise ArtifactError(
            f"{path} is listed in {MANIFEST_NAME} but missing: the artifact is incomplete; "
            f"copy the whole folder again, or {RETRAIN}"
        ) from None
    if len(data) != entry["bytes"]:
        raise ArtifactError(
            f"{path} is {len(data)} bytes but {MANIFEST_NAME} says {entry['bytes']}: the file "
            f"was truncated or modified after it was written; {RETRAIN}"
        )
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(
            f"{path} fails its sha256 check: the file was modified after it was written; {RETRAIN}"
        )
    return data


def manifest_digest(manifest: Mapping[str, Any], *, skip_prefix: str | None = None) -> str:
    """A sha256 over every listed file's name, size and checksum (and the format version).

    Any change of any listed file gives another digest, so it names a version of the folder's
    contents. ``skip_prefix`` leaves out files under it (the service's model version skips
    ``adapted/``, whose files carry their own adaptation versions).
    """
    listed = {
        name: [entry["sha256"], entry["bytes"]]
        for name, entry in manifest["files"].items()
        if skip_prefix is None or not name.startswith(skip_prefix)
    }
    text = json.dumps(
        {"format_version": manifest["format_version"], "files": listed}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def tensors_metadata(path: Path, data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of verified safetensors bytes (empty when it has none)."""
    try:
        size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + size])
    except ValueError as err:
        raise ArtifactError(
            f"{path} matches its checksum but its safetensors header is not JSON; {RETRAIN}"
        ) from err
    found = header.get("__metadata__") if isinstance(header, dict) else None
    return found if isinstance(found, dict) else {}


def decode_tensors(path: Path, data: bytes) -> dict[str, Tensor]:
    """Parse verified safetensors bytes."""
    try:
        return safetensors.torch.load(data)
    except _PARSE_ERRORS as err:
        raise ArtifactError(
            f"{path} matches its checksum but is not a readable safetensors file ({err!r}): "
            f"it was not written by metarec or by this torch version; {RETRAIN}"
        ) from err


# --- encoding --------------------------------------------------------------------------------


def encode_tensors(
    tensors: Mapping[str, Tensor], where: str, metadata: dict[str, str] | None = None
) -> bytes:
    """Serialise tensors to safetensors bytes (contiguous, on the CPU)."""
    prepared: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, Tensor):
            raise ArtifactError(
                f"{where}: entry {name!r} must map a str to a torch.Tensor, "
                f"got {type(tensor).__name__}"
            )
        prepared[name] = tensor.detach().cpu().contiguous()
    try:
        return safetensors.torch.save(prepared, metadata=metadata)
    except (RuntimeError, ValueError, TypeError) as err:
        reason = str(err).strip().splitlines()[0]
        raise ArtifactError(
            f"cannot serialise the tensors of {where}: {reason} (tensors that share memory "
            f"must be passed as .clone() copies)"
        ) from err


def write_entry(folder: Path, name: str, data: bytes) -> dict[str, Any]:
    """Write one listed file atomically and return its manifest entry."""
    write_atomic(folder / name, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()
