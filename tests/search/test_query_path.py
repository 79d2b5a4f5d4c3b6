"""The query path's shortcuts answer as the long way does: lexical term scores kept between queries follow the
next write, token counts on request threads never disturb the encoder thread's batches, and a text query's
models encode it side by side."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_settings
from xmodal.encoders.base import Encoder
from xmodal.engine import Engine


def _lexical_shares(engine: Engine, text: str) -> dict[str, float]:
    results = engine.query(engine.build_query(text=text, space="lexical", k=10)).results
    return {Path(r.path).name: r.space_scores["lexical"] for r in results}


def test_kept_lexical_term_scores_follow_a_new_write(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[..., Encoder]
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ice.txt").write_text("a walrus resting on the sea ice near the shore")
    (corpus / "seals.txt").write_text("grey seals and penguins on a beach")
    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([corpus])
        before = _lexical_shares(engine, "walrus")
        assert before == _lexical_shares(engine, "walrus")  # the second query used the kept scores
        (corpus / "walrus.txt").write_text("walrus walrus")  # a better match: every share of the query drops
        engine.index([corpus])
        after = _lexical_shares(engine, "walrus")
    with Engine.open(settings=settings, build_encoder=encoder_pool) as fresh:  # nothing kept
        expected = _lexical_shares(fresh, "walrus")
    assert after == expected
    assert after["ice.txt"] < before["ice.txt"]


def test_token_counts_on_other_threads_leave_the_encoders_batches_whole(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[..., Encoder]
) -> None:
    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        encoder = engine.spaces["text"].encoder
        texts = ["a short one", "a somewhat longer text with quite a few more words in it than the first", "mid size"]
        stop = threading.Event()
        errors: list[BaseException] = []

        def count() -> None:
            while not stop.is_set():
                try:
                    encoder.chunk("a query chunked on a request thread while the encoder thread pads its batch")
                except BaseException as exc:  # reported below
                    errors.append(exc)
                    return

        counters = [threading.Thread(target=count) for _ in range(2)]
        for thread in counters:
            thread.start()
        try:
            vectors = [encoder.encode_texts(texts) for _ in range(40)]
        finally:
            stop.set()
            for thread in counters:
                thread.join()
    assert not errors, errors
    assert all(v.shape == (3, encoder.dim) for v in vectors)


def test_a_repeated_single_space_query_reads_only_its_results_from_the_catalog(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[..., Encoder]
) -> None:
    """clip-retrieval's /knn-service query (one space, images only): its hits' items and modalities come from
    memory once read, so the catalog is asked only for the columns the results show, and the answer is the same."""
    from sqlalchemy import event

    from tests.conftest import write_corpus

    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir, query_cache_size=0)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([write_corpus(tmp_path / "corpus", images=6, texts=6)])
        query = engine.build_query(text="a photo", space="clip", k=4, modalities=["image"])
        first = engine.query(query).results
        statements: list[str] = []
        event.listen(engine.catalog.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        again = engine.query(query).results
    assert [r.item_id for r in again] == [r.item_id for r in first]
    assert {r.modality for r in again} == {"image"} and len(again) == 4
    assert not [s for s in statements if "FROM embeddings" in s and "JOIN items" in s]  # no vector resolution
    assert not [s for s in statements if "FROM items" in s and "items.id IN" in s and "items.path" not in s]


def test_a_one_space_query_takes_its_own_search_order_and_scores(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path, encoder_pool: Callable[..., Encoder]
) -> None:
    """One space, one part, nothing reranked (clip-retrieval's /knn-service): the search's own scores are the
    evidence (no candidate's vectors read back from the catalog), a page and one more are fetched, and the pages
    are what an exact scan of the space ranks, with the same scores."""
    import numpy as np
    from sqlalchemy import event

    from tests.conftest import write_corpus
    from xmodal.search.query import QueryPart
    from xmodal.search.searcher import encode_part

    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir, query_cache_size=0)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([write_corpus(tmp_path / "corpus", images=8, texts=6)])
        space = engine.spaces["clip"]
        ids, vectors = space.stored_index().vectors()
        scores = vectors @ encode_part(space, QueryPart.text("a photo"))
        hits = engine.catalog.resolve_vectors(ids.tolist())
        best: dict[int, float] = {}
        for vector_id, score in zip(ids.tolist(), scores.tolist(), strict=True):
            if vector_id in hits and hits[vector_id].modality == "image":
                item_id = hits[vector_id].item_id
                best[item_id] = max(best.get(item_id, -np.inf), score)
        exact = sorted(best, key=lambda item_id: (-best[item_id], item_id))

        def page(cursor: str | None = None) -> tuple[list[int], list[float], str | None]:
            query = engine.build_query(
                text="a photo", space="clip", k=3, modalities=["image"], collapse_duplicates=False, cursor=cursor
            )
            response = engine.query(query)
            return (
                [r.item_id for r in response.results],
                [r.space_scores["clip"] for r in response.results],
                response.next_cursor,
            )

        page()  # the space's null sample (drawn once per publication) is read now
        statements: list[str] = []
        event.listen(engine.catalog.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        first, first_scores, cursor = page()
        assert not [s for s in statements if "FROM embeddings" in s and "embeddings.item_id IN" in s]
        second, _, _ = page(cursor)
        third, _, last = page(page(cursor)[2])
    assert first + second + third == exact[:9][: len(first + second + third)]
    assert len(first + second + third) == 8 and last is None
    assert np.allclose(first_scores, [best[item_id] for item_id in first], atol=1e-5)


def test_a_query_whose_hits_are_every_match_asks_the_full_text_table_once_per_field(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    encoder_pool: Callable[..., Encoder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A query word few texts hold: its lexical hits are every match, so each candidate's share is known from
    them (the full-text table is walked once per field, not twice), and the fused answer is the long way's."""
    from sqlalchemy import event

    from tests.conftest import write_corpus
    from xmodal.search.lexical_evidence import LexicalEvidence

    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir, query_cache_size=0)
    corpus = write_corpus(tmp_path / "corpus", images=4, texts=8)
    (corpus / "walrus.txt").write_text("a walrus resting on the sea ice")

    def answer(engine: Engine) -> list[tuple[str, float]]:
        results = engine.query(engine.build_query(text="walrus on ice", k=6)).results
        return [(Path(r.path).name, r.score) for r in results]

    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([corpus])
        answer(engine)  # term scores and null samples read once
        statements: list[str] = []
        event.listen(engine.catalog.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        short = answer(engine)
        assert len([s for s in statements if "MATCH" in s]) == 2  # the hits of the words and of the sounds
        monkeypatch.setattr(LexicalEvidence, "_note_if_every_match", staticmethod(lambda *_: None))
        long = answer(engine)
    assert short == long and short[0][0] == "walrus.txt"


def test_a_text_query_is_encoded_by_every_model_side_by_side(
    tmp_path: Path,
    tiny_clip_dir: Path,
    encoder_pool: Callable[..., Encoder],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fused text query hands its text to each model's encoder thread before waiting for any, so it waits for the
    slowest model rather than for each in turn: every model's encode must have begun before the first one ends."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "ice.txt").write_text("a walrus resting on the sea ice near the shore")
    (corpus / "seals.txt").write_text("grey seals and penguins on a beach")
    armed = threading.Event()
    entered: set[str] = set()
    together = threading.Condition()
    waits: list[bool] = []

    def gated(spec: str, settings: object) -> Encoder:
        encoder = encoder_pool(spec, settings)
        original = encoder.encode_queries

        def encode_queries(texts: Sequence[str]) -> np.ndarray:
            if armed.is_set():
                with together:
                    entered.add(spec)
                    together.notify_all()
                    # True once a second model is encoding too; False after 30 s alone (they ran in turn)
                    waits.append(together.wait_for(lambda: len(entered) >= 2, timeout=30))
            return original(texts)

        monkeypatch.setattr(encoder, "encode_queries", encode_queries)
        return encoder

    settings = make_settings(tmp_path / "home", tiny_clip_dir)
    with Engine.open(settings=settings, build_encoder=gated) as engine:
        engine.index([corpus])
        spaces = [space.name for space in engine.spaces if space.size and "text" in space.encoder.modalities]
        assert len(spaces) >= 2, spaces  # a fused text search over two models at least
        armed.set()
        results = engine.search("walrus on the ice", k=2)
    assert results[0].path.endswith("ice.txt")
    assert len(waits) == len(spaces) and all(waits), waits
