"""Items: their catalog row, their file and a thumbnail. Only indexed files are ever served."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from urllib.request import url2pathname

from fastapi import APIRouter, HTTPException, Query, Response, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse

from xmodal.api.deps import EngineDep
from xmodal.api.schemas import ErrorBody, ItemBody
from xmodal.config import Settings
from xmodal.errors import DecodeError
from xmodal.indexer.decode import ImageLimits, decode_image
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


@router.get("/{item_id}/content", response_class=FileResponse)
def get_content(item_id: ItemId, engine: EngineDep) -> Response:
    """The item's file, as indexed (from a bucket or a WebDataset shard: streamed from the store)."""
    item = engine.item(item_id)
    if _remote_location(item) is not None:
        return _remote_content(item, engine.settings)
    path = _served_path(item)
    return FileResponse(path, media_type=item.media_type or "application/octet-stream", filename=path.name)


@router.get("/{item_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}, 415: {"model": ErrorBody}})
def get_thumbnail(
    item_id: ItemId,
    engine: EngineDep,
    size: Annotated[int | None, Query(ge=16, description="Longest side in pixels.")] = None,
) -> Response:
    """A JPEG thumbnail of an image item."""
    settings = engine.settings
    side = size or settings.thumbnail_size
    if side > settings.max_thumbnail_size:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"size must be at most {settings.max_thumbnail_size} (XMODAL_MAX_THUMBNAIL_SIZE).",
        )
    item = engine.item(item_id)
    if item.modality != "image":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"Item {item_id} is not an image.")
    location = _remote_location(item)
    source = _served_path(item) if location is None else _served_remote(item, location)
    try:
        data = source.read_at_most(settings.max_file_bytes) if location is not None else source.read_bytes()
        image = decode_image(data, ImageLimits(settings.max_image_pixels)).image
    except (OSError, DecodeError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item_id}'s file can no longer be read.") from exc
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    etag = f'"{item.content_hash}-{side}"'
    return Response(buffer.getvalue(), media_type="image/jpeg", headers={"ETag": etag, "Cache-Control": "max-age=3600"})


def _served_path(item: Item) -> Path:
    if item.status != ItemStatus.OK:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id} was not indexed ({item.error}).")
    path = Path(item.path)
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Item {item.id}'s file is no longer on disk.")
    source = Path(url2pathname(urlsplit(item.source).path)).resolve()
    if not path.resolve().is_relative_to(source):  # a symbolic link leading out of the indexed folder
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Item {item.id}'s file lies outside its source folder.")
    return path


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
