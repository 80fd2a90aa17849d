"""The launch console: server-rendered pages at ``/console``, and the API docs served offline.

Pages (read-only, no token; every asset ships in this package, nothing from a CDN):

- ``/console``: every category (items, users, support, adaptation version and age, events since
  adaptation, latest job) with the launch and adapt actions;
- ``/console/category?name=C[&user=U&k=K]``: support over time, the share of users whose top-1
  is the most popular item, and a user's zero-shot and served top-K side by side;
- ``/console/runs``, ``/console/runs/view?name=R``: evaluation run folders of ``--runs DIR``,
  their report tables and plots.

The actions (launch, adapt) are the JSON API's own endpoints, called from the page's script with
the token the user types (kept in the tab's ``sessionStorage``): the console adds no write path,
so the guard that checks writes (:mod:`metarec.serving.guard`) checks these too. Names are user
input (a category is whatever a launch posted): templates autoescape every value, and the
script writes only ``textContent``.

``/docs`` (Swagger UI) and ``/redoc`` load their JavaScript and CSS from the ``fastapi-offline``
package's files, so they work without a network.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import FastAPI, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException

from metarec.serving.console import pages

if TYPE_CHECKING:
    from metarec.serving.service import Service

_STATIC = Path(__file__).with_name("static")
_DOCS_STATIC = "/docs/static"
_MAX_K = 100  # the lookup form's largest list


def mount_console(app: FastAPI, *, runs_dir: Path | None = None) -> None:
    """Add the console's pages and static files to ``app`` (built by ``create_app``)."""
    env = Environment(
        loader=PackageLoader("metarec.serving.console", "templates"),
        autoescape=select_autoescape(["html"], default=True),
    )
    env.filters["age"] = pages.age
    env.filters["number"] = lambda n: "" if n is None else f"{n:,}"
    app.mount("/console/static", StaticFiles(directory=_STATIC), name="console-static")

    def render(name: str, request: Request, **values: Any) -> HTMLResponse:
        service = request.app.state.service
        model = None if service is None else service.model_version
        html = env.get_template(name).render(model_version=model, runs=runs_dir, **values)
        return HTMLResponse(html)

    def service_of(request: Request) -> Service:
        service = request.app.state.service
        if service is None:
            raise HTTPException(503, "the service is starting; reload in a moment")
        return service

    # plain functions: FastAPI runs them in worker threads, so ranking a page's lists (the
    # top-1 share ranks up to 200 users) never holds up the event loop and other requests
    @app.get("/console", response_class=HTMLResponse, include_in_schema=False)
    def categories(request: Request) -> HTMLResponse:
        rows = pages.category_rows(service_of(request))
        return render("categories.html", request, rows=rows)

    @app.get("/console/category", response_class=HTMLResponse, include_in_schema=False)
    def category(
        request: Request,
        name: Annotated[str, Query(min_length=1, max_length=512)],
        user: Annotated[str | None, Query(max_length=256)] = None,
        k: Annotated[int, Query(ge=1, le=_MAX_K)] = 10,
    ) -> HTMLResponse:
        service = service_of(request)
        status = service.category_status(name)  # unknown: 404 through the app's error handler
        recommender = service.snapshot.recommender
        found = None if not user else pages.lookup(recommender, name, user, k)
        return render(
            "category.html",
            request,
            status=status,
            chart=_support_chart(pages.support_over_time(recommender, name)),
            top1_share=pages.top1_popular_share(recommender, name),
            top1_sample=pages.TOP1_SAMPLE,
            lookup=found,
            user=user or "",
            k=k,
        )

    @app.get("/console/runs", response_class=HTMLResponse, include_in_schema=False)
    def runs(request: Request) -> HTMLResponse:
        found = [] if runs_dir is None else pages.list_runs(runs_dir)
        return render("runs.html", request, found=found)

    @app.get("/console/runs/view", response_class=HTMLResponse, include_in_schema=False)
    def run(request: Request, name: Annotated[str, Query(max_length=512)]) -> HTMLResponse:
        found = None if runs_dir is None else pages.find_run(runs_dir, name)
        if found is None:
            raise HTTPException(404, f"no evaluation run {name!r} under --runs")
        report = found.folder / "report.md"
        body = _markdown(report.read_text(), name) if report.is_file() else Markup("")
        return render("run.html", request, run=found, report=body)

    @app.get("/console/runs/file", include_in_schema=False)
    def run_file(
        name: Annotated[str, Query(max_length=512)], file: Annotated[str, Query(max_length=255)]
    ) -> FileResponse:
        found = None if runs_dir is None else pages.find_run(runs_dir, name)
        path = None if found is None else pages.run_file(found, file)
        if path is None:
            raise HTTPException(404, f"no file {file!r} in run {name!r}")
        return FileResponse(path, media_type=pages.RUN_FILES[path.suffix])


