"""``create_app()``: the FastAPI application, its engine built in the lifespan (or handed in by tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse

from xmodal.api.routes import health, items, search
from xmodal.config import Settings
from xmodal.engine import Engine
from xmodal.errors import (
    ConfigError,
    DecodeError,
    InvalidQueryError,
    NotFoundError,
    SpaceMismatchError,
    WeightsUnavailableError,
    XmodalError,
)

_STATUS_BY_ERROR: list[tuple[type[XmodalError], int]] = [
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (InvalidQueryError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (DecodeError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (WeightsUnavailableError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (SpaceMismatchError, status.HTTP_503_SERVICE_UNAVAILABLE),
    (ConfigError, status.HTTP_503_SERVICE_UNAVAILABLE),
]


def _status_of(exc: XmodalError) -> int:
    return next((code for kind, code in _STATUS_BY_ERROR if isinstance(exc, kind)), status.HTTP_400_BAD_REQUEST)


async def _xmodal_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, XmodalError)
    return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The HTTP API over an engine: one opened from ``settings`` at startup, or ``engine`` as given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = engine or Engine.open(settings=settings or Settings())
        try:
            yield
        finally:
            if engine is None:
                app.state.engine.close()

    app = FastAPI(
        title="xmodal",
        summary="Cross-modal search over images and texts.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_exception_handler(XmodalError, _xmodal_error)
    app.include_router(search.router)
    app.include_router(items.router)
    app.include_router(health.router)
    return app
