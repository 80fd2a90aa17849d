"""The launch console in a real browser: Debian's headless Chromium driven by Playwright, against a
real `metarec serve` process on loopback.

The test launches a category from the page, posts its first events over HTTP, adapts it from the
page, and reads the user's lists before and after on the page. It skips (saying why) when
Chromium or Playwright is missing, unless ``METAREC_REQUIRE_BROWSER=1`` (what ``.ci/run`` sets,
after installing ``chromium``), where a missing browser fails. With ``METAREC_SCREENSHOTS=DIR``
(``make screenshots``) it also writes a screenshot of each page into DIR.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import KNOWN_HELD_OUT
from tests.serving.test_service import TOKEN

CHROMIUM = os.environ.get("METAREC_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("METAREC_REQUIRE_BROWSER") == "1"
LAUNCHED = "Shelf > Browser launch"
USER = "u5"


def _browser_or_skip() -> object:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install '.[dev]')"
    else:
        if not Path(CHROMIUM).is_file():
            reason = f"no Chromium at {CHROMIUM}: apt-get install chromium (what .ci/run does)"
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"METAREC_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"browser test skipped: {reason}")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def playwright_api() -> object:
    """Playwright's ``sync_playwright``, or a skip (a failure when the browser is required)."""
    return _browser_or_skip()


@pytest.fixture()
def server(
    playwright_api: object, known_store: Path, known_model_dir: Path, tmp_path: Path
) -> Iterator[str]:
    """`metarec serve` on loopback over a copy of the known-answer store, with one run folder
    (started only when there is a browser to test it with)."""
    store = Path(shutil.copy(known_store, tmp_path / "store.duckdb"))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    runs = _runs_folder(tmp_path / "runs")
    port = _free_port()
    metarec = str(Path(sys.executable).with_name("metarec"))
    process = subprocess.Popen(
        [
            *(metarec, "serve", "--model", str(known_model_dir), "--store", str(store)),
            *("--port", str(port), "--token-file", str(token), "--runs", str(runs)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise AssertionError(f"metarec serve exited: {process.stderr.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("metarec serve did not become ready in 60 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _runs_folder(folder: Path) -> Path:
    run = folder / "ml100k-loco"
    run.mkdir(parents=True)
    (run / "report.md").write_text(
        "# Leave-categories-out benchmark\n\n| shots | method | NDCG@10 |\n|---|---|---|\n"
        "| 1 | metarec-maml | **0.214** [0.193, 0.237] |\n"
        "| 1 | popularity | 0.215 [0.193, 0.240] |\n"
        "\n![NDCG@10 by shots](ndcg10_vs_shots.png)\n"
    )
    image = pytest.importorskip("PIL.Image")
    plot = image.new("RGB", (360, 200), "white")
    for x in range(20, 340):  # a rising line: something to see
        plot.putpixel((x, 180 - (x - 20) // 2), (41, 98, 255))
    plot.save(run / "ndcg10_vs_shots.png")
    return folder


def _listed(page: object, table_id: str) -> list[str]:
    return page.locator(f"#{table_id} td.item").all_inner_texts()  # type: ignore[attr-defined]


def _ink(png: bytes, box: dict[str, float]) -> float:
    """Share of dark pixels (text) inside ``box`` of a screenshot."""
    image = pytest.importorskip("PIL.Image")
    shot = image.open(io.BytesIO(png)).convert("L")
    region = shot.crop((box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]))
    histogram = region.histogram()  # 256 grey levels
    return sum(histogram[:110]) / max(1, sum(histogram))


def test_launch_post_events_adapt_and_read_the_lists_in_a_browser(
    server: str, playwright_api: object
) -> None:
    sync_playwright = playwright_api
    shots = os.environ.get("METAREC_SCREENSHOTS")
    with sync_playwright() as playwright:  # type: ignore[operator]
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        # 1. launch a category from the categories page (the token typed once, kept in the tab)
        page.goto(f"{server}/console")
        assert page.locator("#categories tbody tr").count() == 8
        page.fill("#token", TOKEN)
        page.fill("#launch input[name=category]", LAUNCHED)
        items = "\n".join(f"b{i},Browser book {i}" for i in range(30))
        page.fill("#launch textarea[name=items]", items)
        page.click("#launch button[type=submit]")
        page.wait_for_selector(f'tr[data-category="{LAUNCHED}"]', timeout=30_000)
        row = page.locator(f'tr[data-category="{LAUNCHED}"] td').all_inner_texts()
        assert row[:2] == [LAUNCHED, "30"] and row[4] == "zero-shot"

        # 2. its first events, over the JSON API, as a shop's backend would send them
        events = [
            {"event_id": f"b{u}-{j}", "user_id": f"u{u}", "item_id": f"b{(u + 7 * j) % 30}"}
            | {"event": "order", "timestamp": 1_700_000_000 + u}
            for u in range(40)
            for j in range(3)
        ]
        posted = httpx.post(
            f"{server}/events",
            json={"events": events},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert posted.status_code == 200, posted.text
        time.sleep(1.5)  # the snapshot refresh (refresh_seconds, 0.5 s) makes them visible

        # 3. before: the user's list at launch, read on the category page
        page.goto(f"{server}/console/category?name={LAUNCHED}&user={USER}&k=5")
        assert page.inner_text("#adaptation").startswith("none")
        before = _listed(page, "served")
        assert len(before) == 5 and before == _listed(page, "zero-shot")

        # 4. adapt from the page, then read both lists side by side
        page.click("button.adapt")
        # the page polls the job, then reloads: wait for the reloaded page to say so
        page.wait_for_selector("#adaptation:has-text('version 1')", timeout=60_000)
        page.goto(f"{server}/console/category?name={LAUNCHED}&user={USER}&k=5")
        zero_shot, served = _listed(page, "zero-shot"), _listed(page, "served")
        assert zero_shot == before  # the meta-initialisation's list: what the launch served
        answer = httpx.get(
            f"{server}/recommend", params={"user_id": USER, "category": LAUNCHED, "k": 5}
        ).json()
        assert served == [item["item_id"] for item in answer["items"]]
        assert answer["adaptation_version"] == 1 and answer["fallback"] is None
        mine = {e["item_id"] for e in events if e["user_id"] == USER}
        assert not mine & set(served)  # what the user bought is not recommended again
        assert "Browser book" in page.inner_text("#served")

        # the screenshot shows the lists: text inside both tables' boxes
        png = page.screenshot(full_page=True)
        for table in ("#zero-shot", "#served"):
            box = page.locator(table).bounding_box()
            assert box is not None and _ink(png, box) > 0.02, table
        if shots:
            _screenshots(page, server, Path(shots), png)
        assert not errors, errors
        browser.close()


def _screenshots(page: object, server: str, folder: Path, category_png: bytes) -> None:
    """One PNG per page (the README shows console-category.png)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "console-category.png").write_bytes(category_png)
    for name, path, ready in [
        ("console-categories", "/console", "#categories"),
        ("console-held-out", f"/console/category?name={KNOWN_HELD_OUT}&user=u1&k=5", "#served"),
        ("console-runs", "/console/runs", "#runs"),
        ("console-run", "/console/runs/view?name=ml100k-loco", "img.plot"),
        ("api-docs", "/docs", ".swagger-ui .info"),
    ]:
        page.goto(f"{server}{path}")  # type: ignore[attr-defined]
        page.wait_for_selector(ready, timeout=30_000)  # type: ignore[attr-defined]
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]
