"""Long texts are chunked to the encoder's context: never truncated silently, never a crash."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import WORDS
from xmodal.encoders.base import chunk_by_offsets, chunk_text
from xmodal.engine import Engine


def _tokens(text: str) -> int:
    """Additive over words, like real tokenizers, which split at whitespace first: a token per 8 characters."""
    return sum(-(-len(word) // 8) for word in text.split())


@given(st.lists(st.sampled_from([*WORDS, "supercalifragilisticexpialidocious" * 3]), max_size=200), st.integers(1, 9))
def test_chunks_cover_every_word_and_fit(words: list[str], limit: int) -> None:
    text = "  ".join(words)
    chunks = chunk_text(text, count_tokens=_tokens, max_tokens=limit)
    assert "".join(c.text.replace(" ", "") for c in chunks) == text.replace(" ", "")
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert _tokens(chunk.text) <= limit


def _starts(text: str) -> list[int]:
    """Where ``_tokens``' tokens start, as a fast tokenizer's offset mapping says: every 8 characters of a word."""
    return [m.start() + i for m in re.finditer(r"\S+", text) for i in range(0, len(m.group()), 8)]


@given(st.lists(st.sampled_from([*WORDS, "supercalifragilisticexpialidocious" * 3]), max_size=200), st.integers(1, 9))
def test_chunks_from_offsets_match_chunks_from_counts(words: list[str], limit: int) -> None:
    text = "  ".join(words)
    by_offsets = chunk_by_offsets(text, _starts(text), max_tokens=limit)
    assert "".join(c.text.replace(" ", "") for c in by_offsets) == text.replace(" ", "")
    for chunk in by_offsets:
        assert text[chunk.start : chunk.end] == chunk.text
        assert _tokens(chunk.text) <= limit
    long_words = any(_tokens(word) > limit for word in words)
    if not long_words:  # a long word is cut by characters in one and at token bounds in the other
        assert by_offsets == chunk_text(text, count_tokens=_tokens, max_tokens=limit)


def test_a_long_text_is_tokenized_once(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = engine.spaces["text"].encoder
    encoder.load()
    text = " ".join(WORDS * 400)  # 18,000 words
    calls = {"tokenize": 0}
    tokenizer = type(encoder._model.tokenizer)
    original = tokenizer.__call__

    def counted(self: object, *args: object, **kwargs: object) -> object:
        calls["tokenize"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "__call__", counted)
    monkeypatch.setattr(encoder, "count_tokens", lambda _text: pytest.fail("counted word by word"))
    chunks = encoder.chunk(text)
    monkeypatch.undo()
    assert calls["tokenize"] == 1
    assert "".join(c.text.replace(" ", "") for c in chunks) == text.replace(" ", "")
    assert all(encoder.count_tokens(c.text) <= encoder.max_text_tokens for c in chunks)


def test_clip_chunks_fit_77_tokens(engine: Engine) -> None:
    encoder = engine.spaces["clip"].encoder
    text = " ".join(WORDS * 10)
    chunks = encoder.chunk(text)
    assert len(chunks) > 1
    assert all(encoder.count_tokens(c.text) <= 75 for c in chunks)
    assert encoder.encode_texts([c.text for c in chunks]).shape == (len(chunks), encoder.dim)


def test_a_query_longer_than_the_context_is_answered(engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "long.txt").write_text(" ".join(WORDS * 20))
    engine.index([tmp_path / "docs"])
    results = engine.search(" ".join(WORDS * 5), k=1, space="clip")
    assert [r.path for r in results] == [str(tmp_path / "docs" / "long.txt")]
    assert results[0].match is not None


def test_item_scores_as_its_best_chunk(engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    docs = tmp_path / "docs"
    docs.mkdir()
    filler = "The committee reviewed the quarterly budget figures and approved the spending plan. " * 30
    (docs / "report.txt").write_text(filler + "A golden retriever puppy plays fetch on the beach.")
    (docs / "other.txt").write_text("Instructions for assembling a bookshelf from flat-pack parts.")
    engine.index([docs])
    top = engine.search("a dog playing at the seaside", k=1, space="text")[0]
    assert top.path.endswith("report.txt")
    assert top.match is not None
    start, end = top.match
    assert "golden retriever" in (docs / "report.txt").read_text()[start:end]
