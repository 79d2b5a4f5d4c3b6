"""ids are never reused; deletions queued for the writer; the home a catalog belongs to

SQLite hands out the highest rowid + 1 again after a delete unless the table is declared AUTOINCREMENT, and a
vector id that comes back would make a stale index answer with another item. The tables are rebuilt with
AUTOINCREMENT (on PostgreSQL sequences never go back, so nothing changes there).

``deleted_vectors`` queues vector ids whose catalog rows are gone (an HTTP delete while the indexer runs); the
next writer applies them as tombstones. ``catalog_meta`` records which home a catalog belongs to, so a second home
pointed at the same database is refused instead of deleting the first one's rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_REBUILT = ("index_runs", "items", "embeddings")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in _REBUILT:
            with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass
    op.create_table(
        "deleted_vectors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("space", sa.String(length=64), nullable=False),
        sa.Column("vector_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_deleted_vectors_space", "deleted_vectors", ["space"])
    op.create_table(
        "catalog_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("catalog_meta")
    op.drop_index("ix_deleted_vectors_space", table_name="deleted_vectors")
    op.drop_table("deleted_vectors")
