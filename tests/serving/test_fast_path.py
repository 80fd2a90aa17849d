"""``GET /recommend`` answered in plain ASGI (serving/fast_path.py): the FastAPI endpoint's
answers, byte for byte, and every request it does not answer itself reaches that endpoint."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import KNOWN_HELD_OUT
from tests.serving.test_service import TOKEN, copy_store, serve_settings

from metarec.errors import UnknownCategoryError
from metarec.meta.model import MetaModel, save_model
from metarec.serving.app import create_app
from metarec.serving.fast_path import RecommendFastPath
from metarec.serving.jobs import ServiceBusyError
from metarec.serving.settings import ServeSettings

MAX_K = 50
QUERIES = [
    "user_id=u1&category={c}",  # k absent: 10
    "user_id=u1&category={c}&k=1",
    "user_id=u2&category={c}&k=50",
    "user_id=u3&category={c}&k=007",
    "user_id=u1&category={c}&k=3&unknown=field",  # unknown fields are ignored by both
    "user_id=nobody-at-all&category={c}&k=5",  # unknown user: popularity, named
    "user_id=u1&category=Shelf%20%3E%20C1&k=5",  # a training category, percent-encoded
    "user_id=u1&category=No%20such%20shelf&k=5",  # 404
    "user_id=u1%01&category={c}&k=5",  # a control character in the id: 422 from the ranking
    "user_id=u1&category={c}&k=0",  # the rest go on to FastAPI's validation
    "user_id=u1&category={c}&k=51",
    "user_id=u1&category={c}&k=abc",
    "user_id=u1&category={c}&k=%2B3",
    "user_id=u1&category={c}&k=%205",
    "user_id=u1&category={c}&k=",
    "user_id=&category={c}",
    "category={c}",
    "user_id=u1",
    "user_id=" + "u" * 257 + "&category={c}",
    "user_id=u1&user_id=u2&category={c}",
    "user_id=u1&category={c}&k=3&k=4",
]


def _without_fast_path(app: Any) -> Any:
    app.user_middleware = [m for m in app.user_middleware if m.cls is not RecommendFastPath]
    return app


@pytest.fixture(scope="module")
def clients(
    known_store: Path, known_model: MetaModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, TestClient]]:
    """The same store and model served twice: with the fast path, and with FastAPI alone."""
    folder = tmp_path_factory.mktemp("fast-path")
    saved = save_model(known_model, folder / "model")
    apps = []
    for name, strip in (("fast", False), ("plain", True)):
        model_dir = Path(shutil.copytree(saved, folder / name / "model"))  # one model version
        settings = serve_settings(copy_store(known_store, folder / name), model_dir)
        app = create_app(settings.model_copy(update={"max_k": MAX_K}))
        apps.append(_without_fast_path(app) if strip else app)
    with TestClient(apps[0]) as fast, TestClient(apps[1]) as plain:
        yield fast, plain


@pytest.mark.parametrize("query", QUERIES)
def test_the_fast_path_answers_as_the_endpoint(
    clients: tuple[TestClient, TestClient], query: str
) -> None:
    url = "/recommend?" + query.format(c=KNOWN_HELD_OUT.replace(" ", "%20").replace(">", "%3E"))
    answers = [client.get(url) for client in clients]
    assert answers[0].status_code == answers[1].status_code
    assert answers[0].content == answers[1].content
    for header in ("content-type", "content-length", "retry-after"):
        assert answers[0].headers.get(header) == answers[1].headers.get(header)


def test_the_requests_are_counted_under_the_endpoint(
    clients: tuple[TestClient, TestClient],
) -> None:
    fast, _ = clients
    url = f"/recommend?user_id=u1&category={KNOWN_HELD_OUT}&k=2"
    counted = 'metarec_http_requests_total{method="GET",route="/recommend",status="200"}'

    def count() -> float:
        lines = fast.get("/metrics").text.splitlines()
        return next((float(line.split()[-1]) for line in lines if line.startswith(counted)), 0.0)

    before = count()
    assert fast.get(url).status_code == 200
    assert count() == before + 1


# ---- the layer alone, with a stub behind it ----------------------------------------------------


class _State:
    def __init__(self, batcher: Any) -> None:
        self.service = object()
        self.batcher = batcher


class _Answer:
    def to_json(self) -> dict[str, object]:
        return {"items": [{"item_id": "i1", "score": 0.5, "title": None}]}


class _Batcher:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[str, str, int]] = []
        self.error = error

    async def recommend(self, category: str, user_id: str, k: int) -> _Answer:
        self.calls.append((category, user_id, k))
        if self.error is not None:
            raise self.error
        return _Answer()


def _call(layer: RecommendFastPath, state: _State, query: bytes) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    app = type("App", (), {"state": state})()
    scope = {"type": "http", "method": "GET", "path": "/recommend", "query_string": query}
    asyncio.run(layer({**scope, "app": app}, receive, send))
    return sent


def _layer() -> tuple[RecommendFastPath, list[bytes]]:
    passed: list[bytes] = []

    async def behind(scope: Any, receive: Any, send: Any) -> None:
        passed.append(scope["query_string"])

    settings = ServeSettings(model_dir=Path("m"), store_path=Path("s"), token=TOKEN, max_k=MAX_K)
    return RecommendFastPath(behind, settings=settings), passed


def test_plain_queries_are_answered_without_the_app_behind() -> None:
    layer, passed = _layer()
    batcher = _Batcher()
    sent = _call(layer, _State(batcher), b"user_id=u%C3%A9&category=A%20%3E%20B&k=3")
    assert passed == [] and batcher.calls == [("A > B", "u\u00e9", 3)]
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b'{"items":[{"item_id":"i1","score":0.5,"title":null}]}'


@pytest.mark.parametrize(
    "query",
    [b"user_id=u&category=c&k=0", b"user_id=u&category=c&k=51", b"user_id=u&category=c&k=1e1",
     b"user_id=u&category=c&k=%EF%BC%93", b"category=c", b"user_id=u&user_id=v&category=c"],
)  # fmt: skip
def test_other_queries_go_on_to_the_endpoint(query: bytes) -> None:
    layer, passed = _layer()
    batcher = _Batcher()
    assert _call(layer, _State(batcher), query) == []
    assert passed == [query] and batcher.calls == []


def test_a_service_not_open_goes_on_to_the_endpoint() -> None:
    layer, passed = _layer()
    state = _State(_Batcher())
    state.service = None
    _call(layer, state, b"user_id=u&category=c")
    assert passed == [b"user_id=u&category=c"]


@pytest.mark.parametrize(
    ("error", "status", "retry"),
    [(UnknownCategoryError("no category 'c'"), 404, None), (ServiceBusyError("busy"), 503, b"2")],
)
def test_library_errors_are_the_handlers_answers(
    error: Exception, status: int, retry: bytes | None
) -> None:
    layer, _ = _layer()
    layer.retry_after = 2
    sent = _call(layer, _State(_Batcher(error)), b"user_id=u&category=c")
    assert sent[0]["status"] == status
    assert dict(sent[0]["headers"]).get(b"retry-after") == retry
    assert sent[1]["body"].startswith(b'{"error":"' + type(error).__name__.encode())
