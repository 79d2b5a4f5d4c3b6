"""A folder of malformed and unusual files completes; each bad file is listed with its reason."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from xmodal.engine import Engine


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def build_malformed_folder(root: Path) -> dict[str, str]:
    """Write the corpus; returns bad file name -> a phrase its reason must contain."""
    root.mkdir()
    photo = Image.radial_gradient("L").convert("RGB").resize((64, 48))
    (root / "truncated.jpg").write_bytes(_encoded(photo, "JPEG")[:300])
    (root / "truncated.png").write_bytes(_encoded(photo, "PNG")[:200])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("this is plain text wearing a .jpg name\n")
    (root / "bomb.png").write_bytes(_png_bomb(60_000, 60_000))
    (root / "binary.txt").write_bytes(bytes(range(256)) * 4)
    os.symlink(root / "does-not-exist.jpg", root / "dangling.jpg")

    (root / "cmyk.jpg").write_bytes(_encoded(photo.convert("CMYK"), "JPEG"))
    deep = Image.fromarray(np.full((20, 30), 32768, dtype=np.uint16))
    (root / "deep16.png").write_bytes(_encoded(deep, "PNG"))
    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "green", "blue")]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (root / "latin1.txt").write_bytes("Un café crème, s'il vous plaît.".encode("latin-1"))
    (root / "good.png").write_bytes(_encoded(photo, "PNG"))
    return {
        "truncated.jpg": "truncated",
        "truncated.png": "truncated",
        "empty.jpg": "empty",
        "notes.jpg": "named as a .jpg file",
        "bomb.png": "decompression bomb",
        "binary.txt": "binary",
        "dangling.jpg": "cannot read",
    }


def test_malformed_folder_completes_and_lists_each_bad_file(engine: Engine, tmp_path: Path) -> None:
    expected = build_malformed_folder(tmp_path / "bad")
    report = engine.index([tmp_path / "bad"])

    reasons = {Path(path).name: reason for path, reason in report.failures}
    assert set(reasons) == set(expected)
    for name, phrase in expected.items():
        assert phrase in reasons[name], (name, reasons[name])
    assert report.failed == len(expected)
    assert report.indexed == 5  # cmyk, deep16, animated, latin1, good
    failed_in_catalog = {Path(path).name for path, _ in engine.catalog.failures()}
    assert failed_in_catalog == set(expected) - {"dangling.jpg"}  # a file that cannot be stat'ed has no row


def test_unusual_images_decode_to_sensible_pixels(engine: Engine, tmp_path: Path) -> None:
    build_malformed_folder(tmp_path / "bad")
    engine.index([tmp_path / "bad"])
    by_name = {Path(r.path).name: r for r in engine.search("anything", k=50, space="clip", modalities=["image"])}
    assert {"cmyk.jpg", "deep16.png", "animated.gif", "good.png"} <= set(by_name)
    assert (by_name["deep16.png"].width, by_name["deep16.png"].height) == (30, 20)
    text_hits = engine.search("coffee", k=5, space="text", modalities=["text"])
    assert any("café crème" in (hit.text_excerpt or "") for hit in text_hits)


def test_failed_files_are_not_retried_until_they_change(engine: Engine, tmp_path: Path) -> None:
    build_malformed_folder(tmp_path / "bad")
    engine.index([tmp_path / "bad"])
    again = engine.index([tmp_path / "bad"])
    assert again.indexed == again.updated == 0
    assert again.failed == 1  # only the dangling link, which is never recorded
    (tmp_path / "bad" / "empty.jpg").write_bytes(_encoded(Image.new("RGB", (8, 8), "white"), "JPEG"))
    fixed = engine.index([tmp_path / "bad"])
    assert fixed.updated == 1
