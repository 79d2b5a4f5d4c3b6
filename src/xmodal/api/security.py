"""Writes and admin calls need the configured API key; searches and reads need the read key when one is set
(``XMODAL_READ_API_KEY``; the admin key is accepted too), and are open otherwise."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Security, status
from fastapi.security import APIKeyHeader

from xmodal.api.deps import SettingsDep

_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="XMODAL_API_KEY of the server.")


def require_api_key(settings: SettingsDep, given: Annotated[str | None, Security(_KEY_HEADER)] = None) -> None:
    """403 when no key is configured (writes are off), 401 when the request's key is missing or wrong."""
    if settings.api_key is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "Writes and admin calls are off: start the server with XMODAL_API_KEY set."
        )
    expected = settings.api_key.get_secret_value().encode()
    if given is None or not secrets.compare_digest(given.encode(), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Send the server's API key in the X-API-Key header.",
            headers={"WWW-Authenticate": "APIKey"},
        )


AdminDep = Depends(require_api_key)


def require_read_key(settings: SettingsDep, given: Annotated[str | None, Security(_KEY_HEADER)] = None) -> None:
    """401 when a read key is configured and the request sends neither it nor the admin key."""
    if settings.read_api_key is None:
        return
    keys = [settings.read_api_key, *([settings.api_key] if settings.api_key is not None else [])]
    sent = (given or "").encode()
    if given is None or not any(secrets.compare_digest(sent, key.get_secret_value().encode()) for key in keys):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "This server's files are private: send its read key (XMODAL_READ_API_KEY) in the X-API-Key header.",
            headers={"WWW-Authenticate": "APIKey"},
        )


ReaderDep = Depends(require_read_key)
