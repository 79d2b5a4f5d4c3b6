"""A re-run's cost follows its work, not the home: the walk is checked against the catalog in batches of paths,
never by loading every row, and a run without work opens no index."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from tests.conftest import write_corpus
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.indexer.scan import PathSet
from xmodal.store.catalog import Catalog


@contextmanager
def _counted(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements the catalog runs inside the block."""
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(engine.catalog.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.catalog.engine, "before_cursor_execute", record)


def test_an_unchanged_rerun_runs_statements_per_batch_not_per_home(
    settings: Settings,
    encoder_pool: Callable[[str, Settings], Encoder],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    small = write_corpus(tmp_path / "small", images=0, texts=16)
    large = write_corpus(tmp_path / "large", images=0, texts=48, seed=1)
    whole_reads: list[str] = []
    for name in ("file_states", "spaces_by_item"):
        original = getattr(Catalog, name)

        def guarded(self: Catalog, keys: object = None, *, _name: str = name, _original: object = original) -> object:
            if keys is None:
                whole_reads.append(_name)
            return _original(self, keys)  # type: ignore[operator]

        monkeypatch.setattr(Catalog, name, guarded)
    batched = settings.model_copy(update={"scan_lookup_batch": 8})
    with Engine.open(settings=batched, build_encoder=encoder_pool) as engine:
        engine.index([small])
        with _counted(engine) as in_small_home:
            assert engine.index([small]).unchanged == 16
        engine.index([large])
        with _counted(engine) as in_large_home:
            assert engine.index([small]).unchanged == 16
        with _counted(engine) as both:
            assert engine.index([small, large]).unchanged == 64
        loaded = [space.name for space in engine.spaces if space.encoder.loaded]
    assert whole_reads == []  # no run read every item's state or vectors
    assert len(in_large_home) == len(in_small_home)  # four times the items, the same work: the same statements
    # 64 files are 8 look-up batches instead of 2: a few statements per batch, none per file
    assert 6 <= len(both) - len(in_small_home) <= 3 * 6
    assert loaded  # the first runs embedded; the re-runs above did not need to


def test_a_run_without_work_opens_no_index(
    settings: Settings, encoder_pool: Callable[[str, Settings], Encoder], tmp_path: Path
) -> None:
    root = write_corpus(tmp_path / "corpus", images=2, texts=2)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        engine.index([root])
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        assert engine.index([root]).unchanged == 4
        assert all(space._snapshot is None for space in engine.spaces)  # manifests read, no segment opened


def test_seen_paths_answer_prune_questions() -> None:
    seen = PathSet()
    for number in range(70_000):  # past one sealed block
        seen.add(f"/data/{number // 1000}/file{number}.jpg")
    seen.add("/shards/000.tar#sample1")
    seen.add("/single.txt")
    assert len(seen) == 70_002
    assert "/data/3/file3999.jpg" in seen and "/data/3/file4000.jpg" not in seen
    assert seen.any_under("/data") and seen.any_under("/data/69") and not seen.any_under("/dat")
    assert seen.any_under("/shards/000.tar") and not seen.any_under("/shards/001.tar")
    assert seen.any_under("/single.txt") and not seen.any_under("/other.txt")
