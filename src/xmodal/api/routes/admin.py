"""Writes and admin calls (API key required): index paths, delete items, reload indexes."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, HTTPException, status
from fastapi import Path as PathParam

from xmodal.api.deps import EngineDep
from xmodal.api.schemas import AdminAccepted, ErrorBody, IndexRequest, SpaceVersions, SwitchRequest
from xmodal.api.security import AdminDep
from xmodal.engine import Engine
from xmodal.errors import ConfigError, IndexLockedError
from xmodal.switching import SwitchState

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


@router.post("/admin/spaces/{space}/switch", response_model=SpaceVersions, responses={404: {"model": ErrorBody}})
def switch_space(space: str, request: SwitchRequest, engine: EngineDep) -> SpaceVersions:
    """Change a space's model without downtime: ``to`` starts a new version that the index runs build while
    searches keep the current one (it becomes current once it covers every item); ``promote`` makes it current
    now; ``cancel`` abandons it; ``forget_old`` deletes the previous version. 409 while an indexer runs."""
    try:
        detail = ""
        if request.cancel:
            detail = f"{engine.cancel_switch(space)} vectors of the new version deleted"
        if request.to is not None:
            engine.switch_space(space, request.to)
            detail = "the next index runs build the new version"
        if request.promote:
            engine.promote_space(space, force=True)
            detail = "the new version is current"
        if request.forget_old:
            detail = f"{engine.forget_old_version(space)} vectors of the previous version deleted"
        if not (request.cancel or request.to or request.promote or request.forget_old):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "Say what to do: to, promote, cancel or forget_old."
            )
        return _versions(engine.switch_state(space), detail)
    except ConfigError as exc:  # a switch already under way, nothing to promote, ...: the request conflicts
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.post("/admin/spaces/{space}/rollback", response_model=SpaceVersions, responses={404: {"model": ErrorBody}})
def rollback_space(space: str, engine: EngineDep) -> SpaceVersions:
    """Make the space's previous version (its previous model) current again."""
    try:
        return _versions(engine.rollback_space(space), "the previous version is current")
    except ConfigError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


def _versions(found: SwitchState, detail: str) -> SpaceVersions:
    return SpaceVersions(
        space=found.space,
        versions=[asdict(version) for version in found.versions],
        progress=found.progress,
        covered=found.covered,
        total=found.total,
        detail=detail,
    )
