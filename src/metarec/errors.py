"""Typed errors. Every message says what was expected and how to fix it.

The CLI maps :class:`MetarecError` to exit code 2 with a one-line message; the HTTP app maps each
subclass to a status code in one handler. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MetarecError(Exception):
    """Base of every error the library raises on purpose."""


class ConfigError(MetarecError):
    """A configuration value is invalid (unknown key, out of range, wrong type)."""


class MissingExtraError(ConfigError):
    """An optional feature is switched on but the pip extra it needs is not installed."""


class DataError(MetarecError):
    """Input data breaks the table format or the protocol's requirements."""


class BadRowsError(DataError):
    """A load was refused because some rows break the format.

    Attributes:
        report: the per-row findings (line, column, reason); the store is unchanged.
    """

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class StoreError(MetarecError):
    """The store file is missing, locked by another process, or not a metarec store."""


class UnknownCategoryError(MetarecError):
    """The category does not exist in the store or the model."""


class UnknownUserError(MetarecError):
    """The user does not exist in the store."""


class NotAdaptedError(MetarecError):
    """The category exists but has no adapted parameters yet."""


class ArtifactError(MetarecError):
    """A model folder is missing a file, fails its checksum, or has an unsupported version."""


class TrainingDivergedError(MetarecError):
    """The meta-loss became NaN or infinite (learning rates too high, or bad feature values)."""


class NonFiniteError(MetarecError):
    """A computation gave NaN or infinity where a finite number is required (adapted
    parameters, a score); nothing non-finite is stored or answered."""


class CheckpointError(MetarecError):
    """A training checkpoint is missing, damaged, or belongs to another run (config or data)."""
