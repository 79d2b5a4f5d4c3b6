"""Query encodes that arrive together run as one encoder call; each caller gets its own rows."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest

from xmodal.search.batching import EncodeBatcher


class CountingEncoder:
    def __init__(self) -> None:
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.batches.append(len(texts))
        return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], dtype=np.float32)


def test_concurrent_callers_share_one_encoder_call() -> None:
    encoder = CountingEncoder()
    # A long window that ends early once the batch is full: all eight callers land in one batch.
    batcher = EncodeBatcher(encoder, wait_s=5.0, max_texts=8)
    start = threading.Barrier(8)
    results: dict[int, np.ndarray] = {}

    def call(number: int) -> None:
        start.wait()
        results[number] = batcher.encode([f"query {number}" * (number + 1)])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert encoder.batches == [8] and batcher.calls == 1
    for number, rows in results.items():
        np.testing.assert_array_equal(rows, encoder([f"query {number}" * (number + 1)]))  # its own row


def test_a_lone_query_is_encoded_after_the_wait() -> None:
    encoder = CountingEncoder()
    batcher = EncodeBatcher(encoder, wait_s=0.001, max_texts=8)
    assert batcher.encode(["a", "bb"]).shape == (2, 2)
    assert encoder.batches == [2]


def test_an_encoder_error_reaches_every_caller_of_the_batch() -> None:
    def failing(texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("model exploded")

    batcher = EncodeBatcher(failing, wait_s=0.001, max_texts=4)
    with pytest.raises(RuntimeError, match="model exploded"):
        batcher.encode(["x"])


def test_zero_wait_turns_batching_off() -> None:
    encoder = CountingEncoder()
    batcher = EncodeBatcher(encoder, wait_s=0, max_texts=4)
    batcher.encode(["a"])
    batcher.encode(["b"])
    assert encoder.batches == [1, 1]
