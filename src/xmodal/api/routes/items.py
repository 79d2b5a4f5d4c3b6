"""Items: their catalog row, their file and a thumbnail. Only indexed files are ever served, and file and
thumbnail work waits for a slot of the search concurrency limit."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from starlette.background import BackgroundTask

from xmodal.api import thumbnails
from xmodal.api.deps import EngineDep
from xmodal.api.files import open_served
from xmodal.api.schemas import ErrorBody, ItemBody
from xmodal.config import Settings
from xmodal.engine import Engine
from xmodal.errors import DecodeError
from xmodal.indexer.remote import RemotePath, is_remote
from xmodal.indexer.sources import Location
from xmodal.indexer.webdataset import SampleMember
from xmodal.store.models import Item, ItemStatus

router = APIRouter(prefix="/items", tags=["items"], responses={404: {"model": ErrorBody}})

_CHUNK = 1 << 20  # bytes per chunk when streaming from a store
ItemId = Annotated[int, PathParam(ge=0, le=2**63 - 1, description="Catalog id of the item.")]


@router.get("/{item_id}", response_model=ItemBody)
def get_item(item_id: ItemId, engine: EngineDep) -> ItemBody:
    """An item's catalog row."""
    return ItemBody.model_validate(engine.item(item_id))


@router.head("/{item_id}/content", response_class=FileResponse, operation_id="head_item_content")
@router.get("/{item_id}/content", response_class=FileResponse, operation_id="get_item_content")
async def get_content(item_id: ItemId, request: Request, engine: EngineDep) -> Response:
    """The item's file, as indexed, shown in the browser (``inline``); HEAD answers its headers only. Items from a
    bucket or a WebDataset shard are streamed from the store."""
    async with request.app.state.search_slots:
        item = await run_in_threadpool(engine.item, item_id)
        if _web_url(item) is not None:  # imported with a URL only: the client fetches it where it is
            return RedirectResponse(item.path, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
        if _remote_location(item) is not None:
            return await run_in_threadpool(_remote_content, item, engine.settings)
        opened = await run_in_threadpool(open_served, item)
    return FileResponse(
        opened.path,
        media_type=item.media_type or "application/octet-stream",
        filename=item.path.rsplit("/", 1)[-1],
        content_disposition_type="inline",
        background=BackgroundTask(opened.close),
    )


@router.get(
    "/{item_id}/thumbnail",
    responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "Not modified"}, 415: {"model": ErrorBody}},
)
async def get_thumbnail(
    item_id: ItemId,
    request: Request,
    engine: EngineDep,
    size: Annotated[int | None, Query(ge=16, description="Longest side (rounded up to a power of 2).")] = None,
) -> Response:
    """A JPEG thumbnail of an image item, cached on disk; ``If-None-Match`` with its ``ETag`` answers 304."""
    settings = engine.settings
    side = size or settings.thumbnail_size
    if side > settings.max_thumbnail_size:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"size must be at most {settings.max_thumbnail_size} (XMODAL_MAX_THUMBNAIL_SIZE).",
        )
    side = thumbnails.bucket(side, settings.max_thumbnail_size)
    item = await run_in_threadpool(engine.item, item_id)
    if item.modality != "image":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"Item {item_id} is not an image.")
    if _web_url(item) is not None:  # never fetched by the server: the browser shows the image from its URL
        return RedirectResponse(item.path, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    version = item.content_hash or f"{item.size}-{item.mtime_ns}"
    headers = {"ETag": f'"{version}-{side}"', "Cache-Control": "private, max-age=3600"}
    if _matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    async with request.app.state.search_slots:
        jpeg = await run_in_threadpool(_thumbnail, engine, item, side, version)
    return Response(jpeg, media_type="image/jpeg", headers=headers)


def _thumbnail(engine: Engine, item: Item, side: int, version: str) -> bytes:
    path = thumbnails.cached(engine.settings.home / "thumbnails", item.id, side, version)
    location = _remote_location(item)
    if location is not None:  # a bucket object or a shard's sample
        if path.is_file():
            return path.read_bytes()
        try:
            data = _served_remote(item, location).read_at_most(engine.settings.max_file_bytes)
            jpeg = thumbnails.render(data, side, engine.settings.max_image_pixels)
        except (OSError, DecodeError) as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id}'s file can no longer be read.") from exc
        thumbnails.store(path, jpeg)
        return jpeg
    opened = open_served(item)  # checked on every request: the file may have gone, or left its folder
    try:
        if path.is_file():
            return path.read_bytes()
        try:
            data = opened.read(engine.settings.max_file_bytes)
            jpeg = thumbnails.render(data, side, engine.settings.max_image_pixels)
        except (OSError, DecodeError) as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id}'s file can no longer be read.") from exc
    finally:
        opened.close()
    thumbnails.store(path, jpeg)
    return jpeg


def _matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (or ``*``)."""
    tags = {tag.strip().removeprefix("W/") for tag in (header or "").split(",")}
    return etag in tags or "*" in tags


def _web_url(item: Item) -> str | None:
    """The URL of an item imported without a file (``xmodal import clip-retrieval``), else ``None``."""
    return item.path if item.path.startswith(("http://", "https://")) else None


def _remote_location(item: Item) -> RemotePath | SampleMember | None:
    """Where a bucket object or a shard's sample is read from; ``None`` for a local file."""
    if item.source and item.path.startswith(f"{item.source}#"):
        return SampleMember(item.path, "media")
    return RemotePath(item.path) if is_remote(item.path) else None


def _served_remote(item: Item, location: Location) -> Location:
    if item.status != ItemStatus.OK:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id} was not indexed ({item.error}).")
    return location


def _remote_content(item: Item, settings: Settings) -> Response:
    """A bucket item's bytes streamed from the store, or a redirect to a presigned URL when
    ``XMODAL_PRESIGNED_URLS`` allows and the store can sign; a shard's sample is streamed from its shard."""
    location = _remote_location(item)
    assert location is not None
    _served_remote(item, location)
    if settings.presigned_urls and isinstance(location, RemotePath):
        url = location.sign(settings.presigned_url_seconds)
        if url is not None:
            return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    try:
        handle = location.open()
    except OSError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id} can no longer be read: {exc}") from exc

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(_CHUNK):
                yield chunk

    media_type = item.media_type or "application/octet-stream"
    disposition = f'inline; filename="{location.name.replace(chr(34), "")}"'
    return StreamingResponse(chunks(), media_type=media_type, headers={"Content-Disposition": disposition})
