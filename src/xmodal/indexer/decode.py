"""Decoding files into what encoders take: RGB images and Unicode text.

The content decides what a file is (magic bytes), the extension only breaks ties. Everything that can go
wrong becomes a :class:`~xmodal.errors.DecodeError` with a reason a person can act on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import charset_normalizer
import filetype
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xmodal.errors import DecodeError
from xmodal.indexer.svg import MEDIA_TYPE as SVG_MEDIA_TYPE
from xmodal.indexer.svg import looks_like_svg, render_svg, svg_supported
from xmodal.modality import Modality

# JPEGs are decoded at a reduced scale when much larger than this (Pillow's draft mode): encoders and thumbnails
# never need more, and it makes big photos several times cheaper to decode.
DRAFT_SIDE = 1024
_SNIFF_BYTES = 8192
# Tux Paint and similar tools put translations in the caption file as "de.utf8=..." lines.
_TRANSLATION_LINE = re.compile(r"^[A-Za-z_@]{2,16}\.utf-?8=", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_pixels: int
    svg_side: int = 384  # SVGs are rendered this many pixels on their longest side
    svg_timeout_s: float = 10.0  # ... within this many seconds, or they fail


@dataclass(frozen=True, slots=True)
class AudioLimits:
    max_seconds: float


@dataclass(slots=True)
class DecodedAudio:
    """Mono float32 samples at the file's own rate."""

    samples: np.ndarray
    sample_rate: int
    duration: float
    media_type: str


_AUDIO_MEDIA_TYPES = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg"}


@dataclass(slots=True)
class DecodedImage:
    image: Image.Image
    width: int
    height: int
    media_type: str


def sniff(data: bytes) -> str | None:
    """The MIME type the content's magic bytes say, if any."""
    kind = filetype.guess(data[:_SNIFF_BYTES])
    if kind is None and looks_like_svg(data):
        return SVG_MEDIA_TYPE
    return kind.mime if kind else None


def modality_of(mime: str | None) -> Modality | None:
    if mime is None:
        return None
    if mime.startswith("image/"):
        return Modality.IMAGE
    if mime.startswith("audio/"):
        return Modality.AUDIO
    return None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def decode_image(data: bytes, limits: ImageLimits) -> DecodedImage:
    """An RGB image from encoded bytes: EXIF orientation applied, first frame of animations, alpha on white; an SVG
    rendered (the svg extra) with its longest side ``limits.svg_side`` pixels, within ``limits.svg_timeout_s``."""
    if looks_like_svg(data):
        if not svg_supported():
            raise DecodeError("SVG images need the svg extra: pip install 'xmodal[svg]'")
        rendered = render_svg(data, max_side=limits.svg_side, timeout_s=limits.svg_timeout_s)
        return DecodedImage(rendered, rendered.width, rendered.height, SVG_MEDIA_TYPE)
    with _image_errors():
        image, width, height, media_type = _open_checked(data, limits)
        image.seek(0)
        if image.format == "JPEG":
            image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
        image.load()
        rgb = to_rgb(ImageOps.exif_transpose(image) or image)
    return DecodedImage(rgb, width, height, media_type)


@dataclass(frozen=True, slots=True)
class ImageHeader:
    width: int
    height: int
    media_type: str


def check_jpeg(data: bytes, limits: ImageLimits) -> ImageHeader:
    """Size and type of a JPEG, and proof that it decodes, without decoding it at full size (for encoders that
    decode JPEGs on their own device): the check decodes at 1/8 scale, which reads the whole stream."""
    with _image_errors():
        image, width, height, media_type = _open_checked(data, limits)
        if image.format != "JPEG":
            raise DecodeError(f"expected a JPEG, found {image.format}")
        image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        image.load()
    return ImageHeader(width, height, media_type)


def _open_checked(data: bytes, limits: ImageLimits) -> tuple[Image.Image, int, int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
    width, height = image.size
    if width * height > limits.max_pixels:
        raise DecodeError(
            f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels, over the limit of "
            f"{limits.max_pixels / 1e6:.0f} (XMODAL_MAX_IMAGE_PIXELS); possibly a decompression bomb"
        )
    return image, width, height, Image.MIME.get(image.format or "", "application/octet-stream")


@contextlib.contextmanager
def _image_errors() -> Iterator[None]:
    """Pillow's many exception types as one ``DecodeError`` with a reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"image rejected as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("content is not an image Pillow can read") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DecodeError(f"image is corrupt or truncated: {exc}") from exc


def audio_supported() -> bool:
    """True when the audio extra (soundfile and friends) is installed."""
    import importlib.util

    return importlib.util.find_spec("soundfile") is not None and importlib.util.find_spec("soxr") is not None


def decode_audio(data: bytes, limits: AudioLimits) -> DecodedAudio:
    """Mono float32 audio from encoded bytes (WAV, FLAC, Ogg Vorbis/Opus, MP3), within the duration limit."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
        if info.frames <= 0 or info.samplerate <= 0:
            raise DecodeError("audio has no samples")
        duration = info.frames / info.samplerate
        if duration > limits.max_seconds:
            raise DecodeError(
                f"audio says it lasts {duration:.0f} s, over the limit of {limits.max_seconds:.0f} s "
                "(XMODAL_MAX_AUDIO_SECONDS)"
            )
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except DecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        detail = re.sub(r"^Error opening <[^>]*>: ", "", str(exc))
        raise DecodeError(f"audio is corrupt or in a format libsndfile cannot read: {detail}") from exc
    if samples.shape[0] == 0:
        raise DecodeError("audio has no samples")
    mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise DecodeError("audio holds samples that are not finite numbers")
    media_type = _AUDIO_MEDIA_TYPES.get(info.format, "audio/octet-stream")
    return DecodedAudio(np.ascontiguousarray(mono), int(rate), samples.shape[0] / rate, media_type)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode: 16-bit and float scaled down, palettes and alpha flattened on white."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def decode_text(data: bytes) -> str:
    """Unicode text from bytes: UTF-8 first, then the best guess of charset-normalizer; binary is refused."""
    if b"\x00" in data[:_SNIFF_BYTES] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DecodeError("content is binary, not text (it contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    matches = list(charset_normalizer.from_bytes(data))
    if not matches:
        raise DecodeError("content is neither UTF-8 nor any text encoding charset-normalizer recognises")
    best = matches[0]
    # Short texts often fit several code pages equally well; Windows-1252, the commonest legacy one, wins ties.
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    return str(next((m for m in tied if m.encoding == "cp1252"), best))


def caption_from_sidecar(data: bytes, max_chars: int) -> str | None:
    """A caption from a sidecar file: its text without translation lines, whitespace folded, cut to length."""
    try:
        text = decode_text(data)
    except DecodeError:
        return None
    lines = [line for line in text.splitlines() if not _TRANSLATION_LINE.match(line.strip())]
    caption = " ".join(" ".join(lines).split())
    return caption[:max_chars] or None
