"""Pipeline stage 2: turn a batch of decoded files into vectors, per space.

A space embeds a file by its own modality when it can (an image's pixels in ``clip``); otherwise by the file's
text when it has one and the space embeds text (an image's caption in ``text``). Long texts are split into
chunks that fit the encoder's context, one vector each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from xmodal.indexer.reader import DecodedFile
from xmodal.modality import Modality
from xmodal.spaces import VectorSpace
from xmodal.store.catalog import NewEmbedding


@dataclass(slots=True)
class FileVectors:
    """One file's vectors in one space, with the chunk each came from."""

    embeddings: list[NewEmbedding] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)


def embed_batch(
    files: Sequence[DecodedFile], spaces: Sequence[VectorSpace], *, batch_size: int
) -> list[dict[str, FileVectors]]:
    """For each file (in order): space name -> its vectors. Files a space cannot embed are absent there."""
    results: list[dict[str, FileVectors]] = [{} for _ in files]
    for space in spaces:
        _embed_images(files, space, results)
        _embed_texts(files, space, results, batch_size=batch_size)
    return results


def _embed_images(files: Sequence[DecodedFile], space: VectorSpace, results: list[dict[str, FileVectors]]) -> None:
    if not space.embeds(Modality.IMAGE):
        return
    positions = [i for i, f in enumerate(files) if space.name in f.prepared_images]
    if not positions:
        return
    vectors = space.encoder.encode_prepared_images([files[i].prepared_images[space.name] for i in positions])
    for position, vector in zip(positions, vectors, strict=True):
        results[position][space.name] = FileVectors([NewEmbedding()], [vector])


def _embed_texts(
    files: Sequence[DecodedFile],
    space: VectorSpace,
    results: list[dict[str, FileVectors]],
    *,
    batch_size: int,
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
    for start in range(0, len(texts), batch_size):
        vectors = space.encoder.encode_texts(texts[start : start + batch_size])
        for offset, vector in enumerate(vectors):
            owner = owners[start + offset]
            bucket = results[owner].setdefault(space.name, FileVectors())
            bucket.embeddings.append(chunks[start + offset])
            bucket.vectors.append(vector)
