"""Pipeline stage 1: read a source file and decode it into an item ready for the encoders.

Runs in worker threads. Every failure becomes an item with status ``failed`` and a reason; nothing raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from PIL import Image

from xmodal.errors import DecodeError
from xmodal.indexer.decode import (
    ImageLimits,
    caption_from_sidecar,
    content_hash,
    decode_image,
    decode_text,
    modality_of,
    sniff,
)
from xmodal.indexer.sources import (
    AUDIO_EXTENSIONS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    SourceFile,
    image_extensions,
)
from xmodal.modality import Modality
from xmodal.store.catalog import ItemRecord
from xmodal.store.models import ItemStatus

ImagePreparer = Callable[[Image.Image], Any]


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
    text_extensions: frozenset[str]


@dataclass(slots=True)
class DecodedFile:
    """A file after stage 1: its catalog record and what the encoders need."""

    source: SourceFile
    outcome: Outcome
    record: ItemRecord | None = None
    text: str | None = None  # the document, or an image's caption
    prepared_images: dict[str, Any] = field(default_factory=dict)  # space name -> encoder input
    reason: str | None = None


def read_file(source: SourceFile, limits: ReadLimits, preparers: Mapping[str, ImagePreparer]) -> DecodedFile:
    """Decode ``source``; ``preparers`` turn an RGB image into each image space's encoder input."""
    ext = source.extension
    if ext in AUDIO_EXTENSIONS or ext in UNSUPPORTED_IMAGE_EXTENSIONS:
        return DecodedFile(source, Outcome.SKIPPED, reason=f"{ext} files are not indexed yet")
    known = ext in limits.text_extensions or ext in image_extensions()
    try:
        if not known and not _sniffs_as_image(source):
            return DecodedFile(source, Outcome.SKIPPED, reason="not an image or a text file")
        return _decode(source, limits, preparers)
    except DecodeError as exc:
        return _failed(source, str(exc))
    except OSError as exc:
        return _failed(source, f"cannot read file: {exc.strerror or exc}")
    except MemoryError:
        return _failed(source, "not enough memory to decode the file")


def _sniffs_as_image(source: SourceFile) -> bool:
    with source.path.open("rb") as handle:
        return modality_of(sniff(handle.read(8192))) is Modality.IMAGE


def _failed(source: SourceFile, reason: str) -> DecodedFile:
    record = _base_record(source, status=ItemStatus.FAILED, error=reason)
    return DecodedFile(source, Outcome.FAILED, record=record, reason=reason)


def _base_record(source: SourceFile, **fields: Any) -> ItemRecord:
    return ItemRecord(
        path=str(source.path),
        source=source.root.as_uri(),
        size=source.size,
        mtime_ns=source.mtime_ns,
        sidecar_path=str(source.sidecar) if source.sidecar else None,
        sidecar_mtime_ns=source.sidecar_mtime_ns,
        **fields,
    )


def _decode(source: SourceFile, limits: ReadLimits, preparers: Mapping[str, ImagePreparer]) -> DecodedFile:
    if source.size == 0:
        raise DecodeError("file is empty (0 bytes)")
    if source.size > limits.max_file_bytes:
        raise DecodeError(
            f"file is {source.size} bytes, over the limit of {limits.max_file_bytes} (XMODAL_MAX_FILE_BYTES)"
        )
    data = source.path.read_bytes()
    mime = sniff(data)
    modality = modality_of(mime)
    if modality is Modality.IMAGE:
        return _decode_image(source, data, limits, preparers)
    if modality is None and source.extension in limits.text_extensions:
        return _decode_text(source, data, limits)
    claimed = source.extension or "(no extension)"
    found = f"{mime} content" if mime else "content that is not a known media format"
    raise DecodeError(f"named as a {claimed} file, but holds {found}")


def _decode_image(
    source: SourceFile, data: bytes, limits: ReadLimits, preparers: Mapping[str, ImagePreparer]
) -> DecodedFile:
    decoded = decode_image(data, limits.image)
    caption = None
    if source.sidecar is not None:
        try:
            caption = caption_from_sidecar(source.sidecar.read_bytes(), limits.max_caption_chars)
        except OSError:
            caption = None  # a sidecar that vanished or cannot be read only costs the caption
    record = _base_record(
        source,
        modality=Modality.IMAGE,
        media_type=decoded.media_type,
        content_hash=content_hash(data),
        width=decoded.width,
        height=decoded.height,
        caption=caption,
    )
    prepared = {space: prepare(decoded.image) for space, prepare in preparers.items()}
    return DecodedFile(source, Outcome.DECODED, record=record, text=caption, prepared_images=prepared)


def _decode_text(source: SourceFile, data: bytes, limits: ReadLimits) -> DecodedFile:
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
        content_hash=content_hash(data),
        text_excerpt=excerpt,
    )
    return DecodedFile(source, Outcome.DECODED, record=record, text=text)
