"""The catalog: every item, its metadata, and which vectors it has in which space."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from cachetools import LRUCache
from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from xmodal.errors import CatalogInUseError
from xmodal.store import lexical
from xmodal.store.database import connect, migrate, session_factory
from xmodal.store.filters import ItemFilter, under_folder
from xmodal.store.lexical import LexicalDocument
from xmodal.store.models import CatalogMeta, DeletedVector, Embedding, IndexRun, Item, ItemStatus, Space, utcnow

_IN_CHUNK = 500  # ids per IN (...) clause: below every backend's parameter limit
_STREAM_ROWS = 10_000  # rows fetched at a time when a query's result is streamed

# The look-ups a query makes, built once: Core rows, no ORM objects, and one list parameter for the ids instead of
# one bound parameter built per id on every call.
_IDS = bindparam("ids", expanding=True)
_RESOLVE_VECTORS = (
    select(Embedding.id, Embedding.item_id, Item.modality, Embedding.start, Embedding.end, Embedding.origin)
    .join(Item, Item.id == Embedding.item_id)
    .where(Embedding.id.in_(_IDS))
)
_VECTOR_IDS_OF_ITEMS = select(Embedding.item_id, Embedding.id).where(
    Embedding.space == bindparam("space"), Embedding.item_id.in_(_IDS)
)
_RESULT_COLUMNS = (
    Item.id,
    Item.modality,
    Item.path,
    Item.media_type,
    Item.content_hash,
    Item.caption,
    Item.text_excerpt,
    Item.user_metadata,
    Item.width,
    Item.height,
    Item.duration,
    Item.transcript,
    Item.transcript_segments,
    Item.ocr_text,
    Item.ocr_lines,
)
_RESULT_ITEMS = select(*_RESULT_COLUMNS).where(Item.id.in_(_IDS))
_ITEM_KINDS = select(Item.id, Item.modality, Item.content_hash, Item.transcript.is_not(None)).where(Item.id.in_(_IDS))


def _delete_items(session: Session, item_ids: list[int]) -> dict[str, list[int]]:
    """Delete items with their embeddings and full-text rows; returns the vector ids per space (queued for the
    writer, which tombstones them at its next publication)."""
    vectors: dict[str, list[int]] = defaultdict(list)
    for part in _chunks(item_ids):
        for vector_id, space in session.execute(
            select(Embedding.id, Embedding.space).where(Embedding.item_id.in_(part))
        ):
            vectors[space].append(vector_id)
        session.execute(delete(Embedding).where(Embedding.item_id.in_(part)))
        lexical.replace_documents(session, part, [])
        session.execute(delete(Item).where(Item.id.in_(part)))
    _queue_deletions(session, vectors)
    return dict(vectors)


def _queue_deletions(session: Session, vectors: dict[str, list[int]]) -> None:
    """Record vector ids whose rows are gone, in the same transaction, for the writer to apply."""
    rows = [{"space": space, "vector_id": vector_id} for space, ids in vectors.items() for vector_id in ids]
    if rows:
        session.execute(insert(DeletedVector), rows)


def _chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass(frozen=True, slots=True)
class FileState:
    """What the catalog knows of a path, enough to tell whether it changed."""

    item_id: int
    size: int
    mtime_ns: int
    sidecar_mtime_ns: int | None
    status: str
    modality: str | None
    has_text: bool
    ocr_read: bool = False  # an image the OCR stage has read (with or without finding text)
    source_version: str | None = None  # the store's identity of the object (None for local files)


_STATE_QUERY = select(
    Item.path,
    Item.id,
    Item.size,
    Item.mtime_ns,
    Item.sidecar_mtime_ns,
    Item.status,
    Item.modality,
    Item.caption.is_not(None) | Item.transcript.is_not(None) | (Item.modality == "text"),
    Item.ocr_engine.is_not(None),
    Item.source_version,
)


def _state(row: Any) -> FileState:
    return FileState(*row[1:7], bool(row[7]), bool(row[8]), row[9])


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """Everything the indexer learned about one file, ready to be written."""

    path: str
    source: str
    size: int
    mtime_ns: int
    modality: str | None = None
    media_type: str | None = None
    content_hash: str | None = None
    sidecar_path: str | None = None
    sidecar_mtime_ns: int | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    caption: str | None = None
    text_excerpt: str | None = None
    transcript: str | None = None
    transcript_segments: list[dict[str, Any]] | None = None
    ocr_text: str | None = None
    ocr_lines: list[dict[str, Any]] | None = None
    ocr_engine: str | None = None
    user_metadata: dict[str, Any] | None = None
    status: str = ItemStatus.OK
    error: str | None = None
    source_version: str | None = None


@dataclass(frozen=True, slots=True)
class NewEmbedding:
    """One vector to store: which chunk of the item it came from (``origin="ocr"``: of its OCR text)."""

    chunk: int = 0
    start: int | None = None
    end: int | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One item to write: its record, its new embeddings per space, and its full text for the lexical index."""

    record: ItemRecord
    embeddings: dict[str, list[NewEmbedding]] = field(default_factory=dict)
    body: str | None = None


