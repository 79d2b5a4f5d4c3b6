"""Searching one space: ANN search, vector ids back to items, best chunk per item, modality filter."""

from __future__ import annotations

import numpy as np

from xmodal.modality import Modality
from xmodal.search.query import SpaceHit
from xmodal.spaces import VectorSpace

_OVERFETCH = 4  # first ask for k * this many vectors: chunks and filtered-out items take slots


def search_space(
    space: VectorSpace, query: np.ndarray, *, k: int, modalities: frozenset[Modality] | None
) -> list[SpaceHit]:
    """The ``k`` best items of ``space`` for one query vector, best first, ties broken by item id.

    Asks the index for more vectors until ``k`` distinct items pass the filter or the index is exhausted.
    """
    index = space.stored_index()
    if index is None or index.ntotal == 0:
        return []
    fetch = k * _OVERFETCH
    while True:
        scores, ids = index.search(query.reshape(1, -1), fetch)
        hits = _best_per_item(space, scores[0], ids[0], modalities)
        if len(hits) >= k or fetch >= index.ntotal:
            return hits[:k]
        fetch = min(fetch * 4, index.ntotal)


def _best_per_item(
    space: VectorSpace, scores: np.ndarray, ids: np.ndarray, modalities: frozenset[Modality] | None
) -> list[SpaceHit]:
    valid = ids >= 0
    scores, ids = scores[valid], ids[valid]
    resolved = space.catalog.resolve_vectors(ids.tolist())
    best: dict[int, SpaceHit] = {}
    for score, vector_id in zip(scores.tolist(), ids.tolist(), strict=True):
        hit = resolved.get(vector_id)
        if hit is None or (modalities is not None and hit.modality not in modalities):
            continue
        current = best.get(hit.item_id)
        if current is None or score > current.score:
            best[hit.item_id] = SpaceHit(hit.item_id, float(score), hit.modality, space.name, hit.start, hit.end)
    return sorted(best.values(), key=lambda h: (-h.score, h.item_id))
