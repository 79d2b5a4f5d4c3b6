"""SVG images are rendered and indexed like any other image (Tux Paint's bicycle is an SVG)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from xmodal.config import Settings
from xmodal.encoders import Encoder
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


ILLUSTRATOR = b"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generator: Adobe Illustrator 12.0.1, SVG Export Plug-In -->
<!DOCTYPE svg PUBLIC '-//W3C//DTD SVG 1.1//EN' 'http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd' [
	<!ENTITY ns_svg "http://www.w3.org/2000/svg">
	<!ENTITY ns_xlink "http://www.w3.org/1999/xlink">
]>
<svg xmlns="&ns_svg;" xmlns:xlink="&ns_xlink;" width="200" height="100" viewBox="0 0 200 100">
  <rect x="0" y="0" width="100" height="100" fill="#ff0000"/>
</svg>
"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE svg [
  <!ENTITY a "lol">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&c;</text></svg>
"""


def test_an_illustrator_svg_with_declared_namespaces_is_drawn_and_nested_entities_are_refused() -> None:
    """Adobe Illustrator declares its namespaces as entities in the doctype (two of Tux Paint's stamps, the bee
    and the loaf of bread, failed as 'not a known media format'): literal ones are written out and the drawing
    is made; entities that expand into entities (a 'billion laughs') are never expanded."""
    assert sniff(ILLUSTRATOR) == "image/svg+xml"
    decoded = decode_image(ILLUSTRATOR, ImageLimits(max_pixels=10_000_000, svg_side=64))
    assert decoded.image.size == (64, 32) and tuple(np.asarray(decoded.image)[16, 8]) == (255, 0, 0)
    assert sniff(LAUGHS) == "image/svg+xml"
    with pytest.raises(DecodeError, match="SVG could not be rendered"):
        decode_image(LAUGHS, ImageLimits(max_pixels=10_000_000, svg_side=16))
    for name in ("animals/insects/bee.svg", "food/loaf_of_bread.svg"):  # the real ones, where installed
        if (STAMPS / name).is_file():
            real = decode_image((STAMPS / name).read_bytes(), ImageLimits(max_pixels=10_000_000, svg_side=64))
            assert max(real.image.size) == 64


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


def endless_svg(levels: int = 9, fan: int = 10) -> bytes:
    """A 1 KB SVG that asks for fan**(levels - 1) rectangles: each group draws the one before it ``fan`` times."""
    groups = ['<g id="g0"><rect width="1" height="1" fill="red"/></g>']
    for level in range(1, levels):
        uses = "".join(f'<use xlink:href="#g{level - 1}" x="{i % 3}"/>' for i in range(fan))
        groups.append(f'<g id="g{level}">{uses}</g>')
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64">'
        f'<defs>{"".join(groups)}</defs><use xlink:href="#g{levels - 1}"/></svg>'
    ).encode()


def test_an_svg_that_draws_for_ever_is_stopped_and_fails_with_the_reason(
    settings: Settings, encoder_pool: Callable[[str, Settings], Encoder], tmp_path: Path
) -> None:
    with pytest.raises(DecodeError, match=r"longer than 0.5 s to render \(XMODAL_SVG_TIMEOUT_S\)"):
        decode_image(endless_svg(), ImageLimits(max_pixels=10_000_000, svg_side=64, svg_timeout_s=0.5))

    root = tmp_path / "drawings"
    root.mkdir()
    (root / "endless.svg").write_bytes(endless_svg())
    (root / "bar.svg").write_bytes(WIDE)
    bounded = settings.model_copy(update={"svg_timeout_s": 1.0})
    with Engine.open(settings=bounded, build_encoder=encoder_pool) as engine:
        report = engine.index([root])
    assert report.indexed == 1 and report.failed == 1  # the run went on past the drawing that never ends
    path, reason = report.failures[0]
    assert path.endswith("endless.svg") and "XMODAL_SVG_TIMEOUT_S" in reason
