"""Searching one space: ANN search, vector ids back to items, best chunk per item, item filters.

A selective filter (few items pass) restricts the FAISS search itself with an id selector; otherwise the space is
searched with over-fetching and the hits are filtered afterwards, fetching more until ``k`` items pass or the
space is exhausted. Either way a filtered-out item is never returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodal.search.query import SpaceHit
from xmodal.spaces import VectorSpace
from xmodal.store.ann import SEARCH_OVERFETCH
from xmodal.store.filters import ItemFilter

_OVERFETCH = SEARCH_OVERFETCH  # first ask for k * this many vectors: chunks and filtered-out items take slots


@dataclass(frozen=True, slots=True)
class FilterPlan:
    """How one space applies a filter: no filter, an id selector, or filtering after the search."""

    item_filter: ItemFilter
    selector_ids: np.ndarray | None = None  # vector ids allowed, when the filter is selective

    @classmethod
    def build(cls, space: VectorSpace, item_filter: ItemFilter, *, selective: bool) -> FilterPlan:
        """``selective``: few enough vectors pass (see ``search.filter_plans``) to restrict the search itself."""
        if item_filter.empty or not selective:
            return cls(item_filter)
        ids = space.catalog.vector_ids_of_matching(space.key, item_filter)
        return cls(item_filter, np.asarray(sorted(ids), dtype=np.int64))


def search_space(space: VectorSpace, query: np.ndarray, *, k: int, plan: FilterPlan | None = None) -> list[SpaceHit]:
    """The ``k`` best items of ``space`` for one query vector, best first, ties broken by item id."""
    index = space.stored_index()
    if index is None or index.ntotal == 0:
        return []
    plan = plan or FilterPlan(ItemFilter())
    if plan.selector_ids is not None and len(plan.selector_ids) == 0:
        return []
    limit = index.ntotal if plan.selector_ids is None else len(plan.selector_ids)
    fetch = min(k * _OVERFETCH, limit)
    post_filter = plan.selector_ids is None and not plan.item_filter.empty
    while True:
        scores, ids = index.search(query.reshape(1, -1), fetch, allowed=plan.selector_ids)
        hits = _best_per_item(space, scores[0], ids[0])
        if post_filter and plan.item_filter.modality_only:
            wanted = plan.item_filter.modalities or frozenset()
            hits = [hit for hit in hits if hit.modality in wanted]
        elif post_filter:
            allowed = space.catalog.matching_ids(plan.item_filter, within=[h.item_id for h in hits])
            hits = [hit for hit in hits if hit.item_id in allowed]
        if len(hits) >= k or fetch >= limit:
            return hits[:k]
        fetch = min(fetch * 4, limit)


def _best_per_item(space: VectorSpace, scores: np.ndarray, ids: np.ndarray) -> list[SpaceHit]:
    valid = ids >= 0
    scores, ids = scores[valid], ids[valid]
    resolved = space.catalog.resolve_vectors(ids.tolist())
    best: dict[int, SpaceHit] = {}
    for score, vector_id in zip(scores.tolist(), ids.tolist(), strict=True):
        hit = resolved.get(vector_id)
        if hit is None:
            continue
        current = best.get(hit.item_id)
        if current is None or score > current.score:
            best[hit.item_id] = SpaceHit(
                hit.item_id, float(score), hit.modality, space.name, hit.start, hit.end, vector_id
            )
    return sorted(best.values(), key=lambda h: (-h.score, h.item_id))
