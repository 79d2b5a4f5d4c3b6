"""The vectors of recent text queries, so a repeated query (pages, clients polling) skips the encoder."""

from __future__ import annotations

import threading

import numpy as np
from cachetools import LRUCache

CacheKey = tuple[str, str, str]  # (space, model fingerprint, text)


class QueryEmbeddingCache:
    """A thread-safe LRU of unit query vectors keyed by (space, model fingerprint, text); size 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("a cache size cannot be negative")
        self._entries: LRUCache[CacheKey, np.ndarray] | None = LRUCache(maxsize=size) if size else None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> np.ndarray | None:
        """A copy of the cached vector of ``key``, or None."""
        if self._entries is None:
            return None
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if vector is None else vector.copy()

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is cached (not counted as a hit or a miss, and not made recent)."""
        if self._entries is None:
            return False
        with self._lock:
            return key in self._entries

    def put(self, key: CacheKey, vector: np.ndarray) -> None:
        """Remember a copy of ``vector``."""
        if self._entries is None:
            return
        stored = np.array(vector, dtype=np.float32)
        with self._lock:
            self._entries[key] = stored
