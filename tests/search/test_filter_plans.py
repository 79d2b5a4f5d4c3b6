"""A filter's counts are taken once per publication, not per query; a filter nothing passes searches nothing."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from tests.conftest import random_image, write_corpus
from xmodal.engine import Engine
from xmodal.store.snapshot import SpaceSnapshot


@contextmanager
def _counts(engine: Engine) -> Iterator[list[str]]:
    """The COUNT statements the catalog runs inside the block."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "count(" in statement.lower():
            seen.append(statement)

    event.listen(engine.catalog.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.catalog.engine, "before_cursor_execute", record)


def test_filter_counts_are_taken_once_per_publication(engine: Engine, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus", images=4, texts=4)
    engine.index([root])
    with _counts(engine) as first:
        engine.search("river", k=3, where={"extension": "txt"})
    with _counts(engine) as again:
        engine.search("mountain", k=3, where={"extension": "txt"})
    assert first and again == []
    (root / "more.txt").write_text("a new harbor")
    engine.index([root])  # a new publication: the counts are taken afresh
    with _counts(engine) as after:
        results = engine.search("harbor", k=10, where={"extension": "txt"})
    assert after and any(r.path.endswith("more.txt") for r in results)


def test_a_filter_nothing_passes_searches_no_space(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.index([write_corpus(tmp_path / "corpus", images=4, texts=4)])

    def refuse(*_args: object, **_kwargs: object) -> object:
        raise AssertionError("searched a space the filter leaves nothing in")

    monkeypatch.setattr(SpaceSnapshot, "search", refuse)
    assert engine.search("river", k=5, where={"color": "purple"}) == []  # no item has it


def test_a_space_without_passing_vectors_is_not_searched(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_corpus(tmp_path / "corpus", images=0, texts=4)
    rng = random.Random(3)
    for number in range(4):  # images without captions: they have vectors in clip only
        random_image(rng).save(root / f"photo_{number}.png")
    engine.index([root])
    searched: list[str] = []
    original = SpaceSnapshot.search

    def spy(self: SpaceSnapshot, *args: object, **kwargs: object) -> object:
        searched.append(self.name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SpaceSnapshot, "search", spy)
    results = engine.search("river", k=5, modalities=["image"])
    assert results and all(r.modality == "image" for r in results)
    assert set(searched) == {"clip"}  # the text-only spaces hold no image vector: not walked in growing batches
