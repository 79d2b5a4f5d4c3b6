"""Query encodes run on one encoder thread per model: callers that wait together share one encoder call, each
gets its own rows, and an encoder error reaches every caller of the failed batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from xmodal.search.batching import EncodeBatcher


def rows_of(texts: Sequence[str]) -> np.ndarray:
    return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], dtype=np.float32)


def wait_for(condition: Callable[[], bool], timeout_s: float = 120) -> None:
    """Yield the CPU until ``condition`` holds (it depends on other threads' progress, not on time)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the other callers never queued"
        time.sleep(0)


class GatedEncoder:
    """Records each call's batch; the first call holds the encoder until ``others`` callers are queued, so they
    pile up behind it as they would behind a slow forward. ``fail_on``: calls (0-based) that raise."""

    def __init__(self, others: int, fail_on: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[str]] = []
        self.batcher: EncodeBatcher | None = None
        self._others = others
        self._fail_on = fail_on

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        if len(self.batches) == 1:
            assert self.batcher is not None
            wait_for(lambda: self.batcher.queued >= self._others)  # type: ignore[union-attr]
        if len(self.batches) - 1 in self._fail_on:
            raise RuntimeError(f"model exploded on call {len(self.batches) - 1}")
        return rows_of(texts)


def run_callers(batcher: EncodeBatcher, texts: list[str]) -> dict[int, np.ndarray | BaseException]:
    """``batcher.encode([text])`` from one thread per text; the first thread starts before the others."""
    results: dict[int, np.ndarray | BaseException] = {}

    def call(number: int) -> None:
        try:
            results[number] = batcher.encode([texts[number]])
        except BaseException as exc:  # the test inspects what each caller got
            results[number] = exc

    first = threading.Thread(target=call, args=(0,))
    first.start()
    wait_for(lambda: batcher.calls == 1)  # the first query is being encoded, alone
    others = [threading.Thread(target=call, args=(n,)) for n in range(1, len(texts))]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    return results


def test_eight_concurrent_queries_take_fewer_encoder_calls_than_queries() -> None:
    encoder = GatedEncoder(others=7)
    batcher = encoder.batcher = EncodeBatcher(encoder, wait_s=0.002, max_texts=32)
    texts = [f"query {n} " * (n + 1) for n in range(8)]
    try:
        results = run_callers(batcher, texts)
    finally:
        batcher.close()
    assert batcher.calls == len(encoder.batches) == 2 < len(texts)  # the lone first one, then the seven together
    assert sorted(map(len, encoder.batches)) == [1, 7]
    for number, rows in results.items():
        assert isinstance(rows, np.ndarray)
        np.testing.assert_array_equal(rows, rows_of([texts[number]]))  # its own row


def test_a_failing_encode_reaches_every_waiting_caller() -> None:
    encoder = GatedEncoder(others=7, fail_on=frozenset({1}))  # the batch of the seven waiting callers fails
    batcher = encoder.batcher = EncodeBatcher(encoder, wait_s=0.002, max_texts=32)
    texts = [f"q{n}" for n in range(8)]
    try:
        results = run_callers(batcher, texts)
        assert isinstance(results[0], np.ndarray)  # its batch was encoded before the failure
        failed = [results[n] for n in range(1, 8)]
        assert all(isinstance(r, RuntimeError) and "model exploded on call 1" in str(r) for r in failed), failed
        np.testing.assert_array_equal(batcher.encode(["again"]), rows_of(["again"]))  # the thread lives on
    finally:
        batcher.close()


def test_an_error_of_a_lone_query_reaches_its_caller() -> None:
    def failing(texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("model exploded")

    batcher = EncodeBatcher(failing, wait_s=0.002, max_texts=4)
    try:
        with pytest.raises(RuntimeError, match="model exploded"):
            batcher.encode(["x"])
    finally:
        batcher.close()


def test_an_idle_encoder_does_not_wait_for_company() -> None:
    batcher = EncodeBatcher(rows_of, wait_s=60.0, max_texts=8)  # a wait this long would show
    try:
        started = time.monotonic()
        for text in ("a", "bb", "ccc"):
            np.testing.assert_array_equal(batcher.encode([text]), rows_of([text]))
        assert time.monotonic() - started < 30
        assert batcher.calls == 3
    finally:
        batcher.close()


def test_batches_never_exceed_the_maximum() -> None:
    encoder = GatedEncoder(others=9)
    batcher = encoder.batcher = EncodeBatcher(encoder, wait_s=0.002, max_texts=4)
    try:
        results = run_callers(batcher, [f"t{n}" for n in range(10)])
    finally:
        batcher.close()
    assert all(isinstance(r, np.ndarray) for r in results.values())
    assert [len(b) for b in encoder.batches] == [1, 4, 4, 1]


def test_zero_wait_turns_the_encoder_thread_off() -> None:
    callers: list[str] = []

    def encode(texts: Sequence[str]) -> np.ndarray:
        callers.append(threading.current_thread().name)
        return rows_of(texts)

    batcher = EncodeBatcher(encode, wait_s=0, max_texts=4)
    batcher.encode(["a"])
    batcher.encode(["b"])
    assert callers == [threading.current_thread().name] * 2
