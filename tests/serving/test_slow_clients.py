"""Clients that stall (issue 13): a real uvicorn server on loopback and raw sockets.

Before, the body limit buffered each POST body before the token was checked and outside the
in-flight limit: 150 unauthenticated sockets sending 4 MB and stalling took the server from 633
to 1,337 MB, with no 503 and no timeout. Now the token is checked before any body byte is read,
bodies have a deadline (408) and share a byte budget (503), and memory stays flat.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from tests.serving.test_service import TOKEN, copy_store, serve_settings

from metarec.serving.app import create_app

MIB = 1 << 20


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextmanager
def live_server(
    known_store: Path, model_dir: Path, folder: Path, **limits: object
) -> Iterator[int]:
    """The app under uvicorn in a thread of this process, on a free loopback port."""
    settings = serve_settings(copy_store(known_store, folder), model_dir, **limits)
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def stalled(port: int, *, token: str | None, declared: int, sent: int) -> socket.socket:
    """A POST /events that declares ``declared`` body bytes, sends ``sent`` of them, stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /events HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"{" + b" " * (sent - 1))
    return sock


def status_of(sock: socket.socket) -> int:
    answer = sock.recv(4096)
    return int(answer.split(b" ", 2)[1]) if answer else 0


def test_stalled_clients_get_401_408_or_503_and_memory_stays_flat(
    known_store: Path, known_model_dir: Path, tmp_path: Path
) -> None:
    limits = {
        "max_body_bytes": 4 * MIB,
        "max_buffered_bytes": 16 * MIB,
        "body_timeout_seconds": 1.5,
        "max_in_flight": 64,
    }
    with live_server(known_store, known_model_dir, tmp_path, **limits) as port:
        base = f"http://127.0.0.1:{port}"
        httpx.get(f"{base}/health/ready", timeout=10)
        before = rss_bytes()

        # 150 unauthenticated clients, 4 MB declared, 256 KB sent: refused before any body read
        anonymous = [
            stalled(port, token=None, declared=4 * MIB, sent=256 * 1024) for _ in range(150)
        ]
        assert [status_of(s) for s in anonymous] == [401] * 150
        wrong = stalled(port, token="not-the-token", declared=4 * MIB, sent=1024)
        assert status_of(wrong) == 403

        # 10 authorised clients, 4 MB declared each: 4 fit the 16 MB budget, the rest get 503 now
        started = time.monotonic()
        authorised = [
            stalled(port, token=TOKEN, declared=4 * MIB, sent=64 * 1024) for _ in range(10)
        ]
        statuses = [status_of(s) for s in authorised]
        assert sorted(statuses) == [408] * 4 + [503] * 6, statuses
        assert time.monotonic() - started < 10  # the stalled ones were dropped at the deadline
        grown = rss_bytes() - before

        # the service still answers, and serves writes once the stalled bodies are gone
        assert httpx.get(f"{base}/health/ready", timeout=10).status_code == 200
        posted = httpx.post(
            f"{base}/events",
            json={"events": [{"event_id": "ok", "user_id": "u1", "item_id": "c7-i3"}]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert posted.status_code == 200, posted.text
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'metarec_busy_rejections_total{reason="body_budget"} 6.0' in metrics
        for sock in [*anonymous, wrong, *authorised]:
            sock.close()
    # before: ~4.7 MB held per stalled socket (700 MB for 150); now the budget bounds bodies
    assert grown < 96 * MIB, f"RSS grew {grown / MIB:.0f} MiB"
