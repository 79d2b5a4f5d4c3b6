"""The catalog rows of a space's versions: how far a shadow has come, and adding a shadow's rows beside the
current ones (an item's other rows are never touched, so the current version keeps answering unchanged)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import aliased

from xmodal.store.catalog import Catalog, NewEmbedding
from xmodal.store.models import DeletedVector, Embedding, Item, Space

_CHUNK = 500


def items_with_vectors(catalog: Catalog, key: str) -> int:
    """How many items have at least one row under the version key ``key``."""
    query = select(func.count(func.distinct(Embedding.item_id))).where(Embedding.space == key)
    with catalog.session() as session:
        return int(session.scalar(query) or 0)


def items_lacking(catalog: Catalog, have: str, lacking: str, limit: int | None = None) -> list[int]:
    """Ids (ascending) of the items with rows under ``have`` but none under ``lacking``."""
    other = aliased(Embedding)
    query = (
        select(Embedding.item_id)
        .where(Embedding.space == have)
        .where(~select(other.id).where(other.item_id == Embedding.item_id, other.space == lacking).exists())
        .distinct()
        .order_by(Embedding.item_id)
    )
    if limit is not None:
        query = query.limit(limit)
    with catalog.session() as session:
        return list(session.scalars(query))


def add_rows(catalog: Catalog, key: str, rows: Sequence[tuple[int, NewEmbedding]]) -> list[int | None]:
    """Add embedding rows under ``key`` for ``(item id, embedding)`` pairs, in one transaction; returns the new
    vector ids in order (``None`` where the item no longer exists: it was deleted meanwhile)."""
    ids: list[int | None] = []
    with catalog.session() as session, session.begin():
        wanted = sorted({item_id for item_id, _ in rows})
        present = {
            i for start in range(0, len(wanted), _CHUNK)
            for i in session.scalars(select(Item.id).where(Item.id.in_(wanted[start : start + _CHUNK])))
        }  # fmt: skip
        made = []
        for item_id, e in rows:
            if item_id not in present:
                made.append(None)
                continue
            made.append(Embedding(item_id=item_id, space=key, chunk=e.chunk, start=e.start, end=e.end, origin=e.origin))
        session.add_all([row for row in made if row is not None])
        session.flush()
        ids = [row.id if row is not None else None for row in made]
    return ids


def forget_key(catalog: Catalog, key: str) -> int:
    """Delete every row of the version key ``key`` (embeddings, queued deletions, its space row)."""
    with catalog.session() as session, session.begin():
        count = session.scalar(select(func.count()).select_from(Embedding).where(Embedding.space == key)) or 0
        session.execute(delete(Embedding).where(Embedding.space == key))
        session.execute(delete(DeletedVector).where(DeletedVector.space == key))
        session.execute(delete(Space).where(Space.name == key))
    return int(count)
