"""The HTTP app: a factory over a :class:`~metarec.serving.service.Service` (no module state).

``create_app(settings)`` builds a FastAPI app whose lifespan opens the service (store, model,
worker) and closes it; ``create_app(settings, service=...)`` serves a service the caller opened
and will close (what `metarec serve` does, so that a damaged model or a locked store fails before
the server listens). Endpoints, status codes and the curl session: docs/SERVING.md.

Pure ASGI middleware (:class:`~metarec.serving.guard.Guard`) enforces the in-flight limit, the
token of writes before their bodies, and bounded body reads, and records request metrics. Library
errors map to status codes in one handler
(:func:`~metarec.serving.responses.error_response`, shared with the plain-ASGI ``/recommend``
of :mod:`~metarec.serving.fast_path`).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations, and
# the ``k`` bound refers to the factory's ``settings``, which a string annotation cannot see.
import asyncio
import functools
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from metarec.errors import MetarecError
from metarec.serving import schemas
from metarec.serving.batcher import RecommendBatcher
from metarec.serving.console import mount_console, mount_docs
from metarec.serving.fast_path import (
    CATEGORY_LENGTH,
    DEFAULT_K,
    USER_ID_LENGTH,
    RecommendFastPath,
)
from metarec.serving.guard import Guard
from metarec.serving.jobs import ServiceBusyError
from metarec.serving.responses import FiniteJSONResponse, error_response
from metarec.serving.service import Service
from metarec.serving.settings import ServeSettings

_JSON = "application/json"


def create_app(
    settings: ServeSettings, *, service: Service | None = None, runs_dir: Path | None = None
) -> FastAPI:
    """Build the HTTP app.

    Args:
        settings: the service settings (token, limits, paths).
        service: an opened service to serve (started here, closed by the caller); None opens
            one from ``settings`` when the app starts and closes it when the app stops.
        runs_dir: evaluation run folders the console's runs page lists (None: none).

    Returns:
        The FastAPI app (run it with one uvicorn worker: the process owns the store).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened: Service = (
            service
            if service is not None
            else await anyio.to_thread.run_sync(Service.open, settings)
        )
        opened.start()
        app.state.compute = anyio.CapacityLimiter(settings.compute_threads)
        app.state.batcher = RecommendBatcher(
            opened.recommend_many,
            app.state.compute,
            max_batch=settings.max_batch,
            wait_seconds=settings.batch_wait_seconds,
        )
        app.state.service = opened
        try:
            yield
        finally:
            app.state.service = None
            if service is None:
                await anyio.to_thread.run_sync(opened.close)

    app = FastAPI(
        title="metarec",
        summary="Launch a category, adapt it from its first events, serve top-K.",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc from packaged files (mount_docs): they work offline
        redoc_url=None,
        responses={
            401: {"model": schemas.Error, "description": "missing bearer token"},
            403: {"model": schemas.Error, "description": "wrong bearer token"},
            413: {"model": schemas.Error, "description": "request body too large"},
            503: {"model": schemas.Error, "description": "saturated: retry after Retry-After"},
        },
    )
    app.state.service = None
    app.state.batcher = None
    # innermost first: the guard's limits and metrics apply to the fast path's answers too
    app.add_middleware(RecommendFastPath, settings=settings)
    app.add_middleware(Guard, settings=settings)
    _add_error_handlers(app, settings)
    authorised = [Depends(_token_checker(settings))]

    @app.get("/recommend", response_model=schemas.Recommendation, tags=["read"])
    async def recommend(
        request: Request,
        user_id: Annotated[str, Query(min_length=USER_ID_LENGTH[0], max_length=USER_ID_LENGTH[1])],
        category: Annotated[
            str, Query(min_length=CATEGORY_LENGTH[0], max_length=CATEGORY_LENGTH[1])
        ],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = DEFAULT_K,
    ) -> Response:
        """Top-k items of a category for a user (fallback named when not personalised)."""
        _service(request)
        # concurrent requests of the category are ranked together (serving/batcher.py)
        result = await request.app.state.batcher.recommend(category, user_id, k)
        return FiniteJSONResponse(result.to_json())

    @app.post(
        "/events", response_model=schemas.EventsResponse, dependencies=authorised, tags=["write"]
    )
    async def post_events(
        request: Request,
        body: schemas.EventsRequest,
        skip_bad_rows: bool = False,
    ) -> schemas.EventsResponse:
        """Store a batch of events; acknowledged means committed. Re-sending never duplicates."""
        service = _service(request)
        return await anyio.to_thread.run_sync(
            functools.partial(service.post_events, body.events, skip_bad_rows=skip_bad_rows)
        )

    @app.post(
        "/categories",
        response_model=schemas.LaunchResponse,
        status_code=201,
        dependencies=authorised,
        tags=["write"],
    )
    async def launch(request: Request, body: schemas.LaunchRequest) -> schemas.LaunchResponse:
        """Launch a category with its items (re-posting the same items changes nothing)."""
        service = _service(request)
        return await anyio.to_thread.run_sync(service.launch, body)

    @app.get("/categories/{category:path}", response_model=schemas.CategoryStatus, tags=["read"])
    async def category_status(request: Request, category: str) -> schemas.CategoryStatus:
        """Size, support so far, adaptation version and latest adaptation job."""
        return _service(request).category_status(category)

    @app.post(
        "/categories/{category:path}/adapt",
        response_model=schemas.JobInfo,
        status_code=202,
        dependencies=authorised,
        tags=["write"],
    )
    async def adapt(request: Request, category: str) -> schemas.JobInfo:
        """Adapt the category from its events so far, in the background (poll its status)."""
        return _service(request).submit_adapt(category).info()

    @app.get("/jobs/{job_id}", response_model=schemas.JobInfo, tags=["read"])
    async def job(request: Request, job_id: str) -> schemas.JobInfo:
        """A background job's state."""
        found = _service(request).job(job_id)
        if found is None:
            raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept for a while)")
        return found.info()

    @app.post(
        "/admin/model",
        response_model=schemas.ModelSwapResponse,
        dependencies=authorised,
        tags=["admin"],
    )
    async def swap_model(
        request: Request, body: schemas.ModelSwapRequest
    ) -> schemas.ModelSwapResponse:
        """Hot-swap the meta-model: verified, loaded and smoke-tested aside, then swapped."""
        job = _service(request).submit_swap(body.path)
        try:
            # shielded: a timeout must not cancel the job's future (the swap goes on, as the
            # 504 says; a cancelled future once made the worker's set_result raise and die)
            result = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(job.future)), settings.job_timeout_seconds
            )
        except TimeoutError as exc:
            raise HTTPException(
                504, f"the swap is still running ({job.job_id}); GET /jobs/{job.job_id}"
            ) from exc
        assert isinstance(result, schemas.ModelSwapResponse)
        return result

    @app.get("/health/live", response_model=schemas.Health, tags=["health"])
    async def live() -> schemas.Health:
        """The process answers."""
        return schemas.Health(status="live")

    @app.get(
        "/health/ready",
        response_model=schemas.Health,
        responses={503: {"model": schemas.Health}},
        tags=["health"],
    )
    async def ready(request: Request) -> Response:
        """Ready to serve: the model is loaded and the background worker runs, no job past its
        deadline (503 ``stuck`` names the job otherwise)."""
        service: Service | None = request.app.state.service
        if service is None or not service.ready:
            body = schemas.Health(status="starting" if service is None else "stopping")
            return Response(body.model_dump_json(), status_code=503, media_type=_JSON)
        stuck = service.stuck()
        if stuck is not None:
            body = schemas.Health(status="stuck", detail=stuck)
            return Response(body.model_dump_json(), status_code=503, media_type=_JSON)
        body = schemas.Health(
            status="ready",
            model_version=service.model_version,
            data_version=service.snapshot.data_version,
        )
        return Response(body.model_dump_json(), media_type=_JSON)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (text format)."""
        return Response(
            generate_latest(_service(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    mount_docs(app)
    mount_console(app, runs_dir=runs_dir)
    return app


def _service(request: Request) -> Service:
    service: Service | None = request.app.state.service
    if service is None:
        raise ServiceBusyError("the service is starting; retry in a moment")
    return service


def _token_checker(settings: ServeSettings) -> Callable[..., None]:
    bearer = HTTPBearer(auto_error=False)
    expected = settings.token.get_secret_value().encode()

    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if credentials is None:
            raise HTTPException(
                401,
                "this endpoint needs the service's token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        # constant-time comparison; the token itself is never logged or echoed
        if not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise HTTPException(403, "wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def _add_error_handlers(app: FastAPI, settings: ServeSettings) -> None:
    @app.exception_handler(MetarecError)
    async def library_error(request: Request, exc: MetarecError) -> Response:
        status, body, headers = error_response(exc, settings.retry_after_seconds)
        return Response(
            body, status, headers={k.decode(): v.decode() for k, v in headers}, media_type=_JSON
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # Summarised without the offending values: they may be NaN, which JSON cannot carry.
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        shown = "; ".join(problems[:10]) + (
            f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        )
        body = schemas.Error(error="RequestValidationError", detail=shown)
        return Response(body.model_dump_json(exclude_none=True), 422, media_type=_JSON)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's answer to a body its JSON parser refuses other than by syntax, e.g. an
            # integer of more than 4,300 digits: a malformed body, 422 like every other.
            body = schemas.Error(
                error="RequestValidationError",
                detail=f"the body is not acceptable JSON: {exc.__cause__}",
            )
            return Response(body.model_dump_json(), 422, media_type=_JSON)
        body = schemas.Error(error=HTTPStatus(exc.status_code).phrase, detail=str(exc.detail))
        return Response(
            body.model_dump_json(exclude_none=True), exc.status_code, exc.headers, media_type=_JSON
        )
