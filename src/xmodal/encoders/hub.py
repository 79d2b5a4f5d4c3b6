"""Is the model hub reachable? Asked once before a download, so an offline machine fails in milliseconds
instead of sitting through the hub client's retries."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_offline_reason(timeout_s: float) -> str | None:
    """Why weights cannot be downloaded now, or ``None`` when the hub answers a TCP connection."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return "they are not cached and HF_HUB_OFFLINE=1"
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT)
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"they are not cached and the model hub ({endpoint}) cannot be reached: {exc}"
