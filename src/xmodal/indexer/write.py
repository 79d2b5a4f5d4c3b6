"""Pipeline stage 3: commit items with their vectors.

The catalog transaction commits first, then the vectors go into the in-memory indexes, which are saved every
few thousand items and at the end. A crash in between leaves catalog rows without vectors; the next run's
reconciliation (``VectorSpace.reconcile``) removes them, and the items are embedded again.
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
        embeddings = {name: fv.embeddings for name, fv in per_space.items()}
        body = decoded.text if decoded.text != decoded.record.caption else None  # the caption has its own column
        requests.append(WriteRequest(decoded.record, embeddings, body))
        for name, file_vectors in per_space.items():
            stacked.setdefault(name, []).extend(file_vectors.vectors)
    new_ids, old_ids = catalog.write_items(requests)
    spaces.remove_vectors(old_ids)
    added = 0
    for name, ids in new_ids.items():
        spaces[name].checked_index().add(np.asarray(ids, dtype=np.int64), np.stack(stacked[name]))
        added += len(ids)
    return added
