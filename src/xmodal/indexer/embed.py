"""Pipeline stage 2: turn a batch of decoded files into vectors, per space.

A space embeds a file by its own modality when it can (an image's pixels in ``clip``); otherwise by the file's
text when it has one and the space embeds text (an image's caption in ``text``). Long texts are split into
chunks that fit the encoder's context, one vector each. The words read from an image (OCR) are its own text: they
go into the spaces that embed text but not images (``text``), as chunks of ``origin="ocr"``, beside the caption.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xmodal import ocr_text
from xmodal.encoders.batching import BatchSizer, BatchSizers
from xmodal.indexer.reader import DecodedFile
from xmodal.modality import Modality
from xmodal.spaces import VectorSpace
from xmodal.store.catalog import NewEmbedding

OCR = "ocr"  # the origin of a vector embedded from the words read in an image


@dataclass(slots=True)
class FileVectors:
    """One file's vectors in one space, with the chunk each came from."""

    embeddings: list[NewEmbedding] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)


def embed_batch(
    files: Sequence[DecodedFile], spaces: Sequence[VectorSpace], *, sizers: BatchSizers
) -> list[dict[str, FileVectors]]:
    """For each file (in order): space name -> its vectors. Files a space cannot embed are absent there; a copy of
    an indexed file gets that file's vectors, and nothing is encoded for it. Each space and input kind is batched
    by its own sizer from ``sizers``."""
    results: list[dict[str, FileVectors]] = [{} for _ in files]
    for position, decoded in enumerate(files):
        if decoded.reuse_from is not None:
            results[position] = _copied(decoded.reuse_from, spaces)
    for space in spaces:
        _embed_images(files, space, results, sizers.of((space.name, Modality.IMAGE)))
        _embed_audio(files, space, results, sizers.of((space.name, Modality.AUDIO)))
        _embed_texts(files, space, results, sizers.of((space.name, Modality.TEXT)))
        _embed_ocr(files, space, results, sizers.of((space.name, Modality.TEXT)))
    return results


def _copied(item_id: int, spaces: Sequence[VectorSpace]) -> dict[str, FileVectors]:
    """The vectors an already indexed item has in each space, to serve a copy of its file."""
    copied: dict[str, FileVectors] = {}
    for space in spaces:
        rows = space.catalog.embeddings_of(item_id, space.key)
        if not rows:
            continue
        found, vectors = space.writer().vectors_of(np.asarray([row.id for row in rows]))
        if len(found) != len(rows):
            continue  # not all published or buffered: encode the file afresh
        embeddings = [NewEmbedding(row.chunk, row.start, row.end, row.origin) for row in rows]
        copied[space.name] = FileVectors(embeddings, list(vectors))
    return copied


def _embed_audio(
    files: Sequence[DecodedFile], space: VectorSpace, results: list[dict[str, FileVectors]], sizer: BatchSizer
) -> None:
    """One vector per audio window; the window's start and end (ms) go into the embedding row."""
    if not space.embeds(Modality.AUDIO):
        return
    owners: list[int] = []
    windows: list[NewEmbedding] = []
    inputs: list[Any] = []
    for position, decoded in enumerate(files):
        for number, (start_ms, end_ms, features) in enumerate(decoded.prepared_audio.get(space.name, [])):
            owners.append(position)
            windows.append(NewEmbedding(chunk=number, start=start_ms, end=end_ms))
            inputs.append(features)
    _collect(space.encoder.encode_prepared_audio, space.name, owners, windows, inputs, results, sizer)


def _embed_images(
    files: Sequence[DecodedFile], space: VectorSpace, results: list[dict[str, FileVectors]], sizer: BatchSizer
) -> None:
    if not space.embeds(Modality.IMAGE):
        return
    positions = [i for i, f in enumerate(files) if space.name in f.prepared_images]
    if not positions:
        return
    prepared = [files[i].prepared_images[space.name] for i in positions]
    vectors = sizer.encode(space.encoder.encode_prepared_images, prepared)
    for position, vector in zip(positions, vectors, strict=True):
        results[position][space.name] = FileVectors([NewEmbedding()], [vector])


def _embed_texts(
    files: Sequence[DecodedFile],
    space: VectorSpace,
    results: list[dict[str, FileVectors]],
    sizer: BatchSizer,
) -> None:
    if not space.embeds(Modality.TEXT):
        return
    owners: list[int] = []
    chunks: list[NewEmbedding] = []
    texts: list[str] = []
    for position, decoded in enumerate(files):
        if decoded.text is None or space.name in results[position]:
            continue
        for number, chunk in enumerate(space.encoder.chunk(decoded.text)):
            owners.append(position)
            chunks.append(NewEmbedding(chunk=number, start=chunk.start, end=chunk.end))
            texts.append(chunk.text)
    _collect(space.encoder.encode_texts, space.name, owners, chunks, texts, results, sizer)


def _embed_ocr(
    files: Sequence[DecodedFile], space: VectorSpace, results: list[dict[str, FileVectors]], sizer: BatchSizer
) -> None:
    """The OCR text of each image, chunked like any text; each chunk is embedded with its words cleaned up (split
    where the reader dropped the spaces, mis-read letters corrected) and keeps its span in the raw OCR text."""
    if not space.embeds(Modality.TEXT) or space.embeds(Modality.IMAGE):
        return
    owners: list[int] = []
    chunks: list[NewEmbedding] = []
    texts: list[str] = []
    for position, decoded in enumerate(files):
        text = decoded.record.ocr_text if decoded.record is not None else None
        bucket = results[position].get(space.name)
        if not text or (bucket is not None and any(e.origin == OCR for e in bucket.embeddings)):
            continue  # no words, or a kept item whose OCR vectors were copied
        first = len(bucket.embeddings) if bucket is not None else 0
        for number, chunk in enumerate(space.encoder.chunk(text)):
            owners.append(position)
            chunks.append(NewEmbedding(chunk=first + number, start=chunk.start, end=chunk.end, origin=OCR))
            texts.append(ocr_text.clean(chunk.text) or chunk.text)
    _collect(space.encoder.encode_texts, space.name, owners, chunks, texts, results, sizer)


def _collect(
    encode: Callable[[Sequence[Any]], np.ndarray],
    space: str,
    owners: list[int],
    embeddings: list[NewEmbedding],
    inputs: Sequence[Any],
    results: list[dict[str, FileVectors]],
    sizer: BatchSizer,
) -> None:
    """Encode ``inputs`` in batches and file each vector under the file that owns it."""
    if not inputs:
        return
    for position, vector in enumerate(sizer.encode(encode, inputs)):
        bucket = results[owners[position]].setdefault(space, FileVectors())
        bucket.embeddings.append(embeddings[position])
        bucket.vectors.append(vector)
