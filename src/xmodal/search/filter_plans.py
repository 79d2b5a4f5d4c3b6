"""What a filter costs once per publication instead of once per query.

How many items pass a filter, how many of a space's vectors belong to them and, when few do, which, are counted
in the catalog the first time a filter is seen and kept until a space publishes again (the key holds every
space's manifest sequence). That is safe for the vector search: a vector id enters an index only with a
publication, and a row deleted since is dropped when hits are resolved. A filter that no item passes, or that no
vector of a space belongs to, is answered without searching (the catalog already said there is nothing).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from xmodal.search.retrieval import FilterPlan
from xmodal.spaces import SpaceSet, VectorSpace
from xmodal.store.catalog import Catalog
from xmodal.store.filters import ItemFilter

Generation = tuple[tuple[str, int], ...]  # (space, manifest sequence) of every space


@dataclass(frozen=True, slots=True)
class ItemShare:
    """How many indexed items pass a filter, of how many."""

    passing: int
    total: int

    def selective(self, below: float) -> bool:
        return self.passing / max(1, self.total) <= below


class FilterPlans:
    """Filter counts and per-space plans, per publication; thread-safe. ``entries``: filters remembered (LRU)."""

    def __init__(self, catalog: Catalog, spaces: SpaceSet, *, selective_below: float, entries: int = 256) -> None:
        self._catalog, self._spaces, self._below = catalog, spaces, selective_below
        self._shares: LRUCache[tuple[ItemFilter, Generation], ItemShare] = LRUCache(maxsize=max(1, entries))
        self._plans: LRUCache[tuple[ItemFilter, str, int], FilterPlan] = LRUCache(maxsize=max(1, entries))
        self._lock = threading.Lock()

    def _generation(self) -> Generation:
        return tuple((space.key, _sequence(space)) for space in self._spaces)

    def share(self, item_filter: ItemFilter) -> ItemShare:
        """How many items pass ``item_filter`` (two counts, once per filter and publication)."""
        key = (item_filter, self._generation())
        with self._lock:
            found = self._shares.get(key)
        if found is None:
            found = ItemShare(self._catalog.count_matching(item_filter), self._catalog.count_items())
            with self._lock:
                self._shares[key] = found
        return found

    def selective(self, item_filter: ItemFilter) -> bool:
        """Whether few enough items pass to search within them (``filter_selective_below``)."""
        return not item_filter.empty and self.share(item_filter).selective(self._below)

    def nothing_passes(self, item_filter: ItemFilter) -> bool:
        return not item_filter.empty and self.share(item_filter).passing == 0

    def plan(self, space: VectorSpace, item_filter: ItemFilter) -> FilterPlan:
        """How ``space`` applies ``item_filter``: not at all, within the few vectors that pass (none: no search),
        or by filtering the hits of a search that over-fetches."""
        if item_filter.empty:
            return FilterPlan(item_filter)
        key = (item_filter, space.key, _sequence(space))  # each version of a space has its own rows
        with self._lock:
            found = self._plans.get(key)
        if found is not None:
            return found
        if self.nothing_passes(item_filter):
            found = FilterPlan(item_filter, np.zeros(0, dtype=np.int64))
        else:
            vectors = self._catalog.count_vectors_matching(space.key, item_filter)
            if vectors == 0:  # no vector of this space belongs to an item that passes: nothing to search
                found = FilterPlan(item_filter, np.zeros(0, dtype=np.int64))
            elif vectors / max(1, space.size) <= self._below:
                found = FilterPlan.build(space, item_filter, selective=True)
            else:
                found = FilterPlan(item_filter)
        with self._lock:
            self._plans[key] = found
        return found


def _sequence(space: VectorSpace) -> int:
    snapshot = space.stored_index()
    return snapshot.manifest.seq if snapshot is not None else 0
