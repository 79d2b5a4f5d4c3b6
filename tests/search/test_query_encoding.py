"""Text queries through the engine: concurrent ones share encoder calls, repeated ones skip the encoder."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_settings, write_corpus
from tests.search.test_batching import wait_for
from xmodal.encoders.base import Encoder
from xmodal.engine import Engine


@pytest.fixture
def indexed(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[..., Encoder]
) -> Iterator[Engine]:
    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir, query_cache_size=0)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([write_corpus(tmp_path / "corpus", images=4, texts=4)])
        yield engine


def count_clip_encodes(engine: Engine, monkeypatch: pytest.MonkeyPatch, *, hold_for: int) -> list[int]:
    """Batch sizes of the clip encoder's text calls; the first call holds the encoder until ``hold_for`` more
    queries are in it or wait behind it (the first batch may already hold several: threads start close together),
    as they would behind a slow forward on a busy server."""
    encoder = engine.spaces["clip"].encoder
    original = encoder._encode_queries
    batcher = engine._searcher.encode_batchers["clip"]
    sizes: list[int] = []

    def counted(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        if len(sizes) == 1 and hold_for:
            wait_for(lambda: len(texts) - 1 + batcher.queued >= hold_for)
        return original(texts)

    monkeypatch.setattr(encoder, "_encode_queries", counted)
    return sizes


def test_eight_concurrent_text_queries_cause_fewer_encoder_calls(
    indexed: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = {n: [r.item_id for r in indexed.search(f"query number {n}", space="clip", k=3)] for n in range(8)}
    sizes = count_clip_encodes(indexed, monkeypatch, hold_for=7)
    found: dict[int, list[int] | BaseException] = {}

    def search(number: int) -> None:
        try:
            found[number] = [r.item_id for r in indexed.search(f"query number {number}", space="clip", k=3)]
        except BaseException as exc:  # shown by the assertion below
            found[number] = exc

    threads = [threading.Thread(target=search, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(sizes) == 8 and len(sizes) < 8, sizes  # eight queries, fewer encoder calls
    assert found == expected  # batched encodes answer as single ones do


def test_a_repeated_text_query_skips_the_encoder(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[..., Encoder], monkeypatch
) -> None:
    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir, query_cache_size=16)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([write_corpus(tmp_path / "corpus", images=3, texts=2)])
        sizes = count_clip_encodes(engine, monkeypatch, hold_for=0)
        first = engine.search("a red square", space="clip", k=3)
        again = engine.search("a red square", space="clip", k=3)
        engine.search("a blue circle", space="clip", k=3)
    assert sizes == [1, 1]  # the repeat came from the cache; the new text was encoded
    assert [(r.item_id, r.score) for r in again] == [(r.item_id, r.score) for r in first]
