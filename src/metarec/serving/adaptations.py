"""Adapted categories as stored in a model folder: one ``adapted/<slug>`` group each.

A damaged group (truncated, altered, unreadable, from another model, or holding non-finite
values) affects only its category: it is reported in :attr:`Adaptations.damaged`, the category
is served zero-shot (saying why) and the service queues its re-adaptation; every other category
serves its adapted parameters as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from metarec.artifacts import Artifact, read_artifact
from metarec.errors import ArtifactError
from metarec.meta.model import AnyModel, model_from_artifact
from metarec.models.scorer import Params

ADAPTED = "adapted/"


@dataclass(frozen=True)
class Adaptation:
    """One adaptation of a category: its parameters and what they were adapted from."""

    category: str
    version: int
    support_size: int  # support positives used
    n_users: int  # users with support
    adapted_at: float  # unix seconds
    seconds: float  # wall time of the inner loop
    as_of: int | None  # only interactions up to this unix time were used (None: all)
    params: Params = field(repr=False)

    def info(self) -> dict[str, str]:
        return {
            "category": self.category,
            "version": str(self.version),
            "support_size": str(self.support_size),
            "n_users": str(self.n_users),
            "adapted_at": f"{self.adapted_at:.3f}",
            "seconds": f"{self.seconds:.4f}",
            "as_of": "" if self.as_of is None else str(self.as_of),
        }


@dataclass(frozen=True)
class Damaged:
    """An adapted group that cannot be served: why, and the version it had."""

    reason: str
    version: int


@dataclass(frozen=True)
class Adaptations:
    """The adapted categories of a folder, and the damaged ones (by category)."""

    adapted: dict[str, Adaptation]
    damaged: dict[str, Damaged]


def read_model(folder: str | Path) -> tuple[AnyModel, Artifact]:
    """Load a model folder for serving: every file verified, but a damaged ``adapted/`` group
    only marks its category (see :func:`read_adaptations`).

    Raises:
        ArtifactError: the manifest or a file of the meta-model itself is damaged.
    """
    artifact = read_artifact(folder, tolerate=ADAPTED)
    return model_from_artifact(artifact), artifact


def read_adaptations(artifact: Artifact) -> Adaptations:
    """The folder's adapted categories; damaged groups listed apart, never raised."""
    adapted: dict[str, Adaptation] = {}
    damaged: dict[str, Damaged] = {}
    for name, entry in artifact.manifest["files"].items():
        info = entry.get("metadata") or {}
        if not name.startswith(ADAPTED) or "category" not in info:
            continue
        category = str(info["category"])
        try:
            adapted[category] = _adaptation(artifact, name, info)
        except (ArtifactError, KeyError, TypeError, ValueError) as err:
            reason = artifact.damaged.get(name) or f"{name}: {err}"
            damaged[category] = Damaged(reason, _int_or_zero(info.get("version")))
    return Adaptations(adapted, damaged)


def _adaptation(artifact: Artifact, name: str, info: dict[str, object]) -> Adaptation:
    if name in artifact.damaged:
        raise ArtifactError(artifact.damaged[name])
    params = artifact.tensors[name.removesuffix(".safetensors")]
    bad = sorted(key for key, value in params.items() if not value.isfinite().all())
    if bad:
        raise ArtifactError(f"{name} holds non-finite values ({', '.join(bad[:3])})")
    as_of = info.get("as_of")
    return Adaptation(
        category=str(info["category"]),
        version=int(str(info["version"])),
        support_size=int(str(info["support_size"])),
        n_users=int(str(info["n_users"])),
        adapted_at=float(str(info["adapted_at"])),
        seconds=float(str(info["seconds"])),
        as_of=int(str(as_of)) if as_of else None,
        params=params,
    )


def _int_or_zero(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0
