"""POST /search: a JSON text query, or a multipart form with an image (and optionally a text)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from xmodal.api.deps import EngineDep
from xmodal.api.responses import json_response
from xmodal.api.schemas import ContributionBody, OcrMatchBody, PartBody, SearchHit, SearchRequest, SearchResponseBody
from xmodal.api.uploads import check_declared_size, read_body
from xmodal.engine import Engine
from xmodal.search.query import QueryPart, SearchResult
from xmodal.search.searcher import PreparedSearch

router = APIRouter(tags=["search"])

_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "Image file to search with."},
        "audio": {"type": "string", "format": "binary", "description": "Audio clip to search with."},
        "text": {"type": "string"},
        "not": {"type": "array", "items": {"type": "string"}, "description": "Texts to push down."},
        "k": {"type": "integer", "minimum": 1},
        "modalities": {"type": "array", "items": {"type": "string", "enum": ["image", "text", "audio"]}},
        "where": {"type": "array", "items": {"type": "string"}, "description": "key=value filters."},
        "space": {"type": "string"},
        "cursor": {"type": "string"},
        "min_score": {"type": "number"},
        "explain": {"type": "boolean"},
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
async def search(request: Request, engine: EngineDep) -> Response:
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
    # Encoding waits for the encoder threads without holding a slot (image and audio encodes are bounded there);
    # past a few at once, the rest of a search only fights over the CPU and the GIL.
    prepared = await run_in_threadpool(lambda: engine.prepare(engine.build_query(**params)))
    async with request.app.state.search_slots:
        body, timings = await run_in_threadpool(_answer, engine, prepared)
    request.app.state.metrics.observe_search(timings)
    return json_response(body)


def _json_params(body: bytes) -> dict[str, Any]:
    try:
        request = SearchRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _describe(exc)) from exc
    parts = [_part(part) for part in request.parts]
    parts.extend(QueryPart.text(text, weight=-1.0) for text in request.not_)
    params = request.model_dump(exclude={"parts", "not_"})
    if params["text"] is None and not parts:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Invalid search request: give a 'text' or 'parts'.")
    return {**params, "parts": parts}


def _part(part: PartBody) -> QueryPart:
    if part.text is not None:
        return QueryPart.text(part.text, part.weight)
    if part.image is not None:
        return QueryPart.image(_base64(part.image, "image"), part.weight)
    if part.audio is not None:
        return QueryPart.audio(_base64(part.audio, "audio"), part.weight)
    if part.item is not None:
        return QueryPart.item(part.item, part.weight)
    assert part.vector is not None and part.space is not None
    return QueryPart.vector(part.space, part.vector, part.weight)


def _base64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"The {what} part is not valid base64.") from exc


async def _form_params(request: Request, limit: int) -> dict[str, Any]:
    try:
        form = await request.form(max_files=1, max_fields=20, max_part_size=limit)
    except MultiPartException as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"Malformed multipart body: {exc.message}") from exc
    image = await _upload(form.get("image"), "image", limit)
    audio = await _upload(form.get("audio"), "audio", limit)
    text = _field(form, "text")
    k = _field(form, "k")
    if k is not None and not k.strip().isdigit():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'k' must be a positive whole number.")
    min_score = _field(form, "min_score")
    try:
        threshold = float(min_score) if min_score is not None else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'min_score' must be a number.") from exc
    if image is None and audio is None and not text:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "Send an 'image' or 'audio' file, or a 'text' field."
        )
    return {
        "text": text or None,
        "image": image,
        "audio": audio,
        "parts": [QueryPart.text(t, weight=-1.0) for t in form.getlist("not") if isinstance(t, str) and t],
        "k": int(k) if k is not None else None,
        "modalities": [m for m in form.getlist("modalities") if isinstance(m, str)] or None,
        "where": [w for w in form.getlist("where") if isinstance(w, str)] or None,
        "space": _field(form, "space"),
        "cursor": _field(form, "cursor"),
        "min_score": threshold,
        "explain": (_field(form, "explain") or "").lower() in {"1", "true", "yes", "on"},
    }


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"'{name}' must be a form field, not a file.")
    return value


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


def _answer(engine: Engine, prepared: PreparedSearch) -> tuple[dict[str, Any], dict[str, float]]:
    """The response body (the shape of ``SearchResponseBody``, as plain values) and the stage timings."""
    response = engine.finish(prepared)
    body = SearchResponseBody(
        results=[_hit(result) for result in response.results],
        spaces_searched=response.spaces_searched,
        spaces_unavailable=response.spaces_unavailable,
        parts_ignored=response.parts_ignored,
        next_cursor=response.next_cursor,
        timings=response.timings,
    )
    return body.model_dump(mode="json"), response.timings


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
        duplicates=list(result.duplicates),
        explanation=[ContributionBody(**asdict(c)) for c in result.explanation] if result.explanation else None,
        ocr_text=result.ocr_text,
        ocr=OcrMatchBody(span=result.ocr.span, text=result.ocr.text, boxes=[list(b) for b in result.ocr.boxes])
        if result.ocr
        else None,
    )


def _describe(exc: ValidationError) -> str:
    problems = [f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()]
    return "Invalid search request: " + "; ".join(problems)
