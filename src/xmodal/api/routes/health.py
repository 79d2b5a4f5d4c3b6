"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from xmodal.api.deps import EngineDep
from xmodal.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up and answering."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(engine: EngineDep) -> JSONResponse:
    """200 when every space holding vectors has its index open and its model loaded; 503 with reasons otherwise
    (the server loads the models before it starts answering). A space switching model lists its versions and the
    switch's progress."""
    spaces = await run_in_threadpool(engine.readiness)
    versions = await run_in_threadpool(engine.versions)
    ready = all(state in {"ready", "empty"} for state in spaces.values())
    body = Readiness(status="ready" if ready else "not ready", spaces=spaces, versions=versions or None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: request and search-stage latency, index sizes, indexer totals."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
