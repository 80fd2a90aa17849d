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

import hashlib
import os
import re
import secrets
import shutil
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from torch import Tensor

from metarec.artifacts.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    RETRAIN,
    TENSORS_SUFFIX,
    check_metadata,
    check_no_clash,
    check_raw_file,
    decode_tensors,
    encode_manifest,
    encode_tensors,
    is_replaceable,
    manifest_digest,
    model_folder,
    read_manifest,
    read_verified,
    tensors_file,
    tensors_metadata,
    write_entry,
)
from metarec.atomic import fsync_dir, fsync_tree, make_dirs, write_atomic
from metarec.errors import ArtifactError

_SLUG_READABLE_CHARS = 48
_SLUG_HASH_CHARS = 12  # 48 bits: a collision needs ~16 M categories with the same readable part
# Each tensor file carries its folder's artifact id in its safetensors header, and the manifest
# lists it: a file copied in from another model (its manifest entry recomputed) is refused.
ARTIFACT_ID = "metarec_artifact"


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
            ``metarec_version``, ``metadata``, ``files``, ``artifact_id``).
        damaged: listed files under ``read_artifact``'s ``tolerate`` prefix that failed their
            checks, by name, with the reason (their tensors are absent).
    """

    folder: Path
    tensors: dict[str, dict[str, Tensor]]
    metadata: dict[str, Any]
    files: dict[str, bytes]
    manifest: dict[str, Any]
    damaged: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """A digest of every listed file but ``adapted/`` ones: any change gives another."""
        return manifest_digest(self.manifest, skip_prefix="adapted/")


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
    target = model_folder(folder)
    stored_metadata = check_metadata(metadata)
    raw_files = dict(files or {})
    tensor_files = [
        (tensors_file(group), group_tensors) for group, group_tensors in tensors.items()
    ]
    for name, data in raw_files.items():
        check_raw_file(name, data)
    check_no_clash([*(name for name, _ in tensor_files), *raw_files])
    replace = is_replaceable(target)

    staging = _make_staging(target)
    artifact_id = secrets.token_hex(16)
    try:
        entries = {
            name: write_entry(
                staging, name, encode_tensors(group_tensors, name, {ARTIFACT_ID: artifact_id})
            )
            for name, group_tensors in tensor_files
        }
        entries |= {name: write_entry(staging, name, data) for name, data in raw_files.items()}
        manifest = {
            "format_version": FORMAT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "metarec_version": _metarec_version(),
            "artifact_id": artifact_id,
            "metadata": stored_metadata,
            "files": entries,
        }
        write_atomic(staging / MANIFEST_NAME, encode_manifest(manifest))
        _swap_in(staging, target, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # already gone when the swap completed
        raise
    return target


def read_artifact(folder: str | Path, *, tolerate: str | None = None) -> Artifact:
    """Read a model folder after checking the format version and every listed file.

    Only files listed in ``manifest.json`` are read; anything else in the folder (for example
    a file from an interrupted :func:`update_artifact`) is ignored. Only regular files are
    read, each after its size is checked (never a FIFO or a device). A tensor file whose header
    names another artifact than the manifest does (a file copied from another model) is refused.

    Args:
        folder: a folder written by :func:`write_artifact`.
        tolerate: a name prefix (e.g. ``"adapted/"``): listed files under it that fail their
            checks are reported in :attr:`Artifact.damaged` instead of refusing the folder.

    Returns:
        The verified artifact, tensors loaded on the CPU.

    Raises:
        ArtifactError: the manifest is missing, not JSON, or of an unknown format version; a
            listed file is missing, truncated, altered, or not a valid safetensors file. The
            message names the file and says what to do.
    """
    target = Path(folder)
    manifest = read_manifest(target)
    tensors: dict[str, dict[str, Tensor]] = {}
    files: dict[str, bytes] = {}
    damaged: dict[str, str] = {}
    for name, entry in manifest["files"].items():
        try:
            data = read_verified(target / name, entry)
            if name.endswith(TENSORS_SUFFIX):
                group = decode_tensors(target / name, data)
                _check_same_artifact(target / name, data, manifest)
                tensors[name.removesuffix(TENSORS_SUFFIX)] = group
            else:
                files[name] = data
        except ArtifactError as err:
            if tolerate is None or not name.startswith(tolerate):
                raise
            damaged[name] = str(err)
    return Artifact(
        folder=target,
        tensors=tensors,
        metadata=manifest["metadata"],
        files=files,
        manifest=manifest,
        damaged=damaged,
    )


def _check_same_artifact(path: Path, data: bytes, manifest: dict[str, Any]) -> None:
    """Refuse a tensor file written for another artifact (folders older than artifact ids
    have none to compare and are read as before)."""
    expected = manifest.get("artifact_id")
    if expected is None:
        return
    found = tensors_metadata(path, data).get(ARTIFACT_ID)
    if found != expected:
        raise ArtifactError(
            f"{path} belongs to another model (artifact {found or 'unknown'}, this folder is "
            f"{expected}): the folder mixes files of different models; copy the whole folder "
            f"of one model, or {RETRAIN}"
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
    target = model_folder(folder)
    manifest = read_manifest(target)
    file_name = tensors_file(name)
    listed = list(manifest["files"])
    check_no_clash([*listed, file_name] if file_name not in listed else listed)
    extra = {} if metadata is None else {"metadata": check_metadata(metadata)}
    artifact_id = manifest.get("artifact_id")
    data = encode_tensors(
        tensors, file_name, None if artifact_id is None else {ARTIFACT_ID: artifact_id}
    )
    if file_name not in listed:
        entries = manifest["files"] | {file_name: write_entry(target, file_name, data) | extra}
        write_atomic(target / MANIFEST_NAME, encode_manifest(manifest | {"files": entries}))
        return
    staging = _make_staging(target)
    try:
        for listed_name in listed:
            if listed_name != file_name:
                _link_or_copy(target / listed_name, staging / listed_name)
        fsync_tree(staging)
        entries = manifest["files"] | {file_name: write_entry(staging, file_name, data) | extra}
        write_atomic(staging / MANIFEST_NAME, encode_manifest(manifest | {"files": entries}))
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
    data = encode_tensors(tensors, str(path), metadata)
    write_atomic(Path(path), data)
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


# --- staging -------------------------------------------------------------------------------


def _make_staging(target: Path) -> Path:
    """Create the empty sibling folder ``<target>.tmp-XXXX`` a new version is written into."""
    make_dirs(target.parent)
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
        fsync_dir(target.parent)
        return
    aside = target.with_name(f"{target.name}.old-{secrets.token_hex(4)}")
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(aside, target)  # put the previous version back; staging is removed by caller
        raise
    fsync_dir(target.parent)
    shutil.rmtree(aside)


def _link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link a listed file into the staging folder, or copy it where links fail.

    Sharing the inode is safe because stored files are never modified in place, only
    replaced by rename.
    """
    if not source.is_file():
        raise ArtifactError(
            f"{source} is listed in {MANIFEST_NAME} but missing: the artifact is incomplete; "
            f"{RETRAIN}"
        )
    make_dirs(destination.parent)
    try:
        os.link(source, destination)
    except OSError:
        write_atomic(destination, source.read_bytes())


def _metarec_version() -> str:
    try:
        return importlib_metadata.version("metarec")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"  # running from a source tree that is not installed
