"""Decoding: orientation, colour modes, animations, limits, captions, text encodings."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from xmodal.errors import DecodeError
from xmodal.indexer.decode import ImageLimits, caption_from_sidecar, decode_image, decode_text

LIMITS = ImageLimits(max_pixels=10_000_000)


def _jpeg_with_orientation(orientation: int) -> bytes:
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red stripe on the left
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    decoded = decode_image(_jpeg_with_orientation(6), LIMITS)  # 6: rotate 90 degrees clockwise to display
    assert decoded.image.size == (20, 40)
    pixels = np.asarray(decoded.image)
    assert pixels[2, 10, 0] > 200 and pixels[2, 10, 1] < 80  # the red stripe is now at the top


def test_rgba_is_flattened_on_white() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue(), LIMITS)
    assert decoded.image.mode == "RGB" and decoded.image.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(buffer, format="PNG")
    value = decode_image(buffer.getvalue(), LIMITS).image.getpixel((0, 0))
    assert value[0] == pytest.approx(127, abs=1)


def test_animation_gives_its_first_frame() -> None:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    red = decode_image(buffer.getvalue(), LIMITS).image.getpixel((0, 0))
    assert red[0] > 200 and red[2] < 50


def test_pixel_limit_is_a_setting() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buffer, format="PNG")
    with pytest.raises(DecodeError, match="XMODAL_MAX_IMAGE_PIXELS"):
        decode_image(buffer.getvalue(), ImageLimits(max_pixels=10_000))


def test_tux_paint_translations_are_dropped_from_captions() -> None:
    sidecar = "A US 1 cent piece called a penny.\nde.utf8=Ein US-Cent.\nfr.utf8=Une pièce.\n".encode()
    assert caption_from_sidecar(sidecar, 100) == "A US 1 cent piece called a penny."
    assert caption_from_sidecar(b"  long   caption  ", 4) == "long"


def test_text_encodings() -> None:
    assert decode_text("naïve café".encode("utf-16")) == "naïve café"
    assert decode_text("\ufeffbom".encode()) == "bom"
    with pytest.raises(DecodeError, match="binary"):
        decode_text(b"\x00\x01\x02garbage")
