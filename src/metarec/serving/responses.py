"""JSON response bodies written by orjson, never with a non-finite number; and the one mapping
of library errors to statuses and bodies.

orjson writes a NaN or an infinity as ``null``, silently; an answer must refuse instead (a list
of ``null`` scores once looked like a recommendation). :func:`finite_json` walks the content
first and raises :class:`~metarec.errors.NonFiniteError` (500 through :func:`error_response`).
:func:`error_response` answers every :class:`~metarec.errors.MetarecError`, for the app's
handler and for the plain-ASGI ``/recommend`` (:mod:`metarec.serving.fast_path`) alike.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import JSONResponse

from metarec.errors import (
    ArtifactError,
    BadRowsError,
    ConfigError,
    DataError,
    MetarecError,
    NonFiniteError,
    NotAdaptedError,
    StoreError,
    UnknownCategoryError,
    UnknownUserError,
)
from metarec.serving import schemas
from metarec.serving.conflicts import EventConflictError
from metarec.serving.jobs import ServiceBusyError
from metarec.serving.service import EventsRejectedError

# The first class in a raised error's MRO found here decides the status.
ERROR_STATUS: dict[type[MetarecError], int] = {
    ServiceBusyError: 503,
    EventConflictError: 409,
    NonFiniteError: 500,
    BadRowsError: 422,
    UnknownCategoryError: 404,
    UnknownUserError: 404,
    NotAdaptedError: 409,
    ArtifactError: 422,
    StoreError: 503,
    ConfigError: 422,
    DataError: 422,
    MetarecError: 400,
}


def finite_json(content: Any) -> bytes:
    """``content`` (dicts, lists, strings, numbers, None) as JSON bytes.

    Raises:
        NonFiniteError: a float in ``content`` is NaN or infinite.
    """
    _check_finite(content)
    return orjson.dumps(content)


def _check_finite(value: Any) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NonFiniteError(
                f"a response held the non-finite number {value}; nothing was answered"
            )
    elif isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_finite(item)


class FiniteJSONResponse(JSONResponse):
    """A JSON response rendered by :func:`finite_json`."""

    def render(self, content: Any) -> bytes:
        return finite_json(content)


def error_response(
    exc: MetarecError, retry_after_seconds: int
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, JSON body and extra headers (``Retry-After`` with a 503) answering ``exc``."""
    status = next(ERROR_STATUS[c] for c in type(exc).__mro__ if c in ERROR_STATUS)
    body = schemas.Error(error=type(exc).__name__, detail=str(exc))
    if isinstance(exc, EventsRejectedError):
        body = body.model_copy(update={"rejected": exc.rows})
    headers = [(b"retry-after", str(retry_after_seconds).encode())] if status == 503 else []
    return status, body.model_dump_json(exclude_none=True).encode(), headers
