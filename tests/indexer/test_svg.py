"""SVG images are rendered and indexed like any other image (Tux Paint's bicycle is an SVG)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from xmodal.engine import Engine
from xmodal.errors import DecodeError
from xmodal.indexer.decode import ImageLimits, decode_image, sniff

pytest.importorskip("cairosvg")

WIDE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- a red bar -->
<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" viewBox="0 0 200 100">
  <rect x="0" y="0" width="100" height="100" fill="#ff0000"/>
</svg>
"""
STAMPS = Path("/usr/share/tuxpaint/stamps")


def test_an_svg_is_rendered_on_white_within_the_side_limit() -> None:
    assert sniff(WIDE) == "image/svg+xml"
    decoded = decode_image(WIDE, ImageLimits(max_pixels=10_000_000, svg_side=64))
    assert decoded.image.size == (64, 32) and decoded.media_type == "image/svg+xml"
    pixels = np.asarray(decoded.image)
    assert tuple(pixels[16, 8]) == (255, 0, 0) and tuple(pixels[16, 56]) == (255, 255, 255)


def test_external_files_are_not_read_and_broken_svgs_fail_with_a_reason(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not even an image")
    linking = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">'
        f'<image xlink:href="file://{secret}" width="10" height="10"/></svg>'
    ).encode()
    decoded = decode_image(linking, ImageLimits(max_pixels=10_000_000, svg_side=16))  # drawn without the link
    assert decoded.image.size == (16, 16)
    with pytest.raises(DecodeError, match="SVG could not be rendered"):
        decode_image(b"<svg xmlns='http://www.w3.org/2000/svg'><rect", ImageLimits(max_pixels=10_000_000))


def test_svg_files_are_indexed_and_found_by_their_caption(engine: Engine, tmp_path: Path) -> None:
    root = tmp_path / "stamps"
    root.mkdir()
    stamp = STAMPS / "vehicles" / "bikewheel.svg"
    if stamp.is_file():  # the real stamp, as the README's "red bicycle" example meets it
        shutil.copy(stamp, root / "bicycle.svg")
    else:
        (root / "bicycle.svg").write_bytes(WIDE)
    (root / "bicycle.txt").write_text("A red bicycle.")
    (root / "broken.svg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'><rect")
    report = engine.index([root])
    assert report.indexed == 1 and report.failed == 1 and report.skipped == 0
    assert "SVG could not be rendered" in report.failures[0][1]
    results = engine.search("red bicycle", k=1, space="clip")
    assert results[0].path == str(root / "bicycle.svg") and results[0].modality == "image"
    assert engine.item(results[0].item_id).media_type == "image/svg+xml"
