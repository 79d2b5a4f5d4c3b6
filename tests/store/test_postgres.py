"""The catalog on PostgreSQL: migrations, the lexical space, exact filters, and index + search end to end.

Skipped unless XMODAL_TEST_POSTGRES_URL names a server (.ci/run starts one); each test gets a fresh database.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from tests.conftest import make_settings, write_corpus
from tests.search.test_filters import check_filters, filter_strategy, item_strategy
from xmodal.config import Settings
from xmodal.encoders import Encoder
from xmodal.engine import Engine
from xmodal.errors import CatalogTooNewError
from xmodal.store.catalog import Catalog, ItemRecord, NewEmbedding, WriteRequest


def test_migrations_and_lexical_search_on_postgres(postgres_url: str) -> None:
    catalog = Catalog.open(postgres_url)
    try:
        assert {"items", "spaces", "embeddings", "index_runs", "items_fts"} <= set(
            inspect(catalog._engine).get_table_names()
        )
        catalog.save_space(name="text", encoder_spec="e", dim=4, fingerprint="f")

        def request(path: str, caption: str) -> WriteRequest:
            record = ItemRecord(path=path, source="file:///", size=1, mtime_ns=1, modality="image", caption=caption)
            return WriteRequest(record, {"text": [NewEmbedding()]})

        catalog.write_items([request("/zoo/deer.png", "Dear."), request("/zoo/bike.png", "A bicycle by a wall")])
        assert [i for i, _ in catalog.lexical_search("deer", 5)] == [1]  # by sound
        assert [i for i, _ in catalog.lexical_search("bicycles", 5)] == [2]  # by stem
        assert [i for i, _ in catalog.lexical_search("bike", 5)] == [2]  # by file name
        assert catalog.lexical_search("bicycle", 5, within=[1]) == []
        catalog.write_items([request("/zoo/bike.png", "A red tricycle")])  # replaced, not duplicated
        assert catalog.lexical_search("bicycle", 5) == []
        assert catalog.lexical_size() == 2
    finally:
        catalog.close()


def test_a_catalog_migrated_by_a_newer_xmodal_is_left_alone(postgres_url: str) -> None:
    catalog = Catalog.open(postgres_url)
    try:
        with catalog._engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(CatalogTooNewError, match="written by a newer xmodal"):
            Catalog.open(postgres_url)
        with catalog._engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999"
    finally:
        catalog.close()


def test_index_and_search_on_postgres(
    postgres_url: str,
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    encoder_pool: Callable[[str, Settings], Encoder],
) -> None:
    root = write_corpus(tmp_path / "corpus", images=6, texts=6)
    (root / "image_000.json").write_text('{"camera": "X100"}')
    (root / "code.txt").write_text("Catalogue entry XQ-7731-B: a linen jacket.")
    settings = make_settings(tmp_path / "home", tiny_clip_dir, tiny_clap_dir, database_url=postgres_url)
    with Engine.open(settings=settings, build_encoder=encoder_pool) as engine:
        report = engine.index([root])
        assert report.indexed == 13 and report.failed == 0
        assert engine.index([root]).unchanged == 13
        response = engine.query(engine.build_query(text="XQ-7731-B", k=3))
        assert "lexical" in response.spaces_searched
        assert Path(response.results[0].path).name == "code.txt"
        tagged = engine.search("anything", where={"camera": "X100"}, k=5)
        assert [Path(r.path).name for r in tagged] == ["image_000.png"]
        assert tagged[0].metadata == {"camera": "X100"}


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    items=st.lists(item_strategy, min_size=1, max_size=30),
    wanted=filter_strategy,
    k=st.integers(1, 10),
    selective_below=st.sampled_from([0.0, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_filters_are_exact_on_postgres(
    postgres_url: str, items: list[dict], wanted: dict, k: int, selective_below: float, seed: int
) -> None:
    from sqlalchemy import create_engine, text

    # One database for every example: empty it between them.
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        if inspect(connection).has_table("items"):
            tables = "items, spaces, embeddings, index_runs, deleted_vectors, catalog_meta"
            connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    random.seed(seed)
    check_filters(items, wanted, k, selective_below, seed, database_url=postgres_url)


def test_a_second_indexer_on_one_postgres_catalog_is_refused(postgres_url: str, tmp_path: Path) -> None:
    import zlib

    from sqlalchemy import create_engine, text

    from xmodal.errors import IndexLockedError
    from xmodal.indexer.lock import index_lock

    catalog = Catalog.open(postgres_url)
    holder = create_engine(postgres_url)
    try:
        with holder.connect() as connection:  # another machine's indexer, sharing the catalog
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": zlib.crc32(b"xmodal-indexer")})
            try:
                with index_lock(tmp_path / "home", catalog):
                    raise AssertionError("the lock should have been refused")
            except IndexLockedError as exc:
                assert "PostgreSQL" in str(exc)
        holder.dispose()  # the holder's session ends, and its advisory lock with it
        with index_lock(tmp_path / "home", catalog):
            pass
    finally:
        holder.dispose()
        catalog.close()
