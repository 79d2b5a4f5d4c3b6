"""Writes and admin calls (API key required): index paths, delete items, reload indexes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, status
from fastapi import Path as PathParam

from xmodal.api.deps import EngineDep
from xmodal.api.schemas import AdminAccepted, ErrorBody, IndexRequest
from xmodal.api.security import AdminDep
from xmodal.engine import Engine
from xmodal.errors import IndexLockedError

log = logging.getLogger(__name__)

router = APIRouter(
    tags=["admin"],
    dependencies=[AdminDep],
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 409: {"model": ErrorBody}},
)


@router.post("/admin/index", status_code=status.HTTP_202_ACCEPTED, response_model=AdminAccepted)
def start_index_run(request: IndexRequest, engine: EngineDep, background: BackgroundTasks) -> AdminAccepted:
    """Index these server-side paths, which must lie in a folder of ``XMODAL_SOURCES``, after answering
    (progress: GET /metrics, `xmodal stats`)."""
    sources = engine.settings.sources
    if not sources:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "Indexing over HTTP is off: list the folders it may index in XMODAL_SOURCES."
        )
    outside = [path for path in request.paths if not any(Path(path).resolve().is_relative_to(s) for s in sources)]
    if outside:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"Not under a folder of XMODAL_SOURCES ({', '.join(map(str, sources))}): {', '.join(outside)}",
        )
    missing = [path for path in request.paths if not Path(path).exists()]
    if missing:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"No such file or folder: {', '.join(missing)}")
    background.add_task(_index, engine, request.paths, request.prune)
    return AdminAccepted(status="started", detail=f"indexing {len(request.paths)} path(s)")


def _index(engine: Engine, paths: list[str], prune: bool) -> None:
    try:
        engine.index(paths, prune=prune)
    except IndexLockedError as exc:  # another indexer holds the home; its run covers the same ground
        log.warning("the index run asked for over HTTP did not start: %s", exc)


@router.delete("/items/{item_id}", response_model=AdminAccepted, responses={404: {"model": ErrorBody}})
def delete_item(item_id: Annotated[int, PathParam(ge=0, le=2**63 - 1)], engine: EngineDep) -> AdminAccepted:
    """Forget an item: its catalog row at once, its vectors at the next index run (the file itself stays)."""
    deleted = engine.delete_items([item_id], publish=False)  # a server never publishes: the indexer applies it
    if not deleted:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"No item with id {item_id}.")
    return AdminAccepted(status="deleted", detail=f"item {item_id}")


@router.post("/admin/reload", response_model=AdminAccepted)
def reload(engine: EngineDep) -> AdminAccepted:
    """Pick up indexes published since they were loaded (servers also do so before each query)."""
    engine.reload()
    return AdminAccepted(status="reloaded", detail=", ".join(engine.spaces.names()))
