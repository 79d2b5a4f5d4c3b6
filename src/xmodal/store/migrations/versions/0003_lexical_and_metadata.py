"""full-text table for the lexical space (SQLite FTS5 / PostgreSQL tsvector): words and their sounds

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xmodal.store.lexical import POSTGRES_DDL, sounds_of

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for statement in POSTGRES_DDL:
            op.execute(statement)
    elif dialect == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE items_fts USING fts5(name, caption, body, sounds, tokenize='porter unicode61')"
        )
    else:
        return
    key = "rowid" if dialect == "sqlite" else "item_id"
    rows = op.get_bind().execute(
        sa.text(
            "SELECT id, path, coalesce(caption, ''), coalesce(transcript, text_excerpt, '') "
            "FROM items WHERE status = 'ok'"
        )
    )
    documents = [
        {"id": row[0], "name": row[1], "caption": row[2], "body": row[3], "sounds": sounds_of(f"{row[2]} {row[3]}")}
        for row in rows
    ]
    if documents:
        op.get_bind().execute(
            sa.text(
                f"INSERT INTO items_fts({key}, name, caption, body, sounds) "
                "VALUES (:id, :name, :caption, :body, :sounds)"
            ),
            documents,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name in {"sqlite", "postgresql"}:
        op.execute("DROP TABLE items_fts")
