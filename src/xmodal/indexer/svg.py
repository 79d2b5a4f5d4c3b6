"""SVG images: rendered to pixels (with cairosvg, the ``svg`` extra) so they are indexed like any other image.

Rendering is bounded by size: the SVG's bytes by ``XMODAL_MAX_FILE_BYTES`` and the raster by ``max_side`` pixels
on the longest side (the encoders see 224-336 pixels), which also bounds the time a drawing can take. External
resources (linked images, entities) are never fetched: cairosvg runs in its safe mode.
"""

from __future__ import annotations

import importlib.util
import io
import re

from PIL import Image

from xmodal.errors import DecodeError

MEDIA_TYPE = "image/svg+xml"
_SVG_START = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*|<!DOCTYPE[^>]*>\s*)*<svg[\s>]", re.DOTALL)


def svg_supported() -> bool:
    """Whether the svg extra (cairosvg) is installed."""
    return importlib.util.find_spec("cairosvg") is not None


def looks_like_svg(data: bytes) -> bool:
    """True when the bytes start (after an XML declaration, comments and a doctype) with an ``<svg`` element."""
    return _SVG_START.match(data[:4096].lstrip(b"\xef\xbb\xbf")) is not None


def render_svg(data: bytes, *, max_side: int) -> Image.Image:
    """The SVG drawn on white as RGB, its longest side ``max_side`` pixels; ``DecodeError`` if it cannot be."""
    import cairosvg

    try:
        intrinsic = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data, output_width=8, unsafe=False)))
        landscape = intrinsic.width >= intrinsic.height
        size = {"output_width": max_side} if landscape else {"output_height": max_side}
        png = cairosvg.svg2png(bytestring=data, unsafe=False, background_color="white", **size)
        image = Image.open(io.BytesIO(png))
        image.load()
    except MemoryError:
        raise
    except Exception as exc:  # cairosvg raises XML parse errors, ValueError and cairo's own errors
        raise DecodeError(f"SVG could not be rendered: {type(exc).__name__}: {exc}") from exc
    return image.convert("RGB")
