"""``GET /recommend`` answered in plain ASGI: the same answers, without FastAPI's routing.

A personalised recommendation is the service's hot path. Behind FastAPI, a profile put about
0.65 ms of the event loop per request in routing, dependency solving, query validation through
pydantic and the exception-handling layers (0.15 ms for ``/health/live``); answering here gained
1.09x in req/s at 1e5 items and 1.14x on a small category in alternated runs (docs/SERVING.md,
"Plain-ASGI ``/recommend``"). This layer sits inside the :class:`~metarec.serving.guard.Guard`
(so the in-flight limit and the request metrics apply) and answers a request itself only when
its query is plainly valid:

- ``user_id`` and ``category`` each given once, within the endpoint's lengths (1 to 256 and 1
  to 512 characters, after percent-decoding as Starlette decodes them);
- ``k`` absent (10) or given once as 1 to 4 ASCII digits within ``1 .. max_k``;
- the service open.

Everything else (missing or repeated fields, ``k=abc``, ``k=+3``, a service still starting)
goes on to the FastAPI endpoint, which validates and answers as it always did, so every error
message of a malformed request is FastAPI's. A library error of the ranking itself (an unknown
category, a non-finite score) is answered by
:func:`metarec.serving.responses.error_response`, the app's one handler for them.
``tests/serving/test_fast_path.py`` checks both routes give the same status, headers and body.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from metarec.errors import MetarecError
from metarec.serving.guard import App, Receive, Scope, Send
from metarec.serving.responses import error_response, finite_json
from metarec.serving.settings import ServeSettings

PATH = "/recommend"
USER_ID_LENGTH = (1, 256)  # the endpoint's Query bounds too (app.py reads these)
CATEGORY_LENGTH = (1, 512)
DEFAULT_K = 10
_JSON = b"application/json"


class RecommendFastPath:
    """Answers plainly valid ``GET /recommend`` requests; passes every other request on.

    Args:
        app: the ASGI app behind (FastAPI's stack).
        settings: the service settings (``max_k``, ``retry_after_seconds``).
    """

    def __init__(self, app: App, *, settings: ServeSettings) -> None:
        self.app = app
        self.max_k = settings.max_k
        self.retry_after = settings.retry_after_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        query = self.plain_query(scope["query_string"])
        if query is None or state.service is None:
            await self.app(scope, receive, send)  # FastAPI validates and answers
            return
        scope["route"] = _ROUTE  # the request metrics' label, as the router would set it
        user_id, category, k = query
        headers: list[tuple[bytes, bytes]] = []
        try:
            result = await state.batcher.recommend(category, user_id, k)
            body, status = finite_json(result.to_json()), 200
        except MetarecError as exc:
            status, body, headers = error_response(exc, self.retry_after)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", _JSON),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def plain_query(self, query_string: bytes) -> tuple[str, str, int] | None:
        """``(user_id, category, k)`` when the query is plainly valid, else None."""
        fields: dict[str, str] = {}
        for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
            if name in fields:
                return None  # a repeated field: FastAPI decides which one counts
            fields[name] = value
        user_id, category = fields.get("user_id"), fields.get("category")
        raw_k = fields.get("k")
        if user_id is None or not USER_ID_LENGTH[0] <= len(user_id) <= USER_ID_LENGTH[1]:
            return None
        if category is None or not CATEGORY_LENGTH[0] <= len(category) <= CATEGORY_LENGTH[1]:
            return None
        if raw_k is None:
            return user_id, category, DEFAULT_K
        if not (raw_k.isascii() and raw_k.isdigit() and len(raw_k) <= 4):
            return None
        k = int(raw_k)
        return (user_id, category, k) if 1 <= k <= self.max_k else None


class _Route:
    path = PATH


_ROUTE: Any = _Route()