def mount_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` and ReDoc at ``/redoc`` from packaged files (create the app with
    ``docs_url=None, redoc_url=None``)."""
    assets = importlib.resources.files("fastapi_offline") / "static"
    app.mount(_DOCS_STATIC, StaticFiles(directory=str(assets)), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API",
            swagger_js_url=f"{_DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_STATIC}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API",
            redoc_js_url=f"{_DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{_DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


def _support_chart(points: list[tuple[int, int]], width: int = 640, height: int = 160) -> dict:
    """An SVG polyline of cumulative support by day (coordinates only; the template draws)."""
    if not points:
        return {"polyline": "", "width": width, "height": height, "first": None, "last": None}
    days = [d for d, _ in points]
    span = max(1, days[-1] - days[0])
    top = max(1, points[-1][1])
    coords = [
        (
            round(8 + (width - 16) * (d - days[0]) / span, 1),
            round(height - 8 - (height - 16) * n / top, 1),
        )
        for d, n in points
    ]
    if len(coords) == 1:  # one day of support: a step from nothing to it
        coords = [(8.0, float(height - 8)), (8.0, coords[0][1]), (width - 8.0, coords[0][1])]
    return {
        "polyline": " ".join(f"{x},{y}" for x, y in coords),
        "width": width,
        "height": height,
        "first": days[0],
        "last": days[-1],
        "total": points[-1][1],
        "days": len(points),
    }


# ---- report.md: the subset write_run produces (headings, pipe tables, images, paragraphs) ------

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def _markdown(text: str, run_name: str) -> Markup:
    """HTML of a report: every piece of text escaped first, then the few marks re-applied."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            out.append(_table(block))
            continue
        i += 1
        if not line:
            continue
        heading = re.match(r"^(#{1,4}) (.*)$", line)
        image = _IMAGE.match(line)
        if heading:
            level = len(heading.group(1)) + 1  # the page's own title is the h1
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif image:
            src = f"/console/runs/file?name={_url(run_name)}&file={_url(image.group(2))}"
            out.append(f'<img class="plot" src="{escape(src)}" alt="{escape(image.group(1))}">')
        else:
            out.append(f"<p>{_inline(line)}</p>")
    return Markup("\n".join(out))


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    body = [r for r in cells if not all(re.fullmatch(r":?-{3,}:?", c) for c in r if c)]
    if not body:
        return ""
    head, rest = body[0], body[1:]
    html = ["<table><thead><tr>", *(f"<th>{_inline(c)}</th>" for c in head), "</tr></thead><tbody>"]
    for row in rest:
        html += ["<tr>", *(f"<td>{_inline(c)}</td>" for c in row), "</tr>"]
    return "".join([*html, "</tbody></table>"])


def _inline(text: str) -> str:
    safe = str(escape(text))
    safe = _CODE.sub(r"<code>\1</code>", safe)
    return _BOLD.sub(r"<strong>\1</strong>", safe)


def _url(value: str) -> str:
    return quote(value, safe="")
