"""JPEGs decoded and pre-processed where the encoder runs (torchvision) give the model what Pillow would."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import make_settings
from xmodal.config import JpegDecode
from xmodal.encoders import build_encoder
from xmodal.encoders.jpeg import EncodedJpeg, decode_batch
from xmodal.engine import Engine


def _photo(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A smooth, photo-like image (JPEG artefacts and resampling differ little on it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [np.sin(2 * np.pi * (x * rng.uniform(1, 3) + y * rng.uniform(1, 3)) + rng.uniform(0, 6)) for _ in "rgb"]
    return Image.fromarray((np.stack(channels, -1) * 110 + 128).astype(np.uint8))


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **options)
    return buffer.getvalue()


@pytest.fixture
def device_clip(tmp_path: Path, tiny_clip_dir: Path):
    settings = make_settings(tmp_path / "home", tiny_clip_dir, jpeg_decode=JpegDecode.DEVICE)
    encoder = build_encoder(settings.clip_encoder, settings)
    encoder.load()
    return encoder


def test_tensor_preprocessing_matches_open_clips_transform(device_clip) -> None:
    image = _photo()
    data = _jpeg(image)
    prepared = device_clip.prepare_jpeg(data)
    assert isinstance(prepared, EncodedJpeg)
    from_pil = device_clip.prepare_image(Image.open(io.BytesIO(data)).convert("RGB"))
    tensor = decode_batch([prepared], torch.device("cpu"), device_clip._on_device_preprocess, device_clip._preprocess)
    assert tensor[0].shape == from_pil.shape
    assert float((tensor[0] - from_pil).abs().mean()) < 0.03  # resampling differences only
    vectors = device_clip.encode_prepared_images([prepared, from_pil])  # a batch may mix both kinds of input
    assert float(vectors[0] @ vectors[1]) > 0.999


def test_exif_orientation_is_applied_on_the_device(device_clip) -> None:
    wide = Image.new("RGB", (64, 32), "white")
    wide.paste((255, 0, 0), (0, 0, 16, 32))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: red on top
    rotated = decode_batch(
        [EncodedJpeg(_jpeg(wide, exif=exif.tobytes()))],
        torch.device("cpu"),
        device_clip._on_device_preprocess,
        device_clip._preprocess,
    )[0]
    upright = device_clip.prepare_image(wide.rotate(-90, expand=True))
    assert float((rotated - upright).abs().mean()) < 0.05


def test_the_pillow_path_stays_the_default_on_the_cpu(tmp_path: Path, tiny_clip_dir: Path) -> None:
    settings = make_settings(tmp_path / "home", tiny_clip_dir)
    encoder = build_encoder(settings.clip_encoder, settings)
    assert encoder.prepare_jpeg(_jpeg(_photo())) is None  # auto: on the GPU only


def test_indexing_with_device_decoding_checks_files_and_matches_pillow(tmp_path: Path, tiny_clip_dir: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    for number in range(6):
        (root / f"photo{number}.jpg").write_bytes(_jpeg(_photo(seed=number)))
    (root / "cmyk.jpg").write_bytes(_jpeg(_photo(seed=9).convert("CMYK")))  # torchvision or Pillow, never lost
    (root / "truncated.jpg").write_bytes(_jpeg(_photo(seed=7))[:600])
    vectors = {}
    for mode in (JpegDecode.DEVICE, JpegDecode.CPU):
        settings = make_settings(tmp_path / f"home-{mode.value}", tiny_clip_dir, jpeg_decode=mode, speech_model="")
        with Engine.open(settings=settings) as engine:
            report = engine.index([root])
            assert report.indexed == 7 and report.failed == 1
            assert "truncated" in dict(report.failures)[str(root / "truncated.jpg")]
            index = engine.spaces["clip"].stored_index()
            ids = index.ids()
            owners = engine.catalog.resolve_vectors(ids.tolist())
            items = engine.catalog.get_items([owner.item_id for owner in owners.values()])
            assert {(item.width, item.height) for item in items.values()} == {(96, 64)}  # read from the header
            vectors[mode] = {
                items[owners[i].item_id].path: v for i, v in zip(ids.tolist(), index.reconstruct(ids), strict=True)
            }
    for path, vector in vectors[JpegDecode.DEVICE].items():
        assert float(vector @ vectors[JpegDecode.CPU][path]) > 0.999, path
