"""The launch console through FastAPI's TestClient: pages render the service's state, escape
names, need no token to read, add no write path, and the API docs load no CDN asset."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from tests.conftest import KNOWN_HELD_OUT
from tests.serving.test_app import AUTH, event, service_of, wait_for_job
from tests.serving.test_service import copy_store, serve_settings

from metarec.serving.app import create_app

HOSTILE = 'Shelf > <script>alert("x")</script> & "quotes"'


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "ml100k-loco"
    run.mkdir(parents=True)
    (run / "report.md").write_text(
        "# Benchmark <b>report</b>\n\n| method | NDCG@10 |\n|---|---|\n"
        "| metarec-maml | **0.214** [0.19, 0.24] |\n| <i>popularity</i> | 0.215 |\n\n"
        "![NDCG@10 by shots](ndcg10_vs_shots.png)\n"
    )
    (run / "metrics.json").write_text("{}")
    (run / "ndcg10_vs_shots.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (tmp_path / "runs" / "not-a-run").mkdir()
    (tmp_path / "secret.png").write_bytes(b"outside the runs folder")
    return tmp_path / "runs"


@pytest.fixture()
def console(
    known_store: Path, known_model_dir: Path, tmp_path: Path, runs_dir: Path
) -> Iterator[TestClient]:
    store = copy_store(known_store, tmp_path / "live")
    settings = serve_settings(store, known_model_dir, refresh_seconds=0.0)
    with TestClient(create_app(settings, runs_dir=runs_dir)) as client:
        yield client


def _cells(html: str, category: str) -> list[str]:
    attribute = re.escape(str(escape(category)))  # as the template writes it
    row = re.search(rf'<tr data-category="{attribute}">(.*?)</tr>', html, re.S)
    assert row, f"no row for {category!r}"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row[1], re.S)
    return [html_lib.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]


def test_categories_page_shows_the_status_of_every_category(console: TestClient) -> None:
    page = console.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    status = console.get(f"/categories/{KNOWN_HELD_OUT}").json()
    cells = _cells(page.text, KNOWN_HELD_OUT)
    assert cells[0] == KNOWN_HELD_OUT
    assert cells[1:4] == [
        f"{status['n_items']:,}",
        f"{status['n_users']:,}",
        f"{status['support_size']:,}",
    ]
    assert cells[4] == "zero-shot"
    assert page.text.count("<tr data-category=") == 8

    job = console.post(f"/categories/{KNOWN_HELD_OUT}/adapt", headers=AUTH).json()
    assert wait_for_job(console, job["job_id"])["state"] == "done"
    cells = _cells(console.get("/console").text, KNOWN_HELD_OUT)
    assert cells[4] == "1" and cells[5].endswith("ago") and cells[7] == "done"


def test_pages_escape_category_names_and_item_titles(console: TestClient) -> None:
    items = [{"item_id": f"h{i}", "title": f"<img src=x onerror=alert({i})>"} for i in range(5)]
    launched = console.post("/categories", json={"category": HOSTILE, "items": items}, headers=AUTH)
    assert launched.status_code == 201, launched.text
    listing = console.get("/console").text
    assert "<script>alert" not in listing
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;quotes&#34;" in listing
    page = console.get("/console/category", params={"name": HOSTILE, "user": "u1", "k": 3})
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(" in page.text  # the titles, shown as text


def _listed(page: str, table_id: str) -> list[str]:
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S)
    assert table, f"no table {table_id}"
    return re.findall(r'<td class="item">([^<]+)</td>', table[1])


def test_category_page_lookup_shows_before_and_after(console: TestClient) -> None:
    user, query = "u3", {"name": KNOWN_HELD_OUT, "user": "u3", "k": 5}
    console.post("/events", json={"events": [event(1, user, "c7-i2")]}, headers=AUTH)
    service_of(console).wait_for_refresh()
    before = console.get("/console/category", params=query).text
    assert 'id="adaptation">none: served zero-shot' in before
    assert "<polyline points=" in before  # support over time
    share = re.search(r'id="top1">(\d+)%', before)
    assert share and 0 <= int(share[1]) <= 100
    # not adapted: the served list is the zero-shot one
    assert _listed(before, "served") == _listed(before, "zero-shot")

    job = console.post(f"/categories/{KNOWN_HELD_OUT}/adapt", headers=AUTH).json()
    assert wait_for_job(console, job["job_id"])["state"] == "done"
    after = console.get("/console/category", params=query).text
    served = console.get("/recommend", params={"user_id": user, "category": KNOWN_HELD_OUT, "k": 5})
    assert "adapted, version 1" in after
    assert _listed(after, "served") == [item["item_id"] for item in served.json()["items"]]
    assert _listed(after, "zero-shot") == _listed(before, "served")  # the list before adapting
    assert "c7-i2" not in _listed(after, "zero-shot") + _listed(after, "served")  # seen


def test_unknown_category_is_404_and_reads_need_no_token(console: TestClient) -> None:
    missing = console.get("/console/category", params={"name": "Shelf > Nowhere"})
    assert missing.status_code == 404
    assert missing.json()["error"] == "UnknownCategoryError"
    for path in ("/console", "/console/runs", "/docs", "/redoc", "/console/static/console.js"):
        assert console.get(path).status_code == 200, path


def test_console_adds_no_write_path(console: TestClient) -> None:
    """Actions go through the JSON API, whose writes need the token before their body."""
    schema = console.get("/openapi.json").json()
    assert not [p for p in schema["paths"] if p.startswith("/console")]
    assert console.post("/console", json={}).status_code in (401, 405)
    assert console.post(f"/categories/{KNOWN_HELD_OUT}/adapt").status_code == 401
    script = console.get("/console/static/console.js").text
    assert "innerHTML" not in script and "Authorization" in script


def test_runs_pages_show_reports_and_plots_and_nothing_else(
    console: TestClient, runs_dir: Path
) -> None:
    listing = console.get("/console/runs").text
    assert "ml100k-loco" in listing and "not-a-run" not in listing
    run = console.get("/console/runs/view", params={"name": "ml100k-loco"}).text
    assert "<th>NDCG@10</th>" in run and "<strong>0.214</strong>" in run
    assert "&lt;i&gt;popularity&lt;/i&gt;" in run and "&lt;b&gt;report&lt;/b&gt;" in run
    assert 'src="/console/runs/file?name=ml100k-loco&amp;file=ndcg10_vs_shots.png"' in run
    plot = console.get(
        "/console/runs/file", params={"name": "ml100k-loco", "file": "ndcg10_vs_shots.png"}
    )
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    for name, file in [
        ("ml100k-loco", "../../secret.png"),
        ("..", "secret.png"),
        ("ml100k-loco", "metrics.json"),
        ("not-a-run", "x.png"),
    ]:
        refused = console.get("/console/runs/file", params={"name": name, "file": file})
        assert refused.status_code == 404, (name, file)
    assert console.get("/console/runs/view", params={"name": "../runs"}).status_code == 404


def test_docs_load_their_assets_from_the_package(console: TestClient) -> None:
    for path in ("/docs", "/redoc"):
        html = console.get(path).text
        assert "cdn." not in html and "googleapis" not in html and "https://" not in html
        for asset in re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', html):
            fetched = console.get(asset)
            assert fetched.status_code == 200, asset
            assert len(fetched.content) > 1000 or "favicon" in asset
    assert console.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert console.get("/docs/static/redoc.standalone.js").status_code == 200
