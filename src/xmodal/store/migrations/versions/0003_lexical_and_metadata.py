"""full-text table for the lexical space (SQLite FTS5): words and their sounds

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from xmodal.store.lexical import sounds_of

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # the lexical space is SQLite-only for now
    op.execute("CREATE VIRTUAL TABLE items_fts USING fts5(name, caption, body, sounds, tokenize='porter unicode61')")
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
                "INSERT INTO items_fts(rowid, name, caption, body, sounds) "
                "VALUES (:id, :name, :caption, :body, :sounds)"
            ),
            documents,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE items_fts")
