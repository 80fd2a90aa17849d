"""The HTTP contract through FastAPI's TestClient: status codes, messages, limits, metrics, and
the whole launch -> events -> adapt -> recommend flow."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.conftest import KNOWN_HELD_OUT
from tests.serving.test_service import TOKEN, copy_store, serve_settings

from metarec.serving.app import create_app
from metarec.serving.guard import Guard
from metarec.serving.service import Service

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextmanager
def serving(known_store: Path, model_dir: Path, folder: Path, **overrides: object):
    store = copy_store(known_store, folder)
    limits = {"max_body_bytes": 32_768, "max_k": 50, "refresh_seconds": 0.0, **overrides}
    with TestClient(create_app(serve_settings(store, model_dir, **limits))) as test_client:
        yield test_client


@pytest.fixture()
def client(known_store: Path, known_model_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    with serving(known_store, known_model_dir, tmp_path / "live") as test_client:
        yield test_client


def service_of(client: TestClient) -> Service:
    return client.app.state.service  # type: ignore[attr-defined]


def store_rows(client: TestClient) -> tuple[int, int, int]:
    """(interactions, items, users) in the live store."""
    stats = service_of(client).with_store(lambda store: store.stats())
    return stats["n_interactions"], stats["n_items"], stats["n_users"]


def event(n: int, user: str = "u1", item: str = "c7-i3", **extra: object) -> dict[str, object]:
    return {"event_id": f"e{n}", "user_id": user, "item_id": item, "event": "order", **extra}


def wait_for_job(client: TestClient, job_id: str) -> dict[str, object]:
    for _ in range(600):
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def test_launch_events_adapt_recommend(client: TestClient) -> None:
    """A new category: zero-shot at launch, adapted after its first events, and different."""
    category = "Shelf > Launch"
    items = [{"item_id": f"l{i}", "publisher": f"P{i % 2}", "title": f"new {i}"} for i in range(40)]
    launched = client.post("/categories", json={"category": category, "items": items}, headers=AUTH)
    assert launched.status_code == 201, launched.text
    assert launched.json()["n_items"] == 40
    query = {"user_id": "u0", "category": category, "k": 5}
    zero_shot = client.get("/recommend", params=query).json()
    assert zero_shot["fallback"] == "zero-shot" and zero_shot["adaptation_version"] is None

    batch = [
        event(100 + 5 * u + j, f"u{u}", f"l{(7 * j + u) % 20 * 2 + u % 2}", timestamp=1_700_000_000)
        for u in range(60)
        for j in range(5)
    ]
    posted = client.post("/events", json={"events": batch}, headers=AUTH)
    assert posted.status_code == 200 and posted.json()["inserted"] == 300
    accepted = client.post(f"/categories/{category}/adapt", headers=AUTH)
    assert accepted.status_code == 202 and accepted.json()["state"] in ("queued", "running", "done")
    assert wait_for_job(client, accepted.json()["job_id"])["state"] == "done"

    status = client.get(f"/categories/{category}").json()
    assert status["adaptation"]["version"] == 1 and status["support_size"] == 300
    adapted = client.get("/recommend", params=query).json()
    assert adapted["fallback"] is None and adapted["adaptation_version"] == 1
    assert adapted["model_version"] == zero_shot["model_version"]
    assert [i["score"] for i in adapted["items"]] != [i["score"] for i in zero_shot["items"]]
    # user 0 prefers publisher P0 (even items), and never gets back what it already liked
    liked = {b["item_id"] for b in batch if b["user_id"] == "u0"}
    assert not liked & {i["item_id"] for i in adapted["items"]}
    assert all(int(i["item_id"][1:]) % 2 == 0 for i in adapted["items"])


def test_tokens(client: TestClient) -> None:
    before = store_rows(client)
    body = {"events": [event(1)]}
    missing = client.post("/events", json=body)
    assert missing.status_code == 401 and "Bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/events", json=body, headers={"Authorization": "Bearer nope-nope"})
    assert wrong.status_code == 403 and TOKEN not in wrong.text
    for path in (f"/categories/{KNOWN_HELD_OUT}/adapt", "/admin/model", "/categories"):
        assert client.post(path, json={}).status_code == 401
    assert store_rows(client) == before
    assert client.post("/events", json=body, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ('{"events": [', 422, "JSON"),  # malformed JSON
        ('{"events": []}', 422, "at least 1"),
        ('{"events": [{"event_id": "x", "user_id": "u1"}]}', 422, "item_id"),
        (
            '{"events": [{"event_id": "x", "user_id": "u1", "item_id": "c7-i1", "rating": NaN}]}',
            422,
            "finite",
        ),
        (
            '{"events": [{"event_id": "x", "user_id": "u1", "item_id": "c7-i1", '
            '"weight": Infinity}]}',
            422,
            "finite",
        ),
        (
            '{"events": [{"event_id": "x", "user_id": "u1", "item_id": "c7-i1", "typo": 1}]}',
            422,
            "typo",
        ),
        (
            '{"events": [{"event_id": "x", "user_id": "u1", "item_id": "nope"}]}',
            422,
            "unknown item",
        ),
        (
            '{"events": [{"event_id": "x", "user_id": "u1", "item_id": "c7-i1", '
            '"timestamp": "yesterday"}]}',
            422,
            "timestamp",
        ),
    ],
)
def test_bad_events_change_nothing(
    client: TestClient, body: str, status: int, fragment: str
) -> None:
    before = store_rows(client)
    response = client.post(
        "/events", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text
    assert fragment.lower() in response.text.lower()
    assert store_rows(client) == before


def test_body_limit(client: TestClient) -> None:
    before = store_rows(client)
    big = {"events": [event(n, user="u" + "x" * 50) for n in range(500)]}
    declared = client.post("/events", json=big, headers=AUTH)
    assert declared.status_code == 413 and "32768 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts streamed bytes
        payload = json.dumps(big).encode()
        for start in range(0, len(payload), 1000):
            yield payload[start : start + 1000]

    streamed = client.post(
        "/events", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert store_rows(client) == before


def test_recommend_bounds_and_unknowns(client: TestClient) -> None:
    query = {"user_id": "u0", "category": KNOWN_HELD_OUT}
    for k in (0, -1, 51, "many"):
        assert client.get("/recommend", params={**query, "k": k}).status_code == 422
    assert client.get("/recommend", params={"user_id": "u0"}).status_code == 422
    unknown = client.get("/recommend", params={**query, "category": "C7"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "UnknownCategoryError" and "did you mean" in unknown.text
    assert client.get("/categories/Shelf > Nope").status_code == 404
    assert client.post("/categories/Shelf > Nope/adapt", headers=AUTH).status_code == 404
    assert client.get("/jobs/job-999").status_code == 404
    stranger = client.get("/recommend", params={**query, "user_id": "stranger", "k": 50})
    assert stranger.status_code == 200 and stranger.json()["fallback"] == "popularity"
    assert len(stranger.json()["items"]) == 40  # every item of the category, no more


def test_launch_refusals(client: TestClient) -> None:
    before = store_rows(client)
    clash = {"category": "Shelf > X", "items": [{"item_id": "c3-i1"}]}
    refused = client.post("/categories", json=clash, headers=AUTH)
    assert refused.status_code == 422 and "unique across categories" in refused.text
    reserved = {"category": "Shelf > X", "items": [{"item_id": "x1", "attributes": {"title": "t"}}]}
    assert client.post("/categories", json=reserved, headers=AUTH).status_code == 422
    nan_price = '{"category": "Shelf > X", "items": [{"item_id": "x1", "price": NaN}]}'
    headers = {**AUTH, "Content-Type": "application/json"}
    assert client.post("/categories", content=nan_price, headers=headers).status_code == 422
    assert store_rows(client) == before


@pytest.mark.parametrize("damage", ["tamper", "truncate", "version"])
def test_admin_model_refuses_a_damaged_folder(
    client: TestClient, known_model_dir: Path, tmp_path: Path, damage: str
) -> None:
    import shutil

    candidate = Path(shutil.copytree(known_model_dir, tmp_path / "candidate"))
    params = candidate / "params.safetensors"
    if damage == "tamper":
        data = bytearray(params.read_bytes())
        data[len(data) // 2] ^= 0xFF
        params.write_bytes(bytes(data))
    elif damage == "truncate":
        params.write_bytes(params.read_bytes()[:100])
    else:
        manifest = json.loads((candidate / "manifest.json").read_text())
        manifest["format_version"] = 7
        (candidate / "manifest.json").write_text(json.dumps(manifest))
    version = client.get("/health/ready").json()["model_version"]
    refused = client.post("/admin/model", json={"path": str(candidate)}, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["error"] == "ArtifactError"
    assert "params.safetensors" in refused.text or "version" in refused.text
    served = client.get("/recommend", params={"user_id": "u0", "category": KNOWN_HELD_OUT})
    assert served.status_code == 200 and served.json()["model_version"] == version


def test_admin_model_swaps(client: TestClient, known_model_dir: Path) -> None:
    version = client.get("/health/ready").json()["model_version"]
    swapped = client.post("/admin/model", json={"path": str(known_model_dir)}, headers=AUTH)
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["previous_version"] == version == swapped.json()["model_version"]


def test_full_queue_answers_503_with_retry_after(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    with serving(known_store, known_model_dir, tmp_path / "live", queue_size=2) as client:
        _fill_the_queue(client)


def _fill_the_queue(client: TestClient) -> None:
    service = service_of(client)
    release = threading.Event()
    original = service._adapt

    def slow(job):  # hold the worker so that the queue fills up
        release.wait(30)
        return original(job)

    service._adapt = slow  # type: ignore[method-assign]
    try:
        codes = [
            client.post(f"/categories/Shelf > C{c}/adapt", headers=AUTH).status_code
            for c in range(service.settings.queue_size + 2)
        ]
        assert codes[0] == 202 and codes[-1] == 503
        busy = client.post("/categories/Shelf > C7/adapt", headers=AUTH)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"] == "ServiceBusyError"
    finally:
        release.set()


def test_health_metrics_and_docs(client: TestClient) -> None:
    assert client.get("/health/live").json()["status"] == "live"
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["data_version"] == 0
    client.get("/recommend", params={"user_id": "stranger", "category": KNOWN_HELD_OUT})
    text = client.get("/metrics").text
    assert 'metarec_http_requests_total{method="GET",route="/recommend",status="200"} 1.0' in text
    assert 'metarec_recommend_fallbacks_total{kind="popularity"} 1.0' in text
    assert "metarec_http_request_seconds_bucket" in text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/events", "/categories", "/admin/model", "/metrics"} <= set(paths)


def test_in_flight_limit_answers_503() -> None:
    """The guard refuses requests beyond ``max_in_flight`` (health probes still answer)."""
    gate = asyncio.Event()
    app = FastAPI()
    app.state.service = None

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await gate.wait()
        return {"ok": True}

    @app.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"ok": True}

    settings = serve_settings(Path("unused"), Path("unused"), max_in_flight=1)
    app.add_middleware(Guard, settings=settings)

    async def scenario() -> tuple[int, int, int, str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            first = asyncio.create_task(http.get("/slow"))
            await asyncio.sleep(0.05)
            second = await http.get("/slow")
            probe = await http.get("/health/live")
            gate.set()
            return (
                (await first).status_code,
                second.status_code,
                probe.status_code,
                second.headers["retry-after"],
            )

    assert asyncio.run(scenario()) == (200, 503, 200, "1")
