"""Model artifacts: safetensors tensor files plus a checksummed JSON manifest, written atomically.

Training writes them, serving reads and extends them (adapted categories); see docs/ARTIFACTS.md.
"""

from metarec.artifacts.folder import (
    Artifact,
    read_artifact,
    slugify,
    update_artifact,
    write_artifact,
    write_tensors_atomic,
)
from metarec.artifacts.manifest import FORMAT_VERSION, MANIFEST_NAME, TENSORS_SUFFIX

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
