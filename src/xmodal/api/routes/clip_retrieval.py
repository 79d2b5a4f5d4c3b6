"""clip-retrieval 2.45.0's back-end API (``clip_back.py``), so its ClipClient and hosted front end work as is.

``/indices-list`` lists our spaces; ``/knn-service`` searches one (``indice_name``) for the items of one modality
(``modality``: image or text), with ``similarity`` the space's cosine; the first ``num_images`` results carry their
metadata (``url`` points at our own content endpoint, ``caption``, ``path``), the rest up to ``num_result_ids``
only id and similarity, for ``/metadata`` to fill in as the front end scrolls. Unlike clip-retrieval (its issue
#278), an unknown index is a 404 with a message. The safety, violence, aesthetic and multilingual options are
accepted and have no effect: xmodal has no such models. ``image_url`` is fetched by the server only from hosts in
``XMODAL_IMAGE_URL_ALLOW``, and only from public addresses (see :mod:`xmodal.api.fetch`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from xmodal.api.deps import EngineDep
from xmodal.api.fetch import fetch_image
from xmodal.api.responses import json_response
from xmodal.api.schemas import ErrorBody, KnnRequest, MetadataRequest
from xmodal.api.uploads import read_body
from xmodal.config import Settings
from xmodal.engine import Engine
from xmodal.modality import Modality
from xmodal.search.query import QueryPart, SearchQuery, SearchResult
from xmodal.search.searcher import PreparedSearch
from xmodal.store.models import Item

router = APIRouter(tags=["clip-retrieval"], responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}})

_JSON_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KnnRequest"}}},
}
_METADATA_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MetadataRequest"}}},
}


@router.get("/indices-list", response_model=list[str])
def indices_list(engine: EngineDep) -> list[str]:
    """The spaces, by name (clip-retrieval's indices)."""
    return engine.spaces.names()


@router.get("/config.json")
def front_config(request: Request, engine: EngineDep) -> dict[str, str]:
    """What clip-retrieval's front end reads at start: this server as the back end, `clip` as the index."""
    backend = str(request.base_url).rstrip("/")
    return {"defaultBackend": backend, "defaultIndex": _space(engine, None), "urlColumn": "url"}


@router.post("/knn-service", openapi_extra={"requestBody": _JSON_BODY}, response_model=list[dict[str, Any]])
async def knn_service(request: Request, engine: EngineDep) -> Response:
    """Nearest items of one space; the shapes of clip-retrieval's `/knn-service`."""
    body = _parse(KnnRequest, await read_body(request, engine.settings.max_upload_bytes))
    space = _space(engine, body.indice_name)
    image = await _image(body, engine.settings)
    base = str(request.base_url).rstrip("/")
    # encoding waits for the encoder threads without holding a slot (image encodes are bounded there)
    prepared = await run_in_threadpool(lambda: engine.prepare(_knn_query(engine, body, space, image)))
    async with request.app.state.search_slots:
        return json_response(await run_in_threadpool(_knn_results, engine, prepared, body, space, base))


@router.post("/metadata", openapi_extra={"requestBody": _METADATA_BODY}, response_model=list[dict[str, Any]])
async def metadata(request: Request, engine: EngineDep) -> list[dict[str, Any]]:
    """Metadata of result ids, as clip-retrieval's `/metadata` answers it: `[{id, metadata}]`."""
    body = _parse(MetadataRequest, await read_body(request, engine.settings.max_upload_bytes))
    if body.indice_name is not None:
        _space(engine, body.indice_name)
    base = str(request.base_url).rstrip("/")
    items = await run_in_threadpool(engine.catalog.get_items, [i for i in body.ids if 0 <= i < 2**63])
    return [
        {"id": item_id, "metadata": _item_metadata(items[item_id], base)} for item_id in body.ids if item_id in items
    ]


def _parse(model: type[KnnRequest] | type[MetadataRequest], raw: bytes) -> Any:
    # clip-retrieval's client sends JSON without a content type, so the body is read as JSON whatever it says.
    try:
        return model.model_validate(json.loads(raw or b"null"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "The body must be a JSON object.") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"Invalid request: {problems}") from exc


def _space(engine: Engine, name: str | None) -> str:
    """The space an index name means (none given: `clip`, clip-retrieval's usual one); 404 for an unknown name."""
    if name is None:
        return "clip" if "clip" in engine.spaces else engine.spaces.names()[0]
    if name not in engine.spaces:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"No index named '{name}'. Indices: {', '.join(engine.spaces.names())}."
        )
    return name


async def _image(body: KnnRequest, settings: Settings) -> bytes | None:
    if body.image is not None:
        try:
            return base64.b64decode(body.image, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "'image' is not valid base64.") from exc
    if body.image_url is None:
        return None
    return await fetch_image(body.image_url, settings)


def _knn_query(engine: Engine, body: KnnRequest, space: str, image: bytes | None) -> SearchQuery:
    shown = body.num_images or 40
    wanted = max(shown, body.num_result_ids or shown)
    if body.embedding_input is not None:
        parts = [QueryPart.vector(space, body.embedding_input)]
    elif image is not None:
        parts = [QueryPart.image(image)]
    elif body.text:
        parts = [QueryPart.text(body.text)]
    else:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "Fill one of text, image, image_url or embedding_input."
        )
    modality = Modality.TEXT if body.modality == "text" else Modality.IMAGE
    return engine.build_query(
        parts=parts,
        k=min(wanted, engine.settings.max_k),
        space=space,
        modalities=[modality],
        collapse_duplicates=bool(body.deduplicate),
    )


def _knn_results(
    engine: Engine, prepared: PreparedSearch, body: KnnRequest, space: str, base: str
) -> list[dict[str, Any]]:
    shown = body.num_images or 40
    results = engine.finish(prepared).results
    return [_result(result, space, base, with_metadata=rank < shown) for rank, result in enumerate(results)]


# Our own fields in a result; an item's metadata keys of the same name go under "metadata" instead.
_OWN_FIELDS = frozenset({"id", "similarity", "url", "caption", "path", "metadata"})


def _result(result: SearchResult, space: str, base: str, *, with_metadata: bool) -> dict[str, Any]:
    output: dict[str, Any] = {}
    if with_metadata:
        output.update(
            _with_metadata(
                {
                    "url": _url(result.item_id, result.path, base),
                    "caption": result.caption or result.text_excerpt or "",
                    "path": result.path,
                },
                result.metadata,
            )
        )
    output["id"] = result.item_id
    output["similarity"] = float(result.space_scores.get(space, result.score))
    return output


def _item_metadata(item: Item, base: str) -> dict[str, Any]:
    own = {
        "url": _url(item.id, item.path, base),
        "caption": item.caption or item.text_excerpt or "",
        "path": item.path,
    }
    return _with_metadata(own, item.user_metadata or {})


def _url(item_id: int, path: str, base: str) -> str:
    """Where the client fetches an item: our content route, or the item's own URL when it was imported with a URL
    only (as clip-retrieval's back end answered it)."""
    return path if path.startswith(("http://", "https://")) else f"{base}/items/{item_id}/content"


def _with_metadata(own: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """``own`` with the item's metadata beside it (as clip-retrieval shows its columns), except the keys that
    would collide with our fields: those keep their values under ``metadata``."""
    output = {key: value for key, value in metadata.items() if key not in _OWN_FIELDS}
    colliding = {key: value for key, value in metadata.items() if key in _OWN_FIELDS}
    if colliding:
        output["metadata"] = colliding
    output.update(own)
    return output
