"""POST /search: a JSON text query, or a multipart form with an image (and optionally a text)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from xmodal.api.deps import EngineDep
from xmodal.api.schemas import SearchHit, SearchRequest, SearchResponseBody
from xmodal.api.uploads import check_declared_size, read_body
from xmodal.engine import Engine
from xmodal.search.query import SearchResult

router = APIRouter(tags=["search"])

_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "Image file to search with."},
        "audio": {"type": "string", "format": "binary", "description": "Audio clip to search with."},
        "text": {"type": "string"},
        "k": {"type": "integer", "minimum": 1},
        "modalities": {"type": "array", "items": {"type": "string", "enum": ["image", "text", "audio"]}},
        "space": {"type": "string"},
    },
}
_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
        "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
    },
}


@router.post(
    "/search",
    response_model=SearchResponseBody,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={413: {"description": "Body too large"}, 415: {"description": "Unsupported content type"}},
)
async def search(request: Request, engine: EngineDep) -> SearchResponseBody:
    """Search by text (JSON body), or by image and/or audio (multipart upload, fields ``image``, ``audio``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = engine.settings.max_upload_bytes
    if content_type == "application/json":
        params = _json_params(await read_body(request, limit))
    elif content_type == "multipart/form-data":
        check_declared_size(request, limit)
        params = await _form_params(request, limit)
    else:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "Send application/json with a 'text' field, or multipart/form-data with an 'image' file.",
        )
    response = await run_in_threadpool(_run, engine, params)
    return response


def _json_params(body: bytes) -> dict[str, Any]:
    try:
        request = SearchRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _describe(exc)) from exc
    return request.model_dump()


async def _form_params(request: Request, limit: int) -> dict[str, Any]:
    try:
        form = await request.form(max_files=1, max_fields=20, max_part_size=limit)
    except MultiPartException as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"Malformed multipart body: {exc.message}") from exc
    image = await _upload(form.get("image"), "image", limit)
    audio = await _upload(form.get("audio"), "audio", limit)
    text = form.get("text")
    k = form.get("k")
    if k is not None and (not isinstance(k, str) or not k.strip().isdigit()):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'k' must be a positive whole number.")
    if image is None and audio is None and not text:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "Send an 'image' or 'audio' file, or a 'text' field."
        )
    return {
        "text": text if isinstance(text, str) and text else None,
        "image": image,
        "audio": audio,
        "k": int(k) if isinstance(k, str) else None,
        "modalities": [m for m in form.getlist("modalities") if isinstance(m, str)] or None,
        "space": form.get("space") if isinstance(form.get("space"), str) else None,
    }


async def _upload(field: object, name: str, limit: int) -> bytes | None:
    """The bytes of an uploaded file field, or ``None`` when it was not sent."""
    if field is None:
        return None
    if not isinstance(field, UploadFile):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"'{name}' must be a file upload.")
    data = await field.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"The {name} is over the limit of {limit} bytes.")
    if not data:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"The uploaded {name} is empty.")
    return data


def _run(engine: Engine, params: dict[str, Any]) -> SearchResponseBody:
    query = engine.build_query(**params)
    response = engine.query(query)
    return SearchResponseBody(
        results=[_hit(result) for result in response.results],
        spaces_searched=response.spaces_searched,
        spaces_unavailable=response.spaces_unavailable,
    )


def _hit(result: SearchResult) -> SearchHit:
    return SearchHit(
        id=result.item_id,
        score=result.score,
        modality=result.modality,
        path=result.path,
        media_type=result.media_type,
        caption=result.caption,
        text_excerpt=result.text_excerpt,
        metadata=result.metadata,
        width=result.width,
        height=result.height,
        space_scores=result.space_scores,
        match=result.match,
        content_url=f"/items/{result.item_id}/content",
        thumbnail_url=f"/items/{result.item_id}/thumbnail" if result.modality == "image" else None,
        time_span=result.time_span,
        transcript=result.transcript,
        duration=result.duration,
    )


def _describe(exc: ValidationError) -> str:
    problems = [f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()]
    return "Invalid search request: " + "; ".join(problems)
