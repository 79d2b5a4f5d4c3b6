"""The catalog: migrations, upserts that replace embeddings, reconciliation with the index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import event, inspect

from xmodal.store.catalog import Catalog, ItemRecord, NewEmbedding, WriteRequest


def _record(path: str, size: int = 1) -> ItemRecord:
    return ItemRecord(path=path, source="file:///r", size=size, mtime_ns=1, modality="text")


def test_migrations_create_the_schema_in_wal_mode(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    tables = set(inspect(catalog._engine).get_table_names())
    assert {"items", "spaces", "embeddings", "index_runs", "alembic_version"} <= tables
    with catalog._engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    Catalog.open(f"sqlite:///{tmp_path / 'c.db'}").close()  # a second open finds nothing to migrate
    catalog.close()


def test_rewriting_an_item_replaces_its_embeddings(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.save_space(name="text", encoder_spec="e", dim=4, fingerprint="f")
    new, old = catalog.write_items(
        [WriteRequest(_record("/r/a"), {"text": [NewEmbedding(0, 0, 3), NewEmbedding(1, 4, 8)]})]
    )
    assert len(new["text"]) == 2 and not old
    first_ids = new["text"]
    new, old = catalog.write_items([WriteRequest(_record("/r/a", size=2), {"text": [NewEmbedding()]})])
    assert old == {"text": first_ids}
    assert len(new["text"]) == 1
    assert catalog.file_states()["/r/a"].size == 2
    hits = catalog.resolve_vectors(new["text"])
    assert hits[new["text"][0]].modality == "text"
    catalog.close()


def test_ids_of_deleted_rows_are_never_handed_out_again(tmp_path: Path) -> None:
    """SQLite reused the highest id after a delete (no AUTOINCREMENT): a server still holding the old index then
    mapped an old vector to another item. Deleting the newest item and its vectors must retire their ids."""
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.save_space(name="text", encoder_spec="e", dim=4, fingerprint="f")
    catalog.write_items([WriteRequest(_record("/r/a"), {"text": [NewEmbedding()]})])
    newest, _ = catalog.write_items([WriteRequest(_record("/r/b"), {"text": [NewEmbedding(), NewEmbedding()]})])
    item_b = next(row.item_id for row in catalog.resolve_vectors(newest["text"]).values())
    catalog.delete_items([item_b])  # the highest item id and the two highest vector ids go
    again, _ = catalog.write_items([WriteRequest(_record("/r/c"), {"text": [NewEmbedding()]})])
    item_c = next(row.item_id for row in catalog.resolve_vectors(again["text"]).values())
    assert again["text"][0] > max(newest["text"])
    assert item_c > item_b
    catalog.close()


def test_reconcile_forgets_rows_an_interrupted_run_never_published(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    space = engine.spaces["text"]
    writer = space.writer()
    kept, _ = engine.catalog.write_items([WriteRequest(_record("/r/a"), {"text": [NewEmbedding()]})])
    writer.add(np.asarray(kept["text"]), np.ones((1, writer.manifest.dim), dtype=np.float32))
    space.save()
    lost, _ = engine.catalog.write_items([WriteRequest(_record("/r/b"), {"text": [NewEmbedding()]})])
    space.release_writer()  # the process died before publishing /r/b's vector
    assert space.reconcile() == 1  # only the row above the last publication goes
    assert engine.catalog.vector_ids("text") == kept["text"]
    assert space.stored_index().ids().tolist() == kept["text"]
    assert lost["text"][0] > kept["text"][0]


def test_a_second_home_on_one_catalog_is_refused(tmp_path: Path) -> None:
    from xmodal.engine import Engine
    from xmodal.errors import CatalogInUseError

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    with Engine.open(tmp_path / "first", database_url=url):
        pass
    with Engine.open(tmp_path / "first", database_url=url):  # the same home again: fine
        pass
    try:
        Engine.open(tmp_path / "second", database_url=url)
    except CatalogInUseError as exc:
        assert "belongs to another xmodal home" in str(exc) and str(tmp_path / "first") in str(exc)
    else:
        raise AssertionError("a second home was allowed to share the catalog")


def test_deleted_and_replaced_vectors_are_queued_for_the_writer(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.save_space(name="text", encoder_spec="e", dim=4, fingerprint="f")
    first, _ = catalog.write_items([WriteRequest(_record("/r/a"), {"text": [NewEmbedding()]})])
    second, _ = catalog.write_items([WriteRequest(_record("/r/a", size=2), {"text": [NewEmbedding()]})])
    catalog.delete_items([catalog.file_states()["/r/a"].item_id])
    queued, mark = catalog.queued_deletions("text")
    assert sorted(queued.tolist()) == sorted(first["text"] + second["text"]) and mark is not None
    assert second["text"][0] > first["text"][0]  # ids are never reused
    catalog.clear_deletions("text", mark)
    assert not catalog.has_queued_deletions("text")
    catalog.close()


def _statements(catalog: Catalog) -> list[str]:
    """The statements that read embedding rows (each call also reads the catalog's write token)."""
    seen: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        if "FROM embeddings" in statement:
            seen.append(statement)

    event.listen(catalog.engine, "before_cursor_execute", record)
    return seen


def test_vector_ids_read_once_are_resolved_from_memory(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}", vector_hit_cache=10)
    catalog.save_space(name="text", encoder_spec="e", dim=4, fingerprint="f")
    new, _ = catalog.write_items(
        [WriteRequest(_record("/r/a"), {"text": [NewEmbedding(0, 0, 3), NewEmbedding(1, 4, 8)]})]
    )
    ids = new["text"]
    statements = _statements(catalog)
    first = catalog.resolve_vectors([ids[0], 999_999])
    assert len(statements) == 1 and set(first) == {ids[0]}
    both = catalog.resolve_vectors(ids)  # only the id not read before goes to the database
    assert len(statements) == 2 and both[ids[1]].start == 4 and both[ids[0]] == first[ids[0]]
    assert catalog.resolve_vectors(ids) == both and len(statements) == 2
    catalog.close()


def test_a_write_of_any_process_drops_what_was_kept(tmp_path: Path) -> None:
    """A server deletes or re-indexes an item (or an indexer does, in another process): its old vectors stay in the
    loaded index until the next publication, and must resolve to nothing, as they did before anything was kept."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    server = Catalog.open(url, vector_hit_cache=10)
    server.save_space(name="text", encoder_spec="e", dim=4, fingerprint="f")
    new, _ = server.write_items(
        [
            WriteRequest(_record("/r/a"), {"text": [NewEmbedding()]}),
            WriteRequest(_record("/r/b"), {"text": [NewEmbedding()]}),
        ]
    )
    old_a, kept_b = new["text"]
    assert set(server.resolve_vectors(new["text"])) == {old_a, kept_b}
    indexer = Catalog.open(url)
    indexer.write_items([WriteRequest(_record("/r/a", size=2), {"text": [NewEmbedding()]})])  # a's vector replaced
    assert set(server.resolve_vectors(new["text"])) == {kept_b}
    item_b = server.resolve_vectors([kept_b])[kept_b].item_id
    server.delete_items([item_b])
    assert server.resolve_vectors([kept_b]) == {}
    indexer.close()
    server.close()


def test_without_the_cache_every_resolution_reads_the_catalog(tmp_path: Path) -> None:
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}", vector_hit_cache=0)
    catalog.save_space(name="text", encoder_spec="e", dim=4, fingerprint="f")
    new, _ = catalog.write_items([WriteRequest(_record("/r/a"), {"text": [NewEmbedding()]})])
    statements = _statements(catalog)
    catalog.resolve_vectors(new["text"])
    catalog.resolve_vectors(new["text"])
    assert len(statements) == 2
    catalog.close()
