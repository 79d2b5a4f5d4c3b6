"""Reading request bodies within the configured size limits."""

from __future__ import annotations

from fastapi import HTTPException, Request, status


def check_declared_size(request: Request, limit: int) -> None:
    """Refuse early when the client announces a body over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"Request body is {declared} bytes; the limit is {limit} (XMODAL_MAX_UPLOAD_BYTES).",
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it passes ``limit`` bytes (also without a Content-Length)."""
    check_declared_size(request, limit)
    received = bytearray()
    async for chunk in request.stream():
        received.extend(chunk)
        if len(received) > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"Request body is over the limit of {limit} bytes.")
    return bytes(received)
