"""Where a hot swap may load a model from: a folder inside one of the configured model roots.

``POST /admin/model`` takes a path from the client. Without this check it could name any folder
on the machine (``/``, ``/proc/self``, a symlink to either), and the service would read it and
later write adapted categories into it. The path is resolved (symlinks followed) and must be a
real folder inside a root; what is read in it is then checked file by file
(:func:`metarec.artifacts.read_artifact`: regular files only, sizes checked before reading).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from metarec.errors import ArtifactError


def model_folder_under(path: str | Path, roots: Sequence[Path]) -> Path:
    """The resolved model folder ``path``, if it is a folder inside one of ``roots``.

    Args:
        path: the folder a client named (absolute, or relative to the working directory).
        roots: the allowed folders, already resolved (``ServeSettings.roots()``).

    Returns:
        The folder with every symlink resolved.

    Raises:
        ArtifactError: the path holds a NUL or is not valid, lies outside every root, does not
            exist, or is not a folder.
    """
    shown = ", ".join(str(root) for root in roots)
    try:
        resolved = Path(os.path.realpath(path))
        mode = os.stat(resolved).st_mode
    except ValueError as err:  # e.g. an embedded NUL
        raise ArtifactError(f"{path!r} is not a valid path ({err})") from err
    except FileNotFoundError:
        raise ArtifactError(f"model folder {path} does not exist; check the path") from None
    except OSError as err:
        raise ArtifactError(f"cannot look at {path} ({err.strerror})") from err
    if not any(resolved != root and resolved.is_relative_to(root) for root in roots):
        raise ArtifactError(
            f"model folder {path} (resolved: {resolved}) is not inside a model root ({shown}); "
            "copy the model under a root, or start the service with --model-root"
        )
    if not stat.S_ISDIR(mode):
        raise ArtifactError(f"{path} is not a folder; pass a model folder written by training")
    return resolved
