"""Paging cursors: the offset of the next page, signed with the home's secret and bound to the query it continues.

A cursor is ``<offset>.<signature>`` (URL-safe), the signature an HMAC-SHA256 over the offset and a fingerprint of
the query. A client can neither make one up (a forged offset would turn the candidate pool into the whole corpus)
nor carry one over to another query; both are refused before any search work is done.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

import numpy as np
from PIL import Image

from xmodal.errors import InvalidCursorError
from xmodal.search.query import AudioClip, SearchQuery

SECRET_FILE = "cursor.key"
_REFUSED = "The cursor is not one this server gave out for this query: start again from the first page."


def home_secret(home: Path) -> bytes:
    """The home's cursor secret, created on first use (readable by its owner only)."""
    path = home / SECRET_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        staging = home / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(staging, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        try:
            os.link(staging, path)  # atomic: a concurrent first start keeps the secret that won
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    return path.read_bytes()


def query_fingerprint(query: SearchQuery) -> bytes:
    """A digest of everything that decides a query's ranking (not ``k`` or ``explain``)."""
    digest = hashlib.sha256()
    for part in query.parts:
        digest.update(f"|{part.kind}:{part.weight!r}:{part.space}:".encode())
        value = part.value
        if isinstance(value, Image.Image):
            digest.update(f"{value.size}{value.mode}".encode())
            digest.update(value.tobytes())
        elif isinstance(value, AudioClip):
            digest.update(str(value.sample_rate).encode())
            digest.update(np.ascontiguousarray(value.samples).tobytes())
        elif isinstance(value, np.ndarray):
            digest.update(np.ascontiguousarray(value, dtype=np.float32).tobytes())
        else:
            digest.update(str(value).encode())
    modalities = sorted(query.item_filter.modalities) if query.item_filter.modalities is not None else None
    options = (query.item_filter.conditions, modalities, query.space, query.min_score, query.fusion, query.diversity)
    digest.update(repr((*options, query.collapse_duplicates)).encode())
    return digest.digest()


class CursorSigner:
    """Signs and checks cursors with one secret (see :func:`home_secret`)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def for_home(cls, home: Path) -> CursorSigner:
        return cls(home_secret(home))

    def encode(self, offset: int, query: SearchQuery) -> str:
        return f"{offset}.{self._signature(offset, query)}"

    def decode(self, cursor: str, query: SearchQuery) -> int:
        """The offset ``cursor`` stands for; ``InvalidCursorError`` unless this signer made it for ``query``."""
        text, _, signature = cursor.partition(".")
        if not text.isdigit() or len(text) > 18 or not signature:
            raise InvalidCursorError(_REFUSED)
        offset = int(text)
        if not hmac.compare_digest(signature, self._signature(offset, query)):
            raise InvalidCursorError(_REFUSED)
        return offset

    def _signature(self, offset: int, query: SearchQuery) -> str:
        mac = hmac.new(self._secret, f"{offset}:".encode() + query_fingerprint(query), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
