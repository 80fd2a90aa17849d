"""Serving: model artifacts on disk (and, later, the recommender and the HTTP app)."""

from metarec.serving.artifacts import (
    FORMAT_VERSION,
    Artifact,
    read_artifact,
    slugify,
    update_artifact,
    write_artifact,
    write_tensors_atomic,
)

__all__ = [
    "FORMAT_VERSION",
    "Artifact",
    "read_artifact",
    "slugify",
    "update_artifact",
    "write_artifact",
    "write_tensors_atomic",
]
