"""The service's front door, as plain ASGI middleware: limits before any handler runs.

In this order, for every request but health and metrics (which answer under overload):

1. **in flight**: more than ``max_in_flight`` requests at once (body readers included) get 503
   with ``Retry-After``;
2. **token first**: a write (``POST``) without the right bearer token gets 401/403 before a byte
   of its body is read, and the connection is closed, so unauthenticated clients cannot make
   the service buffer bodies;
3. **bounded bodies**: a body is read under a size cap (413 beyond ``max_body_bytes``, with or
   without ``Content-Length``), a deadline for the whole body (408 after
   ``body_timeout_seconds``: a client that stalls mid-body is dropped), and a budget of body
   bytes held by all requests together (503 beyond ``max_buffered_bytes``). A declared
   ``Content-Length`` is reserved from the budget before reading. So body memory stays under
   ``max_buffered_bytes`` whatever the clients do.

Request metrics are recorded here too. (Cheaper than ``BaseHTTPMiddleware`` on every request.)
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from metarec.serving.jobs import ServiceBusyError
from metarec.serving.settings import ServeSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON = b"application/json"
_EXEMPT = ("/health/", "/metrics")  # answered even when the service is saturated
_WRITES = ("POST", "PUT", "PATCH", "DELETE")
_CLOSE = [(b"connection", b"close")]


class _Refused(Exception):
    """A request answered by the guard itself (status, error class, detail, extra headers)."""

    def __init__(
        self, status: int, error: str, detail: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class Guard:
    """In-flight limit, token check before bodies, bounded body reads, request metrics.

    Args:
        app: the ASGI app behind the guard.
        settings: the limits and the token.
    """

    def __init__(self, app: App, *, settings: ServeSettings) -> None:
        self.app = app
        self.settings = settings
        self.in_flight = 0
        self.buffered = 0  # body bytes held (or reserved) by requests in flight
        self._token = settings.token.get_secret_value().encode()
        self._retry = [(b"retry-after", str(settings.retry_after_seconds).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service = scope["app"].state.service
        exempt = scope["path"].startswith(_EXEMPT)
        if not exempt and self.in_flight >= self.settings.max_in_flight:
            self._count_busy(service, "in_flight")
            detail = f"{self.in_flight} requests in flight (the limit); retry in a moment"
            await _reply(send, _Refused(503, ServiceBusyError.__name__, detail, self._retry))
            return
        status = 500

        async def tracked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.in_flight += 1
        held = 0
        started = time.perf_counter()
        try:
            if scope["method"] in _WRITES:
                self._check_token(scope)
                body, held = await self._read_body(scope, receive, service)
                receive = _replay(body, receive)
            await self.app(scope, receive, tracked)
        except _Refused as refused:
            status = refused.status
            await _reply(send, refused)
        except _Gone:
            status = 499  # the client went away mid-body; nothing to answer
        finally:
            self.in_flight -= 1
            self.buffered -= held
            if service is not None:
                route = getattr(scope.get("route"), "path", "unmatched")
                service.metrics.latency.labels(route).observe(time.perf_counter() - started)
                service.metrics.requests.labels(route, scope["method"], str(status)).inc()

    def _check_token(self, scope: Scope) -> None:
        """Every write needs the token; checked before its body is read (the endpoints check
        again, which is what OpenAPI shows)."""
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, credentials = header.partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            raise _Refused(
                401,
                "Unauthorized",
                "this endpoint needs the service's token: send 'Authorization: Bearer <token>'",
                [(b"www-authenticate", b"Bearer"), *_CLOSE],
            )
        # constant-time comparison; the token itself is never logged or echoed
        if not hmac.compare_digest(credentials.strip(), self._token):
            raise _Refused(
                403, "Forbidden", "wrong bearer token", [(b"www-authenticate", b"Bearer"), *_CLOSE]
            )

    async def _read_body(self, scope: Scope, receive: Receive, service: Any) -> tuple[bytes, int]:
        """The whole body and the budget bytes it holds (released by the caller).

        Raises:
            _Refused: 413 too large, 408 too slow, 503 over the body budget.
            _Gone: the client disconnected.
        """
        limit = self.settings.max_body_bytes
        too_large = _Refused(
            413, "PayloadTooLarge", f"request body over {limit} bytes; send smaller batches", _CLOSE
        )
        declared = dict(scope["headers"]).get(b"content-length")
        held = 0
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                raise too_large
            held = self._reserve(int(declared), service)
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Gone
                    body += message.get("body", b"")
                    if len(body) > limit:
                        raise too_large
                    if len(body) > held:
                        held += self._reserve(len(body) - held, service)
                    if not message.get("more_body", False):
                        return bytes(body), held
        except TimeoutError:
            self.buffered -= held
            raise _Refused(
                408,
                "RequestTimeout",
                f"the request body did not arrive within {self.settings.body_timeout_seconds:g} "
                "s; send it at once",
                _CLOSE,
            ) from None
        except BaseException:
            self.buffered -= held
            raise

    def _reserve(self, n: int, service: Any) -> int:
        """Take ``n`` bytes from the body budget, or refuse the request (503)."""
        if self.buffered + n > self.settings.max_buffered_bytes:
            self._count_busy(service, "body_budget")
            raise _Refused(
                503,
                ServiceBusyError.__name__,
                "too many request bodies are being received at once; retry in a moment",
                [*self._retry, *_CLOSE],
            )
        self.buffered += n
        return n

    @staticmethod
    def _count_busy(service: Any, reason: str) -> None:
        if service is not None:
            service.metrics.busy.labels(reason).inc()


class _Gone(Exception):
    """The client disconnected before its body was complete."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the already-read body, then the client's later messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _reply(send: Send, refused: _Refused) -> None:
    payload = json.dumps({"error": refused.error, "detail": refused.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", _JSON),
                (b"content-length", str(len(payload)).encode()),
                *refused.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
