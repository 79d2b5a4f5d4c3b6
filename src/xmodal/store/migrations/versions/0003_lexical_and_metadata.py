"""full-text table for the lexical space (SQLite FTS5)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return  # the lexical space is SQLite-only for now
    op.execute("CREATE VIRTUAL TABLE items_fts USING fts5(name, caption, body, tokenize='porter unicode61')")
    op.execute(
        "INSERT INTO items_fts(rowid, name, caption, body) "
        "SELECT id, path, coalesce(caption, ''), coalesce(transcript, text_excerpt, '') FROM items WHERE status = 'ok'"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE items_fts")
