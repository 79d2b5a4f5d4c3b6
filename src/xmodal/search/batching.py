"""Query encodes that arrive together run as one encoder batch.

The first caller of an open batch leads it: it waits up to ``wait_s`` for others (less when the batch fills),
then encodes everyone's texts in one call and hands each caller its rows. Under load this turns many small
encoder calls into few large ones, so throughput grows with concurrency; alone, a query waits ``wait_s`` more.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np


class _Batch:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.closed = False
        self.done = threading.Event()
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None


class EncodeBatcher:
    """Batches concurrent ``encode(texts)`` calls (thread-safe; one per encoder)."""

    def __init__(self, encode: Callable[[Sequence[str]], np.ndarray], *, wait_s: float, max_texts: int) -> None:
        if wait_s < 0 or max_texts < 1:
            raise ValueError("need wait_s >= 0 and max_texts >= 1")
        self._encode = encode
        self._wait_s = wait_s
        self._max = max_texts
        self._lock = threading.Condition()
        self._open: _Batch | None = None
        self.calls = 0  # encoder calls made, for tests and metrics

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts``, computed together with whatever other callers sent meanwhile."""
        texts = list(texts)
        if self._wait_s == 0 or len(texts) >= self._max:
            self.calls += 1
            return self._encode(texts)
        with self._lock:
            batch = self._open
            leader = batch is None or len(batch.texts) + len(texts) > self._max
            if leader:
                batch = self._open = _Batch()
            assert batch is not None
            start = len(batch.texts)
            batch.texts.extend(texts)
            if len(batch.texts) >= self._max:
                self._lock.notify_all()
        if leader:
            self._lead(batch)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        assert batch.vectors is not None
        return batch.vectors[start : start + len(texts)]

    def _lead(self, batch: _Batch) -> None:
        deadline = time.monotonic() + self._wait_s
        with self._lock:
            while len(batch.texts) < self._max and (remaining := deadline - time.monotonic()) > 0:
                self._lock.wait(remaining)
            batch.closed = True
            if self._open is batch:
                self._open = None
        try:
            self.calls += 1
            batch.vectors = self._encode(batch.texts)
        except BaseException as exc:  # every caller of the batch gets the encoder's error
            batch.error = exc
        finally:
            batch.done.set()
