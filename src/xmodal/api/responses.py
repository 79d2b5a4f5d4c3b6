"""JSON responses serialised once, with orjson, straight from plain Python values."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response


def json_response(content: Any, status_code: int = 200) -> Response:
    """``content`` (dicts, lists, numbers, strings, numpy values) as an ``application/json`` response."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code, media_type="application/json"
    )
