"""Asking a running ``xmodal serve`` to search: the CLI's warm path (the server has its models loaded already).

Standard library only, so a CLI that gets its answer here never imports the engine or a model library. Any
failure (nothing listening, an error status, a timeout, an answer that is not JSON) comes back as ``None``: the
caller then searches itself, and meets (and reports) any error of the query there, as it would have anyway.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

# What an HTTP hit has that a result printed by the CLI has not: links into this server.
_SERVER_ONLY_FIELDS = ("content_url", "thumbnail_url")


def search_on_server(
    url: str, request: dict[str, Any], *, api_key: str | None = None, timeout_s: float = 30.0
) -> dict[str, Any] | None:
    """The body of the server's ``200`` answer to ``POST url/search`` with ``request``, or ``None``."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key is not None:
        headers["X-API-Key"] = api_key
    post = urllib.request.Request(
        f"{url.rstrip('/')}/search", data=json.dumps(request).encode(), headers=headers, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is on this machine
    try:
        with opener.open(post, timeout=timeout_s) as answer:
            if answer.status != 200:
                return None
            body = json.loads(answer.read())
    except (OSError, ValueError):  # URLError, HTTPError, timeouts and refused connections are OSErrors
        return None
    return body if isinstance(body, dict) and isinstance(body.get("results"), list) else None


def as_cli_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A server's search answer in the shape ``xmodal search --json`` prints (no server links, no timings)."""
    results = []
    for hit in body["results"]:
        result = {key: value for key, value in hit.items() if key not in _SERVER_ONLY_FIELDS}
        result["explanation"] = result.get("explanation") or []
        results.append(result)
    return {
        "results": results,
        "spaces_searched": body.get("spaces_searched", []),
        "spaces_unavailable": body.get("spaces_unavailable", {}),
        "parts_ignored": body.get("parts_ignored", {}),
        "next_cursor": body.get("next_cursor"),
    }
