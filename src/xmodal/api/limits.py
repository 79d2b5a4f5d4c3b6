"""One limit on every request body, counted as the bytes stream in (chunked or not)."""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xmodal.config import Settings

log = logging.getLogger(__name__)


class BodyLimitMiddleware:
    """413 before reading when the declared length is over ``settings.max_request_bytes``, else as soon as the
    bytes received pass it: a route never holds more than the limit, however the client sends it.

    Past the limit the 413 is sent from here and the route is told the client went away (``http.disconnect``),
    so it stops reading; whatever it tries to send or raise after that is dropped.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_request_bytes  # read per request: operators and tests may change it
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        received = 0
        started = refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except Exception:
            if not refused:
                raise
            log.debug("a request over the body limit ended its route with an error", exc_info=True)


async def _refuse(send: Send, limit: int) -> None:
    detail = f"The request body is over the limit of {limit} bytes (XMODAL_MAX_REQUEST_BYTES)."
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": [*headers, (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
