"""The catalog's tables (SQLAlchemy 2.0 typed ORM). Alembic migrations in ``migrations/`` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY; elsewhere ids are 64-bit.
Int64 = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class ItemStatus(StrEnum):
    """``ok``: decoded and embedded wherever possible. ``failed``: see ``Item.error``."""

    OK = "ok"
    FAILED = "failed"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}  # noqa: RUF012 (SQLAlchemy's documented pattern)


class Item(Base):
    """One indexed file (or one that failed, with the reason)."""

    __tablename__ = "items"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (ids are never reused: migration 0004)

    id: Mapped[int] = mapped_column(Int64, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(2048), index=True)
    path: Mapped[str] = mapped_column(String(4096), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16), index=True)
    media_type: Mapped[str | None] = mapped_column(String(255))
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sidecar_path: Mapped[str | None] = mapped_column(String(4096))
    sidecar_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    # a bucket object's ETag / generation / version id (with its sidecars'), or a WebDataset sample's shard
    source_version: Mapped[str | None] = mapped_column(String(1024))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration: Mapped[float | None] = mapped_column(Float)
    caption: Mapped[str | None] = mapped_column(Text)
    text_excerpt: Mapped[str | None] = mapped_column(Text)
    transcript: Mapped[str | None] = mapped_column(Text)
    transcript_segments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # Text read from an image (OCR, migration 0005): the lines joined by newlines; each line's text, polygon,
    # confidence, reading order and span in ``ocr_text``; and the reader that ran (None: not read yet).
    ocr_text: Mapped[str | None] = mapped_column(Text)
    ocr_lines: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    ocr_engine: Mapped[str | None] = mapped_column(String(64))
    user_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=ItemStatus.OK, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class Space(Base):
    """A vector space: its encoder and the fingerprint of the model its vectors came from."""

    __tablename__ = "spaces"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    encoder_spec: Mapped[str] = mapped_column(String(1024))
    dim: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(16), default="ip")
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Embedding(Base):
    """One vector of an item in a space. Its id is the vector's id in that space's FAISS index.

    A text longer than the encoder's context has one embedding per chunk; ``start``/``end`` locate the chunk
    in the item's text (document, caption or transcript: character offsets), and the item scores as its best
    chunk. For an audio window embedded as audio, ``start``/``end`` are milliseconds into the audio.
    ``origin`` is ``ocr`` for a chunk of the text read from an image (its span is in ``Item.ocr_text``).
    """

    __tablename__ = "embeddings"
    __table_args__ = (Index("ix_embeddings_item_space", "item_id", "space"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Int64, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    space: Mapped[str] = mapped_column(ForeignKey("spaces.name", ondelete="CASCADE"))
    chunk: Mapped[int] = mapped_column(Integer, default=0)
    start: Mapped[int | None] = mapped_column(Integer)
    end: Mapped[int | None] = mapped_column(Integer)
    origin: Mapped[str | None] = mapped_column(String(16))


class IndexRun(Base):
    """One run of the indexer: when, over what, and how it ended."""

    __tablename__ = "index_runs"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Int64, primary_key=True, autoincrement=True)
    roots: Mapped[list[str]] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="running")
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeletedVector(Base):
    """A vector whose catalog row is gone but which a published index may still hold; the next writer tombstones
    it and removes the row."""

    __tablename__ = "deleted_vectors"
    __table_args__ = (Index("ix_deleted_vectors_space", "space"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Int64, primary_key=True, autoincrement=True)
    space: Mapped[str] = mapped_column(String(64))
    vector_id: Mapped[int] = mapped_column(BigInteger)


class CatalogMeta(Base):
    """Facts about the catalog itself, e.g. ``home_id``: the home whose vector files it describes."""

    __tablename__ = "catalog_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
