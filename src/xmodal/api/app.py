"""``create_app()``: the FastAPI application, its engine built in the lifespan (or handed in by tests)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from threadpoolctl import threadpool_limits

from xmodal.api.limits import BodyLimitMiddleware
from xmodal.api.metrics import ApiMetrics
from xmodal.api.routes import admin, clip_retrieval, docs, health, items, overview, search, web
from xmodal.api.schemas import ErrorBody
from xmodal.api.security import ReaderDep
from xmodal.config import Settings
from xmodal.engine import Engine
from xmodal.errors import (
    ConfigError,
    DecodeError,
    IndexLockedError,
    InvalidCursorError,
    InvalidQueryError,
    NotFoundError,
    SpaceMismatchError,
    WeightsUnavailableError,
    XmodalError,
)

_STATUS_BY_ERROR: list[tuple[type[XmodalError], int]] = [
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (InvalidCursorError, status.HTTP_400_BAD_REQUEST),
    (InvalidQueryError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (DecodeError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (WeightsUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (SpaceMismatchError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ConfigError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (IndexLockedError, status.HTTP_409_CONFLICT),
]


log = logging.getLogger(__name__)


def _warm_up(engine: Engine) -> None:
    """Open every space's index and load the models of those holding vectors, so no request pays for it."""
    try:
        states = engine.readiness()
        engine.searcher.warm_up_queries()
    except Exception:  # a request will meet the same error and report it; the server keeps starting
        log.exception("warming up the spaces failed")
        return
    log.info("spaces warmed up: %s", states)


def _status_of(exc: XmodalError) -> int:
    return next((code for kind, code in _STATUS_BY_ERROR if isinstance(exc, kind)), status.HTTP_400_BAD_REQUEST)


async def _xmodal_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, XmodalError)
    return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """Bad path or query parameters (``/items/abc``) answer ``{"detail": "..."}`` like every other error."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{' '.join(str(part) for part in error['loc']) or 'request'}: {error['msg']}" for error in exc.errors()
    ]
    return JSONResponse(
        {"detail": "Invalid request: " + "; ".join(problems)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT
    )


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The HTTP API over an engine: one opened from ``settings`` at startup, or ``engine`` as given."""

    resolved = settings or (engine.settings if engine is not None else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resolved.torch_threads is not None:  # one encoder thread per model runs every forward of this process
            import torch  # here: the app itself needs no torch until a model loads

            torch.set_num_threads(resolved.torch_threads)
        threadpool_limits(limits=resolved.blas_threads, user_api="blas")
        app.state.engine = engine or Engine.open(settings=resolved)
        app.state.search_slots = asyncio.Semaphore(resolved.search_concurrency)
        # The models load before the port opens: loading them beside the first queries (imports holding the GIL,
        # weights hashed) made those queries wait seconds, and a server that answers should answer at full speed.
        await asyncio.to_thread(_warm_up, app.state.engine)
        try:
            yield
        finally:
            if engine is None:
                app.state.engine.close()

    app = FastAPI(
        title="xmodal",
        summary="Cross-modal search over images, audio and texts.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served by routes.docs, from the package instead of a CDN
        redoc_url=None,
    )
    app.add_exception_handler(XmodalError, _xmodal_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.state.metrics = ApiMetrics(lambda: getattr(app.state, "engine", None))
    app.middleware("http")(app.state.metrics.middleware)
    if resolved.cors_origins:  # clip-retrieval's hosted front end calls the API from another origin
        app.add_middleware(
            CORSMiddleware, allow_origins=resolved.cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    app.add_middleware(BodyLimitMiddleware, settings=resolved)  # added last: the outermost of ours
    for module in (search, items, overview, clip_retrieval):
        app.include_router(module.router, dependencies=[ReaderDep], responses={401: {"model": ErrorBody}})
    for module in (admin, health, web, docs):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.STATIC), name="static")
    app.mount(docs.ASSETS_URL, docs.assets(), name="docs-assets")
    return app
