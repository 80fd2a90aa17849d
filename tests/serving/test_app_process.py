"""The real server (`metarec serve`, uvicorn, loopback): a launch served end to end, and no
acknowledged event lost or doubled across a ``kill -9``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import httpx
import pytest
from tests.serving.test_service import TOKEN, copy_store

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server(model_dir: Path, store: Path, folder: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`metarec serve` in a subprocess on loopback, ready; stopped (SIGINT) on exit if alive."""
    token_file = folder / "token"
    token_file.write_text(TOKEN)
    port = free_port()
    command = [
        sys.executable,
        "-c",
        "from metarec.cli import main; main()",
        "serve",
        "--model",
        str(model_dir),
        "--store",
        str(store),
        "--port",
        str(port),
        "--token-file",
        str(token_file),
    ]
    log = (folder / f"server-{port}.log").open("w")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (folder / f"server-{port}.log").read_text()
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        yield process, url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        log.close()


def test_launch_adapt_recommend_through_a_real_server(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    store = copy_store(known_store, tmp_path)
    category = "Shelf > Live"
    with (
        server(known_model_dir, store, tmp_path) as (process, url),
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        items = [{"item_id": f"v{i}", "publisher": f"P{i % 2}"} for i in range(40)]
        launched = http.post(
            "/categories", json={"category": category, "items": items}, headers=AUTH
        )
        assert launched.status_code == 201, launched.text
        query = {"user_id": "u2", "category": category, "k": 5}
        zero_shot = http.get("/recommend", params=query).json()
        assert zero_shot["fallback"] == "zero-shot"
        batch = [
            {
                "event_id": f"live-{u}-{j}",
                "user_id": f"u{u}",
                "item_id": f"v{(3 * j + u) % 20 * 2 + u % 2}",
            }
            for u in range(80)
            for j in range(4)
        ]
        assert http.post("/events", json={"events": batch}, headers=AUTH).json()["inserted"] == 320
        job = http.post(f"/categories/{category}/adapt", headers=AUTH).json()
        for _ in range(300):
            state = http.get(f"/jobs/{job['job_id']}").json()["state"]
            if state in ("done", "failed"):
                break
            time.sleep(0.05)
        assert state == "done"
        adapted = http.get("/recommend", params=query).json()
        assert adapted["fallback"] is None and adapted["adaptation_version"] == 1
        assert [i["score"] for i in adapted["items"]] != [i["score"] for i in zero_shot["items"]]
        metrics = http.get("/metrics").text
        assert 'metarec_adaptations_total{outcome="done"} 1.0' in metrics
        # `metarec serve` froze its start-up objects (serving/process.py): tens of thousands
        frozen = next(
            float(line.split()[1])
            for line in metrics.splitlines()
            if line.startswith("metarec_gc_frozen_objects ")
        )
        assert frozen > 10_000
    assert process.returncode == 0  # a clean stop after SIGINT


def test_acknowledged_events_survive_kill_9(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    store = copy_store(known_store, tmp_path)
    with duckdb.connect(str(store), read_only=True) as connection:
        before = connection.execute("SELECT count(*) FROM interactions").fetchall()[0][0]
    acknowledged: list[list[dict[str, str]]] = []
    sent_last: list[list[dict[str, str]]] = []
    stop = threading.Event()

    def stream(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for n in range(10_000):
                batch = [
                    {"event_id": f"k{n}-{j}", "user_id": f"u{(n + j) % 300}", "item_id": f"c7-i{j}"}
                    for j in range(25)
                ]
                sent_last[:] = [batch]
                try:
                    response = http.post("/events", json={"events": batch}, headers=AUTH)
                except httpx.TransportError:
                    return  # the server died mid-request: this batch is unacknowledged
                assert response.status_code == 200, response.text
                acknowledged.append(batch)
                if stop.is_set():
                    return

    with server(known_model_dir, store, tmp_path) as (process, url):
        streamer = threading.Thread(target=stream, args=(url,))
        streamer.start()
        while len(acknowledged) < 8:
            time.sleep(0.01)
        process.kill()  # SIGKILL while batches keep coming
        process.wait()
        stop.set()
        streamer.join(timeout=30)
    acked_ids = [e["event_id"] for batch in acknowledged for e in batch]
    in_flight = {e["event_id"] for e in sent_last[0]} - set(acked_ids)

    with server(known_model_dir, store, tmp_path) as (_, url), httpx.Client(base_url=url) as http:
        for batch in acknowledged:  # re-sending acknowledged batches stores nothing twice
            again = http.post("/events", json={"events": batch}, headers=AUTH).json()
            assert again["inserted"] == 0 and again["duplicates"] == len(batch)

    with duckdb.connect(str(store), read_only=True) as connection:
        total, distinct = connection.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM interactions"
        ).fetchall()[0]
        found = connection.execute(
            "SELECT count(*) FROM interactions WHERE event_id IN (SELECT unnest(?::VARCHAR[]))",
            [acked_ids],
        ).fetchall()[0][0]
    assert found == len(acked_ids)  # every acknowledged event is there
    assert total == distinct  # none twice
    # the batch in flight at the kill is all there or not at all (one transaction)
    assert total - before in (len(acked_ids), len(acked_ids) + len(in_flight))


def test_serve_refuses_to_start_without_a_token_or_with_a_damaged_model(
    known_store: Path, known_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from metarec.cli import app

    runner = CliRunner()
    store = copy_store(known_store, tmp_path)
    command = ["serve", "--model", str(known_model_dir), "--store", str(store)]
    monkeypatch.delenv("METAREC_TOKEN", raising=False)
    no_token = runner.invoke(app, command)
    assert no_token.exit_code == 2 and "--token-file" in no_token.output

    monkeypatch.setenv("METAREC_TOKEN", "short")
    short = runner.invoke(app, command)
    assert short.exit_code == 2 and "token" in short.output and "short" not in short.output

    monkeypatch.setenv("METAREC_TOKEN", TOKEN)
    (known_model_dir / "params.safetensors").write_bytes(b"damaged")
    damaged = runner.invoke(app, command)
    assert damaged.exit_code == 2 and "params.safetensors" in damaged.output
    with duckdb.connect(str(store)) as connection:  # the refused start released the store
        assert connection.execute("SELECT count(*) FROM items").fetchall()[0][0] > 0
