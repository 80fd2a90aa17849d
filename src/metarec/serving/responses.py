"""JSON response bodies written by orjson, never with a non-finite number.

orjson writes a NaN or an infinity as ``null``, silently; an answer must refuse instead (a list
of ``null`` scores once looked like a recommendation). :func:`finite_json` walks the content
first and raises :class:`~metarec.errors.NonFiniteError` (500 through the app's one handler).
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from starlette.responses import JSONResponse

from metarec.errors import NonFiniteError


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
