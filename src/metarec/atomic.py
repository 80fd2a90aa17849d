"""Durable file writes: a reader sees the old file or the new one, never half of either.

The one definition of "write a file atomically" (DESIGN.md, Artifacts): bytes go to a temporary
name in the same folder, are fsynced, renamed over the target with ``os.replace``, and the folder
is fsynced so that the rename itself survives a power cut. Checkpoints, model artifacts, the
simulator's tables, run reports and exports all write through here.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically and durably; returns the path.

    Missing parent folders are created (and made durable). The temporary file is removed when
    anything fails, so a crash leaves at worst a dot-prefixed ``.<name>.<random>.tmp`` beside it.
    """
    path = Path(path)
    make_dirs(path.parent)
    payload = data.encode() if isinstance(data, str) else data
    # Same folder, so the rename cannot cross filesystems; 0o666 lets the umask decide the mode,
    # as open() would (mkstemp's 0o600 would hide reports and tables from other users).
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def make_dirs(folder: str | Path) -> None:
    """Create ``folder`` and its missing parents, fsyncing each new entry's parent."""
    missing: list[Path] = []
    current = Path(folder)
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        fsync_dir(path.parent)


def fsync_file(path: str | Path) -> None:
    """Flush a file written by someone else (DuckDB's COPY, pyarrow) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Make creations and renames inside ``folder`` durable."""
    if os.name != "posix":
        return  # Windows cannot open a folder to fsync it; os.replace is still atomic there
    fsync_file(folder)


def fsync_tree(folder: str | Path) -> None:
    """fsync ``folder`` and every folder below it (new hard links are folder entries)."""
    root = Path(folder)
    for path in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fsync_dir(path)
