"""Thumbnails, made once per (item, size, content) and kept on disk under ``$XMODAL_HOME/thumbnails``.

Sizes are rounded up to a power of two (16 ... ``max_thumbnail_size``), so an item has a handful of cached
thumbnails at most, however many sizes clients ask for; a changed file has another content hash, and its old
thumbnails are removed when the new one is written.
"""

from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

from xmodal.indexer.decode import ImageLimits, decode_image


def bucket(side: int, largest: int) -> int:
    """The cached size that serves a request for ``side`` pixels."""
    size = 16
    while size < side:
        size *= 2
    return min(size, largest)


def cached(cache: Path, item_id: int, side: int, content_hash: str) -> Path:
    return cache / str(item_id) / f"{side}-{content_hash}.jpg"


def render(data: bytes, side: int, max_pixels: int) -> bytes:
    """A JPEG whose longest side is at most ``side``."""
    image = decode_image(data, ImageLimits(max_pixels)).image
    image.thumbnail((side, side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def store(path: Path, jpeg: bytes) -> None:
    """Write atomically, and drop this size's thumbnails of earlier contents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    staging.write_bytes(jpeg)
    os.replace(staging, path)
    size = path.name.split("-", 1)[0]
    for old in path.parent.glob(f"{size}-*.jpg"):
        if old != path:
            old.unlink(missing_ok=True)
