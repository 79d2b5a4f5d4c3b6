"""Query encodes that arrive together run as one encoder batch, on one thread per encoder.

Callers put their texts on a queue and wait; a dedicated encoder thread takes whatever is waiting, encodes it in
one call and hands each caller its rows. While a batch is being encoded the next one fills up on its own, so under
load many small encoder calls become few large ones and only one forward runs per model at a time (no two
forwards fighting over the same cores). An idle server encodes a lone query at once; only when the previous batch
was shared (the server is under load) does the thread wait up to ``wait_s`` for more callers before encoding.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Request:
    texts: list[str]
    result: Future[np.ndarray] = field(default_factory=Future)


_STOP = object()


class EncodeBatcher:
    """Batches concurrent ``encode(texts)`` calls on a dedicated thread (thread-safe; one per encoder)."""

    def __init__(
        self, encode: Callable[[Sequence[str]], np.ndarray], *, wait_s: float, max_texts: int, name: str = "encoder"
    ) -> None:
        if wait_s < 0 or max_texts < 1:
            raise ValueError("need wait_s >= 0 and max_texts >= 1")
        self._encode = encode
        self._wait_s = wait_s
        self._max = max_texts
        self._name = name
        self._queue: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.calls = 0  # encoder calls made, for tests and metrics
        self.batch_sizes: list[int] = []  # texts per encoder call, the last 1,000

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts``, computed together with whatever other callers sent meanwhile."""
        return self.submit(texts).result()

    def submit(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """The vectors of ``texts``, to come (see :meth:`encode`): a caller can wait for several encoders at once."""
        texts = list(texts)
        if self._wait_s == 0:  # batching off: the caller's thread encodes, now
            done: Future[np.ndarray] = Future()
            try:
                done.set_result(self._call(texts))
            except Exception as exc:  # handed to the caller as encode() would raise it
                done.set_exception(exc)
            return done
        self._ensure_thread()
        request = _Request(texts)
        self._queue.put(request)
        return request.result

    @property
    def queued(self) -> int:
        """Requests waiting for the encoder thread (approximate; for metrics and tests)."""
        return self._queue.qsize()

    def close(self) -> None:
        """Stop the encoder thread once the queued requests are answered."""
        with self._start_lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._closed:
                raise RuntimeError(f"the {self._name} batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"xmodal-{self._name}-encode", daemon=True)
                self._thread.start()

    def _call(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        self.batch_sizes = [*self.batch_sizes[-999:], len(texts)]
        return self._encode(texts)

    def _serve(self) -> None:
        loaded = False  # whether the last batch was shared: then wait a little for the next one to fill
        pending: _Request | None = None
        while True:
            first = pending if pending is not None else self._queue.get()
            pending = None
            if first is _STOP:
                return
            assert isinstance(first, _Request)
            batch = [first]
            count = len(first.texts)
            deadline = time.monotonic() + (self._wait_s if loaded else 0.0)
            while count < self._max:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP or count + len(item.texts) > self._max:  # type: ignore[union-attr]
                    pending = item  # type: ignore[assignment]
                    break
                assert isinstance(item, _Request)
                batch.append(item)
                count += len(item.texts)
            loaded = len(batch) > 1 or pending is not None
            self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        texts = [text for request in batch for text in request.texts]
        try:
            vectors = self._call(texts)
        except BaseException as exc:  # every caller of the batch gets the encoder's error
            for request in batch:
                request.result.set_exception(exc)
            return
        start = 0
        for request in batch:
            request.result.set_result(vectors[start : start + len(request.texts)])
            start += len(request.texts)
