"""Pipeline stage 3: commit items with their vectors.

The catalog transaction commits first (it also queues the vectors of replaced rows for deletion), then the
vectors go to each space's writer, which publishes them as a segment every few thousand items and at the end. A
crash in between leaves catalog rows above the last publication's high-water mark; the next run's reconciliation
(``VectorSpace.reconcile``) forgets them, and the items are embedded again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmodal.indexer.embed import FileVectors
from xmodal.indexer.reader import DecodedFile
from xmodal.spaces import SpaceSet
from xmodal.store.catalog import Catalog, WriteRequest


def write_batch(
    catalog: Catalog,
    spaces: SpaceSet,
    files: Sequence[DecodedFile],
    vectors: Sequence[dict[str, FileVectors]],
) -> int:
    """Store ``files`` (decoded or failed) and their vectors; returns how many vectors were added."""
    requests: list[WriteRequest] = []
    stacked: dict[str, list[np.ndarray]] = {}
    for decoded, per_space in zip(files, vectors, strict=True):
        assert decoded.record is not None
        embeddings = {spaces[name].key: fv.embeddings for name, fv in per_space.items()}  # rows of its version
        body = decoded.text if decoded.text != decoded.record.caption else None  # the caption has its own column
        requests.append(WriteRequest(decoded.record, embeddings, body))
        for name, file_vectors in per_space.items():
            stacked.setdefault(name, []).extend(file_vectors.vectors)
    new_ids, _ = catalog.write_items(requests)
    by_key = {space.key: space for space in spaces}
    added = 0
    for key, ids in new_ids.items():
        space = by_key[key]
        space.writer().add(np.asarray(ids, dtype=np.int64), np.stack(stacked[space.name]))
        added += len(ids)
    return added
