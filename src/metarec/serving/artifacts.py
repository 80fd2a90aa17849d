"""Model artifacts: safetensors tensor files plus a checksummed JSON manifest, written atomically.

A model folder looks like this (see ``docs/ARTIFACTS.md`` for the guarantees)::

    model/
      manifest.json                 written last; the only thing a reader trusts
      params.safetensors            one file per tensor group ("params", "features", ...)
      adapted/<slug>.safetensors    per-category groups added later by update_artifact
      vocab.json                    extra raw files, checksummed like the rest

Nothing is ever unpickled: tensors are read with safetensors from bytes that already passed
their size and sha256 checks, so a reader never parses a byte the manifest does not vouch for.

Example:
    >>> import torch
    >>> folder = write_artifact("model", {"params": {"w": torch.zeros(3)}}, {"dim": 3})
    >>> update_artifact(folder, f"adapted/{slugify('Books > Poetry')}", {"w": torch.ones(3)})
    >>> read_artifact(folder).tensors["params"]["w"]
    tensor([0., 0., 0.])
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import safetensors.torch
from safetensors import SafetensorError
from torch import Tensor

from metarec.errors import ArtifactError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "TENSORS_SUFFIX",
    "Artifact",
    "read_artifact",
    "slugify",
    "update_artifact",
    "write_artifact",
    "write_tensors_atomic",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TENSORS_SUFFIX = ".safetensors"

# A stored name is '/'-separated parts; each starts with a letter or digit, so no part can be
# '.', '..' or one of our dot-prefixed temporary files.
_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SLUG_READABLE_CHARS = 48
_SLUG_HASH_CHARS = 12  # 48 bits: a collision needs ~16 M categories with the same readable part
_RETRAIN = "re-run `metarec train` to write a fresh artifact"
# What safetensors raises on bytes it cannot turn into tensors: header problems are
# SafetensorError, dtypes this torch lacks (F4, F8_E8M0, ...) are KeyError.
_PARSE_ERRORS = (SafetensorError, KeyError, ValueError, RuntimeError)


@dataclass(frozen=True)
class Artifact:
    """A model folder whose every listed file passed its size and sha256 checks.

    Attributes:
        folder: the folder it was read from.
        tensors: group -> tensor name -> tensor; group ``"params"`` comes from
            ``params.safetensors``, group ``"adapted/<slug>"`` from ``adapted/<slug>.safetensors``.
        metadata: the JSON metadata given to :func:`write_artifact`, equal to what was written.
        files: extra raw file name -> its bytes.
        manifest: the parsed ``manifest.json`` (``format_version``, ``created_at``,
            ``metarec_version``, ``metadata``, ``files``).
    """

    folder: Path
    tensors: dict[str, dict[str, Tensor]]
    metadata: dict[str, Any]
    files: dict[str, bytes]
    manifest: dict[str, Any]


def write_artifact(
    folder: str | Path,
    tensors: Mapping[str, Mapping[str, Tensor]],
    metadata: Mapping[str, Any],
    *,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a whole model folder, replacing an existing artifact there in one swap.

    Everything is written into a sibling ``<folder>.tmp-XXXX`` first, ``manifest.json`` last.
    Then the staged folder takes the place of ``folder``: when ``folder`` already holds an
    artifact (or is empty), it is renamed aside to ``<folder>.old-XXXX``, the staged folder is
    renamed in, and the old one deleted. A crash never leaves a mix of old and new files.

    Args:
        folder: the model folder; it must be absent, empty, or a metarec artifact.
        tensors: group -> tensor name -> tensor; group ``g`` is stored as ``g.safetensors``
            (``"params"`` -> ``params.safetensors``; ``"adapted/x"`` -> ``adapted/x.safetensors``).
            Tensors of any shape and dtype; they are stored contiguous, on the CPU.
        metadata: JSON data kept in the manifest (config, vocabularies, category list ...);
            it must survive a JSON round trip unchanged (lists, not tuples; str keys).
        files: extra raw files (e.g. ``"vocab.json"``), checksummed like the tensor files.

    Returns:
        The model folder, as an absolute path.

    Raises:
        ArtifactError: ``folder`` is something other than an artifact (never deleted), a name
            is not a safe relative file name, ``metadata`` is not plain JSON, or tensors cannot
            be serialised (for example two of them share memory).
    """
    target = _model_folder(folder)
    stored_metadata = _check_metadata(metadata)
    raw_files = dict(files or {})
    tensor_files = [
        (_tensors_file(group), group_tensors) for group, group_tensors in tensors.items()
    ]
    for name, data in raw_files.items():
        _check_raw_file(name, data)
    _check_no_clash([*(name for name, _ in tensor_files), *raw_files])
    replace = _is_replaceable(target)

    staging = _make_staging(target)
    try:
        entries = {
            name: _write_entry(staging, name, _encode_tensors(group_tensors, name))
            for name, group_tensors in tensor_files
        }
        entries |= {name: _write_entry(staging, name, data) for name, data in raw_files.items()}
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "metarec_version": _metarec_version(),
            "metadata": stored_metadata,
            "files": entries,
        }
        _write_bytes_atomic(staging / MANIFEST_NAME, _encode_manifest(manifest))
        _swap_in(staging, target, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # already gone when the swap completed
        raise
    return target


def read_artifact(folder: str | Path) -> Artifact:
    """Read a model folder after checking the format version and every listed file.

    Only files listed in ``manifest.json`` are read; anything else in the folder (for example
    a file from an interrupted :func:`update_artifact`) is ignored.

    Args:
        folder: a folder written by :func:`write_artifact`.

    Returns:
        The verified artifact, tensors loaded on the CPU.

    Raises:
        ArtifactError: the manifest is missing, not JSON, or of an unknown format version; a
            listed file is missing, truncated, altered, or not a valid safetensors file. The
            message names the file and says what to do.
    """
    target = Path(folder)
    manifest = _read_manifest(target)
    tensors: dict[str, dict[str, Tensor]] = {}
    files: dict[str, bytes] = {}
    for name, entry in manifest["files"].items():
        data = _read_verified(target / name, entry)
        if name.endswith(TENSORS_SUFFIX):
            tensors[name.removesuffix(TENSORS_SUFFIX)] = _decode_tensors(target / name, data)
        else:
            files[name] = data
    return Artifact(
        folder=target,
        tensors=tensors,
        metadata=manifest["metadata"],
        files=files,
        manifest=manifest,
    )


def update_artifact(
    folder: str | Path,
    name: str,
    tensors: Mapping[str, Tensor],
    *,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Add or replace one tensor group of an existing artifact, atomically.

    Adding (the common case: a newly adapted category) writes the new file, then the manifest:
    a crash in between leaves an unlisted file that readers ignore. Replacing a listed file
    cannot be done in place (the old manifest would then describe a changed file), so the
    folder is restaged: listed files are hard-linked (copied where links are unsupported) into
    ``<folder>.tmp-XXXX`` next to the new file and manifest, and swapped in as in
    :func:`write_artifact`.

    Args:
        folder: a folder written by :func:`write_artifact`.
        name: the group, e.g. ``f"adapted/{slugify(category)}"``; a trailing ``.safetensors``
            is accepted, so ``"adapted/<slug>.safetensors"`` names the same file.
        tensors: tensor name -> tensor, stored as that group's file.
        metadata: JSON data about this group (e.g. when and on what a category was adapted),
            kept in its manifest entry as ``manifest["files"][file]["metadata"]``; a replaced
            group's previous metadata is dropped.

    Raises:
        ArtifactError: ``folder`` has no valid manifest, ``name`` is not a safe relative name
            or clashes with a listed file, ``metadata`` is not plain JSON, or the tensors
            cannot be serialised.
    """
    target = _model_folder(folder)
    manifest = _read_manifest(target)
    file_name = _tensors_file(name)
    listed = list(manifest["files"])
    _check_no_clash([*listed, file_name] if file_name not in listed else listed)
    extra = {} if metadata is None else {"metadata": _check_metadata(metadata)}
    data = _encode_tensors(tensors, file_name)
    if file_name not in listed:
        entries = manifest["files"] | {file_name: _write_entry(target, file_name, data) | extra}
        _write_bytes_atomic(target / MANIFEST_NAME, _encode_manifest(manifest | {"files": entries}))
        return
    staging = _make_staging(target)
    try:
        for listed_name in listed:
            if listed_name != file_name:
                _link_or_copy(target / listed_name, staging / listed_name)
        _fsync_tree(staging)
        entries = manifest["files"] | {file_name: _write_entry(staging, file_name, data) | extra}
        _write_bytes_atomic(
            staging / MANIFEST_NAME, _encode_manifest(manifest | {"files": entries})
        )
        _swap_in(staging, target, replace=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_tensors_atomic(
    path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None
) -> str:
    """Write one safetensors file so that a crash leaves either the old file or the new one.

    The bytes go to a temporary name in the same folder, are fsynced, renamed over ``path``
    with ``os.replace``, and the folder is fsynced so the rename itself survives a power cut.
    Missing parent folders are created. Also the building block for training checkpoints.

    Args:
        path: destination file.
        tensors: tensor name -> tensor (any shape and dtype; stored contiguous, on the CPU).
        metadata: string key/values kept in the safetensors header.

    Returns:
        The sha256 hex digest of the bytes written.

    Raises:
        ArtifactError: the tensors cannot be serialised (e.g. two share memory).
    """
    data = _encode_tensors(tensors, str(path), metadata)
    _write_bytes_atomic(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def slugify(category: str) -> str:
    """Turn a category into a stable, filesystem-safe, collision-resistant file name.

    A readable part (ASCII-folded, lower case, runs of other characters become ``-``, at most
    48 characters) plus 12 hex characters of the sha256 of the exact category string, so
    categories that differ only in spacing or punctuation still get distinct names. The result
    depends on nothing but ``category``, so it is the same across runs and machines.

    Args:
        category: a category path such as ``"Books > Poetry"``.

    Returns:
        A name matching ``[a-z0-9-]+``, e.g. ``slugify("Books > Poetry")`` is
        ``"books-poetry-558e2ef05422"``.
    """
    folded = unicodedata.normalize("NFKD", category).encode("ascii", "ignore").decode("ascii")
    readable = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    readable = readable[:_SLUG_READABLE_CHARS].rstrip("-") or "category"
    digest = hashlib.sha256(category.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{readable}-{digest[:_SLUG_HASH_CHARS]}"


# --- names and validation -------------------------------------------------------------------


def _check_name(name: object, *, what: str) -> str:
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


def _model_folder(folder: str | Path) -> Path:
    """The folder as an absolute path, so that ``<folder>.tmp-XXXX`` is a true sibling."""
    target = Path(os.path.abspath(folder))  # lexical: "model/." and "x/../model" become "model"
    if not target.name:
        raise ArtifactError(f"{folder!r} cannot be a model folder: choose a named subfolder")
    return target


def _tensors_file(group: str) -> str:
    """The file name of a tensor group: ``"params"`` -> ``"params.safetensors"``."""
    _check_name(group, what="tensor group")
    return f"{group.removesuffix(TENSORS_SUFFIX)}{TENSORS_SUFFIX}"


def _check_raw_file(name: str, data: object) -> None:
    """Refuse a raw file the reader would misread as tensors, or that is not bytes."""
    _check_name(name, what="raw file")
    if name.endswith(TENSORS_SUFFIX):
        raise ArtifactError(
            f"raw file {name!r} ends in {TENSORS_SUFFIX!r}, which marks tensor files; pass "
            f"tensors in `tensors` or rename the file"
        )
    if not isinstance(data, bytes):
        raise ArtifactError(f"raw file {name!r} must be bytes, got {type(data).__name__}")


def _check_no_clash(names: Iterable[str]) -> None:
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


def _check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
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


def _is_replaceable(folder: Path) -> bool:
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


def _read_manifest(folder: Path) -> dict[str, Any]:
    """Parse and validate ``folder/manifest.json``."""
    path = folder / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(_missing_manifest_message(folder)) from None
    except OSError as err:
        raise ArtifactError(f"cannot read {path} ({err.strerror}); {_RETRAIN}") from err
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise ArtifactError(
            f"{path} is not valid JSON ({err}): the file was modified after it was written; "
            f"{_RETRAIN}"
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
            f"it back to {folder}, or {_RETRAIN}"
        )
    return f"{problem}; check the path, or {_RETRAIN}"


def _check_manifest(path: Path, manifest: object) -> None:
    """Refuse a manifest of another format version or with malformed entries."""
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} is not a metarec manifest (not a JSON object); {_RETRAIN}")
    version = manifest.get("format_version")
    if type(version) is not int:
        raise ArtifactError(
            f"{path} has no integer format_version, so it is not a metarec manifest; {_RETRAIN}"
        )
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has format_version {version}, newer than the {FORMAT_VERSION} this metarec "
            f"reads: upgrade metarec, or re-run `metarec train` with this version"
        )
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path} has unknown format_version {version} (this metarec reads "
            f"{FORMAT_VERSION}); {_RETRAIN}"
        )
    if not isinstance(manifest.get("metadata"), dict) or not isinstance(
        manifest.get("files"), dict
    ):
        raise ArtifactError(f"{path} lacks a 'metadata' or 'files' object; {_RETRAIN}")
    for name, entry in manifest["files"].items():
        _check_name(name, what=f"file listed in {path}:")
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
                f"was modified after it was written; {_RETRAIN}"
            )


def _read_verified(path: Path, entry: Mapping[str, Any]) -> bytes:
    """Return a listed file's bytes after checking its size and sha256."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(
            f"{path} is listed in {MANIFEST_NAME} but missing: the artifact is incomplete; "
            f"copy the whole folder again, or {_RETRAIN}"
        ) from None
    except OSError as err:
        raise ArtifactError(f"cannot read {path} ({err.strerror}); {_RETRAIN}") from err
    if len(data) != entry["bytes"]:
        raise ArtifactError(
            f"{path} is {len(data)} bytes but {MANIFEST_NAME} says {entry['bytes']}: the file "
            f"was truncated or modified after it was written; {_RETRAIN}"
        )
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(
            f"{path} fails its sha256 check: the file was modified after it was written; {_RETRAIN}"
        )
    return data


def _decode_tensors(path: Path, data: bytes) -> dict[str, Tensor]:
    """Parse verified safetensors bytes."""
    try:
        return safetensors.torch.load(data)
    except _PARSE_ERRORS as err:
        raise ArtifactError(
            f"{path} matches its checksum but is not a readable safetensors file ({err!r}): "
            f"it was not written by metarec or by this torch version; {_RETRAIN}"
        ) from err


# --- writing --------------------------------------------------------------------------------


def _encode_tensors(
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


def _write_entry(folder: Path, name: str, data: bytes) -> dict[str, Any]:
    """Write one listed file atomically and return its manifest entry."""
    _write_bytes_atomic(folder / name, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temporary name in the same folder, fsync, replace, fsync."""
    _make_dirs(path.parent)
    # Same folder, so the rename cannot cross filesystems; the leading dot keeps it apart from
    # stored names. os.open with 0o666 lets the umask decide the mode, as open() would.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _make_staging(target: Path) -> Path:
    """Create the empty sibling folder ``<target>.tmp-XXXX`` a new version is written into."""
    _make_dirs(target.parent)
    staging = target.with_name(f"{target.name}.tmp-{secrets.token_hex(4)}")
    staging.mkdir()
    return staging


def _swap_in(staging: Path, target: Path, *, replace: bool) -> None:
    """Move a complete staged folder to ``target``, moving an existing one aside first.

    A crash between the two renames leaves ``target`` absent and the complete previous
    version at ``<target>.old-XXXX``; read_artifact then says so.
    """
    if not replace:
        os.rename(staging, target)
        _fsync_dir(target.parent)
        return
    aside = target.with_name(f"{target.name}.old-{secrets.token_hex(4)}")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)  # put the previous version back; staging is removed by caller
        raise
    _fsync_dir(target.parent)
    shutil.rmtree(aside)


def _link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link a listed file into the staging folder, or copy it where links fail.

    Sharing the inode is safe because stored files are never modified in place, only
    replaced by rename.
    """
    if not source.is_file():
        raise ArtifactError(
            f"{source} is listed in {MANIFEST_NAME} but missing: the artifact is incomplete; "
            f"{_RETRAIN}"
        )
    _make_dirs(destination.parent)
    try:
        os.link(source, destination)
    except OSError:
        _write_bytes_atomic(destination, source.read_bytes())


def _make_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents, fsyncing each new entry's parent."""
    missing: list[Path] = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        _fsync_dir(path.parent)


def _fsync_tree(folder: Path) -> None:
    """fsync ``folder`` and every folder below it (new hard links are folder entries)."""
    for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        _fsync_dir(path)


def _fsync_dir(folder: Path) -> None:
    """Make creations and renames inside ``folder`` durable."""
    if os.name != "posix":
        return  # Windows cannot open a folder to fsync it; os.replace is still atomic there
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _metarec_version() -> str:
    try:
        return importlib_metadata.version("metarec")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"  # running from a source tree that is not installed
