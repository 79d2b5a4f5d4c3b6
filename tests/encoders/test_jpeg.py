"""JPEGs decoded and pre-processed where the encoder runs (torchvision) give the model what Pillow would.

The CUDA decoder is stood in for by the CPU one with the behaviour that matters here (it ignores the EXIF
orientation argument, it runs out of memory); tests/gpu runs the real one.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tests.conftest import make_settings
from xmodal.config import JpegDecode
from xmodal.encoders import build_encoder
from xmodal.encoders import jpeg as jpeg_module
from xmodal.encoders.batching import BatchSizer
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


def _quadrants(width: int = 48, height: int = 40) -> Image.Image:
    """Four colours, one per quadrant: every EXIF orientation gives a different centre crop."""
    image = Image.new("RGB", (width, height))
    for (left, top), colour in zip(
        ((0, 0), (width // 2, 0), (0, height // 2), (width // 2, height // 2)),
        ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)),
        strict=True,
    ):
        image.paste(colour, (left, top, left + width // 2, top + height // 2))
    return image


def _with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _jpeg(image, exif=exif.tobytes())


def _like_cuda(real: Callable[..., object]) -> Callable[..., object]:
    """torchvision's decoder as it behaves with ``device="cuda"``: ``apply_exif_orientation`` is ignored."""

    def decode(data: object, *, mode: object, device: object, apply_exif_orientation: bool = False) -> object:
        return real(data, mode=mode, device=device, apply_exif_orientation=False)

    return decode


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_even_by_a_decoder_that_ignores_it(
    device_clip, monkeypatch: pytest.MonkeyPatch, orientation: int
) -> None:
    monkeypatch.setattr(jpeg_module, "decode_jpeg", _like_cuda(jpeg_module.decode_jpeg))
    image = _quadrants()
    data = _with_orientation(image, orientation)
    prepared = device_clip.prepare_jpeg(data)
    assert prepared.orientation == orientation  # read on the CPU, in the decode worker
    tensor = decode_batch([prepared], torch.device("cpu"), device_clip._on_device_preprocess, device_clip._preprocess)
    upright = device_clip.prepare_image(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    as_stored = device_clip.prepare_image(image)
    assert float((tensor[0] - upright).abs().mean()) < 0.05
    if orientation != 1:  # and the check can tell: ignoring the tag would be far off
        assert float((tensor[0] - as_stored).abs().mean()) > 0.3


def test_a_file_without_a_readable_header_is_upright_and_falls_back_to_pillow(device_clip) -> None:
    assert EncodedJpeg.from_bytes(b"\xff\xd8\xff not a jpeg").orientation == 1


def test_out_of_memory_while_decoding_is_raised_not_taken_for_a_bad_file(
    device_clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallbacks: list[object] = []

    def exhausted(*args: object, **kwargs: object) -> object:
        raise RuntimeError("nvjpeg error: NVJPEG_STATUS_ALLOCATOR_FAILURE")

    monkeypatch.setattr(jpeg_module, "decode_jpeg", exhausted)
    with pytest.raises(RuntimeError, match="ALLOCATOR_FAILURE"):
        decode_batch(
            [EncodedJpeg(_jpeg(_photo()))],
            torch.device("cpu"),
            device_clip._on_device_preprocess,
            lambda image: fallbacks.append(image),  # type: ignore[func-returns-value]
        )
    assert fallbacks == []


def test_decode_out_of_memory_reaches_the_batch_sizer_and_no_image_is_lost(
    device_clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = jpeg_module.decode_jpeg
    seen: list[int] = []

    def small_gpu(data: list[torch.Tensor], **kwargs: object) -> object:
        seen.append(len(data))
        if len(data) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated, in nvJPEG)")
        return real(data, **kwargs)

    monkeypatch.setattr(jpeg_module, "decode_jpeg", small_gpu)
    jpegs = [device_clip.prepare_jpeg(_jpeg(_photo(seed=n))) for n in range(10)]
    sizer = BatchSizer(8, maximum=8, grow=False)
    vectors = sizer.encode(device_clip.encode_prepared_images, jpegs)
    expected = device_clip.encode_images([Image.open(io.BytesIO(j.data)).convert("RGB") for j in jpegs])
    assert sizer.backoffs == 1 and sizer.size == 4 and seen[:2] == [8, 4]
    assert vectors.shape == expected.shape
    assert np.all(np.sum(vectors * expected, axis=1) > 0.999)  # every image, in order


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