@dataclass(frozen=True, slots=True)
class VectorHit:
    """Where a vector id points in the catalog: the item, its modality, the text span of the chunk."""

    item_id: int
    modality: str | None
    start: int | None
    end: int | None
    origin: str | None = None  # "ocr": the span is in the item's OCR text


@dataclass(frozen=True, slots=True)
class ResultItem:
    """The columns of an item that a search result shows (read-only; :meth:`Catalog.result_items`)."""

    id: int
    modality: str | None
    path: str
    media_type: str | None
    content_hash: str | None
    caption: str | None
    text_excerpt: str | None
    user_metadata: dict[str, Any] | None
    width: int | None
    height: int | None
    duration: float | None
    transcript: str | None
    transcript_segments: list[dict[str, Any]] | None
    ocr_text: str | None
    ocr_lines: list[dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class ItemKind:
    """What reranking needs of an item: its modality and content hash; and whether it has a speech transcript."""

    modality: str | None
    content_hash: str | None
    transcribed: bool = False


@dataclass
class CatalogStats:
    items_by_modality: dict[str, int] = field(default_factory=dict)
    items_by_status: dict[str, int] = field(default_factory=dict)
    embeddings_by_space: dict[str, int] = field(default_factory=dict)


class Catalog:
    """Repository over the catalog database. Create with :meth:`open`; safe to share between threads."""

    def __init__(self, url: str, *, vector_hit_cache: int = 100_000) -> None:
        self.url = url
        self._engine = connect(url)
        self._sessions = session_factory(self._engine)
        # Vector id -> where it points, kept until the catalog is next written (see resolve_vectors).
        self._vector_hits: LRUCache[int, VectorHit] = LRUCache(maxsize=max(1, vector_hit_cache))
        self._vector_hits_on = vector_hit_cache > 0
        self._vector_hits_token: str | None = None  # the catalog's write token the kept hits were read under
        self._vector_hits_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, *, vector_hit_cache: int = 100_000) -> Catalog:
        """Connect and apply pending migrations. ``vector_hit_cache``: vector ids whose item is kept in memory
        (searches resolve every hit; 0: none)."""
        catalog = cls(url, vector_hit_cache=vector_hit_cache)
        try:
            migrate(catalog._engine)
        except BaseException:
            catalog.close()  # a refused or failed migration leaves no pooled connection behind
            raise
        return catalog

    def close(self) -> None:
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        return self._engine

    def session(self) -> Session:
        return self._sessions()

    # items -----------------------------------------------------------------------------------------------

    def file_states(self, paths: Iterable[str] | None = None) -> dict[str, FileState]:
        """Path -> stored state, for the given paths (``_IN_CHUNK`` a statement), or for all items (a full read:
        the indexer looks paths up in batches instead)."""
        with self.session() as session:
            if paths is None:
                rows = list(session.execute(_STATE_QUERY))
            else:
                rows = [
                    row
                    for part in _chunks(list(paths))
                    for row in session.execute(_STATE_QUERY.where(Item.path.in_(part)))
                ]
        return {row[0]: _state(row) for row in rows}

    def sample_states(self, shard: str) -> list[tuple[str, FileState]]:
        """(path, state) of the samples the catalog holds of one WebDataset shard (``shard#key`` paths), by path:
        a range of the path index."""
        query = _STATE_QUERY.where(Item.path > f"{shard}#", Item.path < f"{shard}$").order_by(Item.path)
        with self.session() as session:
            return [(row[0], _state(row)) for row in session.execute(query)]

    def shard_sample_counts(self, prefix: str) -> dict[str, int]:
        """Shard address -> how many samples (``shard#key`` paths) the catalog holds of it, for the shards whose
        address starts with ``prefix``; read as a stream of paths (the cost follows the shards under ``prefix``)."""
        counts: dict[str, int] = defaultdict(int)
        query = select(Item.path).where(Item.path.startswith(prefix, autoescape=True), Item.path.contains("#"))
        with self.session() as session:
            for path in session.scalars(query.execution_options(yield_per=10_000)):
                address, _, _ = path.rpartition("#")
                if address.startswith(prefix):  # SQLite's LIKE ignores case: keep the exact prefix only
                    counts[address] += 1
        return dict(counts)

    def spaces_by_item(self, item_ids: Iterable[int] | None = None) -> dict[int, set[str]]:
        """Item id -> the spaces it has at least one vector in, for the given items (or for all of them)."""
        result: dict[int, set[str]] = defaultdict(set)
        query = select(Embedding.item_id, Embedding.space).distinct()
        with self.session() as session:
            if item_ids is None:
                rows: Iterable[Any] = session.execute(query)
            else:
                rows = (
                    row
                    for part in _chunks(list(item_ids))
                    for row in session.execute(query.where(Embedding.item_id.in_(part)))
                )
            for item_id, space in rows:
                result[item_id].add(space)
        return dict(result)

    def get_item(self, item_id: int) -> Item | None:
        with self.session() as session:
            return session.get(Item, item_id)

    def get_items(self, item_ids: Sequence[int]) -> dict[int, Item]:
        found: dict[int, Item] = {}
        with self.session() as session:
            for part in _chunks(list(item_ids)):
                found.update({item.id: item for item in session.scalars(select(Item).where(Item.id.in_(part)))})
        return found

    def result_items(self, item_ids: Sequence[int]) -> dict[int, ResultItem]:
        """Item id -> the columns its search result shows (absent: no such item), in one query per 500 ids."""
        found: dict[int, ResultItem] = {}
        with self._engine.connect() as connection:
            for part in _chunks(list(item_ids)):
                found.update({row[0]: ResultItem(*row) for row in connection.execute(_RESULT_ITEMS, {"ids": part})})
        return found

    def item_kinds(self, item_ids: Sequence[int]) -> dict[int, ItemKind]:
        """Item id -> its modality, content hash and whether it has a transcript (absent: no such item)."""
        found: dict[int, ItemKind] = {}
        with self._engine.connect() as connection:
            for part in _chunks(list(item_ids)):
                rows = connection.execute(_ITEM_KINDS, {"ids": part})
                found.update({row[0]: ItemKind(row[1], row[2], bool(row[3])) for row in rows})
        return found

    def item_with_content(self, content_hash: str) -> Item | None:
        """An indexed item whose file has exactly these bytes (the lowest id), if any."""
        query = (
            select(Item)
            .where(Item.content_hash == content_hash, Item.status == ItemStatus.OK)
            .order_by(Item.id)
            .limit(1)
        )
        with self.session() as session:
            return session.scalars(query).first()

    def embeddings_of(self, item_id: int, space: str) -> list[Embedding]:
        """An item's embedding rows in ``space``, by chunk."""
        query = (
            select(Embedding).where(Embedding.item_id == item_id, Embedding.space == space).order_by(Embedding.chunk)
        )
        with self.session() as session:
            return list(session.scalars(query))

    def failures(self, limit: int = 1000) -> list[tuple[str, str]]:
        """(path, reason) of failed items, by path."""
        query = select(Item.path, Item.error).where(Item.status == ItemStatus.FAILED).order_by(Item.path)
        with self.session() as session:
            return [(path, error or "") for path, error in session.execute(query.limit(limit))]

    def write_items(self, requests: Sequence[WriteRequest]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """Upsert items, replace their embeddings and full-text rows, in one transaction.

        Returns ``(new_ids, old_ids)``: per space, the vector ids just allocated (in the order given) and the
        vector ids that were replaced and must leave the vector index.
        """
        new_ids: dict[str, list[int]] = defaultdict(list)
        old_ids: dict[str, list[int]] = defaultdict(list)
        with self.session() as session, session.begin():
            existing = {
                item.path: item
                for part in _chunks([r.record.path for r in requests])
                for item in session.scalars(select(Item).where(Item.path.in_(part)))
            }
            items: list[Item] = []
            for request in requests:
                item = existing.get(request.record.path) or Item(path=request.record.path)
                for name in ItemRecord.__slots__:
                    setattr(item, name, getattr(request.record, name))
                item.user_metadata = request.record.user_metadata or {}
                item.updated_at = utcnow()
                session.add(item)
                items.append(item)
            session.flush()
            touched = [item.id for item in items if item.path in existing]
            for part in _chunks(touched):
                for vector_id, space in session.execute(
                    select(Embedding.id, Embedding.space).where(Embedding.item_id.in_(part))
                ):
                    old_ids[space].append(vector_id)
                session.execute(delete(Embedding).where(Embedding.item_id.in_(part)))
            _queue_deletions(session, old_ids)
            for item, request in zip(items, requests, strict=True):
                for space, embeddings in request.embeddings.items():
                    rows = [
                        Embedding(
                            item_id=item.id, space=space, chunk=e.chunk, start=e.start, end=e.end, origin=e.origin
                        )
                        for e in embeddings
                    ]
                    session.add_all(rows)
                    session.flush()
                    new_ids[space].extend(row.id for row in rows)
            documents = [
                LexicalDocument(item.id, item.path, item.caption, request.body, item.ocr_text)
                for item, request in zip(items, requests, strict=True)
                if item.status == ItemStatus.OK
            ]
            lexical.replace_documents(session, touched, documents)
        return dict(new_ids), dict(old_ids)

    def prune_candidates(self, root: str, keep: Container[str]) -> tuple[int, list[int]]:
        """How many items lie at or under ``root``, and the ids of those whose path is not in ``keep`` (their
        files are gone). The rows are streamed, so memory follows the missing items, not the root's size. The
        indexer decides whether to delete them (:meth:`delete_items`)."""
        prefix = root.rstrip("/")
        samples = and_(Item.path >= f"{prefix}#", Item.path < f"{prefix}$")  # a WebDataset shard's samples
        query = select(Item.id, Item.path).where(or_(under_folder(root), samples))
        total, missing = 0, []
        with self.session() as session:
            for rows in session.execute(query.execution_options(yield_per=_STREAM_ROWS)).partitions():
                total += len(rows)
                missing.extend(item_id for item_id, path in rows if path not in keep)
        return total, missing

    def delete_items(self, item_ids: Sequence[int]) -> tuple[int, dict[str, list[int]]]:
        """Delete these items; returns how many existed and, per space, the vector ids that must go."""
        with self.session() as session, session.begin():
            present = [
                i for part in _chunks(list(item_ids)) for i in session.scalars(select(Item.id).where(Item.id.in_(part)))
            ]
            return len(present), _delete_items(session, present)

    def run_totals(self) -> dict[str, int]:
        """Sums of the counts of every finished index run (files by outcome, vectors added)."""
        totals: dict[str, int] = defaultdict(int)
        with self.session() as session:
            for stats in session.scalars(select(IndexRun.stats).where(IndexRun.status == "finished")):
                for key in (
                    "indexed",
                    "updated",
                    "unchanged",
                    "skipped",
                    "failed",
                    "reused",
                    "pruned",
                    "vectors_added",
                ):
                    totals[key] += int((stats or {}).get(key, 0))
        return dict(totals)

    def delete_embeddings(self, space: str, vector_ids: Sequence[int]) -> None:
        with self.session() as session, session.begin():
            for part in _chunks(list(vector_ids)):
                session.execute(delete(Embedding).where(Embedding.space == space, Embedding.id.in_(part)))

    def vector_ids(self, space: str) -> list[int]:
        with self.session() as session:
            return list(session.scalars(select(Embedding.id).where(Embedding.space == space)))

    def vector_ids_above(self, space: str, high_water: int) -> np.ndarray:
        """Ids of ``space``'s embedding rows above ``high_water`` (a range scan of the primary key)."""
        query = select(Embedding.id).where(Embedding.id > high_water, Embedding.space == space)
        with self.session() as session:
            return np.fromiter(session.scalars(query), dtype=np.int64)

    # deletions queued for the writer ---------------------------------------------------------------------

    def queued_deletions(self, space: str) -> tuple[np.ndarray, int | None]:
        """(vector ids queued for deletion in ``space``, the last queue id read; ``None`` when none)."""
        query = select(DeletedVector.id, DeletedVector.vector_id).where(DeletedVector.space == space)
        with self.session() as session:
            rows = session.execute(query.order_by(DeletedVector.id)).all()
        if not rows:
            return np.zeros(0, dtype=np.int64), None
        return np.asarray([r[1] for r in rows], dtype=np.int64), int(rows[-1][0])

    def has_queued_deletions(self, space: str) -> bool:
        with self.session() as session:
            return session.scalar(select(DeletedVector.id).where(DeletedVector.space == space).limit(1)) is not None

    def clear_deletions(self, space: str, upto: int) -> None:
        """Forget queued deletions of ``space`` up to queue id ``upto`` (a publication applied them)."""
        with self.session() as session, session.begin():
            session.execute(delete(DeletedVector).where(DeletedVector.space == space, DeletedVector.id <= upto))

    # which home the catalog belongs to -------------------------------------------------------------------

    def claim_home(self, home_id: str, home: str) -> None:
        """Record that this catalog describes the vectors of ``home_id``; ``CatalogInUseError`` if another home's.

        Two homes sharing one catalog would each delete the other's rows as orphans of their own vector files.
        """
        with self.session() as session, session.begin():
            owner = session.get(CatalogMeta, "home_id")
            if owner is None:
                session.add(CatalogMeta(key="home_id", value=home_id))
                session.merge(CatalogMeta(key="home_path", value=home))
                return
            if owner.value != home_id:
                where = session.get(CatalogMeta, "home_path")
                raise CatalogInUseError(
                    f"The catalog {self.url if '@' not in self.url else '(database URL)'} belongs to another xmodal "
                    f"home ({where.value if where else owner.value}); this home is {home}. Each home needs its own "
                    "catalog: set XMODAL_DATABASE_URL to another database, or XMODAL_HOME to the home that owns it."
                )

    def resolve_vectors(self, vector_ids: Sequence[int]) -> dict[int, VectorHit]:
        """Vector id -> the item (and text span) it belongs to; ids without a row (deleted) are left out.

        Ids read before are answered from memory for as long as the catalog is not written: every write (of any
        process) gives the catalog a new write token (``lexical.version``), and a new token empties what is kept,
        so a vector deleted or replaced since (still in a loaded index until the next publication) is dropped as
        it was before anything was kept. A call costs one primary-key read of the token, not a join per id."""
        vector_ids = list(vector_ids)
        with self._engine.connect() as connection:
            if not self._vector_hits_on:
                return self._read_vector_hits(connection, vector_ids)
            token = lexical.version(connection)
            hits: dict[int, VectorHit] = {}
            with self._vector_hits_lock:
                if token != self._vector_hits_token:
                    self._vector_hits.clear()
                    self._vector_hits_token = token
                for vector_id in vector_ids:
                    hit = self._vector_hits.get(vector_id)
                    if hit is not None:
                        hits[vector_id] = hit
            missing = [vector_id for vector_id in vector_ids if vector_id not in hits]
            if not missing:
                return hits
            read = self._read_vector_hits(connection, missing)
        with self._vector_hits_lock:
            if self._vector_hits_token == token:  # not emptied for a newer write meanwhile
                self._vector_hits.update(read)
        hits.update(read)
        return hits

    @staticmethod
    def _read_vector_hits(connection: Connection, vector_ids: list[int]) -> dict[int, VectorHit]:
        read: dict[int, VectorHit] = {}
        for part in _chunks(vector_ids):
            rows = connection.execute(_RESOLVE_VECTORS, {"ids": part})
            read.update({row[0]: VectorHit(*row[1:]) for row in rows})
        return read

    def vector_ids_of_items(self, space: str, item_ids: Sequence[int]) -> dict[int, list[int]]:
        """Item id -> its vector ids in ``space``."""
        result: dict[int, list[int]] = defaultdict(list)
        with self._engine.connect() as connection:
            for part in _chunks(list(item_ids)):
                for item_id, vector_id in connection.execute(_VECTOR_IDS_OF_ITEMS, {"space": space, "ids": part}):
                    result[item_id].append(vector_id)
        return dict(result)

    # filters and full text -------------------------------------------------------------------------------

    def count_matching(self, item_filter: ItemFilter) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(Item).where(item_filter.clause())) or 0)

    def count_items(self) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(Item).where(Item.status == ItemStatus.OK)) or 0)

    def matching_ids(self, item_filter: ItemFilter, within: Sequence[int] | None = None) -> set[int]:
        """Ids of the items that pass ``item_filter`` (only among ``within`` when given)."""
        query = select(Item.id).where(item_filter.clause())
        with self._engine.connect() as connection:
            if within is None:
                return set(connection.scalars(query))
            among = query.where(Item.id.in_(_IDS))
            return {i for part in _chunks(list(within)) for i in connection.scalars(among, {"ids": part})}

    def count_vectors_matching(self, space: str, item_filter: ItemFilter) -> int:
        """How many of ``space``'s vectors belong to items that pass ``item_filter``."""
        query = (
            select(func.count())
            .select_from(Embedding)
            .join(Item, Item.id == Embedding.item_id)
            .where(Embedding.space == space, item_filter.clause())
        )
        with self.session() as session:
            return int(session.scalar(query) or 0)

    def vector_ids_of_matching(self, space: str, item_filter: ItemFilter) -> list[int]:
        query = (
            select(Embedding.id)
            .join(Item, Item.id == Embedding.item_id)
            .where(Embedding.space == space, item_filter.clause())
        )
        with self.session() as session:
            return list(session.scalars(query))

    @property
    def lexical_supported(self) -> bool:
        return lexical.supported(self._engine.dialect.name)

    def lexical_search(
        self,
        query: str,
        limit: int,
        within: Sequence[int] | None = None,
        *,
        field: lexical.Field | None = None,
        stop: frozenset[str] = frozenset(),
        common: frozenset[str] = frozenset(),
    ) -> list[tuple[int, float]]:
        """(item id, BM25 score) of the best full-text matches (only among ``within`` when given); ``field``: the
        words or their sounds only; ``stop``: words the query drops; ``common``: terms it leaves out (those BM25
        gives no weight: :func:`lexical.weightless`)."""
        with self._engine.connect() as connection:
            if within is None:
                return lexical.search(connection, query, limit, field=field, stop=stop, common=common)
            return [
                hit
                for part in _chunks(list(within))
                for hit in lexical.search(connection, query, limit, part, field=field, stop=stop, common=common)
            ]

    def lexical_term_scores(self, terms: Sequence[str], field: lexical.Field) -> list[float]:
        """Each term's best score alone in ``field``, in order (the parts of :func:`lexical.ideal_of`)."""
        with self._engine.connect() as connection:
            return lexical.term_scores(connection, terms, field)

    def lexical_version(self) -> str | None:
        """A token that changes with every write to the full-text table (see :func:`lexical.version`)."""
        with self._engine.connect() as connection:
            return lexical.version(connection)

    def lexical_size(self) -> int:
        if not self.lexical_supported:
            return 0
        with self._engine.connect() as connection:
            return lexical.count(connection)

    # spaces ----------------------------------------------------------------------------------------------

    def get_space(self, name: str) -> Space | None:
        with self.session() as session:
            return session.get(Space, name)

    def save_space(self, *, name: str, encoder_spec: str, dim: int, fingerprint: str) -> None:
        with self.session() as session, session.begin():
            space = session.get(Space, name) or Space(name=name)
            space.encoder_spec, space.dim, space.fingerprint, space.metric = (
                encoder_spec,
                dim,
                fingerprint,
                "ip",
            )
            session.add(space)

    def drop_space(self, name: str) -> int:
        """Forget a space and its embeddings; returns how many embeddings went."""
        with self.session() as session, session.begin():
            count = session.scalar(select(func.count()).select_from(Embedding).where(Embedding.space == name)) or 0
            session.execute(delete(Embedding).where(Embedding.space == name))
            session.execute(delete(Space).where(Space.name == name))
        return int(count)

    # runs and stats --------------------------------------------------------------------------------------

    def start_run(self, roots: Sequence[str]) -> int:
        with self.session() as session, session.begin():
            run = IndexRun(roots=list(roots), status="running", stats={})
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, *, status: str, stats: dict[str, Any]) -> None:
        with self.session() as session, session.begin():
            run = session.get(IndexRun, run_id)
            if run is not None:
                run.status, run.stats, run.finished_at = status, stats, utcnow()

    def last_run(self) -> tuple[datetime, str] | None:
        with self.session() as session:
            row = session.execute(
                select(IndexRun.started_at, IndexRun.status).order_by(IndexRun.id.desc()).limit(1)
            ).first()
        return (row[0], row[1]) if row else None

    def latest_run(self) -> IndexRun | None:
        """The most recent index run (finished or not), detached from its session."""
        with self.session() as session:
            return session.scalars(select(IndexRun).order_by(IndexRun.id.desc()).limit(1)).first()

    def example_captions(self, limit: int) -> list[str]:
        """A few short captions of indexed items, as example queries for a page that has none typed yet."""
        query = (
            select(Item.caption)
            .where(Item.status == ItemStatus.OK, Item.caption.is_not(None), func.length(Item.caption) <= 60)
            .order_by(Item.id)
            .limit(limit)
        )
        with self.session() as session:
            return [str(caption).strip().rstrip(".") for caption in session.scalars(query) if caption]

    def stats(self) -> CatalogStats:
        with self.session() as session:
            by_modality = session.execute(
                select(Item.modality, func.count()).where(Item.status == ItemStatus.OK).group_by(Item.modality)
            ).all()
            by_status = session.execute(select(Item.status, func.count()).group_by(Item.status)).all()
            by_space = session.execute(select(Embedding.space, func.count()).group_by(Embedding.space)).all()
        return CatalogStats(
            items_by_modality={str(k): v for k, v in by_modality},
            items_by_status={str(k): v for k, v in by_status},
            embeddings_by_space={str(k): v for k, v in by_space},
        )
