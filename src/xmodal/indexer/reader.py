"""Pipeline stage 1: read a source file and decode it into an item ready for the encoders.

Runs in worker threads. Every failure becomes an item with status ``failed`` and a reason; nothing raises.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
from PIL import Image

from xmodal.encoders.ocr import ENGINE as OCR_ENGINE
from xmodal.encoders.ocr import OcrResult
from xmodal.encoders.speech import Transcript
from xmodal.errors import DecodeError
from xmodal.indexer.decode import (
    AudioLimits,
    DecodedImage,
    ImageHeader,
    ImageLimits,
    audio_supported,
    caption_from_sidecar,
    check_jpeg,
    content_hash,
    decode_audio,
    decode_image,
    decode_text,
    modality_of,
    sniff,
)
from xmodal.indexer.sources import (
    AUDIO_EXTENSIONS,
    SVG_EXTENSIONS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    SourceFile,
    image_extensions,
    read_source,
)
from xmodal.indexer.svg import svg_supported
from xmodal.modality import Modality
from xmodal.store.catalog import ItemRecord
from xmodal.store.models import Item, ItemStatus

log = logging.getLogger(__name__)
ImagePreparer = Callable[[Image.Image], Any]
AudioPreparer = Callable[[np.ndarray, int], list[tuple[int, int, Any]]]


class SpeechToText(Protocol):
    def transcribe(self, samples: np.ndarray, sample_rate: int) -> Transcript | None: ...


class ImageToText(Protocol):
    def read(self, image: Image.Image) -> OcrResult: ...


@dataclass(frozen=True, slots=True)
class Preparers:
    """What stage 1 runs on decoded media for the later stages, per space (and the transcriber, if any)."""

    images: Mapping[str, ImagePreparer] = field(default_factory=dict)
    # space -> encoder input straight from a JPEG's bytes (``None``: that encoder wants decoded pixels)
    jpegs: Mapping[str, Callable[[bytes], Any | None]] = field(default_factory=dict)
    audio: Mapping[str, AudioPreparer] = field(default_factory=dict)
    transcriber: SpeechToText | None = None
    same_content: Callable[[str], Item | None] | None = None  # content hash -> an indexed item with those bytes
    ocr: ImageToText | None = None  # reads the words in every image
    # path -> the indexed item, when that file is unchanged and only lacks OCR (its vectors are kept)
    ocr_only: Callable[[str], Item | None] | None = None


class Outcome(StrEnum):
    DECODED = "decoded"
    FAILED = "failed"
    SKIPPED = "skipped"  # not a kind of file this engine indexes


@dataclass(frozen=True, slots=True)
class ReadLimits:
    max_file_bytes: int
    max_text_bytes: int
    max_caption_chars: int
    text_excerpt_chars: int
    image: ImageLimits
    audio: AudioLimits
    text_extensions: frozenset[str]


@dataclass(slots=True)
class DecodedFile:
    """A file after stage 1: its catalog record and what the encoders need."""

    source: SourceFile
    outcome: Outcome
    record: ItemRecord | None = None
    text: str | None = None  # the document, an image's caption, or an audio file's transcript (else caption)
    prepared_images: dict[str, Any] = field(default_factory=dict)  # space name -> encoder input
    prepared_audio: dict[str, list[tuple[int, int, Any]]] = field(default_factory=dict)  # space -> windows
    reason: str | None = None
    reuse_from: int | None = None  # an indexed item with the same bytes: copy its vectors, encode nothing
    ocr_ran: bool = False  # OCR read this image in this run
    transcribed: bool = False  # the speech model listened to this clip in this run


def precheck(source: SourceFile, limits: ReadLimits) -> DecodedFile | None:
    """The skip a file gets without decoding (by its name, or by its first bytes when its name says nothing)."""
    ext = source.extension
    if ext in UNSUPPORTED_IMAGE_EXTENSIONS:
        return DecodedFile(source, Outcome.SKIPPED, reason=f"{ext} files are not indexed yet")
    if ext in SVG_EXTENSIONS and not svg_supported():
        return DecodedFile(source, Outcome.SKIPPED, reason="SVG support is not installed: pip install 'xmodal[svg]'")
    if ext in AUDIO_EXTENSIONS and not audio_supported():
        return DecodedFile(
            source, Outcome.SKIPPED, reason="audio support is not installed: pip install 'xmodal[audio]'"
        )
    if ext in limits.text_extensions or ext in image_extensions() or ext in AUDIO_EXTENSIONS or ext in SVG_EXTENSIONS:
        return None
    try:
        if _sniffs_as_media(source):
            return None
    except OSError as exc:
        return _failed(source, f"cannot read file: {exc.strerror or exc}")
    return DecodedFile(source, Outcome.SKIPPED, reason="not an image, audio or text file")


def read_file(source: SourceFile, limits: ReadLimits, preparers: Preparers) -> DecodedFile:
    """Decode ``source`` and run ``preparers`` on it, so the encoders get their inputs ready-made. The caller has
    already passed it through :func:`precheck`."""
    try:
        return _decode(source, limits, preparers)
    except DecodeError as exc:
        return _failed(source, str(exc))
    except OSError as exc:
        return _failed(source, f"cannot read file: {exc.strerror or exc}")
    except MemoryError:
        return _failed(source, "not enough memory to decode the file")
    except Exception as exc:  # one odd file must not end a nightly run; it is recorded with its reason
        log.exception("unexpected error while reading %s", source.path)
        return _failed(source, f"unexpected error while decoding: {type(exc).__name__}: {exc}")


def _sniffs_as_media(source: SourceFile) -> bool:
    with source.path.open("rb") as handle:
        modality = modality_of(sniff(handle.read(8192)))
    return modality is Modality.IMAGE or (modality is Modality.AUDIO and audio_supported())


def _failed(source: SourceFile, reason: str) -> DecodedFile:
    record = _base_record(source, with_metadata=False, status=ItemStatus.FAILED, error=reason)
    return DecodedFile(source, Outcome.FAILED, record=record, reason=reason)


def _base_record(source: SourceFile, *, with_metadata: bool = True, **fields: Any) -> ItemRecord:
    return ItemRecord(
        path=str(source.path),
        source=source.root.as_uri(),
        size=source.size,
        mtime_ns=source.mtime_ns,
        sidecar_path=str(source.sidecar) if source.sidecar else None,
        sidecar_mtime_ns=source.sidecar_mtime_ns,
        user_metadata=_metadata(source) if with_metadata else None,
        source_version=source.version,
        **fields,
    )


def _metadata(source: SourceFile) -> dict[str, Any] | None:
    """The JSON object in the file's metadata sidecar; a broken sidecar fails the file with the reason."""
    if source.metadata_sidecar is None:
        return None
    try:
        value = json.loads(source.metadata_sidecar.read_bytes())
    except (OSError, ValueError) as exc:
        raise DecodeError(f"metadata sidecar {source.metadata_sidecar.name} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DecodeError(f"metadata sidecar {source.metadata_sidecar.name} must hold a JSON object")
    return value


def _decode(source: SourceFile, limits: ReadLimits, preparers: Preparers) -> DecodedFile:
    if source.size == 0:
        raise DecodeError("file is empty (0 bytes)")
    if source.size > limits.max_file_bytes:
        raise DecodeError(
            f"file is {source.size} bytes, over the limit of {limits.max_file_bytes} (XMODAL_MAX_FILE_BYTES)"
        )
    data = read_source(source.path, limits.max_file_bytes)
    digest = content_hash(data)
    if preparers.ocr_only is not None and preparers.ocr is not None:
        indexed = preparers.ocr_only(str(source.path))
        if indexed is not None:
            return _add_ocr(source, data, digest, indexed, limits, preparers.ocr)
    if preparers.same_content is not None:
        reused = _reuse(source, data, digest, limits, preparers.same_content)
        if reused is not None:
            return reused
    mime = sniff(data)
    modality = modality_of(mime)
    if modality is Modality.IMAGE:
        return _decode_image(source, data, digest, limits, preparers)
    if modality is Modality.AUDIO and audio_supported():
        return _decode_audio(source, data, digest, limits, preparers)
    if modality is None and source.extension in limits.text_extensions:
        return _decode_text(source, data, digest, limits)
    claimed = source.extension or "(no extension)"
    found = f"{mime} content" if mime else "content that is not a known media format"
    raise DecodeError(f"named as a {claimed} file, but holds {found}")


def _decode_image(
    source: SourceFile, data: bytes, digest: str, limits: ReadLimits, preparers: Preparers
) -> DecodedFile:
    on_device = _jpeg_on_device(data, preparers)
    header: ImageHeader | DecodedImage
    if on_device is not None:  # the encoders decode it on their device: only check it here
        header, prepared = check_jpeg(data, limits.image), on_device
    else:
        header = decode_image(data, limits.image)
        prepared = {space: prepare(header.image) for space, prepare in preparers.images.items()}
    caption = _caption(source, limits)
    ocr_fields: dict[str, Any] = {}
    if preparers.ocr is not None:
        image = header.image if isinstance(header, DecodedImage) else decode_image(data, limits.image).image
        ocr_fields = _read_words(source, image, preparers.ocr)
    record = _base_record(
        source,
        modality=Modality.IMAGE,
        media_type=header.media_type,
        content_hash=digest,
        width=header.width,
        height=header.height,
        caption=caption,
        **ocr_fields,
    )
    return DecodedFile(
        source, Outcome.DECODED, record=record, text=caption, prepared_images=prepared, ocr_ran=bool(ocr_fields)
    )


def _read_words(source: SourceFile, image: Image.Image, ocr: ImageToText) -> dict[str, Any]:
    """The record's OCR fields; a reader that fails on one image leaves it without text, with a warning."""
    try:
        result = ocr.read(image)
    except Exception:  # an odd image must not fail the file: its pixels are still embedded
        log.warning("OCR failed on %s; it is indexed without its text", source.path, exc_info=True)
        result = OcrResult()
    if result.truncated:
        log.info("OCR limits reached on %s (XMODAL_OCR_MAX_BOXES / XMODAL_OCR_MAX_SECONDS)", source.path)
    lines = [line.to_dict() for line in result.lines]
    return {"ocr_text": result.text, "ocr_lines": lines or None, "ocr_engine": OCR_ENGINE}


def _add_ocr(
    source: SourceFile, data: bytes, digest: str, indexed: Item, limits: ReadLimits, ocr: ImageToText
) -> DecodedFile:
    """An image indexed before OCR ran: read its words, and keep every vector it has (nothing is re-embedded)."""
    decoded = decode_image(data, limits.image)
    record = _base_record(
        source,
        modality=Modality.IMAGE,
        media_type=decoded.media_type,
        content_hash=digest,
        width=decoded.width,
        height=decoded.height,
        caption=indexed.caption,
        **_read_words(source, decoded.image, ocr),
    )
    return DecodedFile(
        source, Outcome.DECODED, record=record, text=indexed.caption, reuse_from=indexed.id, ocr_ran=True
    )


def _jpeg_on_device(data: bytes, preparers: Preparers) -> dict[str, Any] | None:
    """Every image space's input from the JPEG's bytes, if every one of them decodes JPEGs itself."""
    if not preparers.images or not data.startswith(b"\xff\xd8\xff") or set(preparers.jpegs) != set(preparers.images):
        return None
    prepared = {space: prepare(data) for space, prepare in preparers.jpegs.items()}
    return prepared if all(value is not None for value in prepared.values()) else None


def reusable_original(
    source: SourceFile, digest: str, caption: str | None, same_content: Callable[[str], Item | None]
) -> Item | None:
    """The indexed item whose vectors ``source`` may take: the same bytes at another path, with the same caption
    (the caption is embedded too); ``None`` when the file must be encoded."""
    original = same_content(digest)
    if original is None or original.path == str(source.path) or caption != original.caption:
        return None
    return original


def _reuse(
    source: SourceFile, data: bytes, digest: str, limits: ReadLimits, same_content: Callable[[str], Item | None]
) -> DecodedFile | None:
    """A moved or copied file: the same bytes are indexed already, with the same caption, so their vectors
    serve again and nothing is decoded or encoded."""
    original = reusable_original(source, digest, _caption(source, limits), same_content)
    if original is None:
        return None
    record = _base_record(
        source,
        modality=original.modality,
        media_type=original.media_type,
        content_hash=digest,
        width=original.width,
        height=original.height,
        duration=original.duration,
        caption=original.caption,
        text_excerpt=original.text_excerpt,
        transcript=original.transcript,
        transcript_segments=original.transcript_segments,
        ocr_text=original.ocr_text,
        ocr_lines=original.ocr_lines,
        ocr_engine=original.ocr_engine,
    )
    body = original.transcript if original.modality == Modality.AUDIO else None
    if original.modality == Modality.TEXT:
        body = decode_text(data)
    return DecodedFile(source, Outcome.DECODED, record=record, text=body, reuse_from=original.id)


def _caption(source: SourceFile, limits: ReadLimits) -> str | None:
    if source.sidecar is None:
        return None
    try:
        return caption_from_sidecar(source.sidecar.read_bytes(), limits.max_caption_chars)
    except OSError:
        return None  # a sidecar that vanished or cannot be read only costs the caption


def _decode_audio(
    source: SourceFile, data: bytes, digest: str, limits: ReadLimits, preparers: Preparers
) -> DecodedFile:
    decoded = decode_audio(data, limits.audio)
    caption = _caption(source, limits)
    transcript = None
    if preparers.transcriber is not None:
        transcript = preparers.transcriber.transcribe(decoded.samples, decoded.sample_rate)
    record = _base_record(
        source,
        modality=Modality.AUDIO,
        media_type=decoded.media_type,
        content_hash=digest,
        duration=decoded.duration,
        caption=caption,
        transcript=transcript.text if transcript else None,
        transcript_segments=[asdict(segment) for segment in transcript.segments] if transcript else None,
        text_excerpt=transcript.text[: limits.text_excerpt_chars] if transcript else None,
    )
    prepared = {space: prepare(decoded.samples, decoded.sample_rate) for space, prepare in preparers.audio.items()}
    text = transcript.text if transcript else caption
    return DecodedFile(
        source,
        Outcome.DECODED,
        record=record,
        text=text,
        prepared_audio=prepared,
        transcribed=preparers.transcriber is not None,
    )


def _decode_text(source: SourceFile, data: bytes, digest: str, limits: ReadLimits) -> DecodedFile:
    if len(data) > limits.max_text_bytes:
        raise DecodeError(
            f"text file is {len(data)} bytes, over the limit of {limits.max_text_bytes} (XMODAL_MAX_TEXT_BYTES)"
        )
    text = decode_text(data)
    if not text.strip():
        raise DecodeError("text file holds only whitespace")
    excerpt = " ".join(text[: limits.text_excerpt_chars * 2].split())[: limits.text_excerpt_chars]
    record = _base_record(
        source,
        modality=Modality.TEXT,
        media_type="text/markdown" if source.extension == ".md" else "text/plain",
        content_hash=digest,
        text_excerpt=excerpt,
    )
    return DecodedFile(source, Outcome.DECODED, record=record, text=text)
